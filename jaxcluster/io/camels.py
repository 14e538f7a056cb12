"""CAMELS parameter tables (one row per simulation) as a θ_sim batch in our order.

The public CAMELS/IllustrisTNG LH, CV and 1P parameter files are
whitespace-separated text with the columns

    Omega_m  sigma_8  A_SN1  A_AGN1  A_SN2  A_AGN2  seed

optionally preceded by a simulation-name column (e.g. ``LH_0``) and by
comment lines starting with ``#``. If a comment line names the columns
(e.g. ``#Name Omega_m sigma_8 A_SN1 A_AGN1 A_SN2 A_AGN2 seed``) the columns
are mapped by name; otherwise the CAMELS order above is assumed.

CAMELS orders the feedback amplitudes (A_SN1, A_AGN1, A_SN2, A_AGN2); our
`PARAM_NAMES` is (Omega_m, sigma_8, A_SN1, A_SN2, A_AGN1, A_AGN2). The reader
maps the columns by name, never by position in the output.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
from jaxtyping import Int

from ..params import PARAM_NAMES, PRIOR_BOUNDS, ThetaSim

__all__ = ["CAMELS_COLUMNS", "CamelsTable", "read_camels_params", "write_camels_params"]

CAMELS_COLUMNS: tuple[str, ...] = ("Omega_m", "sigma_8", "A_SN1", "A_AGN1", "A_SN2", "A_AGN2", "seed")
_NAME_COLUMNS = ("name", "#name", "sim", "simulation")


class CamelsTable(NamedTuple):
    """A CAMELS parameter table.

    Attributes:
        theta: θ_sim batch, fields of shape (n_sim,), in our `PARAM_NAMES` order.
        seeds: (n_sim,) initial-condition random seeds.
        names: simulation names (first column) if the table has them, else None.
    """

    theta: ThetaSim
    seeds: Int[np.ndarray, " n_sim"]
    names: tuple[str, ...] | None


def _header_columns(comment: str) -> list[str] | None:
    tokens = comment.lstrip("#").split()
    if all(c in tokens for c in CAMELS_COLUMNS):
        return tokens
    return None


def read_camels_params(path: str | Path) -> CamelsTable:
    """Read a CAMELS parameter table and reorder its columns into θ_sim.

    Args:
        path: the text file (e.g. ``CosmoAstroSeed_IllustrisTNG_L25n256_LH.txt``).

    Returns:
        `CamelsTable(theta, seeds, names)`; ``theta.to_array()[i]`` is row i in
        our (Ω_m, σ_8, A_SN1, A_SN2, A_AGN1, A_AGN2) order.

    Raises:
        ValueError: missing file, no data rows, a row with the wrong number of
            columns, a non-numeric value, a non-integer seed, or a parameter
            outside its prior range (`PRIOR_BOUNDS`); the message names the
            line and the parameter.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"CAMELS parameter table {path} does not exist")
    columns: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            if not rows and columns is None:
                columns = _header_columns(stripped)
            continue
        rows.append((lineno, stripped.split()))
    if not rows:
        raise ValueError(f"CAMELS parameter table {path} has no data rows")

    if columns is not None:
        # A header may name a leading simulation-name column or not.
        has_names = len(columns) == len(CAMELS_COLUMNS) + 1 and columns[0].lower() in _NAME_COLUMNS
        data_columns = columns[1:] if has_names else columns
    else:
        has_names = len(rows[0][1]) == len(CAMELS_COLUMNS) + 1
        data_columns = list(CAMELS_COLUMNS)
    width = len(data_columns) + (1 if has_names else 0)
    index = {name: data_columns.index(name) for name in CAMELS_COLUMNS}

    values = {name: [] for name in CAMELS_COLUMNS}
    names: list[str] = []
    for lineno, tokens in rows:
        if len(tokens) != width:
            raise ValueError(f"{path}, line {lineno}: expected {width} columns, got {len(tokens)}")
        if has_names:
            names.append(tokens[0])
            tokens = tokens[1:]
        for name in CAMELS_COLUMNS:
            text = tokens[index[name]]
            try:
                v = float(text)
            except ValueError:
                raise ValueError(f"{path}, line {lineno}: {name} = {text!r} is not a number") from None
            if name == "seed":
                if not v.is_integer():
                    raise ValueError(f"{path}, line {lineno}: seed = {text!r} is not an integer")
            else:
                lo, hi = PRIOR_BOUNDS[name]
                if not (lo <= v <= hi):
                    raise ValueError(f"{path}, line {lineno}: {name} = {v} is outside its allowed range [{lo}, {hi}]")
            values[name].append(v)

    theta = ThetaSim(**{name: np.asarray(values[name], dtype=np.float64) for name in PARAM_NAMES})
    seeds = np.asarray(values["seed"], dtype=np.float64).astype(np.int64)
    return CamelsTable(theta=theta, seeds=seeds, names=tuple(names) if has_names else None)


def write_camels_params(
    path: str | Path, theta: ThetaSim, seeds: np.ndarray | list[int], names: tuple[str, ...] | list[str] | None = None
) -> None:
    """Write a parameter table in the CAMELS layout (`read_camels_params` reads it back exactly).

    Args:
        path: output text file.
        theta: θ_sim batch, fields of shape (n_sim,).
        seeds: (n_sim,) integer initial-condition seeds.
        names: optional simulation names (first column), e.g. ``LH_0``.

    Raises:
        ValueError: mismatched lengths.
    """
    values = {name: np.atleast_1d(np.asarray(getattr(theta, name), dtype=np.float64)) for name in PARAM_NAMES}
    seeds = np.atleast_1d(np.asarray(seeds))
    n = len(seeds)
    if any(len(v) != n for v in values.values()) or (names is not None and len(names) != n):
        raise ValueError(f"theta fields, seeds and names must all have length {n}")
    header = ("#Name " if names is not None else "#") + " ".join(CAMELS_COLUMNS)
    lines = [header]
    for i in range(n):
        row = [repr(float(values[c][i])) for c in CAMELS_COLUMNS[:-1]] + [str(int(seeds[i]))]
        lines.append(" ".join(([names[i]] if names is not None else []) + row))
    from .atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
