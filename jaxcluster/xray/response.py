r"""OGIP instrument responses (ARF + RMF) and their collapse into energy bands.

An X-ray instrument turns a photon flux $N(E)$ [photons cm⁻² s⁻¹ keV⁻¹] at
the telescope into counts per detector channel $c$:

$$ C_c = \sum_i N(E_i)\,\Delta E_i\; A(E_i)\, R(E_i, c) \quad [\text{counts s}^{-1}], $$

with $A$ the effective area of the ARF [cm²] and $R$ the redistribution
matrix of the RMF (probability that a photon of input bin $i$ lands in
channel $c$). `Response.area_cm2` holds the product $A(E_i) R(E_i, c)$
[cm²] on the RMF's input energy grid and output channels. Responses of
several instruments (e.g. EPIC MOS1 + MOS2 + pn) add up in count rate; the
table builder (`jaxcluster.xray.emissivity`) accepts a sequence of them.

Formats follow OGIP memo CAL/GEN/92-002 (RMF) and CAL/GEN/92-002a: the ARF
has a ``SPECRESP`` extension (``ENERG_LO``, ``ENERG_HI``, ``SPECRESP``); the
RMF has a ``MATRIX`` (or ``SPECRESP MATRIX``) extension (``ENERG_LO``,
``ENERG_HI``, ``N_GRP``, ``F_CHAN``, ``N_CHAN``, ``MATRIX``, where the last
three may be fixed-width or variable-length rows) and an ``EBOUNDS``
extension (``CHANNEL``, ``E_MIN``, ``E_MAX``). The first legal channel
number is the ``TLMIN`` keyword of the ``F_CHAN`` column (0 for XMM-Newton,
1 when absent, as the memo says).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

__all__ = [
    "Response",
    "BandResponse",
    "read_response",
    "read_responses",
    "sum_responses",
    "band_effective_area",
    "band_response",
]

# Energies in OGIP files are float32: grids of ARF and RMF agree to this.
_GRID_RTOL = 1e-5


class Response(eqx.Module):
    """Folded response of one instrument (or of several on identical grids).

    Attributes:
        energ_lo_keV: (n_E,) lower edges of the input (photon) energy bins [keV].
        energ_hi_keV: (n_E,) upper edges of the input energy bins [keV].
        channel: (n_chan,) detector channel numbers (from ``EBOUNDS``).
        e_min_keV: (n_chan,) nominal lower energy of each channel [keV].
        e_max_keV: (n_chan,) nominal upper energy of each channel [keV].
        area_cm2: (n_E, n_chan) effective area ARF × RMF [cm²], the area with
            which a photon in input bin i is counted in channel c.
        sources: names of the files this response was read from (static).
    """

    energ_lo_keV: Float[Array, " n_E"]
    energ_hi_keV: Float[Array, " n_E"]
    channel: Int[Array, " n_chan"]
    e_min_keV: Float[Array, " n_chan"]
    e_max_keV: Float[Array, " n_chan"]
    area_cm2: Float[Array, "n_E n_chan"]
    sources: tuple[str, ...] = eqx.field(static=True, default=())

    def __check_init__(self):
        n_e, n_c = self.energ_lo_keV.shape[0], self.channel.shape[0]
        if self.energ_hi_keV.shape != (n_e,):
            raise ValueError(f"energ_hi_keV shape {self.energ_hi_keV.shape} != ({n_e},)")
        if self.e_min_keV.shape != (n_c,) or self.e_max_keV.shape != (n_c,):
            raise ValueError(f"e_min_keV/e_max_keV must have shape ({n_c},)")
        if self.area_cm2.shape != (n_e, n_c):
            raise ValueError(f"area_cm2 shape {self.area_cm2.shape} != (n_E, n_chan) = ({n_e}, {n_c})")

    @property
    def channel_energy_keV(self) -> Float[Array, " n_chan"]:
        """Nominal channel energy, the centre of (E_MIN, E_MAX), in keV."""
        return 0.5 * (self.e_min_keV + self.e_max_keV)


# ------------------------------------------------------------------- reading


def _fits():
    from astropy.io import fits  # local: astropy is only needed to read files

    return fits


def _find_hdu(hdul, names: Sequence[str], path: str):
    for hdu in hdul[1:]:
        if hdu.name.strip().upper() in names:
            return hdu
    found = [h.name for h in hdul[1:]]
    raise ValueError(f"{path}: no extension named {' or '.join(names)} (found {found})")


def _column(hdu, name: str, path: str) -> np.ndarray:
    if name not in [c.name.upper() for c in hdu.columns]:
        raise ValueError(f"{path}: extension {hdu.name} has no column {name}")
    return hdu.data[name]


def _check_grid(lo: np.ndarray, hi: np.ndarray, what: str, path: str) -> None:
    if lo.ndim != 1 or lo.size == 0:
        raise ValueError(f"{path}: {what} energy grid is empty or not 1-D")
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise ValueError(f"{path}: {what} energy grid has non-finite values")
    if np.any(hi <= lo) or np.any(np.diff(lo) <= 0):
        raise ValueError(f"{path}: {what} energy bins must be increasing with ENERG_HI > ENERG_LO")


def _read_arf(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    fits = _fits()
    with fits.open(path) as hdul:
        hdu = _find_hdu(hdul, ("SPECRESP",), path)
        lo = np.asarray(_column(hdu, "ENERG_LO", path), dtype=np.float64)
        hi = np.asarray(_column(hdu, "ENERG_HI", path), dtype=np.float64)
        area = np.asarray(_column(hdu, "SPECRESP", path), dtype=np.float64)
    _check_grid(lo, hi, "ARF", path)
    if area.shape != lo.shape or np.any(~np.isfinite(area)) or np.any(area < 0):
        raise ValueError(f"{path}: SPECRESP must be finite, >= 0 and one value per energy bin")
    return lo, hi, area


def _row_groups(value, n_grp: int) -> np.ndarray:
    """First n_grp entries of a fixed-width, variable-length or scalar cell."""
    return np.atleast_1d(np.asarray(value)).astype(np.int64)[:n_grp]


def _read_rmf(path: str):
    fits = _fits()
    with fits.open(path) as hdul:
        mat = _find_hdu(hdul, ("MATRIX", "SPECRESP MATRIX"), path)
        ebo = _find_hdu(hdul, ("EBOUNDS",), path)
        lo = np.asarray(_column(mat, "ENERG_LO", path), dtype=np.float64)
        hi = np.asarray(_column(mat, "ENERG_HI", path), dtype=np.float64)
        n_grp = np.asarray(_column(mat, "N_GRP", path), dtype=np.int64)
        f_chan = _column(mat, "F_CHAN", path)
        n_chan = _column(mat, "N_CHAN", path)
        matrix = _column(mat, "MATRIX", path)
        names = [c.name.upper() for c in mat.columns]
        tlmin = mat.header.get(f"TLMIN{names.index('F_CHAN') + 1}", None)
        channel = np.asarray(_column(ebo, "CHANNEL", path), dtype=np.int64)
        e_min = np.asarray(_column(ebo, "E_MIN", path), dtype=np.float64)
        e_max = np.asarray(_column(ebo, "E_MAX", path), dtype=np.float64)
        if tlmin is None:
            ebo_names = [c.name.upper() for c in ebo.columns]
            tlmin = ebo.header.get(f"TLMIN{ebo_names.index('CHANNEL') + 1}", 1)
        first = int(tlmin)
        _check_grid(lo, hi, "RMF", path)
        n_c = channel.size
        if n_c == 0 or np.any(channel != first + np.arange(n_c)):
            raise ValueError(
                f"{path}: EBOUNDS CHANNEL must run contiguously from TLMIN = {first}"
            )
        if np.any(e_max < e_min):
            raise ValueError(f"{path}: EBOUNDS has E_MAX < E_MIN")
        dense = np.zeros((lo.size, n_c), dtype=np.float64)
        for i in range(lo.size):
            g = int(n_grp[i])
            if g == 0:
                continue
            fc = _row_groups(f_chan[i], g)
            nc = _row_groups(n_chan[i], g)
            row = np.asarray(matrix[i], dtype=np.float64).ravel()
            if fc.size != g or nc.size != g or nc.sum() > row.size:
                raise ValueError(
                    f"{path}: MATRIX row {i} has N_GRP = {g} but F_CHAN/N_CHAN/MATRIX "
                    f"hold {fc.size}/{nc.size} groups and {row.size} elements"
                )
            k = 0
            for f, n in zip(fc, nc):
                start = f - first
                if start < 0 or start + n > n_c:
                    raise ValueError(
                        f"{path}: MATRIX row {i} addresses channels {f}..{f + n - 1}, "
                        f"outside {first}..{first + n_c - 1}"
                    )
                dense[i, start : start + n] += row[k : k + n]
                k += n
    if np.any(~np.isfinite(dense)):
        raise ValueError(f"{path}: MATRIX has non-finite values")
    return lo, hi, channel, e_min, e_max, dense


def read_response(arf: str | os.PathLike | None, rmf: str | os.PathLike) -> Response:
    """Read one instrument's OGIP ARF and RMF into a `Response`.

    Args:
        arf: path of the ARF (``SPECRESP`` extension), or None when the RMF
            is a full response (``HDUCLAS3 = 'FULL'``) that already includes
            the effective area.
        rmf: path of the RMF (``MATRIX`` or ``SPECRESP MATRIX``, and ``EBOUNDS``).

    Returns:
        The folded `Response`, area_cm2 = SPECRESP(i) × MATRIX(i, c) in cm²,
        in JAX's default float dtype.

    Raises:
        ValueError: a file lacks an extension or column, has inconsistent rows
            or channels, or the ARF and RMF energy grids differ (the message
            names the file and the problem).
    """
    rmf = os.fspath(rmf)
    lo, hi, channel, e_min, e_max, dense = _read_rmf(rmf)
    sources = [rmf]
    if arf is not None:
        arf = os.fspath(arf)
        a_lo, a_hi, area = _read_arf(arf)
        if a_lo.shape != lo.shape or not (
            np.allclose(a_lo, lo, rtol=_GRID_RTOL, atol=0.0)
            and np.allclose(a_hi, hi, rtol=_GRID_RTOL, atol=0.0)
        ):
            raise ValueError(
                f"{arf}: ARF energy grid ({a_lo.size} bins, {a_lo[0]:.4g}-{a_hi[-1]:.4g} keV) "
                f"differs from that of RMF {rmf} ({lo.size} bins, {lo[0]:.4g}-{hi[-1]:.4g} keV)"
            )
        dense = dense * area[:, None]
        sources.insert(0, arf)
    dtype = jnp.result_type(float)
    return Response(
        energ_lo_keV=jnp.asarray(lo, dtype=dtype),
        energ_hi_keV=jnp.asarray(hi, dtype=dtype),
        channel=jnp.asarray(channel, dtype=jnp.result_type(int)),
        e_min_keV=jnp.asarray(e_min, dtype=dtype),
        e_max_keV=jnp.asarray(e_max, dtype=dtype),
        area_cm2=jnp.asarray(dense, dtype=dtype),
        sources=tuple(sources),
    )


def read_responses(
    pairs: Sequence[tuple[str | os.PathLike | None, str | os.PathLike]],
) -> tuple[Response, ...]:
    """Read several instruments, one (arf, rmf) pair each (e.g. MOS1, MOS2, pn).

    Their count rates add; grids may differ between instruments.
    """
    if len(pairs) == 0:
        raise ValueError("pairs must hold at least one (arf, rmf) pair")
    return tuple(read_response(arf, rmf) for arf, rmf in pairs)


def sum_responses(responses: Sequence[Response]) -> Response:
    """Add responses defined on identical input-energy and channel grids.

    Raises:
        ValueError: empty input, or grids that differ.
    """
    if len(responses) == 0:
        raise ValueError("responses must hold at least one Response")
    first = responses[0]
    for r in responses[1:]:
        same = (
            r.area_cm2.shape == first.area_cm2.shape
            and np.allclose(r.energ_lo_keV, first.energ_lo_keV, rtol=_GRID_RTOL)
            and np.allclose(r.energ_hi_keV, first.energ_hi_keV, rtol=_GRID_RTOL)
            and np.array_equal(r.channel, first.channel)
            and np.allclose(r.e_min_keV, first.e_min_keV, rtol=_GRID_RTOL)
        )
        if not same:
            raise ValueError(
                f"responses {r.sources} and {first.sources} have different grids; "
                "pass them as a sequence to build_emissivity_table instead"
            )
    return Response(
        energ_lo_keV=first.energ_lo_keV,
        energ_hi_keV=first.energ_hi_keV,
        channel=first.channel,
        e_min_keV=first.e_min_keV,
        e_max_keV=first.e_max_keV,
        area_cm2=sum(r.area_cm2 for r in responses[1:]) + first.area_cm2,
        sources=tuple(s for r in responses for s in r.sources),
    )


def _check_bands(bands_keV) -> tuple[tuple[float, float], ...]:
    out = tuple((float(lo), float(hi)) for lo, hi in bands_keV)
    if len(out) == 0:
        raise ValueError("bands_keV must hold at least one (lo, hi) band")
    for lo, hi in out:
        if not (0.0 < lo < hi):
            raise ValueError(f"band ({lo}, {hi}) keV: need 0 < lo < hi")
    return out


def band_effective_area(
    response: Response, bands_keV: Sequence[Sequence[float]]
) -> Float[Array, "n_E n_band"]:
    """Effective area of each input energy bin, collapsed into observer-frame bands.

    $A_b(E_i) = \\sum_{c:\\, lo_b \\le E_c < hi_b} A(E_i) R(E_i, c)$ with $E_c$
    the nominal channel energy (centre of E_MIN, E_MAX).

    Args:
        response: the instrument response.
        bands_keV: observer-frame bands [(lo, hi), ...] in keV, 0 < lo < hi.

    Returns:
        (n_E, n_band) effective area [cm²] per input bin and band.
    """
    bands = _check_bands(bands_keV)
    e_c = response.channel_energy_keV
    masks = jnp.stack([(e_c >= lo) & (e_c < hi) for lo, hi in bands], axis=1)
    return response.area_cm2 @ masks.astype(response.area_cm2.dtype)


class BandResponse(eqx.Module):
    """A response collapsed into observer-frame bands: all the tables need.

    Attributes:
        energ_lo_keV: (n_E,) lower edges of the input energy bins [keV].
        energ_hi_keV: (n_E,) upper edges [keV].
        area_cm2: (n_E, n_band) effective area per input bin and band [cm²].
        bands_keV: the observer-frame bands ((lo, hi), ...) [keV] (static).
        sources: names of the files it derives from (static).
    """

    energ_lo_keV: Float[Array, " n_E"]
    energ_hi_keV: Float[Array, " n_E"]
    area_cm2: Float[Array, "n_E n_band"]
    bands_keV: tuple[tuple[float, float], ...] = eqx.field(static=True)
    sources: tuple[str, ...] = eqx.field(static=True, default=())

    def __check_init__(self):
        n_e = self.energ_lo_keV.shape[0]
        if self.energ_hi_keV.shape != (n_e,):
            raise ValueError(f"energ_hi_keV shape {self.energ_hi_keV.shape} != ({n_e},)")
        if self.area_cm2.shape != (n_e, len(self.bands_keV)):
            raise ValueError(
                f"area_cm2 shape {self.area_cm2.shape} != (n_E, n_band) = ({n_e}, {len(self.bands_keV)})"
            )


def band_response(
    response: Response, bands_keV: Sequence[Sequence[float]], *, trim: bool = True
) -> BandResponse:
    """Collapse a `Response` into bands (see `band_effective_area`).

    Args:
        response: the instrument response.
        bands_keV: observer-frame bands ((lo, hi), ...) in keV.
        trim: drop the leading and trailing input bins whose area is zero in
            every band (they cannot contribute; this keeps stored files small).

    Returns:
        The `BandResponse`.
    """
    bands = _check_bands(bands_keV)
    area = band_effective_area(response, bands)
    lo, hi = response.energ_lo_keV, response.energ_hi_keV
    if trim:
        nz = np.flatnonzero(np.asarray(area).max(axis=1) > 0)
        if nz.size == 0:
            raise ValueError(f"bands {bands} keV: no channel of {response.sources} falls in them")
        sl = slice(int(nz[0]), int(nz[-1]) + 1)
        lo, hi, area = lo[sl], hi[sl], area[sl]
    return BandResponse(
        energ_lo_keV=lo, energ_hi_keV=hi, area_cm2=area, bands_keV=bands, sources=response.sources
    )
