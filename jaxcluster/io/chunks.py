"""Chunked HDF5 outputs that survive kills and concurrent writers: chunk files, digests, merge.

A long job that produces rows of arrays (a (θ, XOD) training set, a set of
cluster cutouts) writes them in **chunks**, chunk c being a deterministic
function of c. While the job runs, the chunks live in a folder next to the
final file::

    OUT.parts/
        meta.json            the job's settings (compared by every worker that joins)
        chunk_000012.h5      one published chunk: its arrays, their digest, who made it and when
        claims/              leases of the workers computing chunks (`jaxcluster.io.claims`)
        failed/              per chunk, the tracebacks of failed attempts (JSON)
        corrupt/             chunk files whose digest did not match, moved aside

**Why a folder of chunk files.** HDF5 is not journaled: a process killed
while it writes into a file can leave it unreadable, losing everything. A
chunk file is written under a private temporary name, fsynced, and then
*published* by a hard link to its final name, which fails if the name
exists: a chunk file is whole or absent, and of two workers that computed
the same chunk only the first one's file is kept (never written twice).

**Digests.** Each chunk file carries the SHA-256 of its arrays (names,
dtypes, shapes and bytes, `array_digest`); the merge recomputes it and
moves a chunk that does not match to ``corrupt/`` (so that the job computes
it again) instead of merging bad bits.

**Merge.** When every chunk is present, the arrays are concatenated in
chunk order into ``OUT`` (temporary name, fsync, rename), with the settings
as attributes, and ``OUT.parts/`` is removed. The merged file depends only
on the chunks' arrays and the settings, so it is the same, byte for byte,
whichever workers made the chunks.

Who computes which chunk, and when, is `jaxcluster.io.campaign`'s business.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .claims import create_exclusive

__all__ = [
    "ChunkStore",
    "CorruptChunks",
    "array_digest",
    "pytree_digest",
    "merge_chunks",
    "parts_dir",
    "check_settings",
    "read_attr",
    "fsync_replace",
]

_IGNORED_SETTINGS = ("jaxcluster_version",)  # a newer release may resume an older run


def parts_dir(out: str | os.PathLike) -> Path:
    """The folder of chunk files of the output `out` (``OUT.parts``)."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def _hash_arrays(h, items: Iterable[tuple[str, np.ndarray]]) -> None:
    for name, a in items:
        a = np.asarray(a)
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(np.ascontiguousarray(a).tobytes())


def array_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 (hex) of named arrays: names, dtypes, shapes and values, in name order."""
    h = hashlib.sha256()
    _hash_arrays(h, sorted(arrays.items()))
    return h.hexdigest()


def pytree_digest(tree) -> str:
    """A fingerprint (SHA-256, hex) of the arrays in a pytree: their tree paths, dtypes, shapes and values.

    Stored with a job's settings so that resuming with another simulator
    (other eLDL weights, emission table, ...) is refused instead of mixing
    chunks from both. Non-array leaves (functions, static fields) are left
    out: their reprs can hold memory addresses that differ between runs.
    """
    import equinox as eqx
    import jax

    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if eqx.is_array(leaf):
            a = np.asarray(leaf)
            h.update(f"{jax.tree_util.keystr(path)}|{a.dtype}|{a.shape}|".encode())
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def fsync_replace(tmp: Path, path: Path) -> None:
    """Flush `tmp` to disk and rename it to `path` (atomic; replaces `path`)."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(Path(path).parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems do not open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _diff(old: Mapping, new: Mapping) -> dict:
    return {k: (old.get(k), v) for k, v in new.items() if k not in _IGNORED_SETTINGS and old.get(k) != v}


def read_attr(v):
    """An HDF5 attribute as the JSON value it was written from (settings: dicts were stored as JSON text)."""
    if isinstance(v, str) and v.startswith("{"):
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    if isinstance(v, np.ndarray):
        return [x.item() if hasattr(x, "item") else x for x in v.tolist()] if v.dtype != object else list(v)
    if isinstance(v, (np.integer, np.floating, np.bool_)):
        return v.item()
    if isinstance(v, bytes):
        return v.decode()
    return v


def check_settings(where: str | os.PathLike, old: Mapping, new: Mapping) -> None:
    """Refuse to continue a job with other settings, naming each difference (stored → requested)."""
    diff = _diff(old, new)
    if diff:
        named = "; ".join(f"{k}: {a!r} there, {b!r} requested" for k, (a, b) in sorted(diff.items()))
        raise ValueError(f"{where} was made with other settings ({named}); remove it or pick another output")


class CorruptChunks(RuntimeError):
    """Chunk files whose digest did not match their arrays (moved to ``corrupt/``, to be recomputed).

    Attributes:
        chunks: their indices.
    """

    def __init__(self, chunks: list[int], where: Path):
        self.chunks = sorted(chunks)
        super().__init__(f"{len(self.chunks)} chunk file(s) of {where} failed their checksum and were moved "
                         f"to corrupt/ (chunks {self.chunks[:10]}{'…' if len(self.chunks) > 10 else ''}): "
                         f"run the job again to recompute them")


@dataclass(frozen=True)
class ChunkStore:
    """The chunk folder of one job (a value: the path and the chunk count; no state is kept on it).

    Attributes:
        out: the merged output file.
        n_chunks: number of chunks.
    """

    out: Path
    n_chunks: int

    @property
    def parts(self) -> Path:
        """``OUT.parts``."""
        return parts_dir(self.out)

    def chunk_path(self, c: int) -> Path:
        """File of chunk c."""
        return self.parts / f"chunk_{c:06d}.h5"

    def claim_path(self, c: int | str) -> Path:
        """Claim file of chunk c (or of the merge, ``"merge"``)."""
        name = c if isinstance(c, str) else f"chunk_{c:06d}"
        return self.parts / "claims" / f"{name}.claim"

    def failure_path(self, c: int) -> Path:
        """Failure record (JSON) of chunk c."""
        return self.parts / "failed" / f"chunk_{c:06d}.json"

    @classmethod
    def open(cls, out: str | os.PathLike, settings: dict, n_chunks: int) -> ChunkStore:
        """Create the chunk folder of `out`, or join an existing one made with the same settings.

        The first worker writes ``meta.json`` (exclusively: of racing
        workers one writes it, the others compare); every later one
        compares its settings with it.

        Raises:
            ValueError: the folder holds a job made with other settings (the message names them).
        """
        if not (isinstance(n_chunks, (int, np.integer)) and n_chunks >= 1):
            raise ValueError(f"n_chunks = {n_chunks!r} is outside its allowed range: an integer >= 1")
        store = cls(Path(out), int(n_chunks))
        meta = {**settings, "n_chunks": int(n_chunks)}
        text = json.dumps(meta, indent=1, sort_keys=True)  # fails early (TypeError) if not serialisable
        for sub in ("claims", "failed"):
            (store.parts / sub).mkdir(parents=True, exist_ok=True)
        meta_path = store.parts / "meta.json"
        if not create_exclusive(meta_path, text):
            try:
                old = json.loads(meta_path.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"{meta_path} is not valid JSON ({err}); remove {store.parts} to start "
                                 f"again") from None
            check_settings(f"the partial job in {store.parts}", old, meta)
        return store

    def done(self, c: int) -> bool:
        """Whether chunk c is published."""
        return self.chunk_path(c).exists()

    def done_chunks(self) -> list[int]:
        """Indices of the published chunks."""
        return sorted(int(p.stem.split("_")[1]) for p in self.parts.glob("chunk_*.h5"))

    def publish(self, c: int, arrays: Mapping[str, np.ndarray], info: Mapping[str, Any] | None = None) -> bool:
        """Write chunk c (arrays sharing their first length; ``a/b`` names make groups) unless it exists.

        Args:
            c: chunk index.
            arrays: the chunk's arrays.
            info: provenance (worker, times) stored as attributes, outside the digest.

        Returns:
            True if this call published it, False if the chunk was already there
            (another worker's copy is kept, this one discarded).
        """
        import h5py

        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        lengths = {v.shape[0] if v.ndim else None for v in arrays.values()}
        if None in lengths or len(lengths) > 1:
            raise ValueError(f"chunk {c}: arrays must share their first (row) length, got "
                             f"{ {k: v.shape for k, v in arrays.items()} }")
        final = self.chunk_path(c)
        tmp = final.with_name(f".{final.name}.{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        with h5py.File(tmp, "w") as f:
            f.attrs["chunk"] = int(c)
            f.attrs["rows"] = int(lengths.pop()) if lengths else 0
            f.attrs["digest"] = array_digest(arrays)
            f.attrs["info"] = json.dumps(dict(info or {}), sort_keys=True)
            for k, v in arrays.items():
                f.create_dataset(k, data=v)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        try:
            os.link(tmp, final)
        except FileExistsError:
            return False
        finally:
            tmp.unlink()
        _fsync_dir(self.parts)
        return True

    def read(self, c: int, verify: bool = True) -> dict[str, np.ndarray]:
        """The arrays of chunk c.

        Raises:
            CorruptChunks: `verify` and the file is unreadable or its digest does not match
                (the file is moved to ``corrupt/`` first).
        """
        import h5py

        path = self.chunk_path(c)
        try:
            with h5py.File(path, "r") as g:
                names: list[str] = []
                g.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
                arrays = {k: g[k][()] for k in names}
                digest = g.attrs.get("digest")
        except FileNotFoundError:
            raise
        except Exception:  # a damaged HDF5 structure: as bad as a wrong digest
            if not verify:
                raise
            digest, arrays = None, {}
        if verify and digest != array_digest(arrays):
            self.quarantine(c)
            raise CorruptChunks([c], self.parts)
        return arrays

    def info(self, c: int) -> dict:
        """Provenance and size of chunk c (``rows``, and the worker's ``info``); {} if unreadable."""
        import h5py

        try:
            with h5py.File(self.chunk_path(c), "r") as g:
                return {"rows": int(g.attrs["rows"]), **json.loads(g.attrs["info"])}
        except Exception:
            return {}

    def quarantine(self, c: int) -> None:
        """Move chunk c's file to ``corrupt/`` (kept for inspection; the chunk counts as missing)."""
        (self.parts / "corrupt").mkdir(exist_ok=True)
        try:
            os.replace(self.chunk_path(c), self.parts / "corrupt" / f"chunk_{c:06d}.{time.time_ns()}.h5")
        except FileNotFoundError:
            pass

    def failures(self, c: int) -> list[dict]:
        """The recorded failed attempts of chunk c (oldest first)."""
        try:
            return json.loads(self.failure_path(c).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return []

    def record_failure(self, c: int, attempt: dict) -> int:
        """Append a failed attempt to chunk c's record (only the claim holder calls this); returns the count."""
        attempts = self.failures(c) + [attempt]
        path = self.failure_path(c)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        tmp.write_text(json.dumps(attempts, indent=1))
        fsync_replace(tmp, path)
        return len(attempts)

    def remove_stale_temporaries(self) -> None:
        """Delete temporary files that dead processes of this host left in the chunk folder and beside `out`."""
        remove_dead_temporaries(self.parts.rglob(".*.tmp"))
        remove_dead_temporaries(self.out.parent.glob(f".{self.out.name}.*.tmp"))


def remove_dead_temporaries(paths: Iterable[Path]) -> None:
    """Delete the temporary files (``.NAME.HOST.PID.HEX.tmp``) among `paths` whose writer is a dead process here."""
    from .claims import Owner

    host = socket.gethostname()
    for tmp in paths:
        bits = tmp.name.split(".")
        if len(bits) < 4 or not bits[-3].isdigit() or f".{host}.{bits[-3]}." not in tmp.name:
            continue
        if Owner(host, int(bits[-3]), "", "", 0.0).is_dead_here():
            tmp.unlink(missing_ok=True)


def merge_chunks(store: ChunkStore, settings: dict, *, finalize: Callable[[Any], None] | None = None,
                 merge_chunk_rows: int | None = None) -> Path:
    """Verify every chunk's digest and concatenate their arrays, in chunk order, into ``store.out``.

    The settings become the file's attributes (dict values as JSON
    strings); ``finalize(h5py.File)`` may add datasets or attributes
    computed on the whole set before the file is renamed into place. The
    chunk folder is then removed.

    Raises:
        CorruptChunks: some chunk files failed their digest (moved to ``corrupt/``;
            nothing is written).
        FileNotFoundError: a chunk is missing.
    """
    import h5py

    missing = [c for c in range(store.n_chunks) if not store.done(c)]
    if missing:
        raise FileNotFoundError(f"{store.parts}: {len(missing)} of {store.n_chunks} chunks are missing "
                                f"({missing[:10]}{'…' if len(missing) > 10 else ''})")
    layout: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    rows, bad = [], []
    for c in range(store.n_chunks):  # shapes first, so the merged datasets are made at their final size
        try:
            with h5py.File(store.chunk_path(c), "r") as g:
                names: list[str] = []
                g.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
                rows.append(int(g.attrs["rows"]))
                for k in names:
                    layout.setdefault(k, (g[k].shape[1:], g[k].dtype))
        except Exception:
            store.quarantine(c)
            bad.append(c)
            rows.append(0)
    if bad:
        raise CorruptChunks(bad, store.parts)
    n = sum(rows)
    out = Path(store.out)
    tmp = out.with_name(f".{out.name}.{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with h5py.File(tmp, "w") as f:
            dsets = {}
            for k, (shape, dtype) in layout.items():
                chunks = (max(1, min(n, merge_chunk_rows)), *shape) if merge_chunk_rows and n else None
                dsets[k] = f.create_dataset(k, (n, *shape), dtype=dtype, chunks=chunks)
            start = 0
            for c, m in enumerate(rows):
                try:
                    arrays = store.read(c, verify=True)
                except CorruptChunks:
                    bad.append(c)
                    start += m
                    continue
                for k, d in dsets.items():
                    if k in arrays:
                        d[start:start + m] = arrays[k]
                    elif m:
                        raise ValueError(f"{store.chunk_path(c)} has no array {k!r}, which other chunks have")
                start += m
            if bad:
                raise CorruptChunks(bad, store.parts)
            for k, v in sorted(settings.items()):  # sorted: the same bytes from a settings dict or meta.json
                f.attrs[k] = json.dumps(v, sort_keys=True) if isinstance(v, dict) else v
            if finalize is not None:
                finalize(f)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        try:  # link, not rename: a merged file is never replaced, even by a second merger
            os.link(tmp, out)
        except FileExistsError:
            pass
        _fsync_dir(out.parent)
    finally:
        tmp.unlink(missing_ok=True)
    shutil.rmtree(store.parts, ignore_errors=True)
    return out
