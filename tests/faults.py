"""Fault injection for the resume tests: a kill at a chosen write, not a sleep.

Every file the package writes goes through `jaxcluster.io.atomic.atomic_path`
(temporary name, fsync, `os.replace`). `kill_at_write(monkeypatch, n)` makes
the n-th of those renames raise `KeyboardInterrupt` instead: the n-th file's
temporary copy is complete but never reaches its name, and writes 1..n-1 are
on disk, which is what a kill anywhere between write n-1 and write n leaves.
`count_writes` records the renames of an uninterrupted run (their number and
targets), so a test can kill at each of them in turn:

    with count_writes(monkeypatch) as writes:
        run(ref)
    for n in range(1, len(writes) + 1):
        with kill_at_write(monkeypatch, n), pytest.raises(KeyboardInterrupt):
            run(out_n)
        run(out_n)  # the resume
        assert same_bits(ref, out_n)
"""

from __future__ import annotations

import contextlib
import types
from pathlib import Path

import jaxcluster.io.atomic as atomic_module


def _proxy_os(on_replace):
    """A stand-in for the `os` module inside io.atomic whose `replace` calls `on_replace(src, dst)` first."""
    real = atomic_module.os

    def replace(src, dst, *a, **kw):
        on_replace(Path(src), Path(dst))
        return real.replace(src, dst, *a, **kw)

    proxy = types.SimpleNamespace(**{k: getattr(real, k) for k in dir(real) if not k.startswith("__")})
    proxy.replace = replace
    return proxy


@contextlib.contextmanager
def count_writes(monkeypatch):
    """Yield a list that fills with the target path of every atomic write made inside the block."""
    writes: list[Path] = []
    with monkeypatch.context() as m:
        m.setattr(atomic_module, "os", _proxy_os(lambda src, dst: writes.append(dst)))
        yield writes


class KilledAtWrite(KeyboardInterrupt):
    """The injected kill (a KeyboardInterrupt: no `except Exception` handler of the package swallows it)."""


@contextlib.contextmanager
def kill_at_write(monkeypatch, n: int):
    """Inside the block, the n-th atomic write (1-based) raises `KilledAtWrite` before its rename.

    Yields a list of the targets written before the kill (the last entry is the killed one's target).
    """
    seen: list[Path] = []

    def on_replace(src, dst):
        seen.append(dst)
        if len(seen) == n:
            raise KilledAtWrite(f"killed at write {n} ({dst.name})")

    with monkeypatch.context() as m:
        m.setattr(atomic_module, "os", _proxy_os(on_replace))
        yield seen


def files_bytes(root: Path, skip=()) -> dict[str, bytes]:
    """Every file under ``root`` (relative name → bytes), leaving out names matching any of ``skip`` (globs)."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_file() and not any(p.match(s) for s in skip):
            out[rel] = p.read_bytes()
    return out
