"""Files that are either complete or absent: write under a temporary name, fsync, rename into place.

A process killed mid-write leaves at most a hidden ``.NAME.tmp`` beside the
target, never a truncated target: `os.replace` is atomic on POSIX file
systems. `atomic_path` is the general form (any writer that takes a path);
`write_tree` / `read_tree` store an Equinox pytree behind a one-line JSON
header (checkpoints, trained models).
"""

from __future__ import annotations

import contextlib
import json
import os
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
