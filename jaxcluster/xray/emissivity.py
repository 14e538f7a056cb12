r"""Band emissivity tables ε_b(T, z): pyatomdb spectra, redshifted and folded.

**Photon (count-rate) tables.** For an observer-frame band b of an instrument
with band-collapsed effective area $A_b(E_i)$ on input bins
$[E_i^{lo}, E_i^{hi}]$ (`BandResponse`), the table holds

$$ ε_b(T, z) = (1+z) \sum_i A_b(E_i) \int_{(1+z)E_i^{lo}}^{(1+z)E_i^{hi}} Λ(E_r, T)\, dE_r
   \quad [\text{photons cm}^3\,\text{s}^{-1} \times \text{cm}^2 = \text{cm}^5\,\text{s}^{-1}], $$

with $Λ(E_r, T)$ the rest-frame photon emissivity per unit emission measure
[photons cm³ s⁻¹ keV⁻¹] (`jaxcluster.xray.spectrum`). Then a source of
emission measure EM = $\int n_e n_H dV$ [cm⁻³] at luminosity distance $D_L$
[cm] gives

$$ \text{CR}_b = \text{EM}\; ε_b(T, z) / (4π D_L^2) \quad [\text{counts s}^{-1}]. $$

Why the single $(1+z)$ sits in the table: photons emitted in rest-frame
$[E_r, E_r + dE_r]$ arrive at $E = E_r/(1+z)$ (the redshift of energies is
the $(1+z)E_i$ in the integration limits); they arrive spread over a time
$(1+z)$ longer (time dilation: $1/(1+z)$) and over an area $4π D_M^2$ with
$D_M = D_L/(1+z)$ ($\times (1+z)^2$); net $(1+z)$ with $D_L$. So the table
carries the energy redshift and the $(1+z)$; the count-rate function carries
EM (physical volume and densities) and $4π D_L^2$.

**Energy-flux tables** (``quantity = "energy"``, no instrument):
$ε^E_b(T, z) = \int_{(1+z)lo_b}^{(1+z)hi_b} E_r Λ(E_r, T) dE_r$ [erg cm³ s⁻¹],
the rest-frame luminosity per EM in the band that is redshifted into the
observer band $[lo_b, hi_b]$, so that $F_b = \text{EM}\,ε^E_b / (4π D_L^2)$
[erg s⁻¹ cm⁻²] (energy flux already scales as $L/4πD_L^2$).

**Evaluation** (`EmissivityTable.__call__`): cubic (interpax ``"cubic2"``,
natural C² splines) in $(\log_{10} T, z)$ on $\log_{10} ε$; differentiable in
T and z. pyatomdb's Kellogg Gaunt factor is itself discontinuous in T where
its fit switches branch (kT = Z² Ry / 0.1 for each element, Kurucz vs
Kellogg; kT = 10³ Ry = 13.6 keV for hydrogen: a 1–2 % step). No spline
follows a step, so the brems tables store those steps separately
(``log10_T_break``, ``log10_jump``, the jump interpolated in z) and splines
only the continuous remainder; the derivative ignores the steps (as the
model's own derivative would, away from them). Outside the knots T and z are **clipped** to the edge knots: the
value is that at the edge and its derivative with respect to the clipped
variable is zero.
"""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Sequence
from typing import SupportsFloat

import equinox as eqx
import interpax
import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt
from jaxtyping import Array, ArrayLike, Float

from .response import BandResponse, Response, band_response
from .spectrum import AG89_ABUNDANCE, spectrum_model

__all__ = [
    "DEFAULT_BANDS_KEV",
    "DEFAULT_ENERGY_BANDS_KEV",
    "EmissivityTable",
    "band_emissivity",
    "band_energy_emissivity",
    "build_emissivity_table",
    "build_energy_table",
    "save_emissivity_tables",
    "load_emissivity_tables",
    "default_emissivity_table",
    "default_energy_table",
    "default_band_response",
]

DEFAULT_BANDS_KEV: tuple[tuple[float, float], ...] = ((0.5, 1.0), (1.0, 2.0))
DEFAULT_ENERGY_BANDS_KEV: tuple[tuple[float, float], ...] = ((0.5, 2.0),)
DEFAULT_T_KEV_RANGE = (0.1, 20.0)
DEFAULT_Z_RANGE = (0.0, 2.0)
DEFAULT_N_T = 96  # log-spaced T knots: interpolation error < 0.2 % vs direct pyatomdb
DEFAULT_N_Z = 31
DEFAULT_TABLE_FILE = "emissivity_pn_default.npz"

_QUANTITIES = {"photon": "photons cm^5 s^-1", "energy": "erg cm^3 s^-1"}
_ERG_PER_KEV = 1.602176634e-9
_N_ENERGY_BINS = 4096  # log-spaced rest-frame bins per band for the energy tables


def _is_even(knots) -> bool:
    """Strictly increasing with equal steps, up to the rounding of the knots' own dtype."""
    knots = np.asarray(knots)
    d = np.diff(knots.astype(np.float64))
    # Knots stored in float32 carry ~eps·|knot| rounding each; allow a few of those.
    tol = 8 * np.finfo(knots.dtype).eps * max(1.0, float(np.max(np.abs(knots))))
    return bool(d.size > 0 and np.all(d > 0) and np.ptp(d) <= tol)


class EmissivityTable(eqx.Module):
    """ε_b(T, z) per unit emission measure on a (log10 T, z) grid, several bands.

    Attributes:
        log10_T_keV: (n_T,) knots in log10(kT / keV), increasing.
        z: (n_z,) redshift knots, increasing.
        log10_eps: (n_T, n_z, n_band) smooth part of log10 ε [log10 of `units`].
        log10_T_break: (n_break,) temperatures log10(kT/keV) where the spectral
            model itself is discontinuous in T (may be empty).
        log10_jump: (n_break, n_z, n_band) the jump of log10 ε across each
            break, added for T ≥ T_break: log10 ε = spline(log10_eps) + Σ jumps.
        bands_keV: observer-frame bands ((lo, hi), ...) [keV] (static).
        quantity: ``"photon"`` (count-rate table, ε in photons cm⁵ s⁻¹ =
            photons cm³ s⁻¹ × cm² of effective area, (1+z) included) or
            ``"energy"`` (energy flux, ε in erg cm³ s⁻¹) (static).
        method: spectral model, ``"apec"`` or ``"brems"`` (static).
        atomdb_version: AtomDB data version, or ``"continuum only"`` (static).
        abundance: description of the abundances used (static).
        responses: names of the response files folded in (static).
        even_spacing: whether the (log10 T, z) knots are evenly spaced (static;
            set by the builder and loader, checked): lets interpax find the
            cell by arithmetic instead of a binary search (~2.5× faster).
    """

    log10_T_keV: Float[Array, " n_T"]
    z: Float[Array, " n_z"]
    log10_eps: Float[Array, "n_T n_z n_band"]
    log10_T_break: Float[Array, " n_break"]
    log10_jump: Float[Array, "n_break n_z n_band"]
    bands_keV: tuple[tuple[float, float], ...] = eqx.field(static=True)
    quantity: str = eqx.field(static=True, default="photon")
    method: str = eqx.field(static=True, default="brems")
    atomdb_version: str = eqx.field(static=True, default="continuum only")
    abundance: str = eqx.field(static=True, default="")
    responses: tuple[str, ...] = eqx.field(static=True, default=())
    even_spacing: tuple[bool, bool] = eqx.field(static=True, default=(False, False))

    def __check_init__(self):
        n_t, n_z = self.log10_T_keV.shape[0], self.z.shape[0]
        for flag, knots, name in zip(self.even_spacing, (self.log10_T_keV, self.z), ("log10_T_keV", "z")):
            if flag and not isinstance(knots, jax.core.Tracer) and not _is_even(knots):
                raise ValueError(f"even_spacing claims evenly spaced {name} knots, but they are not")
        if n_t < 4 or n_z < 4:
            raise ValueError(f"need at least 4 knots in T and in z for cubic splines, got {n_t}, {n_z}")
        if self.log10_eps.shape != (n_t, n_z, len(self.bands_keV)):
            raise ValueError(
                f"log10_eps shape {self.log10_eps.shape} != (n_T, n_z, n_band) = "
                f"({n_t}, {n_z}, {len(self.bands_keV)})"
            )
        n_b = self.log10_T_break.shape[0]
        if self.log10_jump.shape != (n_b, n_z, len(self.bands_keV)):
            raise ValueError(
                f"log10_jump shape {self.log10_jump.shape} != (n_break, n_z, n_band) = "
                f"({n_b}, {n_z}, {len(self.bands_keV)})"
            )
        if self.quantity not in _QUANTITIES:
            raise ValueError(f"quantity = {self.quantity!r}: must be one of {tuple(_QUANTITIES)}")
        if self.method not in ("apec", "brems"):
            raise ValueError(f"method = {self.method!r}: must be 'apec' or 'brems'")

    @property
    def units(self) -> str:
        """Units of ε."""
        return _QUANTITIES[self.quantity]

    @property
    def n_band(self) -> int:
        return len(self.bands_keV)

    def __call__(
        self, T_keV: Float[ArrayLike, "*v"], z: Float[ArrayLike, "*#v"]
    ) -> Float[Array, "*v n_band"]:
        """ε in every band at temperatures T and redshift(s) z.

        Args:
            T_keV: kT [keV], > 0, any shape (*v). Clipped to the T knots
                (0.1–20 keV for the default table; zero derivative outside).
            z: redshift, broadcastable to T_keV's shape; clipped to the z knots.

        Returns:
            (*v, n_band) ε in `units`, in T_keV's float dtype.

        Raises:
            XlaRuntimeError (via `eqx.error_if`): some T_keV ≤ 0 or NaN, or z ≤ −1.
        """
        T_keV = jnp.asarray(T_keV)
        dtype = T_keV.dtype if jnp.issubdtype(T_keV.dtype, jnp.floating) else jnp.result_type(float)
        T_keV = T_keV.astype(dtype)
        z = jnp.asarray(z).astype(dtype)
        T_keV = eqx.error_if(T_keV, ~(T_keV > 0), "T_keV must be > 0")
        z = eqx.error_if(z, ~(z > -1), "z must be > -1")
        x = self.log10_T_keV.astype(dtype)
        y = self.z.astype(dtype)
        xq = jnp.clip(jnp.log10(T_keV), x[0], x[-1]).ravel()
        log_eps = self.log10_eps.astype(dtype)
        log_jump = self.log10_jump.astype(dtype)
        has_breaks = self.log10_T_break.shape[0] > 0
        # interpax broadcasts arrays of different rank and mixes its integer
        # coefficient matrices with floats: allow both locally (users and our
        # tests may run with rank_promotion="raise", dtype_promotion="strict").
        with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
            if z.ndim == 0:
                # One redshift (a box): the tensor-product natural spline restricted
                # to z is the natural spline in log T through its values at the T
                # knots, so interpolate in z once and then in 1-D (same result,
                # ~3x faster per voxel than the 2-D patch).
                yq = jnp.clip(z, y[0], y[-1])[None]
                at_z = interpax.interp1d(yq, y, jnp.moveaxis(log_eps, 1, 0), method="cubic2")[0]
                f = interpax.interp1d(xq, x, at_z, method="cubic2", even_spacing=self.even_spacing[0])
                if has_breaks:  # steps at this z, summed up to each voxel's T
                    jumps = interpax.interp1d(yq, y, jnp.moveaxis(log_jump, 0, 1), method="cubic2")[0]
                    offsets = jnp.concatenate([jnp.zeros_like(jumps[:1]), jnp.cumsum(jumps, axis=0)])
                    f = f + offsets[jnp.searchsorted(self.log10_T_break.astype(dtype), xq, side="right")]
            else:
                yq = jnp.clip(jnp.broadcast_to(z, T_keV.shape), y[0], y[-1]).ravel()
                f = interpax.interp2d(
                    xq, yq, x, y, log_eps, method="cubic2", even_spacing=self.even_spacing
                )
                if has_breaks:  # (Nq, n_break, n_band) steps, added above each break
                    jumps = interpax.interp1d(yq, y, jnp.moveaxis(log_jump, 0, 1), method="cubic2")
                    above = (xq[:, None] >= self.log10_T_break.astype(dtype)[None, :]).astype(dtype)
                    f = f + jnp.sum(jumps * above[..., None], axis=1)
        return (10.0 ** f).reshape(*T_keV.shape, self.n_band)


# -------------------------------------------------------------- direct evaluation


def _as_band_responses(responses, bands_keV) -> tuple[BandResponse, ...]:
    if isinstance(responses, (Response, BandResponse)):
        responses = (responses,)
    if len(responses) == 0:
        raise ValueError("responses must hold at least one Response or BandResponse")
    out = []
    for r in responses:
        if isinstance(r, Response):
            r = band_response(r, bands_keV)
        elif not isinstance(r, BandResponse):
            raise ValueError(f"responses: expected Response or BandResponse, got {type(r).__name__}")
        if bands_keV is not None and tuple(r.bands_keV) != tuple(
            (float(a), float(b)) for a, b in bands_keV
        ):
            raise ValueError(f"BandResponse bands {r.bands_keV} differ from bands_keV {bands_keV}")
        out.append(r)
    if len({r.bands_keV for r in out}) != 1:
        raise ValueError("all responses must be collapsed into the same bands")
    return tuple(out)


def _grid_edges(r: BandResponse) -> tuple[np.ndarray, np.ndarray]:
    """Bin edges for one spectrum call and the index of each input bin's own bin."""
    lo = np.asarray(r.energ_lo_keV, dtype=np.float64)
    hi = np.asarray(r.energ_hi_keV, dtype=np.float64)
    if np.allclose(lo[1:], hi[:-1], rtol=1e-6, atol=0.0):
        return np.append(lo, hi[-1]), np.arange(lo.size)
    # gaps between input bins: interleave them and keep every other bin
    return np.column_stack([lo, hi]).ravel(), 2 * np.arange(lo.size)


def _photon_eps(spec, T_keV: float, z: float, grids) -> np.ndarray:
    total = 0.0
    for _r, edges, idx, area in grids:
        s = spec(T_keV, edges * (1.0 + z))[idx]  # rest-frame photons cm³ s⁻¹ per bin
        total = total + (1.0 + z) * (s @ area)
    return np.asarray(total)


def _prepare(responses, bands_keV):
    rs = _as_band_responses(responses, bands_keV)
    grids = []
    for r in rs:
        edges, idx = _grid_edges(r)
        grids.append((r, edges, idx, np.asarray(r.area_cm2, dtype=np.float64)))
    return rs, grids


def _check_Tz(T_keV, z):
    T_keV, z = float(T_keV), float(z)
    if not T_keV > 0:
        raise ValueError(f"T_keV = {T_keV}: must be > 0")
    if not z > -1:
        raise ValueError(f"z = {z}: must be > -1")
    return T_keV, z


def band_emissivity(
    T_keV: SupportsFloat,
    z: SupportsFloat,
    responses: Response | BandResponse | Sequence[Response | BandResponse],
    bands_keV: Sequence[Sequence[float]] | None = DEFAULT_BANDS_KEV,
    *,
    metallicity: SupportsFloat = 0.3,
    method: str = "auto",
    cache_dir: str | os.PathLike | None = None,
) -> np.ndarray:
    """ε_b(T, z) computed directly with pyatomdb (the quantity the tables hold).

    Host-side NumPy, one (T, z) at a time: the reference for the tables.

    Args:
        T_keV: kT [keV], > 0.
        z: redshift, > −1.
        responses: one or several instruments (count rates add).
        bands_keV: observer-frame bands [keV]; None to take those of
            BandResponse inputs.
        metallicity: metals relative to AG89 solar.
        method: ``"auto"``, ``"apec"`` or ``"brems"``.
        cache_dir: AtomDB directory when ``$ATOMDB`` is unset.

    Returns:
        (n_band,) ε [photons cm⁵ s⁻¹], (1+z) included (module docstring).
    """
    T_keV, z = _check_Tz(T_keV, z)
    _, grids = _prepare(responses, bands_keV)
    _, spec = spectrum_model(method, metallicity, cache_dir)
    return _photon_eps(spec, T_keV, z, grids)


def _energy_eps(spec, T_keV, z, bands) -> np.ndarray:
    out = []
    for lo, hi in bands:
        edges = np.geomspace(lo * (1.0 + z), hi * (1.0 + z), _N_ENERGY_BINS + 1)
        e_mid = np.sqrt(edges[1:] * edges[:-1])
        out.append(np.sum(spec(T_keV, edges) * e_mid) * _ERG_PER_KEV)
    return np.asarray(out)


def band_energy_emissivity(
    T_keV: SupportsFloat,
    z: SupportsFloat,
    bands_keV: Sequence[Sequence[float]] = DEFAULT_ENERGY_BANDS_KEV,
    *,
    metallicity: SupportsFloat = 0.3,
    method: str = "auto",
    cache_dir: str | os.PathLike | None = None,
) -> np.ndarray:
    """ε^E_b(T, z) = ∫ E_r Λ dE_r over the rest band redshifted into observer band b.

    Returns:
        (n_band,) [erg cm³ s⁻¹]; flux F = EM ε^E / (4π D_L²) [erg s⁻¹ cm⁻²].
    """
    T_keV, z = _check_Tz(T_keV, z)
    bands = tuple((float(a), float(b)) for a, b in bands_keV)
    _, spec = spectrum_model(method, metallicity, cache_dir)
    return _energy_eps(spec, T_keV, z, bands)


# ------------------------------------------------------------------ building


def _check_grid(name: str, v, lo_allowed: float) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    if v.ndim != 1 or v.size < 4 or np.any(np.diff(v) <= 0) or v[0] <= lo_allowed:
        raise ValueError(
            f"{name} must be 1-D, strictly increasing, at least 4 values, all > {lo_allowed}"
        )
    return v


_RYDBERG_KEV = 0.013605693122990  # pyatomdb.const.RYDBERG (CODATA)
_BREAK_REL = 1e-8  # T_break (1 ± this) samples either side of a step


def _gaunt_breaks(T: np.ndarray, method: str) -> np.ndarray:
    """Temperatures [keV] where pyatomdb's Kellogg Gaunt factor switches branch.

    In ``pyatomdb.apec.calc_brems_gaunt`` (brems_type 2), with
    γ² = Z² Ry / kT: Kurucz's table for γ² > 0.1, i.e. kT < 10 Z² Ry, and
    the Born approximation for 10³ γ² < 1, i.e. kT > 10³ Z² Ry.
    """
    if method != "brems":
        return np.zeros(0)
    Z = np.arange(1, 31, dtype=np.float64)
    kT = np.concatenate([10.0 * Z**2 * _RYDBERG_KEV, 1e3 * Z**2 * _RYDBERG_KEV])
    kT = np.unique(kT[(kT > T[0]) & (kT < T[-1])])
    return kT


def _tabulate(eps_fn, T: np.ndarray, zz: np.ndarray, breaks: np.ndarray, progress: bool = False, desc: str = "table"):
    """log10 ε on the grid, split into a continuous part and steps at `breaks`; a tqdm bar over z if ``progress``."""
    from tqdm.auto import tqdm

    # z outer: APEC re-sets its energy grid (expensive) only once per redshift
    rows = [np.stack([eps_fn(Ti, zj) for Ti in T]) for zj in tqdm(zz, desc=desc, unit="z", disable=not progress)]
    log_eps = np.log10(np.stack(rows, axis=1))
    jumps = np.zeros((breaks.size, zz.size, log_eps.shape[-1]))
    for b, Tb in enumerate(breaks):
        for j, zj in enumerate(zz):
            lo = np.log10(eps_fn(Tb * (1.0 - _BREAK_REL), zj))
            hi = np.log10(eps_fn(Tb * (1.0 + _BREAK_REL), zj))
            jumps[b, j] = hi - lo
    keep = np.abs(jumps).max(axis=(1, 2)) > 1e-7 if breaks.size else np.zeros(0, dtype=bool)
    breaks, jumps = breaks[keep], jumps[keep]
    for b, Tb in enumerate(breaks):
        log_eps -= (T >= Tb)[:, None, None] * jumps[b][None]
    return log_eps, np.log10(breaks), jumps


def _abundance_note(metallicity: float) -> str:
    return (
        f"AG89 (Anders & Grevesse 1989); H, He solar; Z>=3 x {float(metallicity):g}; "
        "fully ionised"
    )


def _atomdb_note(method: str, cache_dir) -> str:
    if method == "brems":
        return "continuum only"
    from ._atomdb import atomdb_version

    return f"AtomDB {atomdb_version(cache_dir)}"


def build_emissivity_table(
    responses: Response | BandResponse | Sequence[Response | BandResponse],
    *,
    T_keV: npt.ArrayLike | None = None,
    z: npt.ArrayLike | None = None,
    bands_keV: Sequence[Sequence[float]] | None = DEFAULT_BANDS_KEV,
    metallicity: SupportsFloat = 0.3,
    method: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> EmissivityTable:
    """Tabulate the count-rate emissivity ε_b(T, z) (see the module docstring).

    Args:
        responses: one or several instruments; count rates add.
        T_keV: (n_T,) increasing temperature knots [keV]; default 96
            log-spaced in 0.1–20 keV.
        z: (n_z,) increasing redshift knots; default 31 in 0–2.
        bands_keV: observer-frame bands [keV], default [0.5–1], [1–2].
        metallicity: metals relative to AG89 solar (default 0.3).
        method: ``"auto"`` (APEC if the AtomDB files are installed, else the
            continuum), ``"apec"`` or ``"brems"``.
        cache_dir: AtomDB directory when ``$ATOMDB`` is unset.
        progress: a progress bar over the redshift knots (APEC takes minutes).

    Returns:
        The `EmissivityTable` (``quantity = "photon"``), arrays in JAX's
        default float dtype.
    """
    T = _check_grid("T_keV", np.geomspace(*DEFAULT_T_KEV_RANGE, DEFAULT_N_T) if T_keV is None else T_keV, 0.0)
    zz = _check_grid("z", np.linspace(*DEFAULT_Z_RANGE, DEFAULT_N_Z) if z is None else z, -1.0)
    rs, grids = _prepare(responses, bands_keV)
    resolved, spec = spectrum_model(method, metallicity, cache_dir)
    log_eps, log_Tb, jumps = _tabulate(
        lambda Ti, zj: _photon_eps(spec, Ti, zj, grids), T, zz, _gaunt_breaks(T, resolved), progress, "count-rate table"
    )
    if not np.all(np.isfinite(log_eps)):
        raise ValueError(
            "some band emissivity is zero: a band lies outside the response or the T grid is too cold"
        )
    responses = tuple(os.path.basename(s) for r in rs for s in r.sources)
    return _assemble(T, zz, log_eps, log_Tb, jumps, rs[0].bands_keV, "photon", resolved, cache_dir, metallicity, responses)


def build_energy_table(
    *,
    T_keV: npt.ArrayLike | None = None,
    z: npt.ArrayLike | None = None,
    bands_keV: Sequence[Sequence[float]] = DEFAULT_ENERGY_BANDS_KEV,
    metallicity: SupportsFloat = 0.3,
    method: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> EmissivityTable:
    """Tabulate the energy-flux emissivity ε^E_b(T, z) [erg cm³ s⁻¹] (no instrument).

    Same grids and arguments (``progress`` included) as `build_emissivity_table`; default band
    observer-frame [0.5–2] keV.
    """
    T = _check_grid("T_keV", np.geomspace(*DEFAULT_T_KEV_RANGE, DEFAULT_N_T) if T_keV is None else T_keV, 0.0)
    zz = _check_grid("z", np.linspace(*DEFAULT_Z_RANGE, DEFAULT_N_Z) if z is None else z, -1.0)
    bands = tuple((float(a), float(b)) for a, b in bands_keV)
    for lo, hi in bands:
        if not 0 < lo < hi:
            raise ValueError(f"band ({lo}, {hi}) keV: need 0 < lo < hi")
    resolved, spec = spectrum_model(method, metallicity, cache_dir)
    log_eps, log_Tb, jumps = _tabulate(
        lambda Ti, zj: _energy_eps(spec, Ti, zj, bands), T, zz, _gaunt_breaks(T, resolved), progress, "energy-flux table"
    )
    return _assemble(T, zz, log_eps, log_Tb, jumps, bands, "energy", resolved, cache_dir, metallicity, ())


def _assemble(T, zz, log_eps, log_Tb, jumps, bands, quantity, resolved, cache_dir, metallicity, responses):
    """An `EmissivityTable` from tabulated NumPy arrays and their provenance."""
    dtype = jnp.result_type(float)
    return EmissivityTable(
        log10_T_keV=jnp.asarray(np.log10(T), dtype=dtype),
        z=jnp.asarray(zz, dtype=dtype),
        log10_eps=jnp.asarray(log_eps, dtype=dtype),
        log10_T_break=jnp.asarray(log_Tb, dtype=dtype),
        log10_jump=jnp.asarray(jumps, dtype=dtype),
        even_spacing=(_is_even(np.log10(T)), _is_even(zz)),
        bands_keV=bands,
        quantity=quantity,
        method=resolved,
        atomdb_version=_atomdb_note(resolved, cache_dir),
        abundance=_abundance_note(metallicity),
        responses=responses,
    )


# ------------------------------------------------------------------ file I/O

_META = ("quantity", "method", "atomdb_version", "abundance")


def save_emissivity_tables(
    path: str | os.PathLike,
    tables: dict[str, EmissivityTable],
    band_responses: dict[str, BandResponse] | None = None,
    metallicity: float | None = None,
) -> None:
    """Write tables (and optionally the band responses they were built from) to one npz.

    Keys are ``"<name>/<field>"``; metadata are stored as strings, and the
    AG89 abundance table is recorded, so the file is self-describing and
    loads with ``allow_pickle=False``.
    """
    out: dict[str, np.ndarray] = {
        "format": np.array("jaxcluster.emissivity/1"),
        "ag89_Z": np.array(sorted(AG89_ABUNDANCE)),
        "ag89_abundance": np.array([AG89_ABUNDANCE[k] for k in sorted(AG89_ABUNDANCE)]),
    }
    if metallicity is not None:
        out["metallicity"] = np.array(float(metallicity))
    for name, t in tables.items():
        if "/" in name:
            raise ValueError(f"table name {name!r} must not contain '/'")
        out[f"{name}/log10_T_keV"] = np.asarray(t.log10_T_keV, dtype=np.float64)
        out[f"{name}/z"] = np.asarray(t.z, dtype=np.float64)
        out[f"{name}/log10_eps"] = np.asarray(t.log10_eps, dtype=np.float64)
        out[f"{name}/log10_T_break"] = np.asarray(t.log10_T_break, dtype=np.float64)
        out[f"{name}/log10_jump"] = np.asarray(t.log10_jump, dtype=np.float64)
        out[f"{name}/bands_keV"] = np.asarray(t.bands_keV, dtype=np.float64)
        out[f"{name}/responses"] = np.asarray(t.responses, dtype=str)
        out[f"{name}/units"] = np.array(t.units)
        for k in _META:
            out[f"{name}/{k}"] = np.array(getattr(t, k))
    for name, r in (band_responses or {}).items():
        out[f"response:{name}/energ_lo_keV"] = np.asarray(r.energ_lo_keV, dtype=np.float64)
        out[f"response:{name}/energ_hi_keV"] = np.asarray(r.energ_hi_keV, dtype=np.float64)
        out[f"response:{name}/area_cm2"] = np.asarray(r.area_cm2, dtype=np.float64)
        out[f"response:{name}/bands_keV"] = np.asarray(r.bands_keV, dtype=np.float64)
        out[f"response:{name}/sources"] = np.asarray([os.path.basename(s) for s in r.sources], dtype=str)
    from ..io.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a kill leaves the old file or the new one, whole
        np.savez_compressed(f, **out)


def _load_npz(source) -> dict[str, np.ndarray]:
    """Every array of the file, each member read whole, so the zip's CRC-32s check that it is complete."""
    import zipfile
    import zlib

    try:
        with open(source, "rb") as fh, np.load(fh, allow_pickle=False) as data:  # our handle: closed on a bad zip too
            d = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise ValueError(f"{source}: not a readable emissivity table file, truncated or corrupt "
                         f"({type(err).__name__}: {err})") from err
    if str(d.get("format", "")) != "jaxcluster.emissivity/1":
        raise ValueError(f"{source}: not a jaxcluster emissivity table file (no 'format' key)")
    return d


def load_emissivity_tables(path) -> dict[str, EmissivityTable]:
    """Read the tables written by `save_emissivity_tables` (name → table)."""
    d = _load_npz(path)
    dtype = jnp.result_type(float)
    names = sorted({k.split("/")[0] for k in d if "/" in k and not k.startswith("response:")})
    out = {}
    for n in names:
        missing = [f"{n}/{k}" for k in ("log10_T_keV", "z", "log10_eps", "log10_T_break", "log10_jump", "bands_keV",
                                         "responses", *_META) if f"{n}/{k}" not in d]
        if missing:
            raise ValueError(f"{path}: emissivity table {n!r} lacks {missing} (an incomplete or foreign file)")
        out[n] = EmissivityTable(
            log10_T_keV=jnp.asarray(d[f"{n}/log10_T_keV"], dtype=dtype),
            z=jnp.asarray(d[f"{n}/z"], dtype=dtype),
            log10_eps=jnp.asarray(d[f"{n}/log10_eps"], dtype=dtype),
            log10_T_break=jnp.asarray(d[f"{n}/log10_T_break"], dtype=dtype),
            log10_jump=jnp.asarray(d[f"{n}/log10_jump"], dtype=dtype),
            even_spacing=(_is_even(d[f"{n}/log10_T_keV"]), _is_even(d[f"{n}/z"])),
            bands_keV=tuple((float(a), float(b)) for a, b in d[f"{n}/bands_keV"]),
            responses=tuple(str(s) for s in d[f"{n}/responses"]),
            **{k: str(d[f"{n}/{k}"]) for k in _META},
        )
    return out


def _load_band_responses(path) -> dict[str, BandResponse]:
    d = _load_npz(path)
    dtype = jnp.result_type(float)
    names = sorted({k.split("/")[0][len("response:"):] for k in d if k.startswith("response:")})
    return {
        n: BandResponse(
            energ_lo_keV=jnp.asarray(d[f"response:{n}/energ_lo_keV"], dtype=dtype),
            energ_hi_keV=jnp.asarray(d[f"response:{n}/energ_hi_keV"], dtype=dtype),
            area_cm2=jnp.asarray(d[f"response:{n}/area_cm2"], dtype=dtype),
            bands_keV=tuple((float(a), float(b)) for a, b in d[f"response:{n}/bands_keV"]),
            sources=tuple(str(s) for s in d[f"response:{n}/sources"]),
        )
        for n in names
    }


def _default_file():
    return importlib.resources.files("jaxcluster").joinpath("data", DEFAULT_TABLE_FILE)


def default_emissivity_table() -> EmissivityTable:
    """The shipped XMM-Newton EPIC-pn count-rate table ([0.5–1], [1–2] keV observer frame).

    Built by ``python -m jaxcluster.xray.build_tables`` (pn thin filter, AO20
    canned response; 0.3 solar AG89; see ``table.method`` for the spectral
    model). Loaded afresh on each call (no caching).
    """
    with importlib.resources.as_file(_default_file()) as p:
        return load_emissivity_tables(p)["count_rate"]


def default_energy_table() -> EmissivityTable:
    """The shipped energy-flux table (observer-frame [0.5–2] keV), erg cm³ s⁻¹."""
    with importlib.resources.as_file(_default_file()) as p:
        return load_emissivity_tables(p)["energy_flux"]


def default_band_response() -> BandResponse:
    """The pn band response the shipped table was built from (for direct checks)."""
    with importlib.resources.as_file(_default_file()) as p:
        return _load_band_responses(p)["pn"]
