"""Command line: ``jaxcluster dataset generate`` ((θ, XOD) training sets) and ``jaxcluster dataset info``.

    jaxcluster dataset generate --simulator analytic --n 20000 --out analytic.h5 [--design latin_hypercube]
    jaxcluster dataset generate --simulator survey --n 512 --out survey.h5 --area 4 --cell-size 2 --pixel 3
    jaxcluster dataset info analytic.h5

Running the same ``generate`` command again after a kill resumes the run
(`inference.datasets`).
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main"]


def _pair(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH, got {text!r}") from None
    return lo, hi


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxcluster dataset", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="action", required=True)
    g = sub.add_parser("generate", help="simulate (θ, XOD) pairs into an HDF5 file (resumable)")
    g.add_argument("--simulator", choices=("analytic", "survey"), required=True)
    g.add_argument("--n", type=int, required=True, help="number of (θ, XOD) pairs")
    g.add_argument("--out", required=True, help="output HDF5 file")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--design", choices=("random", "latin_hypercube"), default="random")
    g.add_argument("--chunk-size", type=int, default=None,
                   help="samples per written chunk, a multiple of the device count "
                        "(default: 32 per device for analytic, 1 per device for survey)")
    g.add_argument("--x64", action="store_true", help="simulate in float64")
    g.add_argument("--no-progress", action="store_true")
    a = g.add_argument_group("analytic simulator")
    a.add_argument("--params", default="Omega_m,sigma_8,log10_M0,alpha_MT,gamma_MT,log10_L0,alpha_LT,gamma_LT",
                   help="free parameters (the rest fixed at the fiducial)")
    a.add_argument("--n-sigma", type=float, default=2.0, help="nuisance box half-width in prior σ")
    a.add_argument("--cr-cut", type=float, default=0.02, help="CR[0.5-2] cut [counts/s]")
    s = g.add_argument_group("survey simulator (θ = θ_sim, seed 001 Table 1 priors)")
    s.add_argument("--area", type=float, default=None,
                   help="survey area [deg²] (analytic default 200; survey: one lightcone, default 4)")
    s.add_argument("--n-boxes", type=int, default=12)
    s.add_argument("--cell-size", type=float, default=2.0, help="voxel side [h⁻¹ Mpc]")
    s.add_argument("--pixel", type=float, default=3.0, help="map pixel [arcmin]")
    s.add_argument("--steps", type=int, default=4, help="PM steps per box")
    s.add_argument("--threshold", type=float, default=1e-7, help="detection threshold [counts s⁻¹ arcmin⁻²]")
    s.add_argument("--cr-min", type=float, default=1e-5, help="CR[0.5–2] cut [counts s⁻¹]")
    s.add_argument("--detector", choices=("sep", "jax"), default="sep")
    s.add_argument("--omega-m", type=_pair, default=None, metavar="LOW,HIGH", help="narrower Ω_m prior")
    s.add_argument("--sigma-8", type=_pair, default=None, metavar="LOW,HIGH", help="narrower σ_8 prior")
    i = sub.add_parser("info", help="print a dataset's size and settings")
    i.add_argument("file")
    return p


def _generate(args) -> int:
    import jax

    if args.x64:
        jax.config.update("jax_enable_x64", True)  # opt-in at the entry point, never at import
    import numpy as np

    from .datasets import AnalyticSimulator, BoxPrior, SurveySimulator, generate_dataset

    n_dev = jax.device_count()
    if args.simulator == "analytic":
        from ..analytic import AnalyticModel, SurveySpec

        names = tuple(v.strip() for v in args.params.split(",") if v.strip())
        area = 200.0 if args.area is None else args.area
        model = AnalyticModel(names, survey=SurveySpec(area_deg2=area, cr_cut=args.cr_cut))
        prior = BoxPrior.analytic(names, n_sigma=args.n_sigma)
        sim, mode, chunk = AnalyticSimulator(model), "vmap", 32 * n_dev
        meta = dict(simulator="analytic", params=list(names), area_deg2=area, cr_cut=args.cr_cut,
                    n_sigma=args.n_sigma, x64=bool(args.x64))
    else:
        from ..survey import SurveyConfig

        area = 4.0 if args.area is None else args.area
        bounds = {k: v for k, v in (("Omega_m", args.omega_m), ("sigma_8", args.sigma_8)) if v is not None}
        prior = BoxPrior.theta_sim(**bounds)
        om = bounds.get("Omega_m", (prior.low[0], prior.high[0]))
        config = SurveyConfig(area_deg2=area, n_boxes=args.n_boxes, cell_size=args.cell_size,
                              pixel_arcmin=args.pixel, n_steps=args.steps, threshold=args.threshold,
                              cr_min=args.cr_min, cr_edges=np.geomspace(args.cr_min, 1e3 * args.cr_min, 9),
                              detector=args.detector, omega_m_min=om[0], omega_m_max=om[1])
        sim, mode, chunk = SurveySimulator(config), "map", n_dev
        meta = dict(simulator="survey", area_deg2=area, n_boxes=args.n_boxes, cell_size=args.cell_size,
                    pixel_arcmin=args.pixel, n_steps=args.steps, threshold=args.threshold, cr_min=args.cr_min,
                    detector=args.detector, x64=bool(args.x64))
    chunk = chunk if args.chunk_size is None else args.chunk_size
    out = generate_dataset(sim, prior, args.n, args.out, seed=args.seed, design=args.design, chunk_size=chunk,
                           batch_mode=mode, metadata=meta, progress=not args.no_progress)
    print(f"jaxcluster dataset: {args.n} (θ, XOD) pairs in {out}")
    return 0


def _info(args) -> int:
    from .datasets import load_dataset

    ds = load_dataset(args.file, 0, 0)
    m = dict(ds.metadata)
    print(json.dumps(m, indent=1, sort_keys=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``jaxcluster dataset``."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return _generate(args) if args.action == "generate" else _info(args)
    except ValueError as err:  # bad user input: one clear line
        print(f"jaxcluster dataset: error: {err}", file=sys.stderr)
        return 2
