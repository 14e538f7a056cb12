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

    def __call__(self):
        """The campaign (`jaxcluster.io.Campaign`) of this dataset."""
        import jax

        if self.x64:
            jax.config.update("jax_enable_x64", True)  # opt-in at the entry point, never at import
        import numpy as np

        from .datasets import AnalyticSimulator, BoxPrior, SurveySimulator, dataset_campaign

        if self.simulator == "analytic":
            from ..analytic import AnalyticModel, SurveySpec

            names = tuple(v.strip() for v in self.params.split(",") if v.strip())
            area = 200.0 if self.area is None else self.area
            model = AnalyticModel(names, survey=SurveySpec(area_deg2=area, cr_cut=self.cr_cut))
            prior = BoxPrior.analytic(names, n_sigma=self.n_sigma)
            sim, mode, chunk = AnalyticSimulator(model), "vmap", 128
            meta = dict(simulator="analytic", params=list(names), area_deg2=area, cr_cut=self.cr_cut,
                        n_sigma=self.n_sigma, x64=bool(self.x64))
        elif self.simulator == "survey":
            from ..survey import SurveyConfig

            area = 4.0 if self.area is None else self.area
            bounds = {k: v for k, v in (("Omega_m", self.omega_m), ("sigma_8", self.sigma_8)) if v is not None}
            prior = BoxPrior.theta_sim(**bounds)
            om = bounds.get("Omega_m", (prior.low[0], prior.high[0]))
            config = SurveyConfig(area_deg2=area, n_boxes=self.n_boxes, cell_size=self.cell_size,
                                  pixel_arcmin=self.pixel, n_steps=self.steps, threshold=self.threshold,
                                  cr_min=self.cr_min, cr_edges=np.geomspace(self.cr_min, 1e3 * self.cr_min, 9),
                                  detector=self.detector, omega_m_min=om[0], omega_m_max=om[1])
            sim, mode, chunk = SurveySimulator(config), "map", 1
            meta = dict(simulator="survey", area_deg2=area, n_boxes=self.n_boxes, cell_size=self.cell_size,
                        pixel_arcmin=self.pixel, n_steps=self.steps, threshold=self.threshold, cr_min=self.cr_min,
                        detector=self.detector, x64=bool(self.x64))
        else:
            raise ValueError(f"simulator = {self.simulator!r} is not allowed; choose from ('analytic', 'survey')")
        chunk = chunk if self.chunk_size is None else self.chunk_size
        return dataset_campaign(sim, prior, self.n, self.out, seed=self.seed, design=self.design, chunk_size=chunk,
                                batch_mode=mode, batch_size=self.batch_size, metadata=meta)


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
    return DatasetJob(**{k: v for k, v in vars(args).items() if k in keys})


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
