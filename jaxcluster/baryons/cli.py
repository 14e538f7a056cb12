"""``jaxcluster data generate {cv,lh} --out DIR``: write a SYNTHETIC CAMELS-like training set;
``jaxcluster data convert-camels SIM... --params FILE --out DIR``: the same layout from real CAMELS.

The data are synthetic stand-ins for CAMELS, not CAMELS: PM dark matter
(2LPT + FastPM from z = 6), spherical-overdensity halos and a parametric gas
model painted around them (`jaxcluster.baryons.training_sets`). Every file
carries ``"synthetic": true`` in its metadata.

x64 is switched on here, at the entry point (ARCHITECTURE §2), never at import.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["main"]

_DESCRIPTION = (
    "Generate a SYNTHETIC CAMELS-like training set: these are stand-ins for CAMELS, not CAMELS data. "
    "Each sample is a 2LPT + FastPM dark-matter run from z = 6 saved at the eight Table 1 redshifts "
    "(0.1 ... 0.54); at each one spherical-overdensity halos are found and a synthetic gas model paints "
    "n_e and T. Writes DIR/params.txt (CAMELS layout), DIR/spec.json and DIR/<CV|LH>_<i>/z<z>.h5 "
    "(`jaxcluster.io.load_run`); an interrupted run resumes where it stopped when re-run with the same options."
)
_KINDS = {
    "cv": "CV-like: fiducial θ_sim, independent seeds; defaults 50 h⁻¹ Mpc, 128³, 8 samples",
    "lh": "LH-like: Latin hypercube over the θ_sim priors; defaults 25 h⁻¹ Mpc, 64³, 1000 samples",
}


class _UsageError(Exception):
    """Bad command-line input: reported as one ``jaxcluster: error: ...`` line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump; main() turns it into exit code 2
        raise _UsageError(f"{self.prog.removeprefix('jaxcluster ')}: {message}")


def _parser() -> argparse.ArgumentParser:
    from ..clihelp import HelpFormatter, seed_type

    parser = _Parser(prog="jaxcluster data", description=_DESCRIPTION, formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True, parser_class=_Parser, metavar="{generate,convert-camels}")
    gen = sub.add_parser("generate", help="write a synthetic CV- or LH-like training set (stand-ins for CAMELS)",
                         description=_DESCRIPTION, formatter_class=HelpFormatter)
    gen.add_argument("kind", choices=tuple(_KINDS), help="; ".join(f"{k}: {v}" for k, v in _KINDS.items()))
    gen.add_argument("--out", type=Path, required=True, help="output directory (created; re-use it to resume)")
    gen.add_argument("--n", type=int, default=None, help="number of samples (default: cv 8, lh 1000)")
    gen.add_argument("--seed", type=seed_type, default=None, help="master seed (default: 0)")
    gen.add_argument("--steps", type=int, default=None, help="FastPM steps from z = 6 to z = 0.1 (default: 20)")
    gen.add_argument("--n-side", type=int, default=None,
                     help="particles per side = voxels per side of the fields (default: cv 128, lh 64)")
    gen.add_argument("--box", type=float, default=None, help="box side [h⁻¹ Mpc] (default: cv 50, lh 25)")
    gen.add_argument("--gas-core-subsample", type=int, default=None,
                     help="profile samples per cell and axis in the 3³ cells around each halo centre (default: 8; "
                     "2 resumes sets made before this option existed)")
    gen.add_argument("--no-progress", action="store_true", help="no progress bar")
    conv = sub.add_parser(
        "convert-camels", help="turn real CAMELS simulations into an eLDL training set",
        description="Voxelise the gas of CAMELS/IllustrisTNG snapshots at the chosen redshifts and re-simulate "
        "their dark matter with the PM from the highest-redshift snapshot (z = 6), writing the layout "
        "`jaxcluster eldl train` reads. Rerun to resume.", formatter_class=HelpFormatter)
    conv.add_argument("sims", type=Path, nargs="+", help="simulation directories (e.g. IllustrisTNG/LH_0), snap_*.hdf5 inside")
    conv.add_argument("--params", type=Path, required=True, help="CAMELS parameter table (CosmoAstroSeed_params.txt layout)")
    conv.add_argument("--out", type=Path, required=True, help="output directory (created; re-use it to resume)")
    conv.add_argument("--redshifts", type=float, nargs="+", default=None, help="redshifts of the snapshots to convert (default: the eight of seed 001 Table 1)")
    conv.add_argument("--steps", type=int, default=20, help="PM steps from the first snapshot")
    conv.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _check(args) -> dict:
    """The spec overrides the user gave, checked; a bad one raises `_UsageError` naming its option."""
    rules = {  # option: (attribute, spec field, test, requirement)
        "--n": ("n", "n_samples", lambda v: v >= 1, "must be >= 1"),
        "--seed": ("seed", "seed", lambda v: v >= 0, "must be >= 0"),
        "--steps": ("steps", "n_steps", lambda v: v >= 1, "must be >= 1"),
        "--n-side": ("n_side", "n_side", lambda v: v >= 8, "must be >= 8"),
        "--box": ("box", "box_size", lambda v: v > 0 and v != float("inf"), "must be a finite number > 0 [h⁻¹ Mpc]"),
        "--gas-core-subsample": ("gas_core_subsample", "gas_core_subsample", lambda v: v >= 1, "must be >= 1"),
    }
    overrides = {}
    for option, (attr, field, ok, need) in rules.items():
        value = getattr(args, attr)
        if value is None:
            continue
        if not ok(value):
            raise _UsageError(f"data generate: {option} = {value} {need}")
        overrides[field] = value
    return overrides


def _generate(args) -> int:
    overrides = _check(args)
    import jax

    jax.config.update("jax_enable_x64", True)  # opt-in at the entry point, never at import
    from .synthetic import SyntheticGasModel
    from .training_sets import _spec_json, cv_spec, generate_training_set, lh_spec

    make = cv_spec if args.kind == "cv" else lh_spec
    n = overrides.pop("n_samples", None)
    try:
        spec = make(**overrides) if n is None else make(n, **overrides)
    except ValueError as err:  # combinations the options' own checks do not see
        raise _UsageError(f"data generate: {err}") from None
    model = SyntheticGasModel()
    # Input errors are caught here, before any work; a ValueError from inside the
    # pipeline is a bug and keeps its traceback.
    if args.out.exists() and not args.out.is_dir():
        raise _UsageError(f"data generate: --out {args.out} exists and is not a directory")
    stamp = args.out / "spec.json"
    if stamp.is_file() and stamp.read_text() != _spec_json(spec, model):
        raise _UsageError(f"data generate: --out {args.out} holds a training set made with other options "
                          f"(see {stamp}); re-run with those options to resume, or use a new --out")
    t0 = time.perf_counter()
    written = generate_training_set(args.out, spec, model, progress=not args.no_progress)
    wall = time.perf_counter() - t0
    skipped = spec.n_samples - len(written)
    print(f"jaxcluster data generate: wrote {len(written)} synthetic {spec.kind.upper()} sample(s) "
          f"({spec.n_side}³, {spec.box_size:g} h⁻¹ Mpc, {len(spec.redshifts)} redshifts each) to {args.out}/ "
          f"in {wall:.1f} s" + (f"; {skipped} already there" if skipped else ""))
    return 0


def _convert(args) -> int:
    if args.steps < 1:
        raise _UsageError(f"data convert-camels: --steps = {args.steps} must be >= 1")
    for d in args.sims:
        if not d.is_dir():
            raise _UsageError(f"data convert-camels: {d} is not a directory")
    import jax

    jax.config.update("jax_enable_x64", True)
    from ..io.camels import read_camels_params
    from .camels_sets import convert_camels
    from .training_sets import TABLE1_REDSHIFTS

    try:
        table = read_camels_params(args.params)
    except ValueError as err:
        raise _UsageError(f"data convert-camels: --params: {err}") from None
    t0 = time.perf_counter()
    written = convert_camels(args.sims, table, args.out, redshifts=tuple(args.redshifts or TABLE1_REDSHIFTS),
                             n_steps=args.steps, progress=not args.no_progress)
    print(f"jaxcluster data convert-camels: converted {len(written)} simulation(s) to {args.out}/ "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``jaxcluster data``; returns the exit code (2 for bad input)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        try:
            args = _parser().parse_args(argv)
        except SystemExit as done:  # --help
            return int(done.code or 0)
        return _convert(args) if args.action == "convert-camels" else _generate(args)
    except _UsageError as err:
        print(f"jaxcluster: error: {err}", file=sys.stderr)
        return 2
