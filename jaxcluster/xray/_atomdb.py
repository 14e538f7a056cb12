"""Importing pyatomdb without its interactive set-up prompt.

``import pyatomdb`` (1.2.2, ``pyatomdb/__init__.py``) asks on stdin whether to
download AtomDB when ``$ATOMDB`` is unset, or when ``$ATOMDB/userdata`` does
not exist; a non-interactive run then dies on EOF. Nothing else is checked at
import. So before the first import we make sure that ``$ATOMDB`` names a
directory holding a ``userdata`` file, the same small key = value file that
``pyatomdb.util.initialize()`` writes (an anonymous ``USERID = 00000000``,
which also tells AtomDB not to report usage). No download is attempted.

Directory choice, first match wins:

1. ``$ATOMDB`` when it is set (a real AtomDB install: its ``userdata`` is
   created if missing, nothing else is touched);
2. the ``cache_dir`` argument;
3. ``$JAXCLUSTER_ATOMDB_DIR``;
4. ``$XDG_CACHE_HOME/jaxcluster/atomdb`` (``~/.cache/jaxcluster/atomdb``).

Setting ``os.environ['ATOMDB']`` is the one process-wide effect here; pyatomdb
reads data paths through that variable, so it cannot be avoided.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["atomdb_dir", "import_pyatomdb", "apec_data_files", "atomdb_version"]

_USERDATA = "USERID = 00000000\n# written by jaxcluster so that pyatomdb never prompts\n"


def atomdb_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The AtomDB directory pyatomdb will use (see the module docstring for the order)."""
    env = os.environ.get("ATOMDB")
    if env:
        return Path(os.path.expandvars(env)).expanduser()
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("JAXCLUSTER_ATOMDB_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "jaxcluster" / "atomdb"


def import_pyatomdb(cache_dir: str | os.PathLike | None = None):
    """Import and return the ``pyatomdb`` module, never prompting.

    Args:
        cache_dir: AtomDB directory to use when ``$ATOMDB`` is unset.

    Raises:
        RuntimeError: the directory or its ``userdata`` file cannot be created.
    """
    if "pyatomdb" in sys.modules:
        return sys.modules["pyatomdb"]
    root = atomdb_dir(cache_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        userdata = root / "userdata"
        if not userdata.exists():
            from ..io.atomic import atomic_path

            with atomic_path(userdata) as tmp:  # never a half-written config for pyatomdb to read
                tmp.write_text(_USERDATA)
    except OSError as err:
        raise RuntimeError(
            f"cannot prepare the AtomDB directory {root} (pyatomdb needs {root}/userdata "
            f"to import without prompting): {err}; set $ATOMDB or $JAXCLUSTER_ATOMDB_DIR "
            "to a writable directory"
        ) from err
    os.environ["ATOMDB"] = str(root)
    import pyatomdb

    return pyatomdb


def apec_data_files(cache_dir: str | os.PathLike | None = None) -> tuple[Path, Path] | None:
    """The APEC line and continuum files (``apec_line.fits``, ``apec_coco.fits``), or None.

    These are the defaults of ``pyatomdb.spectrum.CIESession``; they are
    installed by ``pyatomdb.util.initialize()`` (a download).
    """
    root = atomdb_dir(cache_dir)
    line, coco = root / "apec_line.fits", root / "apec_coco.fits"
    if line.exists() and coco.exists():
        return line, coco
    return None


def atomdb_version(cache_dir: str | os.PathLike | None = None) -> str:
    """The AtomDB data version (``$ATOMDB/VERSION``), or "unknown"."""
    f = atomdb_dir(cache_dir) / "VERSION"
    try:
        return f.read_text().strip() or "unknown"
    except OSError:
        return "unknown"
