"""Provenance of a written product: what made it, with which settings, when.

Every file a command writes carries the same record: the package version, the
command line, the UTC date, the seed, θ and the settings. `provenance` builds
it as a JSON-ready dict; `fits_cards` turns it into FITS header cards
(keywords of at most 8 characters, long values in ``HIERARCH``-free
``CONTINUE`` strings), so astropy users read it with ``fits.getheader``.
"""

from __future__ import annotations

import datetime
import json
import math
import platform
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["provenance", "fits_cards", "clean_json"]


def _version() -> str:
    from .. import __version__

    return __version__


def clean_json(value: Any, digits: int = 7) -> Any:
    """``value`` as JSON-ready Python: arrays to lists, NumPy scalars to Python, floats to ``digits`` significant digits.

    float32 results (θ drawn in float32, for example) print as 0.30000001192…;
    rounding to 7 significant digits (float32's precision) removes that noise
    without losing information. Non-finite floats become None (JSON has no inf).
    """
    if isinstance(value, Mapping):
        return {str(k): clean_json(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v, digits) for v in value]
    if isinstance(value, np.ndarray):
        return clean_json(value.tolist(), digits)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            return None
        return float(f"{v:.{digits}g}")
    if hasattr(value, "__fspath__"):
        return str(value)
    if hasattr(value, "shape") and hasattr(value, "dtype"):  # a JAX array
        return clean_json(np.asarray(value), digits)
    return value


def provenance(command: str, *, seed: int | None = None, theta: Mapping[str, float] | None = None,
               settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The provenance record of one product.

    Args:
        command: the jaxcluster command (``"simulate"``, ``"npe train"``, …).
        seed: the integer seed of the run's PRNG key, if any.
        theta: the parameters the product was made at, if any.
        settings: the run's settings (JSON-ready after `clean_json`).

    Returns:
        ``{"software": "jaxcluster X.Y.Z", "command": …, "argv": …, "date_utc": ISO 8601, "seed": …,
        "theta": …, "settings": …, "python": …, "jax": …}``.
    """
    import jax

    rec: dict[str, Any] = dict(
        software=f"jaxcluster {_version()}", command=command, argv=list(sys.argv),
        date_utc=datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        python=platform.python_version(), jax=jax.__version__,
    )
    if seed is not None:
        rec["seed"] = int(seed)
    if theta is not None:
        rec["theta"] = clean_json(dict(theta))
    if settings is not None:
        rec["settings"] = clean_json(dict(settings))
    return rec


def fits_cards(record: Mapping[str, Any]) -> list[tuple[str, Any, str]]:
    """FITS header cards for a `provenance` record: ``[(keyword, value, comment), …]``.

    Standard keywords where FITS has them (``ORIGIN``, ``DATE``, ``CREATOR``),
    one card per θ parameter (``TH_<i>`` with the name in the comment, since
    FITS keywords are limited to 8 characters), ``SEED``, and the full record
    as JSON in ``PROVJSON`` (astropy writes a long string over ``CONTINUE``
    cards and reads it back whole).
    """
    cards: list[tuple[str, Any, str]] = [
        ("ORIGIN", "jaxcluster", "software that wrote this file"),
        ("CREATOR", str(record.get("software", "jaxcluster")), "software and version"),
        ("DATE", str(record.get("date_utc", ""))[:19], "UTC date of writing"),
        ("JCCMD", str(record.get("command", "")), "jaxcluster command"),
    ]
    if "seed" in record:
        cards.append(("SEED", int(record["seed"]), "PRNG seed (jax.random.key)"))
    for i, (name, value) in enumerate((record.get("theta") or {}).items()):
        cards.append((f"TH_{i}", value, f"theta: {name}"))
    cards.append(("PROVJSON", json.dumps(clean_json(record), sort_keys=True), "provenance record (JSON)"))
    return cards
