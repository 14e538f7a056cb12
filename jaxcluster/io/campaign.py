"""A campaign: a job of independent chunks that any number of workers, anywhere, complete together.

A `Campaign` is data: the output file, the settings, the number of chunks
and ``make_chunk(c)``, a deterministic function of the chunk index alone
(so a chunk is the same bits whichever process, machine or device count
computes it). Workers share nothing but a file system (`jaxcluster.io.chunks`
layout); the engines that start them are existing ones: SLURM job arrays
(`jaxcluster.engines.slurm`) and Dask (`jaxcluster.engines.dask`).

A worker (`run_worker`, or `run_chunk` for one chunk) does, per chunk:

1. skip it if published, or if its failures reached ``max_attempts``;
2. claim it (`jaxcluster.io.claims`): if a live worker holds it, go on to
   the next; a stale claim (its worker died or froze past the lease) is
   taken over;
3. compute it while a heartbeat thread renews the lease;
4. publish the chunk file (link-if-absent: whole or absent, never twice);
   on an exception, append the traceback to ``failed/chunk_….json`` and
   release the claim (the chunk is retried, by this worker or another,
   until ``max_attempts`` failures);
5. when every chunk is published, one worker (holding the ``merge``
   claim) verifies the digests and merges; a chunk failing its digest is
   moved aside and computed again.

A worker with ``wait=True`` stays until the output exists (taking over
chunks whose workers die); with ``wait=False`` it leaves when nothing is
left for it to claim.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .chunks import ChunkStore, CorruptChunks, check_settings, merge_chunks, parts_dir, read_attr
from .claims import claim, claim_owner, claim_state

__all__ = [
    "Campaign",
    "WorkerReport",
    "CampaignStatus",
    "run_worker",
    "run_chunk",
    "merge_campaign",
    "campaign_status",
    "write_chunked",
]

DEFAULT_LEASE_S = 120.0
# what `Campaign.store` adds to the settings in meta.json (for `campaign_status`; not file attributes)
STORE_KEYS = ("n_chunks", "n_rows", "chunk_rows")
DEFAULT_MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class Campaign:
    """A chunked job, as data.

    Attributes:
        out: the merged HDF5 file.
        settings: JSON-serialisable settings; compared by every worker that joins
            (all keys but ``jaxcluster_version``) and stored as the file's attributes.
        n_chunks: number of chunks, ≥ 1.
        make_chunk: chunk index → dict of numpy arrays sharing their first (row) length;
            deterministic in the index.
        finalize: called on the merged file (an open ``h5py.File``) before its rename.
        merge_chunk_rows: HDF5 chunk length along the rows of the merged datasets (None: contiguous).
        chunk_rows: rows per chunk (progress and status; default one per chunk).
        unit: what a row is, for progress bars (``"XOD"``, ``"chunk"``).
    """

    out: Path
    settings: dict
    n_chunks: int
    make_chunk: Callable[[int], dict[str, np.ndarray]]
    finalize: Callable[[Any], None] | None = None
    merge_chunk_rows: int | None = None
    chunk_rows: tuple[int, ...] | None = None
    unit: str = "chunk"

    def __post_init__(self):
        object.__setattr__(self, "out", Path(self.out))
        if not (isinstance(self.n_chunks, (int, np.integer)) and self.n_chunks >= 1):
            raise ValueError(f"n_chunks = {self.n_chunks!r} is outside its allowed range: an integer >= 1")
        if self.chunk_rows is not None and len(self.chunk_rows) != self.n_chunks:
            raise ValueError(f"chunk_rows has {len(self.chunk_rows)} entries for {self.n_chunks} chunks")

    def rows(self, c: int) -> int:
        """Rows of chunk c."""
        return 1 if self.chunk_rows is None else int(self.chunk_rows[c])

    @property
    def n_rows(self) -> int:
        """Rows of the whole campaign."""
        return self.n_chunks if self.chunk_rows is None else int(sum(self.chunk_rows))

    def store(self) -> ChunkStore:
        """Open (or join) the chunk folder, checking the settings (rows per chunk kept for `campaign_status`)."""
        rows = [self.rows(c) for c in range(self.n_chunks)]
        return ChunkStore.open(self.out, {**self.settings, "n_rows": self.n_rows, "chunk_rows": rows},
                               self.n_chunks)


@dataclass
class WorkerReport:
    """What one worker did.

    Attributes:
        out: the merged file if it exists when the worker leaves, else None.
        computed: chunks this worker computed (published or not).
        published: chunks this worker published.
        failed: chunks whose failures reached ``max_attempts`` (the campaign cannot finish).
        merged: whether this worker wrote the merged file.
        compute_s: seconds spent in ``make_chunk``.
        overhead_s: seconds spent claiming, publishing and reading the store.
    """

    out: Path | None = None
    computed: list[int] = field(default_factory=list)
    published: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    merged: bool = False
    compute_s: float = 0.0
    overhead_s: float = 0.0


def _finished(campaign: Campaign) -> bool:
    """True if the merged file exists (checked against the settings; leftovers of a killed cleanup removed)."""
    import shutil

    import h5py

    if not campaign.out.exists():
        return False
    with h5py.File(campaign.out, "r") as f:
        old = {k: read_attr(f.attrs[k]) for k in f.attrs if k in campaign.settings}
    check_settings(campaign.out, old, campaign.settings)
    parts = parts_dir(campaign.out)
    if parts.exists():  # a kill during the cleanup after the merge
        shutil.rmtree(parts, ignore_errors=True)
    return True


def _attempt(store: ChunkStore, campaign: Campaign, c: int, task: str, lease_s: float,
             report: WorkerReport, raise_errors: bool = False) -> str:
    """Claim, compute and publish chunk c: ``"done"``, ``"busy"`` (a live worker holds it) or ``"failed"``."""
    t0 = time.perf_counter()
    lease = claim(store.claim_path(c), lease_s, task)
    if lease is None:
        report.overhead_s += time.perf_counter() - t0
        return "done" if store.done(c) else "busy"
    with lease:
        if store.done(c):  # published between our check and our claim
            report.overhead_s += time.perf_counter() - t0
            return "done"
        t_start = time.time()
        t1 = time.perf_counter()
        report.overhead_s += t1 - t0
        try:
            arrays = campaign.make_chunk(c)
        except Exception as err:
            report.compute_s += time.perf_counter() - t1
            store.record_failure(c, {"host": socket.gethostname(), "pid": os.getpid(), "task": task,
                                     "time": time.time(), "error": repr(err),
                                     "traceback": traceback.format_exc()})
            if raise_errors:
                raise
            return "failed"
        t2 = time.perf_counter()
        report.compute_s += t2 - t1
        report.computed.append(c)
        info = {"host": socket.gethostname(), "pid": os.getpid(), "task": task, "t_start": t_start,
                "t_end": time.time(), "compute_s": t2 - t1}
        if store.publish(c, arrays, info):
            report.published.append(c)
        report.overhead_s += time.perf_counter() - t2
    return "done"


def _try_merge(store: ChunkStore, campaign: Campaign, task: str, lease_s: float, report: WorkerReport) -> str:
    """``"merged"``, ``"busy"`` (another worker merges) or ``"corrupt"`` (some chunks to recompute)."""
    lease = claim(store.claim_path("merge"), lease_s, task)
    if lease is None:
        return "busy"
    with lease:
        if campaign.out.exists():
            return "merged"
        try:
            merge_chunks(store, campaign.settings, finalize=campaign.finalize,
                         merge_chunk_rows=campaign.merge_chunk_rows)
        except CorruptChunks:
            return "corrupt"
    report.merged = True
    return "merged"


def run_worker(
    campaign: Campaign,
    *,
    order: Sequence[int] | None = None,
    task: str = "",
    lease_s: float = DEFAULT_LEASE_S,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    wait: bool = True,
    merge: bool = True,
    poll_s: float | None = None,
    progress: bool = False,
    raise_errors: bool = False,
) -> WorkerReport:
    """Work on a campaign beside any other workers until it is finished (or nothing is left for this one).

    Args:
        campaign: the job.
        order: the chunks this worker visits first (e.g. its SLURM array share); the
            others follow, so a worker also completes what dead or slow workers left.
        task: label recorded in claims and chunk files.
        lease_s: seconds without a heartbeat after which another worker takes a chunk over.
        max_attempts: failures of a chunk after which nobody retries it, ≥ 1.
        wait: stay until the merged file exists (taking over chunks of workers that die);
            otherwise leave when nothing is left to claim.
        merge: merge when every chunk is there (False: leave that to `merge_campaign`).
        poll_s: seconds between looks at the store while waiting (default lease_s / 8, at most 5).
        progress: a tqdm bar over the campaign's rows.
        raise_errors: raise a failing chunk's exception at once (after recording it)
            instead of going on; `max_attempts` is then not applied.

    Returns:
        A `WorkerReport`.

    Raises:
        ValueError: the output or its chunk folder was made with other settings.
    """
    from tqdm.auto import tqdm

    if not (isinstance(max_attempts, (int, np.integer)) and max_attempts >= 1):
        raise ValueError(f"max_attempts = {max_attempts!r} is outside its allowed range: an integer >= 1")
    report = WorkerReport()
    if _finished(campaign):
        report.out = campaign.out
        return report
    try:
        store = campaign.store()
    except FileNotFoundError:
        if _finished(campaign):  # merged (and its folder removed) while we joined
            report.out = campaign.out
            return report
        raise
    store.remove_stale_temporaries()
    poll_s = min(lease_s / 8, 5.0) if poll_s is None else float(poll_s)
    first = list(range(campaign.n_chunks)) if order is None else [int(c) for c in order]
    if any(not 0 <= c < campaign.n_chunks for c in first):
        raise ValueError(f"order holds chunk indices outside [0, {campaign.n_chunks})")
    seen = set(first)
    visit = first + [c for c in range(campaign.n_chunks) if c not in seen]
    done_rows = sum(campaign.rows(c) for c in store.done_chunks())
    with tqdm(total=campaign.n_rows, initial=done_rows, unit=campaign.unit, disable=not progress,
              desc=campaign.out.name) as bar:
        t_refresh = time.monotonic()
        while True:
            busy = False
            for c in visit:
                if campaign.out.exists():  # merged by another worker meanwhile
                    break
                if store.done(c) or (not raise_errors and len(store.failures(c)) >= max_attempts):
                    continue
                try:
                    state = _attempt(store, campaign, c, task, lease_s, report, raise_errors)
                except FileNotFoundError:
                    if campaign.out.exists():  # the chunk folder went with a merge
                        break
                    raise
                busy |= state == "busy"
                if progress and state == "done" and time.monotonic() - t_refresh > 10.0:
                    # everyone's chunks, every 10 s at most: a listing of the folder is not free on NFS
                    bar.n, t_refresh = sum(campaign.rows(k) for k in store.done_chunks()), time.monotonic()
                    bar.refresh()
                elif state == "done" and c in report.published:
                    bar.update(campaign.rows(c))
            if campaign.out.exists():
                break
            remaining = [c for c in range(campaign.n_chunks) if not store.done(c)]
            report.failed = [c for c in remaining if len(store.failures(c)) >= max_attempts]
            if not remaining:
                if not merge:
                    break
                state = _try_merge(store, campaign, task, lease_s, report)
                if state == "merged" or (state == "busy" and not wait):
                    break
                if state == "busy":
                    time.sleep(poll_s)
                continue  # "corrupt": the moved chunks are missing again
            if report.failed and len(report.failed) == len(remaining):
                break  # only exhausted chunks are left
            if not busy and not wait:
                continue  # retryable failures of our own: take them again now
            if not wait:
                break
            time.sleep(poll_s)
    report.out = campaign.out if campaign.out.exists() else None
    if report.out is not None:
        _finished(campaign)  # a folder this worker re-created after another one merged
    return report


def run_chunk(campaign: Campaign, c: int, *, task: str = "", lease_s: float = DEFAULT_LEASE_S,
              max_attempts: int = DEFAULT_MAX_ATTEMPTS, poll_s: float | None = None) -> WorkerReport:
    """Make sure chunk c is published: compute it, or wait for the live worker that holds it.

    This is the unit of work of task engines (one Dask task per chunk). An
    exception of ``make_chunk`` is recorded (`ChunkStore.record_failure`)
    and raised again, so that the engine's own retries apply.

    Raises:
        RuntimeError: the chunk already failed ``max_attempts`` times.
        Exception: whatever ``make_chunk`` raised.
    """
    report = WorkerReport()
    if campaign.out.exists():
        report.out = campaign.out
        return report
    store = campaign.store()
    poll_s = min(lease_s / 8, 5.0) if poll_s is None else float(poll_s)
    while not store.done(c):
        failures = store.failures(c)
        if len(failures) >= max_attempts:
            raise RuntimeError(f"chunk {c} failed {len(failures)} times (max_attempts = {max_attempts}); last "
                               f"error: {failures[-1].get('error')}; tracebacks in {store.failure_path(c)}")
        state = _attempt(store, campaign, c, task, lease_s, report)
        if state == "failed":
            last = store.failures(c)[-1]
            raise RuntimeError(f"chunk {c} failed: {last['error']}\n{last['traceback']}")
        if state == "busy":
            time.sleep(poll_s)
    return report


def merge_campaign(campaign: Campaign, *, lease_s: float = DEFAULT_LEASE_S) -> Path:
    """Merge a campaign whose chunks are all published (verifying their digests).

    Raises:
        FileNotFoundError: chunks are missing (the message counts them).
        CorruptChunks: chunk files failed their digest (moved aside: rerun the job).
        RuntimeError: another live worker is merging.
    """
    if _finished(campaign):
        return campaign.out
    store = campaign.store()
    missing = [c for c in range(campaign.n_chunks) if not store.done(c)]
    if missing:
        raise FileNotFoundError(f"{campaign.out} cannot be merged: {len(missing)} of {campaign.n_chunks} chunks "
                                f"are missing ({missing[:10]}{'…' if len(missing) > 10 else ''})")
    state = _try_merge(store, campaign, "merge", lease_s, WorkerReport())
    if state == "corrupt":
        raise CorruptChunks([c for c in range(campaign.n_chunks) if not store.done(c)], store.parts)
    if state == "busy":
        raise RuntimeError(f"another worker is merging {campaign.out} ({store.claim_path('merge')})")
    return campaign.out


@dataclass
class CampaignStatus:
    """A snapshot of a campaign's chunk folder.

    Attributes:
        out: the merged file.
        merged: whether it exists.
        n_chunks: chunks in all.
        done: published chunks.
        running: chunks held by a live claim, with the owner's label and host.
        stale: chunks whose claim is stale (their worker died or froze; taken over on the next look).
        failed: chunks with recorded failures and not published → number of failed attempts.
        missing: chunks neither published nor running.
        corrupt: chunk files moved aside after a digest mismatch.
        n_rows, done_rows: rows in all and published.
        rows_per_s: rows per second of the most recent chunks (up to 256, by file time):
            their rows over the span from the first one's start to the last one's end.
        eta_s: time left at that rate [s] (None before two chunks are in).
        compute_s_per_chunk: mean compute time of those chunks [s].
    """

    out: Path
    merged: bool
    n_chunks: int = 0
    done: list[int] = field(default_factory=list)
    running: dict[int, str] = field(default_factory=dict)
    stale: list[int] = field(default_factory=list)
    failed: dict[int, int] = field(default_factory=dict)
    missing: list[int] = field(default_factory=list)
    corrupt: int = 0
    n_rows: int = 0
    done_rows: int = 0
    rows_per_s: float | None = None
    eta_s: float | None = None
    compute_s_per_chunk: float | None = None

    def summary(self) -> dict:
        """A JSON-friendly dict (counts, not lists, beyond 20 entries)."""
        def short(v):
            return v if len(v) <= 20 else f"{len(v)} chunks"

        return {"out": str(self.out), "merged": self.merged, "n_chunks": self.n_chunks, "done": len(self.done),
                "running": short({str(k): v for k, v in self.running.items()}), "stale": short(self.stale),
                "failed": short({str(k): v for k, v in self.failed.items()}), "missing": len(self.missing),
                "corrupt": self.corrupt, "n_rows": self.n_rows, "done_rows": self.done_rows,
                "rows_per_s": self.rows_per_s, "eta_s": self.eta_s,
                "compute_s_per_chunk": self.compute_s_per_chunk}


def campaign_status(out: str | os.PathLike, *, lease_s: float = DEFAULT_LEASE_S) -> CampaignStatus:
    """Read a campaign's progress from its files (no worker needs to be reachable).

    Args:
        out: the merged file of the campaign (its chunk folder is ``out.parts``).
        lease_s: the workers' lease, to tell running claims from stale ones.
    """
    import json

    out = Path(out)
    parts = parts_dir(out)
    if not parts.exists():
        if out.exists():
            return CampaignStatus(out, merged=True)
        raise ValueError(f"no campaign at {out}: neither the file nor {parts} exists")
    meta = json.loads((parts / "meta.json").read_text())
    store = ChunkStore(out, int(meta["n_chunks"]))
    st = CampaignStatus(out, merged=out.exists(), n_chunks=store.n_chunks, n_rows=int(meta.get("n_rows", 0)))
    st.done = store.done_chunks()
    done = set(st.done)
    for p in sorted((parts / "claims").glob("chunk_*.claim")):
        c = int(p.stem.split("_")[1])
        if c in done:
            continue
        state = claim_state(p, lease_s)
        owner = claim_owner(p)
        if state == "live":
            st.running[c] = f"{owner.task or 'worker'} on {owner.host} (pid {owner.pid})" if owner else "?"
        elif state == "stale":
            st.stale.append(c)
    for p in sorted((parts / "failed").glob("chunk_*.json")):
        c = int(p.stem.split("_")[1])
        if c not in done:
            st.failed[c] = len(store.failures(c))
    st.missing = [c for c in range(store.n_chunks) if c not in done and c not in st.running]
    st.corrupt = len(list((parts / "corrupt").glob("*.h5"))) if (parts / "corrupt").exists() else 0
    rows = meta.get("chunk_rows")
    st.done_rows = sum(rows[c] for c in st.done) if rows else sum(store.info(c).get("rows", 0) for c in st.done)
    # the rate from the latest chunks only: opening every file of a 48 000-chunk campaign takes minutes
    recent = sorted(st.done, key=lambda c: store.chunk_path(c).stat().st_mtime)[-256:]
    infos = [i for i in (store.info(c) for c in recent) if "t_end" in i]
    if infos:
        st.compute_s_per_chunk = float(np.mean([i["compute_s"] for i in infos]))
    if len(infos) >= 2:
        span = max(i["t_end"] for i in infos) - min(i["t_start"] for i in infos)
        if span > 0:
            st.rows_per_s = sum(i["rows"] for i in infos) / span
            st.eta_s = max(st.n_rows - st.done_rows, 0) / st.rows_per_s
    return st


def write_chunked(
    out: str | os.PathLike,
    settings: dict,
    n_chunks: int,
    make_chunk: Callable[[int], dict[str, np.ndarray]],
    *,
    finalize: Callable[[Any], None] | None = None,
    merge_chunk_rows: int | None = None,
    chunk_rows: Sequence[int] | None = None,
    progress: bool = False,
    unit: str = "chunk",
) -> Path:
    """Write a chunked job from this process alone, resuming a killed run: `run_worker` on a `Campaign`.

    Chunk c is ``make_chunk(c)``, a dict of numpy arrays sharing their first
    (row) length (names with ``/`` land in groups). A rerun with the same
    `settings` skips the chunks present; when all are there they are merged
    (`merge_chunks`) and ``out.parts/`` is removed. `make_chunk` must be a
    deterministic function of c for the resumed file to equal an
    uninterrupted one. Other workers on the same output are welcome
    (`run_worker`).

    Returns:
        The path of the merged file (returned at once if it exists with the same settings).

    Raises:
        ValueError: `out` or a partial run at `out` made with other settings.
        Exception: whatever ``make_chunk`` raised (recorded in ``failed/`` first).
    """
    campaign = Campaign(Path(out), dict(settings), n_chunks, make_chunk, finalize=finalize,
                        merge_chunk_rows=merge_chunk_rows,
                        chunk_rows=None if chunk_rows is None else tuple(int(r) for r in chunk_rows), unit=unit)
    return run_worker(campaign, progress=progress, wait=True, raise_errors=True).out
