"""Command line: ``jaxcluster dataset generate | status | merge | info`` ((θ, XOD) training sets and campaigns).

    jaxcluster dataset generate --simulator analytic --n 20000 --out analytic.h5 [--design latin_hypercube]
    jaxcluster dataset generate --simulator survey --n 512 --out survey.h5 --area 4 --cell-size 2 --pixel 3
    jaxcluster dataset generate ... --task-id I --num-tasks N     # one SLURM array task (default from SLURM_ARRAY_*)
    jaxcluster dataset generate ... --dask-workers 4              # a local Dask cluster
    jaxcluster dataset generate ... --scheduler tcp://host:8786   # a running Dask scheduler (dask-jobqueue)
    jaxcluster dataset status survey.h5                           # done / running / missing / failed, rate, time left
    jaxcluster dataset merge survey.h5                            # merge a complete set (checksums verified)
    jaxcluster dataset info analytic.h5

Running the same ``generate`` command again after a kill resumes the run;
any number of such commands may work on one output at once
(`inference.datasets`, `jaxcluster.io.campaign`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

__all__ = ["DatasetJob", "main"]


def _pair(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH, got {text!r}") from None
    return lo, hi


def _edges_spec(text: str) -> tuple[float, float, int]:
    try:
        lo, hi, n = text.split(",")
        lo, hi, n = float(lo), float(hi), int(n)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH,N (N bins), got {text!r}") from None
    if not (0 < lo < hi < float("inf")) or not 1 <= n <= 1000:
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 < LOW < HIGH (finite) and 1 <= N <= 1000 bins")
    return lo, hi, n


def _edges(spec, log: bool):
    import numpy as np

    if spec is None:
        return None
    lo, hi, n = spec
    return np.geomspace(lo, hi, n + 1) if log else np.linspace(lo, hi, n + 1)


@dataclass(frozen=True)
class DatasetJob:
    """A ``dataset generate`` command as plain, picklable data; calling it builds the `Campaign`.

    This is the factory the Dask engine ships to its workers
    (`jaxcluster.engines.dask.run_on_dask`): each worker process builds the
    simulator once and computes chunks of the same campaign. ``x64`` is
    switched on in the calling process when asked (the command line opts in,
    never the library).
    """

    simulator: str
    n: int
    out: str
    seed: int = 0
    design: str = "random"
    chunk_size: int | None = None
    batch_size: int | None = None
    x64: bool = False
    # analytic simulator
    params: str = "Omega_m,sigma_8,log10_M0,alpha_MT,gamma_MT,log10_L0,alpha_LT,gamma_LT"
    n_sigma: float = 2.0
    cr_cut: float = 0.02
    # survey simulator
    area: float | None = None
    n_boxes: int = 12
    cell_size: float = 2.0
    pixel: float = 3.0
    steps: int = 4
    threshold: float = 1e-7
    cr_min: float = 1e-5
    detector: str = "sep"
    omega_m: tuple[float, float] | None = None
    sigma_8: tuple[float, float] | None = None
    # XOD binning (both simulators; None: the simulator's default edges)
    cr_edges: tuple[float, float, int] | None = None
    hr_edges: tuple[float, float, int] | None = None
    z_edges: tuple[float, float, int] | None = None
    memory_check: bool = True

    def survey_config(self):
        """The `survey.SurveyConfig` of ``--simulator survey`` (its default CR edges: 8 log bins over 10³ × cr_min)."""
        import numpy as np

        from ..survey import SurveyConfig

        area = 4.0 if self.area is None else self.area
        om = self.omega_m if self.omega_m is not None else _theta_sim_bounds("Omega_m")
        cr = _edges(self.cr_edges, True)
        return SurveyConfig(area_deg2=area, n_boxes=self.n_boxes, cell_size=self.cell_size,
                            pixel_arcmin=self.pixel, n_steps=self.steps, threshold=self.threshold,
                            cr_min=self.cr_min,
                            cr_edges=np.geomspace(self.cr_min, 1e3 * self.cr_min, 9) if cr is None else cr,
                            hr_edges=_edges(self.hr_edges, True), z_edges=_edges(self.z_edges, False),
                            detector=self.detector, omega_m_min=om[0], omega_m_max=om[1])

    def __call__(self):
        """The campaign (`jaxcluster.io.Campaign`) of this dataset."""
        import jax

        if self.x64:
            jax.config.update("jax_enable_x64", True)  # opt-in at the entry point, never at import
        from .datasets import AnalyticSimulator, BoxPrior, SurveySimulator, dataset_campaign

        if self.simulator == "analytic":
            from ..analytic import AnalyticModel, SurveySpec

            names = tuple(v.strip() for v in self.params.split(",") if v.strip())
            area = 200.0 if self.area is None else self.area
            from ..analytic import XODBinning

            binning = XODBinning(_edges(self.cr_edges, True), _edges(self.hr_edges, True),
                                 _edges(self.z_edges, False))
            model = AnalyticModel(names, survey=SurveySpec(area_deg2=area, cr_cut=self.cr_cut), binning=binning)
            prior = BoxPrior.analytic(names, n_sigma=self.n_sigma)
            sim, mode, chunk = AnalyticSimulator(model), "vmap", 128
            meta = dict(simulator="analytic", params=list(names), area_deg2=area, cr_cut=self.cr_cut,
                        n_sigma=self.n_sigma, x64=bool(self.x64))
        elif self.simulator == "survey":
            area = 4.0 if self.area is None else self.area
            bounds = {k: v for k, v in (("Omega_m", self.omega_m), ("sigma_8", self.sigma_8)) if v is not None}
            prior = BoxPrior.theta_sim(**bounds)
            config = self.survey_config()
            sim, mode, chunk = SurveySimulator(config), "map", 1
            meta = dict(simulator="survey", area_deg2=area, n_boxes=self.n_boxes, cell_size=self.cell_size,
                        pixel_arcmin=self.pixel, n_steps=self.steps, threshold=self.threshold, cr_min=self.cr_min,
                        detector=self.detector, x64=bool(self.x64))
        else:
            raise ValueError(f"simulator = {self.simulator!r} is not allowed; choose from ('analytic', 'survey')")
        chunk = chunk if self.chunk_size is None else self.chunk_size
        self._check_memory(sim, prior.dim, chunk, mode)
        return dataset_campaign(sim, prior, self.n, self.out, seed=self.seed, design=self.design, chunk_size=chunk,
                                batch_mode=mode, batch_size=self.batch_size, metadata=meta)


    def _check_memory(self, sim, dim: int, chunk: int, mode: str) -> None:
        """Refuse at once a chunk that cannot fit in memory (`engines.memory`), before any simulation."""
        import math

        from ..engines.memory import (
            _SURVEY_BASE_BYTES,
            check_memory,
            estimate_dataset_chunk_bytes,
            estimate_survey_bytes,
            format_bytes,
        )

        shape = sim.binning.shape
        batch = 1 if mode == "map" else (self.batch_size or max(b for b in range(1, 33) if chunk % b == 0))
        if self.simulator == "survey":
            per = estimate_survey_bytes(sim.config) - _SURVEY_BASE_BYTES
            base = _SURVEY_BASE_BYTES
            what = (f"one survey simulation ({sim.config.geometry.mesh_shape} voxels a box, "
                    f"{format_bytes(_SURVEY_BASE_BYTES + per)}) in chunks of {chunk}")
        else:  # the analytic XOD: (mass × z × Gauss–Hermite nodes) × (CR, HR) bins of float64 temporaries, ×4
            sp = sim.model.survey
            per = 32.0 * sp.n_mass * sp.n_z_per_bin * shape[2] * sp.n_gh * math.prod(shape[:2])
            base = 5e8
            what = f"the analytic simulator in batches of {batch}, chunks of {chunk}"
        check_memory(estimate_dataset_chunk_bytes(chunk, batch, shape, dim, per_sample_bytes=per, base_bytes=base),
                     what, enabled=self.memory_check)


def _theta_sim_bounds(name: str) -> tuple[float, float]:
    from ..params import PRIOR_BOUNDS

    return PRIOR_BOUNDS[name]


def _parser() -> argparse.ArgumentParser:
    from ..io.campaign import DEFAULT_LEASE_S, DEFAULT_MAX_ATTEMPTS

    from ..clihelp import HelpFormatter, add_memory_check, seed_type

    fmt = HelpFormatter
    p = argparse.ArgumentParser(prog="jaxcluster dataset", description=__doc__.splitlines()[0], formatter_class=fmt)
    sub = p.add_subparsers(dest="action", required=True)
    g = sub.add_parser("generate", help="simulate (θ, XOD) pairs into an HDF5 file (resumable; many workers welcome)",
                       formatter_class=fmt)
    g.add_argument("--simulator", choices=("analytic", "survey"), required=True,
                   help="analytic: the XOD model of `jaxcluster fisher/hmc`; survey: the simulated survey of "
                   "`jaxcluster simulate` (PM, eLDL gas, detection)")
    g.add_argument("--n", type=int, required=True, help="number of (θ, XOD) pairs")
    g.add_argument("--out", required=True, help="output HDF5 file")
    g.add_argument("--seed", type=seed_type, default=0, help="seed of the θ design and of the simulations' keys")
    g.add_argument("--design", choices=("random", "latin_hypercube"), default="random",
                   help="how θ fills the prior box: independent uniform draws or a Latin hypercube")
    g.add_argument("--chunk-size", type=int, default=None,
                   help="samples per written chunk (default: 128 for analytic, 1 for survey)")
    g.add_argument("--batch-size", type=int, default=None,
                   help="samples per vmap, a divisor of the chunk size (default: min(chunk, 32); survey: 1)")
    g.add_argument("--x64", action="store_true", help="simulate in float64")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_memory_check(g)
    b = g.add_argument_group("XOD binning (both simulators; recorded in the file as xod_edges)")
    b.add_argument("--cr-edges", type=_edges_spec, default=None, metavar="LOW,HIGH,N",
                   help="N log-spaced CR[0.5–2] bins [counts s⁻¹] (default: analytic 8 over [0.02, 3]; survey 8 over "
                   "[cr_min, 10³ cr_min])")
    b.add_argument("--hr-edges", type=_edges_spec, default=None, metavar="LOW,HIGH,N",
                   help="N log-spaced hardness-ratio bins (default: 6 over [0.1, 2]; coarse survey cells give "
                   "softer sources: e.g. 0.01,2,6)")
    b.add_argument("--z-edges", type=_edges_spec, default=None, metavar="LOW,HIGH,N",
                   help="N linear redshift bins (default: 4 over [0.1, 0.5])")
    b.add_argument("--no-binning-check", action="store_true",
                   help="survey: skip the one simulation at the prior's centre that warns when most detected "
                   "sources fall outside the bins")
    w = g.add_argument_group("workers (SLURM job arrays, Dask)")
    w.add_argument("--task-id", type=int, default=None,
                   help="this array task's index (default: from SLURM_ARRAY_TASK_ID when set)")
    w.add_argument("--num-tasks", type=int, default=None,
                   help="number of array tasks (default: SLURM_ARRAY_TASK_COUNT when set)")
    w.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run on a running Dask scheduler, one task per chunk (needs the [cluster] extra)")
    w.add_argument("--dask-workers", type=int, default=None, metavar="N",
                   help="run on a local Dask cluster of N worker processes (needs the [cluster] extra)")
    w.add_argument("--lease", type=float, default=DEFAULT_LEASE_S,
                   help="seconds without a heartbeat after which a dead worker's chunk is taken over")
    w.add_argument("--max-attempts", type=int, default=DEFAULT_MAX_ATTEMPTS,
                   help="failures after which a chunk is given up (its tracebacks kept)")
    w.add_argument("--no-wait", action="store_true",
                   help="leave when nothing is left to claim instead of waiting for the other workers and merging")
    a = g.add_argument_group("analytic simulator")
    a.add_argument("--params", default=DatasetJob.params, help="free parameters (the rest fixed at the fiducial)")
    a.add_argument("--n-sigma", type=float, default=2.0, help="nuisance box half-width in prior σ")
    a.add_argument("--cr-cut", type=float, default=0.02, help="CR[0.5-2] cut [counts/s]")
    s = g.add_argument_group("survey simulator (θ = θ_sim, seed 001 Table 1 priors)")
    s.add_argument("--area", type=float, default=None,
                   help="survey area [deg²] (default: analytic 200; survey 4, one lightcone)")
    s.add_argument("--n-boxes", type=int, default=12, help="PM boxes along the lightcone")
    s.add_argument("--cell-size", type=float, default=2.0, help="voxel side [h⁻¹ Mpc]")
    s.add_argument("--pixel", type=float, default=3.0, help="map pixel [arcmin]")
    s.add_argument("--steps", type=int, default=4, help="PM steps per box")
    s.add_argument("--threshold", type=float, default=1e-7, help="detection threshold [counts s⁻¹ arcmin⁻²]")
    s.add_argument("--cr-min", type=float, default=1e-5, help="CR[0.5–2] cut [counts s⁻¹]")
    s.add_argument("--detector", choices=("sep", "jax"), default="sep",
                   help="source detection: sep (SExtractor's algorithm, host) or jax (on the device)")
    s.add_argument("--omega-m", type=_pair, default=None, metavar="LOW,HIGH",
                   help="narrower Ω_m prior inside [0.1, 0.5] (default: the seed 001 prior)")
    s.add_argument("--sigma-8", type=_pair, default=None, metavar="LOW,HIGH",
                   help="narrower σ_8 prior inside [0.6, 1.0] (default: the seed 001 prior)")
    st = sub.add_parser("status", help="done / running / missing / failed chunks, throughput and time left",
                        formatter_class=fmt)
    st.add_argument("file", help="the dataset's output file (its chunks are in FILE.parts/)")
    st.add_argument("--lease", type=float, default=DEFAULT_LEASE_S, help="the workers' lease [s]")
    st.add_argument("--json", action="store_true", help="print the status as JSON")
    m = sub.add_parser("merge", help="merge a dataset whose chunks are all present (checksums verified)",
                       formatter_class=fmt)
    m.add_argument("file", help="the dataset's output file (its chunks are in FILE.parts/)")
    i = sub.add_parser("info", help="print a dataset's size and settings", formatter_class=fmt)
    i.add_argument("file", help="a dataset (HDF5)")
    i.add_argument("--quick", action="store_true",
                   help="check the structure and metadata only, not every value (finite θ, finite counts >= 0)")
    return p


def _job(args) -> DatasetJob:
    keys = {k for k in DatasetJob.__dataclass_fields__}
    return DatasetJob(**{k: v for k, v in vars(args).items() if k in keys},
                      memory_check=not getattr(args, "no_memory_check", False))


_FEW_SOURCES = 5  # fewer selected sources at the prior's centre than this: the XODs will be mostly zero


def _warn_binning(job: DatasetJob) -> None:
    """Simulate once at the prior's centre and warn if most detected sources fall outside the XOD bins."""
    import jax
    import numpy as np

    from .datasets import BoxPrior, survey_bin_coverage

    bounds = {k: v for k, v in (("Omega_m", job.omega_m), ("sigma_8", job.sigma_8)) if v is not None}
    prior = BoxPrior.theta_sim(**bounds)
    theta = prior.from_unit(np.full(prior.dim, 0.5))
    print("jaxcluster dataset: checking the XOD bins with one survey simulation at the prior's centre "
          "(--no-binning-check skips it) …", file=sys.stderr, flush=True)
    cov = survey_bin_coverage(job.survey_config(), theta, jax.random.key(job.seed))
    if cov["selected"] and cov["fraction_outside"] > 0.5:
        parts = []
        for k, flag in (("cr", "--cr-edges"), ("hr", "--hr-edges"), ("z", "--z-edges")):
            c = cov[k]
            if c["below"] or c["above"]:
                parts.append(f"{k.upper()}: {c['below']} below {c['edges'][0]:.3g}, {c['above']} above "
                             f"{c['edges'][1]:.3g} (sources span {c['range'][0]:.3g}–{c['range'][1]:.3g}; {flag})")
        print(f"jaxcluster dataset: warning: {cov['selected'] - cov['binned']} of the {cov['selected']} detected "
              f"sources above --cr-min ({100 * cov['fraction_outside']:.0f} %) fall outside the XOD bins, so the "
              f"XODs will be mostly zero: " + "; ".join(parts), file=sys.stderr)
    elif cov["selected"] < _FEW_SOURCES:
        spans = "; ".join(f"{k.upper()} {cov[k]['range'][0]:.3g}–{cov[k]['range'][1]:.3g} (bins "
                          f"{cov[k]['edges'][0]:.3g}–{cov[k]['edges'][1]:.3g})" for k in ("cr", "hr", "z")
                          if cov[k]["range"] is not None)
        print(f"jaxcluster dataset: warning: only {cov['selected']} source(s) above --cr-min detected at the prior's "
              f"centre{': ' + spans if spans else ''}; most XODs will be zero (lower --threshold or --cr-min, use "
              "finer cells, or widen --hr-edges / --cr-edges)", file=sys.stderr)


# options of one simulator only: given with the other one they would do nothing, so they are refused
_ONLY = {"analytic": ("params", "n_sigma", "cr_cut"),
         "survey": ("n_boxes", "cell_size", "pixel", "steps", "threshold", "cr_min", "detector", "omega_m", "sigma_8")}


def _generate(args) -> int:
    job = _job(args)
    for simulator, names in _ONLY.items():
        if args.simulator == simulator:
            continue
        given = [n for n in names if getattr(job, n) != DatasetJob.__dataclass_fields__[n].default]
        if given:
            flags = ", ".join("--" + n.replace("_", "-") for n in given)
            raise ValueError(f"{flags}: option(s) of the {simulator} simulator, not of --simulator {args.simulator}")
    from pathlib import Path

    from ..io.chunks import parts_dir

    fresh = not Path(args.out).exists() and not parts_dir(Path(args.out)).exists()
    if args.simulator == "survey" and fresh and not args.no_binning_check:
        job()  # bad options and the memory check fail here, before the check simulation
        _warn_binning(job)
    if args.scheduler is not None or args.dask_workers is not None:
        from ..engines.dask import run_on_dask

        if args.task_id is not None or args.num_tasks is not None:
            raise ValueError("--task-id/--num-tasks (SLURM arrays) and --scheduler/--dask-workers (Dask) exclude "
                             "each other")
        report = run_on_dask(job, scheduler=args.scheduler, n_workers=args.dask_workers, lease_s=args.lease,
                             max_attempts=args.max_attempts, progress=not args.no_progress)
        if report.failed:
            c, err = next(iter(report.failed.items()))
            print(f"jaxcluster dataset: {len(report.failed)} chunk(s) failed {args.max_attempts} times (chunk {c}: "
                  f"{err}); see `jaxcluster dataset status {args.out}`", file=sys.stderr)
            return 1
        print(f"jaxcluster dataset: {args.n} (θ, XOD) pairs in {report.out} ({len(report.submitted)} chunks on Dask)")
        return 0

    from ..engines.slurm import ArrayTask
    from ..io.campaign import run_worker

    if (args.task_id is None) != (args.num_tasks is None):
        raise ValueError("--task-id and --num-tasks go together")
    task = ArrayTask(args.task_id, args.num_tasks) if args.task_id is not None else ArrayTask.from_env()
    campaign = job()
    report = run_worker(campaign, order=None if task is None else task.order(campaign.n_chunks),
                        task="" if task is None else task.label(), lease_s=args.lease, max_attempts=args.max_attempts,
                        wait=not args.no_wait, progress=not args.no_progress)
    who = "" if task is None else f" ({task.label()}: computed {len(report.computed)} chunks)"
    if report.failed:
        print(f"jaxcluster dataset: {len(report.failed)} chunk(s) failed {args.max_attempts} times{who}; see "
              f"`jaxcluster dataset status {args.out}`", file=sys.stderr)
        return 1
    if report.out is None:
        print(f"jaxcluster dataset: nothing left to claim in {args.out}{who}; the last worker merges "
              f"(`jaxcluster dataset status {args.out}`)")
        return 0
    print(f"jaxcluster dataset: {args.n} (θ, XOD) pairs in {report.out}{who}")
    return 0


def _duration(s: float | None) -> str:
    if s is None:
        return "unknown"
    h, rem = divmod(int(round(s)), 3600)
    return f"{h} h {rem // 60:02d} min" if h else f"{rem // 60} min {rem % 60:02d} s"


def _status(args) -> int:
    from ..io.campaign import campaign_status

    st = campaign_status(args.file, lease_s=args.lease)
    if args.json:
        print(json.dumps(st.summary(), indent=1))
        return 0
    if st.merged and not st.n_chunks:
        print(f"{st.out}: merged (complete)")
        return 0
    rate = "unknown" if st.rows_per_s is None else f"{st.rows_per_s:.3g} per s ({3600 * st.rows_per_s:.4g} per h)"
    lines = [
        f"{st.out}: {len(st.done)}/{st.n_chunks} chunks done ({st.done_rows}/{st.n_rows} rows), "
        f"{len(st.running)} running, {len(st.missing)} missing, {len(st.failed)} with failures, "
        f"{len(st.stale)} stale claims, {st.corrupt} corrupt files set aside",
        f"throughput: {rate}; time left at this rate: {_duration(st.eta_s)}",
    ]
    if st.compute_s_per_chunk is not None:
        lines.append(f"compute per chunk: {st.compute_s_per_chunk:.3g} s")
    for c, who in list(st.running.items())[:10]:
        lines.append(f"  running chunk {c}: {who}")
    for c, n in list(st.failed.items())[:10]:
        lines.append(f"  failed chunk {c}: {n} attempt(s); tracebacks in {st.out}.parts/failed/chunk_{c:06d}.json")
    print("\n".join(lines))
    return 0


def _merge(args) -> int:
    from .datasets import merge_dataset

    print(f"jaxcluster dataset: merged {merge_dataset(args.file)}")
    return 0


def _info(args) -> int:
    from .datasets import check_dataset

    meta = check_dataset(args.file, scan=not args.quick)  # refuses a damaged or foreign file, naming the problem
    print(json.dumps(dict(meta), indent=1, sort_keys=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``jaxcluster dataset``."""
    from ..io.chunks import CorruptChunks

    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    action = {"generate": _generate, "status": _status, "merge": _merge, "info": _info}[args.action]
    try:
        return action(args)
    except (ValueError, FileNotFoundError, CorruptChunks, ImportError) as err:  # bad input or state: one clear line
        print(f"jaxcluster dataset: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
