"""Files that are either complete or absent: write under a temporary name, fsync, rename into place.

A process killed mid-write leaves at most a hidden ``.NAME.tmp`` beside the
target, never a truncated target: `os.replace` is atomic on POSIX file
systems. `atomic_path` is the general form (any writer that takes a path);
`write_tree` / `read_tree` store an Equinox pytree behind a one-line JSON
header (checkpoints, trained models). `atomic_folder` does the same for a
folder of products (a command's ``--out``): they are written into a hidden
sibling folder that replaces ``--out`` in two renames once every product is
there, so ``--out`` holds one complete run, never a mix of two.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "write_json", "write_tree", "read_tree", "record_settings"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit, fsync it and rename it to ``path``.

    On an exception the temporary file is removed and ``path`` is untouched.

        with atomic_path(out / "maps.fits") as tmp:
            hdus.writeto(tmp)
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 1) -> None:
    """Write ``obj`` as JSON (sorted keys), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, sort_keys=True))


def write_tree(path: str | os.PathLike, header: dict, tree: Any) -> None:
    """Write a JSON header line then the pytree's leaves (`eqx.tree_serialise_leaves`), atomically."""
    import equinox as eqx

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write((json.dumps(header) + "\n").encode())
        eqx.tree_serialise_leaves(f, tree)


def read_tree(path: str | os.PathLike, like: Any) -> tuple[dict, Any]:
    """Read what `write_tree` wrote: (header, pytree shaped like ``like``).

    Raises:
        ValueError: the file is missing, truncated, or holds another structure (naming the file).
    """
    import equinox as eqx

    path = Path(path)
    try:
        with open(path, "rb") as f:
            header = json.loads(f.readline().decode())
            return header, eqx.tree_deserialise_leaves(f, like)
    except (ValueError, RuntimeError, OSError, EOFError) as err:
        raise ValueError(f"{path} cannot be read ({type(err).__name__}: {err})") from None


def record_settings(path: str | os.PathLike, settings: dict[str, Any]) -> None:
    """A resumable job's first write: record ``settings`` in ``path``, or refuse a resume with others.

    ``settings`` (flat, JSON-serialisable: options and input digests) is
    written to ``path`` if it does not exist; if it does, each key is
    compared with the stored value after a JSON round trip.

    Raises:
        ValueError: ``path`` is corrupt, or holds other settings (naming each key: stored → requested).
    """
    from .chunks import check_settings

    path = Path(path)
    mine = json.loads(json.dumps(settings, sort_keys=True))
    if not path.exists():
        write_json(path, mine)
        return
    try:
        theirs = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is corrupt ({err}): remove the folder {path.parent} to start again") from None
    if not isinstance(theirs, dict):
        raise ValueError(f"{path} is corrupt (not a JSON object): remove the folder {path.parent} to start again")
    check_settings(path.parent, theirs, mine)


def _siblings(out: Path) -> list[Path]:
    """Hidden folders left beside ``out`` by a killed `atomic_folder` (any process)."""
    return [p for p in out.parent.glob(f".{out.name}.*") if p.is_dir() and (".partial-" in p.name or ".old-" in p.name)]


def check_replaceable(out: str | os.PathLike, products: set[str] | frozenset[str]) -> None:
    """Refuse an ``--out`` that holds anything but the products of an earlier run of the same command.

    Called before a long job starts, so that `atomic_folder` can later replace
    the folder whole without deleting a file the user put there.

    Raises:
        ValueError: ``out`` is a file, or holds other files (named in the message).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in products and not p.name.startswith("."))
        if foreign:
            shown = ", ".join(foreign[:5]) + (" …" if len(foreign) > 5 else "")
            raise ValueError(f"--out {out} holds files this command does not write ({shown}): it would replace the "
                             "folder whole, so choose a new or empty folder")


@contextlib.contextmanager
def atomic_folder(out: str | os.PathLike, products: set[str] | frozenset[str]) -> Iterator[Path]:
    """Yield a hidden staging folder; on a clean exit it replaces ``out`` (complete or absent, never mixed).

    ``out`` must pass `check_replaceable` (checked again here). The old folder
    is renamed aside, the staging folder renamed to ``out`` and the old one
    removed; a kill between the two renames leaves ``out`` absent, and the
    next run removes what a killed run left beside it. On an exception the
    staging folder is removed and ``out`` is untouched.
    """
    out = Path(out)
    check_replaceable(out, products)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in _siblings(out):
        shutil.rmtree(stale, ignore_errors=True)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    staging.mkdir()
    try:
        yield staging
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        if out.exists():
            os.rename(out, old)
        os.rename(staging, out)
        fd = os.open(out.parent, os.O_RDONLY)  # make the renames durable
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
