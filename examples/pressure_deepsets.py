"""Electron pressure of halos from their dark matter: seed 003's DeepSets against the GNFW benchmark (SYNTHETIC).

Runs one small synthetic box (2LPT + FastPM from z = 6, SO halos, the
synthetic gas model: all SYNTHETIC stand-ins for a hydrodynamical run),
prints the measured P_e = n_e kT profile of the largest halo against the
Battaglia et al. (2012) and Arnaud et al. (2010) GNFW profiles, then trains
the GNFW benchmark and the Origin + Local + Stochastic DeepSets on half the
halos and prints L_opt (seed 003 eq. 8: median loss ratio to the benchmark)
on the other half.

    python examples/pressure_deepsets.py [--n-side 48] [--steps 200] [--min-mass 5e12]
"""

import argparse

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxcluster.baryons.training_sets import lh_spec, simulate_sample
from jaxcluster.cosmology import Cosmology
from jaxcluster.fields import (
    PressureDeepSets,
    arnaud10_pressure,
    battaglia12_pressure,
    fit_pressure_model,
    halo_samples,
    loss_ratio_median,
    radial_profile,
)
from jaxcluster.nbody.ic import velocity_from_momentum
from jaxcluster.params import ThetaSim


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-side", type=int, default=48, help="particles and voxels per side (0.39 h⁻¹ Mpc cells)")
    ap.add_argument("--z", type=float, default=0.1)
    ap.add_argument("--min-mass", type=float, default=5e12, help="smallest M_200c [h⁻¹ M☉]")
    ap.add_argument("--steps", type=int, default=200, help="training steps per model")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    box = 25.0 * args.n_side / 64
    spec = lh_spec(1, n_side=args.n_side, box_size=box, redshifts=(args.z,), max_halos=32,
                   capacity=min(131072, args.n_side**3))
    theta = ThetaSim.fiducial()
    s = jax.jit(lambda k: simulate_sample(theta, k, spec))(jax.random.key(args.seed))
    cosmo = Cosmology.from_theta(theta)
    valid = np.asarray(s.halos.valid[0]) & (np.asarray(s.halos.M200c[0]) >= args.min_mass)
    idx = np.flatnonzero(valid)
    print(f"SYNTHETIC box {box:.1f} h^-1 Mpc, {args.n_side}^3, z = {args.z}: {idx.size} halos with M200c >= {args.min_mass:.1e}")
    if idx.size < 2:
        print("too few halos to split; try a larger --n-side or a smaller --min-mass")
        return
    pe = np.asarray(s.n_e[0], np.float64) * (1 + args.z) ** 3 * np.asarray(s.T_keV[0], np.float64)  # keV cm⁻³

    # Profile of the largest halo: shell means of P_e on the mesh against the GNFW fits.
    big = idx[0]
    M, R = float(s.halos.M200c[0][big]), float(s.halos.R200c[0][big])
    edges = np.linspace(0.0, 2.0 * R, 7)
    mean, count = radial_profile(jnp.asarray(pe), jnp.asarray(s.halos.pos[0][big]), box / args.n_side, edges)
    x = 0.5 * (edges[1:] + edges[:-1]) / R
    M500, R500 = float(s.halos.M500c[0][big]), float(s.halos.R500c[0][big])
    b12 = battaglia12_pressure(jnp.asarray(x), M, args.z, cosmo)
    a10 = arnaud10_pressure(jnp.asarray(x * R / R500), M500, args.z, cosmo)
    print(f"largest halo M200c = {M:.3g} h^-1 Msun, R200c = {R:.2f} h^-1 Mpc; P_e [keV cm^-3] in shells:")
    print("   r/R200   voxels   synthetic    Battaglia12  Arnaud10")
    for row in zip(x, np.asarray(count), np.asarray(mean), np.asarray(b12), np.asarray(a10)):
        print("   {:5.2f}  {:6.0f}   {:10.3e}   {:10.3e}   {:10.3e}".format(*row))

    # DeepSets: train on half the halos, L_opt on the other half.
    a = 1.0 / (1.0 + args.z)
    vel = np.asarray(velocity_from_momentum(s.p[0], a), np.float64)
    samples = halo_samples(np.asarray(s.pos[0], np.float64), vel, pe, np.asarray(s.halos.pos[0])[idx],
                           np.asarray(s.halos.vel[0])[idx], np.asarray(s.halos.M200c[0], np.float64)[idx],
                           np.asarray(s.halos.R200c[0], np.float64)[idx], args.z, box, cosmo,
                           n_particles=256, n_targets=128, n_neighbours=16, r_local=0.4, n_shell=4, seed=args.seed)
    train = jax.tree.map(lambda v: v[0::2], samples)
    test = jax.tree.map(lambda v: v[1::2], samples)
    kb, kn, k1, k2 = jax.random.split(jax.random.key(args.seed), 4)
    bench = PressureDeepSets(4, origin=False, local=False, stochastic=False, key=kb)
    bench, lb = fit_pressure_model(bench, train, key=k1, steps=args.steps, learning_rate=1e-2, beta_kl=0.0)
    net = eqx.tree_at(lambda m: m.gnfw, PressureDeepSets(4, width=32, depth=2, key=kn), bench.gnfw)
    net, ln = fit_pressure_model(net, train, key=k2, steps=args.steps, learning_rate=3e-3, beta_kl=1e-3)
    L_test, _ = eqx.filter_jit(loss_ratio_median)(net, bench, test)
    L_train, _ = eqx.filter_jit(loss_ratio_median)(net, bench, train)
    print(f"GNFW benchmark loss {lb[:5].mean():.3g} -> {lb[-5:].mean():.3g}; DeepSets loss {ln[:5].mean():.3g} -> {ln[-5:].mean():.3g}")
    print(f"L_opt (SYNTHETIC, {train.P.shape[0]} training / {test.P.shape[0]} held-out halos): "
          f"train {float(L_train):.3f}, held out {float(L_test):.3f} (benchmark = 1)")


if __name__ == "__main__":
    main()
