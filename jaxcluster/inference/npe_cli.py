"""Command line: ``jaxcluster npe train | infer | validate`` (neural posterior estimation on (θ, XOD) datasets)."""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    raise NotImplementedError("jaxcluster npe: being written")
