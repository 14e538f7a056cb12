r"""What limits the eLDL's cluster figures on the synthetic truth: ceilings of simpler painters.

On the held-out CV boxes at z = 0.21 (as `benchmarks/eldl.py`), the
per-cluster [0.5–2] keV count rates of each candidate painter against the
stored truth, as the deviation correlation and the per-cluster error of
`jaxcluster.baryons.validation.cluster_deviations`:

* ``truth_without_random_deviates``: the synthetic gas model repainted on
  the same dark matter and halos with the same key, its random per-halo
  deviates (core, gas fraction, temperature) switched off; what is left is
  set by the dark matter, so this bounds what any painter of the dark
  matter can reach on this truth (``truth_repainted`` checks the repaint
  reproduces the stored truth);
* ``truth_one_level_sampling``: the truth repainted with 2³ sample points in
  every cell (`gas_core_subsample = 2`, the sets made before the two-level
  sampling) against the stored truth: how far the under-sampled cores moved
  each cluster's count rate;
* ``n_e_smoothed_power_law``: n_e = ReLU(b₁ (G_σ ∗ (1+δ))^μ − b₀) with the *true* T,
  σ the Gaussian smoothing [h⁻¹ Mpc]: the best local power law of the
  dark matter (`train.fit_activation`, as the warm start, on the training
  slabs of the first two CV boxes);
* ``n_e_ldl_scan``: the n_e LDL with both displacement layers at one (γ, α),
  Ô = 1/k², fd4, the activation refitted on the displaced density; true T;
* ``T_power_law``: the T power law with the *true* n_e.

Usage: `python benchmarks/eldl_ceiling.py --cv DIR` (about 10 minutes on 2
CPU cores); writes `benchmarks/results/eldl_ceiling.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eldl as bench  # noqa: E402  (the held-out boxes and count rates of the eLDL benchmark)

from jaxcluster.baryons.ldl import LDL, ActivationLayer, BSplineFilter, DisplacementLayer, paint_one_plus_delta  # noqa: E402
from jaxcluster.baryons.synthetic import synthetic_gas  # noqa: E402
from jaxcluster.baryons.train import fit_activation, load_training_boxes  # noqa: E402
from jaxcluster.baryons.training_sets import stored_spec  # noqa: E402
from jaxcluster.baryons.validation import cluster_deviations  # noqa: E402
from jaxcluster.nbody.mesh import rfft_wavevectors  # noqa: E402

Z = 0.21
SIGMAS = (0.0, 0.15, 0.25, 0.39, 0.6)
LDL_SCAN = [(1.0, a) for a in (0.0, -0.003, 0.003, 0.01)] + [(0.5, a) for a in (-0.003, 0.003, 0.01, 0.03)] + \
    [(0.25, a) for a in (0.03, 0.1)] + [(2.0, a) for a in (-3e-4, 3e-4)]


def _figures(M, cr_true, cr_pred) -> dict:
    st, _, _ = cluster_deviations(M, cr_true, cr_pred)
    return dict(dev_corr=st.dev_corr, err_dex_std=st.err_dex_std, err_dex_mean=st.err_dex_mean, n=st.n)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cv", type=Path, required=True)
    ap.add_argument("--held-out", default="4,5,6,7", help="CV sample numbers to evaluate on")
    args = ap.parse_args(argv)
    spec, gas_model = stored_spec(args.cv)
    ids = [int(i) for i in args.held_out.split(",")]
    held = [bench.Box(args.cv / f"CV_{i}" / f"z{Z:.3f}.h5") for i in ids]
    train = load_training_boxes(args.cv, Z, 2)
    truth = [b.cluster_cr(b.count_rate(b.n_e, b.T))[b.clusters] for b in held]
    M = np.concatenate([np.asarray(b.halos.M200c)[b.clusters] for b in held])
    ct = np.concatenate(truth)
    out: dict = {}

    # The truth repainted; without its random deviates; and sampled as the sets before the two-level core sampling.
    z_index = list(spec.redshifts).index(Z)
    no_random = dataclasses.replace(gas_model, sigma_core_random=0.0, sigma_fgas=0.0, sigma_T=0.0)
    for name, model, core in (("truth_repainted", gas_model, spec.gas_core_subsample),
                              ("truth_without_random_deviates", no_random, spec.gas_core_subsample),
                              ("truth_one_level_sampling", gas_model, 2)):
        cp = []
        for i, b in zip(ids, held):
            key = jax.random.split(jax.random.split(jax.random.key(spec.ic_seed(i)))[1], len(spec.redshifts))[z_index]
            gas = jax.jit(lambda p, h, k, m=model, b=b, c=core: synthetic_gas(
                p, h, b.theta, jnp.float32(b.z), k, b.box, b.shape, m, cosmo=b.cosmo, core_subsample=c))(b.pos, b.halos, key)
            cp.append(b.cluster_cr(b.count_rate(np.asarray(gas.n_e), np.asarray(gas.T_keV)))[b.clusters])
        out[name] = _figures(M, ct, np.concatenate(cp))
        print(name, out[name], flush=True)

    # Local power laws of the (smoothed) CIC density, true T.
    shape = held[0].shape
    cell = held[0].box[0] / shape[0]
    kx, ky, kz = rfft_wavevectors(shape, dtype=jnp.float32)
    k2 = (kx**2 + ky**2 + kz**2) / cell**2
    smooth = jax.jit(lambda f, s: jnp.fft.irfftn(jnp.fft.rfftn(f) * jnp.exp(-0.5 * s**2 * k2), s=shape))
    opd_train = [paint_one_plus_delta(train.pos[i], train.box_size, shape) for i in range(train.n_box)]
    opd_held = [paint_one_plus_delta(b.pos, b.box, shape) for b in held]
    rows = []
    for sigma in SIGMAS:
        dens = lambda d: np.asarray(smooth(d, jnp.float32(sigma)), np.float64)  # noqa: E731
        act = fit_activation([dens(d) for d in opd_train], train, "n_e")
        cp = [b.cluster_cr(b.count_rate(np.asarray(act(jnp.asarray(dens(d)))) * bench.N_E_MEAN, b.T))[b.clusters]
              for b, d in zip(held, opd_held)]
        rows.append(dict(sigma=sigma, mu=float(act.mu), **_figures(M, ct, np.concatenate(cp))))
        print(rows[-1], flush=True)
    out["n_e_smoothed_power_law"] = rows

    # The n_e LDL's displacement layers, scanned; and the T power law with the true n_e.
    rows = []
    for field, scan in (("n_e", LDL_SCAN), ("T", [(1.0, 0.0)])):
        for gamma, alpha in scan:
            layers = tuple(DisplacementLayer(gamma=gamma, alpha=alpha, filter=BSplineFilter(), gradient="fd4")
                           for _ in range(2))
            moved = jax.jit(lambda x, box, shp, l=layers: LDL(l, ActivationLayer())(x, box, shp), static_argnums=(1, 2))
            act = fit_activation((moved(train.pos[i], train.box_size, shape) for i in range(train.n_box)), train, field)
            cp = []
            for b in held:
                f = np.asarray(act(moved(b.pos, b.box, shape)), np.float64)
                cr = b.count_rate(f * bench.N_E_MEAN, b.T) if field == "n_e" else b.count_rate(b.n_e, f)
                cp.append(b.cluster_cr(cr)[b.clusters])
            rows.append(dict(field=field, gamma=gamma, alpha=alpha, mu=float(act.mu), **_figures(M, ct, np.concatenate(cp))))
            print(rows[-1], flush=True)
    out["n_e_ldl_scan"] = [r for r in rows if r["field"] == "n_e"]
    out["T_power_law"] = [r for r in rows if r["field"] == "T"][0]

    result = dict(benchmark="eldl_ceiling", held_out=[b.name for b in held], n_clusters=int(M.size), z=Z, **out,
                  targets=dict(cluster_dev_corr_min=0.88, cluster_cr_err_dex_max=0.12),
                  jax_version=jax.__version__, python=platform.python_version(),
                  date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    path = bench.ROOT / "results" / "eldl_ceiling.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
