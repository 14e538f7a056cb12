"""Dask distributed as a campaign engine: one task per chunk, Dask's retries and rescheduling.

`run_on_dask` submits one task per missing chunk to a Dask cluster (a
running scheduler's address, e.g. from dask-jobqueue's ``SLURMCluster`` or
``PBSCluster``, or a local cluster of worker processes it starts). Each task
runs `jaxcluster.io.run_chunk` on its worker: claim, compute, publish once.
What Dask gives us and we do not write ourselves:

* a task whose worker process dies (``kill -9``, a lost node) is
  rescheduled on another worker (Dask's ``allowed-failures``); its claim is
  taken over at once when its process is dead on the same host, after the
  lease otherwise;
* a task that raises is retried (``retries = max_attempts − 1``), every
  failure recorded with its traceback in the chunk folder (``failed/``);
* progress from the futures as they complete.

Workers build the campaign from a picklable zero-argument `factory` (e.g.
`jaxcluster.inference.campaign.DatasetSpec`), once per worker process: the
simulator is compiled once per worker, not once per chunk. Requires the
``[cluster]`` extra (``distributed``; ``dask-jobqueue`` for batch systems).
"""

from __future__ import annotations

import hashlib
import pickle
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..io.campaign import DEFAULT_LEASE_S, DEFAULT_MAX_ATTEMPTS, Campaign, merge_campaign, run_chunk
from ..io.chunks import CorruptChunks

__all__ = ["DaskReport", "QUIET", "quiet_environment", "run_on_dask"]

# Dask settings for workers that run XLA: its event-loop tick (20 ms by default), system monitor
# (0.5 s), memory monitors of worker and nanny (0.1 s) and statistical profiler (stack samples
# every 10 ms) wake Python threads that take the core and the GIL from the chunk. On a worker
# pinned to one core the survey simulator took 2.8-3.3 s per XOD with Dask's defaults, 2.4-2.7 s
# with these, 2.1-2.6 s in a plain process (benchmarks/campaign.py; the machine is shared, runs
# vary by ±15 %). They tell nothing about XLA's work. Given to the local clusters `run_on_dask`
# starts; for other clusters, put them in the workers' configuration (`quiet_environment`).
QUIET = {"distributed.admin.tick.interval": "1s", "distributed.admin.system-monitor.interval": "5s",
         "distributed.worker.memory.monitor-interval": "1s", "distributed.worker.profile.enabled": False}


def quiet_environment() -> dict[str, str]:
    """`QUIET` as the environment variables Dask reads (``DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL=1s``, …).

    For workers started by others: dask-jobqueue's ``job_script_prologue``
    (``[f"export {k}={v}" for k, v in quiet_environment().items()]``), a
    SLURM script, or ``dask worker``'s environment.
    """
    return {"DASK_" + k.upper().replace(".", "__").replace("-", "_"): str(v) for k, v in QUIET.items()}

# The campaigns built in this worker process, by the digest of their factory: a Dask task is a
# function call, and rebuilding (recompiling) the simulator for every chunk would cost more than
# the chunk. Bounded, and keyed by value, so a new campaign never reuses another's.
_BUILT: OrderedDict[str, Campaign] = OrderedDict()


def _campaign(factory: Callable[[], Campaign], key: str) -> Campaign:
    if key not in _BUILT:
        _BUILT[key] = factory()
        while len(_BUILT) > 2:
            _BUILT.popitem(last=False)
    return _BUILT[key]


def _chunk_task(factory: Callable[[], Campaign], key: str, c: int, lease_s: float, max_attempts: int) -> dict:
    """The Dask task of chunk c (runs on a worker)."""
    from distributed import get_worker

    try:
        label = f"dask {get_worker().address}"
    except ValueError:  # not on a worker (synchronous scheduler in tests)
        label = "dask"
    t_start, t0 = time.time(), time.perf_counter()
    report = run_chunk(_campaign(factory, key), c, task=label, lease_s=lease_s, max_attempts=max_attempts)
    return {"chunk": c, "computed": c in report.computed, "published": c in report.published,
            "compute_s": report.compute_s, "overhead_s": report.overhead_s, "task_s": time.perf_counter() - t0,
            "t_start": t_start, "t_end": time.time(), "worker": label}


@dataclass
class DaskReport:
    """What a Dask run did.

    Attributes:
        out: the merged file (None if chunks failed for good).
        submitted: chunks submitted as tasks (those missing at the start).
        failed: chunk → last error, for chunks that failed `max_attempts` times.
        tasks: per finished task: chunk, computed, published, compute_s, overhead_s, task_s, t_start and
            t_end (wall clock [s since the epoch]), worker.
        wall_s: seconds from the first submit to the last result.
    """

    out: Path | None = None
    submitted: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    tasks: list[dict] = field(default_factory=list)
    wall_s: float = 0.0


def run_on_dask(
    factory: Callable[[], Campaign],
    *,
    scheduler: str | None = None,
    n_workers: int | None = None,
    lease_s: float = DEFAULT_LEASE_S,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    progress: bool = True,
) -> DaskReport:
    """Complete a campaign on a Dask cluster and merge it here.

    Args:
        factory: picklable, zero-argument callable building the `Campaign` (called here
            and once in each worker process).
        scheduler: address of a running Dask scheduler (``tcp://host:8786``); or
        n_workers: the number of worker processes of a local cluster started for this run
            (one thread each).
        lease_s: lease of the chunk claims [s] (a task whose worker died on another host is
            taken over after this long).
        max_attempts: tries per chunk (Dask's ``retries`` = max_attempts − 1), ≥ 1.
        progress: a tqdm bar over the tasks.

    Returns:
        A `DaskReport`.

    Raises:
        ValueError: neither or both of `scheduler` and `n_workers`; the output made with
            other settings.
        ImportError: Dask distributed is not installed (``pip install "jaxcluster[cluster]"``).
    """
    if (scheduler is None) == (n_workers is None):
        raise ValueError("give exactly one of scheduler (an address) and n_workers (a local cluster)")
    if n_workers is not None and not (isinstance(n_workers, int) and n_workers >= 1):
        raise ValueError(f"n_workers = {n_workers!r} is outside its allowed range: an integer >= 1")
    if not (isinstance(max_attempts, int) and max_attempts >= 1):
        raise ValueError(f"max_attempts = {max_attempts!r} is outside its allowed range: an integer >= 1")
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as err:
        raise ImportError("the Dask engine needs the [cluster] extra: pip install 'jaxcluster[cluster]'") from err
    from tqdm.auto import tqdm

    campaign = factory()
    report = DaskReport()
    if campaign.out.exists():
        report.out = merge_campaign(campaign, lease_s=lease_s)  # checks the settings, returns at once
        return report
    store = campaign.store()  # refuses other settings here, before any worker starts
    key = hashlib.sha256(pickle.dumps(factory)).hexdigest()
    cluster = None
    if n_workers is not None:
        import dask

        with dask.config.set(QUIET):  # the nannies hand this configuration to their workers
            # ":0": any free port (None still takes the configured :8787, which a second cluster on
            # the host already holds, and distributed then warns)
            cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                   dashboard_address=":0")
    client = Client(cluster if cluster is not None else scheduler)
    t0 = time.perf_counter()
    try:
        for round_ in range(3):  # a chunk failing its digest at the merge is computed again (bounded)
            todo = [c for c in range(campaign.n_chunks) if not store.done(c)]
            report.submitted += todo
            futures = [client.submit(_chunk_task, factory, key, c, lease_s, max_attempts, retries=max_attempts - 1,
                                     pure=False, key=f"jaxcluster-chunk-{key[:12]}-{round_}-{c}") for c in todo]
            chunk_of = {f.key: c for f, c in zip(futures, todo)}
            with tqdm(total=campaign.n_rows, initial=campaign.n_rows - sum(campaign.rows(c) for c in todo),
                      unit=campaign.unit, disable=not progress, desc=campaign.out.name) as bar:
                for fut in as_completed(futures):
                    c = chunk_of[fut.key]
                    if fut.status == "error":
                        report.failed[c] = repr(fut.exception())
                    else:
                        report.tasks.append(fut.result())
                    bar.update(campaign.rows(c))
            if report.failed:
                break
            try:
                report.out = merge_campaign(campaign, lease_s=lease_s)
                break
            except CorruptChunks:
                continue
    finally:
        report.wall_s = time.perf_counter() - t0
        client.close()
        if cluster is not None:
            cluster.close()
    return report
