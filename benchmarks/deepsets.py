r"""DeepSets electron-pressure model (seed 003) on held-out **synthetic** halos: L_opt against the GNFW benchmark.

Halos with M_200c ≥ `--min-mass` of a CV-like synthetic training set
(`baryons.training_sets`, fiducial θ) at the given redshifts; boxes
`--train-boxes` first boxes train, the rest are held out (so no halo of a test
box, at any redshift, is seen in training). Target: the synthetic gas model's
$P_e = n_e kT$ on the 0.39 h⁻¹ Mpc mesh, voxels within 2 R_200c.

Models (seed 003 Fig. 2): the GNFW benchmark (Battaglia et al. 2012 form
fitted to the training halos), Origin only (mis-centring + GNFW), and
Origin + Local + Stochastic (evaluated with the latent's posterior mean — the
reconstruction — and with a latent drawn from N(0, 1)). Reported:
$\mathcal L_{\rm opt}$ = median over held-out halos of the loss ratio to the
benchmark (seed 003 eq. 8; lower is better, benchmark ≡ 1), and each model's
median ratio to the published (unfitted) Battaglia profile, which the synthetic
gas model paints: fitting the GNFW parameters to the mean loss of eq. 7 serves the
few high-loss halos, so on the median halo the published profile does better
than the fitted benchmark (seed 003 §4 notes the same non-commutation).

The halo samples are cached in `--cache` (an .npz; a rerun reuses it) and
each trained model is saved there too, so a killed run resumes.

Writes `benchmarks/results/deepsets.json` (labelled synthetic).

Usage: `python benchmarks/deepsets.py --data /work/synth2/cv [--steps 600] [--quick]`
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxcluster.baryons.training_sets import stored_halos
from jaxcluster.cosmology import Cosmology
from jaxcluster.fields.deepsets import (
    HaloSample,
    PressureDeepSets,
    fit_pressure_model,
    halo_samples,
    loss_ratio_median,
)
from jaxcluster.io.runs import load_run
from jaxcluster.nbody.ic import velocity_from_momentum

RESULTS = Path(__file__).parent / "results"


def box_samples(path: Path, min_mass: float, seed: int, **kw) -> HaloSample | None:
    run = load_run(path)
    halos = stored_halos(run.fields)
    keep = np.flatnonzero(np.asarray(halos.valid) & (np.asarray(halos.M200c) >= min_mass))
    if keep.size == 0:
        return None
    cosmo = Cosmology.from_theta(run.theta)
    a = 1.0 / (1.0 + run.z)
    pos = np.asarray(run.pos, np.float64)
    vel = np.asarray(velocity_from_momentum(jnp.asarray(run.p), a), np.float64)
    pe = np.asarray(run.fields["n_e_cm3"], np.float64) * (1 + run.z) ** 3 * np.asarray(run.fields["T_keV"], np.float64)
    return halo_samples(pos, vel, pe, np.asarray(halos.pos)[keep], np.asarray(halos.vel)[keep],
                        np.asarray(halos.M200c, np.float64)[keep], np.asarray(halos.R200c, np.float64)[keep],
                        float(run.z), float(run.config.box_size[0]), cosmo, seed=seed, **kw)


def load_sets(args) -> tuple[HaloSample, HaloSample, dict]:
    cache = Path(args.cache) / f"samples_{'quick' if args.quick else 'full'}.npz"
    if cache.exists():
        d = np.load(cache)
        split = lambda p: HaloSample(**{k[len(p):]: jnp.asarray(d[k]) for k in d.files if k.startswith(p)})
        return split("train_"), split("test_"), json.loads(str(d["meta"]))
    boxes = sorted(Path(args.data).glob("*_*"), key=lambda p: (len(p.name), p.name))
    boxes = [b for b in boxes if b.is_dir()][: args.boxes]
    sets = {"train": [], "test": []}
    for i, b in enumerate(boxes):
        for z in args.redshifts:
            s = box_samples(b / f"z{z:.3f}.h5", args.min_mass, seed=i, n_targets=args.targets)
            if s is not None:
                sets["train" if i < args.train_boxes else "test"].append(s)
    cat = {k: jax.tree.map(lambda *x: jnp.concatenate(x), *v) for k, v in sets.items()}
    meta = {"boxes": [b.name for b in boxes], "train_boxes": [b.name for b in boxes[: args.train_boxes]],
            "redshifts": list(args.redshifts), "min_mass": args.min_mass}
    cache.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"{k}_{f}": np.asarray(getattr(v, f)) for k, v in cat.items() for f in HaloSample.__dataclass_fields__}
    np.savez(cache, meta=json.dumps(meta), **arrays)
    return cat["train"], cat["test"], meta


# The models before seed 003's MLP details and augmentations (no layer norm, no dropout, no weight decay, no
# vector rotations): built and trained like this, their cached files still load.
LEGACY = dict(layer_norm=False, dropout=())
LEGACY_FIT = dict(rotation_deg=0.0, weight_decay=0.0)
TRAIN_SECONDS = {}


def trained(name, model, train, args, key, steps=None, **kw):
    # v2: the models carry the scalar normalisation (s_mean, s_std); older files do not deserialise
    steps = args.steps if steps is None else steps
    path = Path(args.cache) / f"{name}_{'quick' if args.quick else 'full'}_{steps}_v2.eqx"
    if path.exists():
        return eqx.tree_deserialise_leaves(path, model), None
    t0 = time.perf_counter()
    model, losses = fit_pressure_model(model, train, key=key, steps=steps, **kw)
    TRAIN_SECONDS[name] = time.perf_counter() - t0
    print(f"{name}: {TRAIN_SECONDS[name]:.0f} s, loss {losses[:10].mean():.4g} -> {losses[-20:].mean():.4g}",
          flush=True)
    eqx.tree_serialise_leaves(path, model)
    return model, losses


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="/work/synth2/cv")
    ap.add_argument("--redshifts", type=float, nargs="+", default=[0.1, 0.21, 0.33, 0.47])
    ap.add_argument("--boxes", type=int, default=8)
    ap.add_argument("--train-boxes", type=int, default=6)
    ap.add_argument("--min-mass", type=float, default=2e13)
    ap.add_argument("--targets", type=int, default=256)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--cache", default="/tmp/jaxcluster_deepsets")
    ap.add_argument("--noise-n", type=float, default=10.0, help="seed 003 eq. (6) N for the cluster scalars")
    ap.add_argument("--noise-n-mass", type=float, default=3.0, help="eq. (6) N for log M (seed 003: lower)")
    ap.add_argument("--rotation-deg", type=float, default=2.0, help="seed 003 e_alpha rotation noise [deg]")
    ap.add_argument("--weight-decay", type=float, default=1e-2, help="AdamW decay of Aggregator, Origin weights")
    ap.add_argument("--seed003-steps", type=int, default=None, help="steps of the seed003 model (default --steps)")
    ap.add_argument("--quick", action="store_true", help="2 boxes, one redshift, 60 steps (smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.boxes, args.train_boxes, args.redshifts, args.steps = 2, 1, [0.1], 60
    t0 = time.perf_counter()
    train, test, meta = load_sets(args)
    t_data = time.perf_counter() - t0
    print(f"{train.P.shape[0]} training halos, {test.P.shape[0]} held out ({t_data:.0f} s)", flush=True)
    key = jax.random.key(0)
    kb, ko, kf, ktr1, ktr2, ktr3, kev = jax.random.split(key, 7)
    n_shell = int(train.shell_residual.shape[1])
    published = PressureDeepSets(n_shell, origin=False, local=False, stochastic=False, key=kb)
    bench, _ = trained("gnfw", published, train, args, ktr1, learning_rate=1e-2, beta_kl=0.0, **LEGACY_FIT)
    origin = PressureDeepSets(n_shell, origin=True, local=False, stochastic=False, key=ko, **LEGACY)
    origin = eqx.tree_at(lambda m: m.gnfw, origin, bench.gnfw)
    origin, _ = trained("origin", origin, train, args, ktr2, beta_kl=0.0, **LEGACY_FIT)
    full = PressureDeepSets(n_shell, key=kf, **LEGACY)
    full = eqx.tree_at(lambda m: m.gnfw, full, bench.gnfw)
    full, losses = trained("full", full, train, args, ktr3, beta_kl=1e-3, **LEGACY_FIT)
    # the same model with seed 003's input treatment: scalars normalised over the training halos, eq. (6) noise
    full_eq6 = PressureDeepSets(n_shell, key=kf, **LEGACY).with_scalar_normalisation(train)
    full_eq6 = eqx.tree_at(lambda m: m.gnfw, full_eq6, bench.gnfw)
    full_eq6, _ = trained("full_eq6", full_eq6, train, args, ktr3, beta_kl=1e-3, n_noise=args.noise_n,
                          n_noise_mass=args.noise_n_mass, **LEGACY_FIT)
    # and with seed 003's MLP details and the remaining augmentation (the library defaults): layer norm in every
    # MLP, Aggregator dropout (30 %, 5 %), AdamW weight decay on Aggregator and Origin, e_alpha rotations ~ 2 deg
    seed003_steps = args.steps if args.seed003_steps is None else args.seed003_steps
    s3_name = f"full_seed003_rot{args.rotation_deg:g}_wd{args.weight_decay:g}"
    full_s3 = PressureDeepSets(n_shell, key=kf).with_scalar_normalisation(train)
    full_s3 = eqx.tree_at(lambda m: m.gnfw, full_s3, bench.gnfw)
    full_s3, _ = trained(s3_name, full_s3, train, args,
                         ktr3, steps=seed003_steps, beta_kl=1e-3, n_noise=args.noise_n, n_noise_mass=args.noise_n_mass,
                         rotation_deg=args.rotation_deg, weight_decay=args.weight_decay)
    ev = eqx.filter_jit(loss_ratio_median)
    res = {}
    for name, model, latent, k in (("published_battaglia12", published, "posterior", None),
                                   ("origin", origin, "posterior", None),
                                   ("origin_local_stochastic_reconstruction", full, "posterior", None),
                                   ("origin_local_stochastic_prior_sample", full, "prior", kev),
                                   ("origin_local_stochastic_eq6_reconstruction", full_eq6, "posterior", None),
                                   ("origin_local_stochastic_eq6_prior_sample", full_eq6, "prior", kev),
                                   ("origin_local_stochastic_seed003_reconstruction", full_s3, "posterior", None),
                                   ("origin_local_stochastic_seed003_prior_sample", full_s3, "prior", kev)):
        med, ratios = ev(model, bench, test, latent=latent, key=k)
        tr_med, _ = ev(model, bench, train, latent=latent, key=k)
        pub_med, _ = ev(model, published, test, latent=latent, key=k)
        res[name] = {"L_opt_test": float(med), "L_opt_train": float(tr_med),
                     "ratio_quartiles_test": [float(q) for q in np.quantile(np.asarray(ratios), [0.25, 0.5, 0.75])],
                     "median_ratio_to_published_battaglia12_test": float(pub_med)}
        print(name, res[name], flush=True)
    out = {
        "synthetic": True,
        "what": "seed 003 L_opt = median over held-out halos of L_recon(model)/L_recon(GNFW fitted to training halos); "
                "targets: synthetic gas model P_e = n_e kT on 0.39 h^-1 Mpc voxels within 2 R200c",
        "L_opt": res,
        "n_train_halos": int(train.P.shape[0]),
        "n_test_halos": int(test.P.shape[0]),
        "steps": args.steps,
        "eq6": {"what": "the *_eq6 models: cluster scalars normalised to zero mean, unit variance over the training "
                        "halos and seed 003 eq. (6) noise delta = N r Delta_sgn(r) added to them in training",
                "N": args.noise_n, "N_logM": args.noise_n_mass},
        "seed003": {"what": "the *_seed003 models: as *_eq6, plus layer normalisation in every MLP, Aggregator dropout "
                            "(30 % after the first hidden layer, 5 % after the others; evaluated in inference mode), "
                            "AdamW weight decay of the Aggregator and Origin weight matrices, and rotations of the "
                            "cluster vectors e_alpha by angles ~ N(0, rotation_deg^2) about isotropic axes; same "
                            "width/depth, same learning rate for every module (seed 003 gives no per-module values)",
                    "rotation_deg": args.rotation_deg, "weight_decay": args.weight_decay, "dropout": [0.3, 0.05],
                    "steps": seed003_steps,
                    "n_shell": n_shell,
                    "n_shell_note": "the cached samples' shell count, kept so the older models' files and the "
                                    "comparison stay valid (seed 003 and the library default: 32 linear shells to "
                                    "2 R200; on these samples, median over halos, 1/4 of 32 shells hold no target vs "
                                    "1/8 of 8; the cached 8-shell residuals were built before shell_means and hold 0 "
                                    "in empty shells)",
                    "train_seconds": TRAIN_SECONDS.get(s3_name)},
        "data": meta,
        "data_seconds": t_data,
        "total_seconds": time.perf_counter() - t0,
        "quick": args.quick,
        "device": str(jax.devices()[0]),
        "platform": platform.platform(),
        "date": datetime.date.today().isoformat(),
    }
    RESULTS.mkdir(exist_ok=True)
    name = "deepsets_quick.json" if args.quick else "deepsets.json"
    (RESULTS / name).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS / name}")


if __name__ == "__main__":
    main()
