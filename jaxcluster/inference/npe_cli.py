"""Command line: ``jaxcluster npe train | infer | validate`` (neural posteriors of θ given an XOD).

    jaxcluster npe train DATASET --out DIR [--summary compressor|sqrt] [--estimator mdn|flow] [--members M]
    jaxcluster npe infer DIR --xod FILE [--index I]     # xod.npz of `simulate`, or sample I of a dataset
    jaxcluster npe validate DIR --dataset TEST.h5       # calibration on another test set

``train`` reads a dataset of ``jaxcluster dataset generate``, trains the
summary (ResNet compressor or √counts) and the posterior (MDN or spline-flow
ensemble) with progress bars and checkpoints (a killed run, run again,
resumes), and writes training curves and a calibration report (SBC ranks,
HPD coverage, TARP) on held-out pairs (`jaxcluster.inference.npe_run`).
``infer`` checks that the observed XOD has the training set's bins and
writes posterior samples (``posterior.h5``), a summary table
(``posterior_summary.ecsv``: mean, 68 and 95 % intervals) and a corner plot
with the truth when the file knows it. ``validate`` writes the calibration
report of a trained posterior on another dataset.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def _say(text: str) -> None:
    print(f"jaxcluster npe: {text}", flush=True)


def _parser() -> argparse.ArgumentParser:
    from .npe_run import SUMMARIES, NPESettings

    d = NPESettings()
    from ..clihelp import HelpFormatter as fmt
    from ..clihelp import add_memory_check, seed_type

    p = argparse.ArgumentParser(prog="jaxcluster npe", description=__doc__.splitlines()[0], formatter_class=fmt)
    sub = p.add_subparsers(dest="action", required=True)

    t = sub.add_parser("train", help="train a compressor and posterior on a dataset (resumable)", formatter_class=fmt)
    t.add_argument("dataset", type=Path, help="merged HDF5 file of `jaxcluster dataset generate`")
    t.add_argument("--out", type=Path, required=True, help="output folder (a rerun resumes it)")
    t.add_argument("--summary", choices=SUMMARIES, default=d.summary,
                   help="XOD summary: the ResNet compressor (seed 001) or √counts")
    t.add_argument("--estimator", choices=("mdn", "flow"), default=d.estimator,
                   help="posterior: mixture density network or rational-quadratic spline flow")
    t.add_argument("--members", type=int, default=d.n_members, help="ensemble size of the posterior")
    t.add_argument("--epochs", type=int, default=d.epochs, help="maximum epochs of the posterior")
    t.add_argument("--patience", type=int, default=d.patience, help="epochs without a better validation loss before stopping")
    t.add_argument("--batch-size", type=int, default=d.batch_size, help="pairs per step of the posterior")
    t.add_argument("--learning-rate", type=float, default=d.learning_rate, help="Adam step of the posterior")
    t.add_argument("--compressor-epochs", type=int, default=d.compressor_epochs, help="maximum epochs of the compressor")
    t.add_argument("--compressor-width", type=int, default=d.compressor_width, help="ResNet channels")
    t.add_argument("--compressor-hidden", type=int, default=d.compressor_hidden, help="compressor MLP width")
    t.add_argument("--compressor-blocks", type=int, default=d.compressor_blocks, help="ResNet blocks")
    t.add_argument("--compressor-batch-size", type=int, default=d.compressor_batch_size, help="XODs per compressor step")
    t.add_argument("--test-fraction", type=float, default=d.test_fraction,
                   help="share of the dataset held out for the calibration report")
    t.add_argument("--draws", type=int, default=d.n_draws, help="posterior draws per test XOD in the calibration")
    t.add_argument("--seed", type=seed_type, default=d.seed, help="seed of the split, initialisation and batches")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_memory_check(t)

    i = sub.add_parser("infer", help="posterior of θ given an observed XOD file", formatter_class=fmt)
    i.add_argument("trained", type=Path, help="folder written by `npe train`")
    i.add_argument("--xod", type=Path, required=True, help="XOD file: xod.npz of `simulate`, or a dataset (HDF5)")
    i.add_argument("--index", type=int, default=None, help="which XOD of a dataset (required for one)")
    i.add_argument("--samples", type=int, default=10000, help="posterior draws")
    i.add_argument("--seed", type=seed_type, default=0, help="seed of the draws")
    i.add_argument("--out", type=Path, default=None, help="output folder (default TRAINED/infer_<xod file>[_<index>])")
    i.add_argument("--no-figure", action="store_true", help="no corner plot")
    i.add_argument("--compare", type=Path, nargs="+", default=None, metavar="POSTERIOR_H5",
                   help="other posteriors of the same XOD to draw in the corner plot (posterior.h5 of hmc --xod)")

    v = sub.add_parser("validate", help="calibration of a trained posterior on a test dataset", formatter_class=fmt)
    v.add_argument("trained", type=Path, help="folder written by `npe train`")
    v.add_argument("--dataset", type=Path, required=True, help="test dataset (HDF5, same parameters and bins)")
    v.add_argument("--draws", type=int, default=500, help="posterior draws per test XOD")
    v.add_argument("--max", type=int, default=None, help="use only the first MAX XODs")
    v.add_argument("--seed", type=seed_type, default=0, help="seed of the draws")
    v.add_argument("--out", type=Path, default=None, help="output folder (default TRAINED/validate_<dataset file>)")
    return p


def _train(args) -> int:
    from .npe_run import NPESettings, train_npe

    settings = NPESettings(summary=args.summary, estimator=args.estimator, n_members=args.members, epochs=args.epochs,
                           patience=args.patience, batch_size=args.batch_size, learning_rate=args.learning_rate,
                           compressor_epochs=args.compressor_epochs, compressor_width=args.compressor_width,
                           compressor_hidden=args.compressor_hidden, compressor_blocks=args.compressor_blocks,
                           compressor_batch_size=args.compressor_batch_size,
                           test_fraction=args.test_fraction, n_draws=args.draws, seed=args.seed)
    train_npe(args.dataset, args.out, settings, progress=not args.no_progress, say=_say,
              memory_check=not args.no_memory_check)
    import json

    cal = json.loads((args.out / "npe.json").read_text()).get("calibration")
    if cal:
        _say(f"calibration on {cal['n_test']} test XODs: SBC rank KS p = "
             + ", ".join(f"{k} {v:.2f}" for k, v in cal["sbc_rank_ks_pvalue"].items())
             + f"; HPD coverage error ≤ {cal['hpd_max_abs_coverage_error']:.3f}; "
             f"TARP max |ECP − α| = {cal['tarp_max_abs_deviation']:.3f}")
    _say(f"wrote {args.out}/ (npe.json, posterior, training.png, ranks.png, coverage.png)")
    return 0


def _truth(observed, names):
    """The truth vector in the posterior's parameter order, when the file has every parameter."""
    if observed.truth is None or not observed.names:
        return None
    known = dict(zip(observed.names, observed.truth.tolist()))
    import numpy as np

    return None if any(n not in known for n in names) else np.array([known[n] for n in names])


def _training_area(manifest) -> float | None:
    """The survey area of the training XODs [deg²] (None if the dataset did not record it)."""
    area = manifest["dataset"].get("area_deg2")
    return None if area is None else float(area)


def _infer(args) -> int:
    import jax
    import numpy as np

    from ..io.provenance import provenance
    from .npe_run import load_npe
    from .observed import check_binning, read_xod
    from .posterior_files import read_posterior, write_posterior

    if args.samples < 2:
        raise ValueError(f"--samples {args.samples} is outside its allowed range: an integer >= 2")
    trained, manifest = load_npe(args.trained)
    observed = read_xod(args.xod, args.index)
    check_binning(observed, trained.xod_shape, manifest["dataset"].get("xod_edges"),
                  what=f"the posterior trained on {manifest['dataset']['path']}")
    area = _training_area(manifest)
    if observed.area_deg2 is not None and area is not None and abs(observed.area_deg2 - area) > 1e-6 * area:
        raise ValueError(f"the XOD of {observed.source} covers {observed.area_deg2:g} deg², the training XODs "
                         f"{area:g} deg²: counts scale with the area, so the posterior does not apply "
                         "(train on a dataset of the same area)")
    if observed.edges is None or manifest["dataset"].get("xod_edges") is None:
        _say("warning: bin edges unknown on one side; only the XOD shape was checked")
    names = trained.names
    truth = _truth(observed, names)
    _say(f"{args.samples} draws of {', '.join(names)} given {observed.source} "
         f"({observed.xod.sum():.0f} clusters in the XOD) …")
    samples = np.asarray(trained.sample(jax.random.key(args.seed), observed.xod, args.samples), np.float64)
    stem = args.xod.stem + ("" if args.index is None else f"_{args.index}")
    out = args.out if args.out is not None else args.trained / f"infer_{stem}"
    method = f"npe ({manifest['settings']['estimator']}, {manifest['settings']['summary']})"
    prov = provenance("npe infer", seed=args.seed, settings=dict(trained=str(args.trained), xod=observed.source,
                                                                 samples=args.samples))
    compare = {}
    for path in args.compare or ():
        other, other_names, attrs = read_posterior(path)
        if tuple(other_names) != tuple(names):
            raise ValueError(f"--compare {path} has parameters {other_names}, this posterior {names}")
        compare[f"{attrs.get('method', path.parent.name)}"] = other
    paths = write_posterior(out, samples, names, method=method, provenance=prov, truth=truth,
                            figure=not args.no_figure, extra=dict(xod_source=observed.source), compare=compare)
    lo, hi = np.percentile(samples, [16, 84], axis=0)
    for j, n in enumerate(names):
        t = "" if truth is None else f" (truth {float(truth[j]):.4g})"
        _say(f"  {n} = {samples[:, j].mean():.4g}, 68 % in [{lo[j]:.4g}, {hi[j]:.4g}]{t}")
    _say(f"wrote {', '.join(p.name for p in paths.values())} to {out}/")
    return 0


def _validate(args) -> int:
    import jax
    import numpy as np

    from .datasets import load_dataset
    from .npe_run import calibration, load_npe, write_calibration

    trained, manifest = load_npe(args.trained)
    data = load_dataset(args.dataset, 0, args.max)
    names = tuple(str(v) for v in data.metadata.get("param_names", ()))
    if names != trained.names:
        raise ValueError(f"--dataset {args.dataset} has parameters {names}, the posterior {trained.names}")
    if tuple(data.xod.shape[1:]) != trained.xod_shape:
        raise ValueError(f"--dataset {args.dataset} has XODs of shape {data.xod.shape[1:]}, "
                         f"the posterior expects {trained.xod_shape}")
    edges = data.metadata.get("xod_edges")
    if edges is not None and manifest["dataset"].get("xod_edges") is not None:
        for a in ("cr", "hr", "z"):
            if not np.allclose(edges[a], manifest["dataset"]["xod_edges"][a], rtol=1e-6, atol=0.0):
                raise ValueError(f"--dataset {args.dataset}: its {a} bin edges differ from the training set's")
    if args.draws < 2:
        raise ValueError(f"--draws {args.draws} is outside its allowed range: an integer >= 2")
    _say(f"calibration on {len(data.theta)} XODs of {args.dataset} × {args.draws} draws …")
    report = calibration(trained, data.theta, data.xod, key=jax.random.key(args.seed), n_draws=args.draws,
                         lo=np.asarray(manifest["dataset"]["prior_low"]),
                         hi=np.asarray(manifest["dataset"]["prior_high"]))
    out = args.out if args.out is not None else args.trained / f"validate_{args.dataset.stem}"
    paths = write_calibration(out, report, trained.names)
    ks = np.asarray(report["rank_ks_pvalue"])
    _say("SBC rank KS p = " + ", ".join(f"{n} {p:.2f}" for n, p in zip(trained.names, ks))
         + f"; TARP max |ECP − α| = {float(report['tarp']['max_abs_deviation']):.3f}")
    _say(f"wrote {', '.join(p.name for p in paths.values())} to {out}/")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return {"train": _train, "infer": _infer, "validate": _validate}[args.action](args)
    except ValueError as err:  # bad input: one line naming it, no traceback
        print(f"jaxcluster npe: error: {err}", file=sys.stderr)
        return 2
