"""Leases on a shared file system: which worker is computing which chunk of a campaign.

A claim is a small JSON file (``claims/chunk_000012.claim``) naming its
owner (host, pid, array task, a random token). It is created whole or not at
all: the content goes to a private temporary file first, which is then
hard-linked to the claim's name; ``link`` fails if the name exists, on local
disks and on NFS/Lustre/GPFS alike, so exactly one of several racing workers
gets it. The owner keeps the claim alive by touching it (its mtime is the
heartbeat, `Lease.heartbeat`); a claim is **stale**, and may be taken over,
when its heartbeat is older than the lease, or at once when its owner is a
dead process on this host.

Claims only keep workers from duplicating work. That a chunk is written
once is guaranteed elsewhere, by publishing the chunk file with the same
link-if-absent (`jaxcluster.io.chunks`): a worker that lost its claim (a
node frozen past its lease) may compute a chunk twice, but never writes it
twice.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["Owner", "Lease", "claim", "claim_owner", "claim_state", "create_exclusive"]


@dataclass(frozen=True)
class Owner:
    """Who holds a claim.

    Attributes:
        host: host name.
        pid: process id on that host.
        task: the worker's label (e.g. ``"slurm-array 3/16"``, ``"dask tcp://…"``).
        token: random hex string identifying this claim (not the process).
        t_claim: when the claim was made [s since the epoch].
    """

    host: str
    pid: int
    task: str
    token: str
    t_claim: float

    @classmethod
    def me(cls, task: str = "") -> Owner:
        """This process, with a fresh token."""
        return cls(socket.gethostname(), os.getpid(), str(task), secrets.token_hex(8), time.time())

    def is_dead_here(self) -> bool:
        """True if the owner is a process of this host that no longer exists."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # exists, owned by someone else
            return False
        return False


def create_exclusive(path: Path, text: str) -> bool:
    """Create `path` holding `text` if it does not exist, atomically; False if it exists.

    The text is written and fsynced under a private name, then hard-linked
    to `path` (link fails on an existing name), so a reader sees the whole
    file or none.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink()


def claim_owner(path: Path) -> Owner | None:
    """The owner recorded in a claim file (None if absent or unreadable)."""
    try:
        return Owner(**json.loads(Path(path).read_text()))
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None


def claim_state(path: Path, lease_s: float, now: float | None = None) -> str:
    """``"free"`` (no claim), ``"live"`` or ``"stale"`` (heartbeat older than `lease_s`, or owner dead here)."""
    path = Path(path)
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return "free"
    now = time.time() if now is None else now
    if now - mtime > lease_s:
        return "stale"
    owner = claim_owner(path)
    return "stale" if owner is not None and owner.is_dead_here() else "live"


class Lease:
    """A claim held by this process: `heartbeat` keeps it alive, `release` gives it up.

    Use as a context manager: a background thread touches the claim every
    ``lease_s / 4`` seconds while the body runs (JAX releases the GIL while
    it computes, so the thread keeps beating during long XLA calls), and the
    claim is released on exit, also on an exception or KeyboardInterrupt.
    """

    def __init__(self, path: Path, owner: Owner, lease_s: float):
        self.path, self.owner, self.lease_s = Path(path), owner, float(lease_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def held(self) -> bool:
        """True while the claim file still carries this lease's token."""
        current = claim_owner(self.path)
        return current is not None and current.token == self.owner.token

    def heartbeat(self) -> None:
        """Touch the claim (renew the lease) if it is still ours."""
        if self.held():
            try:
                os.utime(self.path)
            except FileNotFoundError:
                pass

    def release(self) -> None:
        """Remove the claim if it is still ours."""
        if self.held():
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            self.heartbeat()

    def __enter__(self) -> Lease:
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat {self.path.name}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.release()


def claim(path: Path, lease_s: float, task: str = "") -> Lease | None:
    """Try to claim `path`: a `Lease` if this process now holds it, None if a live owner does.

    A stale claim is taken over: it is first renamed to a name private to
    this attempt (only one of several racing workers can rename it), checked
    to be the stale claim that was inspected (not a fresh one made in
    between, which is put back), and replaced by a new claim.

    Args:
        path: the claim file.
        lease_s: seconds without a heartbeat after which a claim is stale, > 0.
        task: label of this worker, recorded in the claim.
    """
    if not lease_s > 0:
        raise ValueError(f"lease_s = {lease_s} is outside its allowed range (0, inf)")
    path = Path(path)
    owner = Owner.me(task)
    text = json.dumps(asdict(owner))
    if create_exclusive(path, text):
        return Lease(path, owner, lease_s)
    if claim_state(path, lease_s) != "stale":
        return None
    seen = claim_owner(path)
    grave = path.with_name(f".{path.name}.{owner.token}.stale")
    try:
        os.rename(path, grave)
    except FileNotFoundError:  # another worker moved it first
        return None
    moved = claim_owner(grave)
    if claim_state(grave, lease_s) != "stale" or (seen is not None and (moved is None or moved.token != seen.token)):
        # not the stale claim we inspected: put it back unless someone claimed since
        try:
            os.link(grave, path)
        except FileExistsError:
            pass
        grave.unlink()
        return None
    grave.unlink()
    return Lease(path, owner, lease_s) if create_exclusive(path, text) else None
