r"""Expected cluster counts in the (CR, HR, z) observable diagram (XOD), Poisson likelihood.

**Model.** For bins $i$ (count rate $\mathrm{CR}_{[0.5-2]}$), $j$ (hardness
ratio HR) and $k$ (redshift),

$$ λ_{ijk}(θ) = Ω \int_{z_k}^{z_{k+1}} dz\, \frac{dV}{dz\,dΩ}
   \int d\ln M\, \frac{dn}{d\ln M}(M, z)
   \int d\ln T\, p(\ln T | M, z)\;
   P_i^{\rm CR}(T, M, z)\, P_j^{\rm HR}(T, z), $$

with $Ω$ the survey solid angle [sr], $\frac{dV}{dz dΩ} = \frac{c}{H_0}\frac{D_M^2}{E(z)}$
[h⁻³ Mpc³ sr⁻¹] and $dn/d\ln M$ the Tinker et al. (2008) mass function of
M500c [h³ Mpc⁻³] (`hmf.mass_function`).

**Observables and smoothness.** At fixed T the luminosity is log-normal
(scatter σ_lnL), and ln CR is ln L plus a function of (T, z)
(`scaling.log_count_rate_per_luminosity`), so the *measured*
$\log_{10}\mathrm{CR}$ is Gaussian with mean $μ = (\overline{\ln L} + \ln(\mathrm{CR}/L))/\ln 10$
and variance $s^2 = (σ_{\ln L}/\ln 10)^2 + σ_{\rm CR}^2$ ($σ_{\rm CR}$: a
measurement error in dex, `SurveySpec.sigma_log10_cr`). The L scatter is
therefore integrated **exactly**, and the probability to lie in CR bin i *and*
above the cut $\mathrm{CR}_{\rm lim}$ is
$P_i^{\rm CR} = Φ\big(\frac{u_{i+1}-μ}{s}\big) − Φ\big(\frac{u_i-μ}{s}\big)$
with bin edges $u$ = log10 edges raised to at least log10 CR_lim. HR does not
depend on L; its measurement error $σ_{\rm HR}$ (dex, `sigma_log10_hr` > 0)
gives $P_j^{\rm HR}$ the same error-function form. Both make λ a smooth
function of θ (no hard bin edges), so `jacfwd`/`grad` exist everywhere. The T
scatter (σ_lnT) is integrated by Gauss–Hermite quadrature (`n_gh` nodes).

**Quadrature.** Gauss–Legendre in z inside each z bin (`n_z_per_bin` nodes),
Gauss–Legendre in ln M on [log10_M_min, log10_M_max] (`n_mass` nodes). The
defaults (6 per z bin, 40 in mass, 5 Gauss–Hermite, σ at 12 knots) converge λ to < 0.1 %
(tests/analytic/test_counts.py).

**Selection** (`SurveySpec.selection`). ``"cut"`` (default, seed 001): the
hard cut above, on the *measured* CR. ``"xxl_c1"``: no cut; each cluster is
weighted by the injection–recovery probability to be detected as C1,
$P_{\rm C1}(\mathrm{CR}_{\rm tot}, r_c, z)$ (`jaxcluster.observation.selection`),
taken at the **true** (noise-free) count rate, because the table is made of
injected (true) count rates and a detection does not know the measurement
error. The log-normal in CR is then split into its two parts: the intrinsic
scatter of the true $x_t = \log_{10}\mathrm{CR}_{500}$ (σ_lnL / ln 10) and the
measurement kernel $K_i(x_t) = Φ\big(\frac{u_{i+1}-x_t}{σ_{\rm CR}}\big) − Φ\big(\frac{u_i-x_t}{σ_{\rm CR}}\big)$
(the indicator of bin i when σ_CR = 0), so

$$ P_i^{\rm CR} = \int dx_t\, \mathcal N\!\big(x_t \,|\, μ, σ_{\ln L}/\ln 10\big)\,
   P_{\rm C1}\!\big(10^{x_t}/f_{\rm ap},\, r_c(M, z),\, z\big)\, K_i(x_t), $$

by Gauss–Legendre in $x_t$ on every CR bin (`n_cr_quad` nodes each; with
σ_CR > 0 also on [u_0 − 6σ_CR, u_0] and [u_n, u_n + 6σ_CR]). The core radius is
$r_c = x_c R_{500c}$ with $R_{500c} = [3M_{500c}/(4π\,500\,ρ_c(z))]^{1/3}$,
$ρ_c(z) = ρ_{c,0}E^2(z)$, seen under $r_c/D_A(z)$ [arcsec] (`core_radius_r500` = x_c).
The table's CR is the *total* flux of a β = 2/3 model, while the model's CR
is within R500 (L^XXL_500, `scaling`): with `selection_total_flux` (default)
the selection sees $\mathrm{CR}_{\rm tot} = \mathrm{CR}_{500}/f_{\rm ap}$,
$f_{\rm ap} = 1 − (1 + 1/x_c^2)^{-1/2}$ the fraction of a projected β = 2/3
profile inside the circle of radius R500 (an assumption: L_500 read as an
aperture quantity). With P_C1 a step at CR_500 = cr_cut (CR_tot = cr_cut/f_ap),
cr_cut the lowest CR edge and σ_CR = 0, ``"xxl_c1"`` reproduces ``"cut"`` to
quadrature accuracy (tests/analytic/test_selection_option.py). The Gauss–Legendre
nodes must resolve both the true-CR Gaussian (σ_lnL/ln 10 ≈ 0.2 dex at the
fiducial) and the table's logistics (widths down to 0.03 dex) inside each bin:
the default 16 nodes per bin agree with 48 to < 10⁻⁸ on the default binning.
Outside the table's (r_c, z) grid the fitted logistic is held at its edge
(`selection_probability`), e.g. at z < 0.2 or r_c > 80″ for the shipped table.

**Likelihood.** Bins are independent Poisson variables:
$\ln\mathcal L = \sum_i [n_i \ln λ_i − λ_i − \ln Γ(n_i + 1)]$.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln, ndtr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..cosmology import (
    C_OVER_H0_MPC_H,
    RHO_CRIT0_MSUN_H2_MPC3,
    Cosmology,
    E,
    angular_diameter_distance,
    growth_table,
    transverse_comoving_distance,
)
from .hmf import (
    sigma_and_slope,
    _check_out_of_range,
    _parse_mdef,
    mass_function,
    mass_function_from_sigma,
    sigma_and_slope_interpolated,
)
from .scaling import ScalingRelations, XrayTables, _ln_cr_per_L_at_z

__all__ = [
    "DEG2_TO_SR",
    "SELECTIONS",
    "XODBinning",
    "SurveySpec",
    "comoving_volume_element",
    "halo_counts",
    "expected_xod",
    "poisson_mock",
    "poisson_log_likelihood",
]

DEG2_TO_SR = (math.pi / 180.0) ** 2
ARCSEC_PER_RAD = 180.0 / math.pi * 3600.0
SELECTIONS: tuple[str, ...] = ("cut", "xxl_c1")
# Clerc et al. 2012, MNRAS 423, 3561 (arXiv:1109.4441), CR–HR fit of the XMM archive:
# x_c,0 = r_c / R500c = 0.24 ± 0.04 (dimensionless) for a β = 2/3 model.
CORE_RADIUS_R500_CLERC12 = 0.24
_TAIL_SIGMAS = 6.0  # measured-CR tails [σ_CR] integrated beyond the outer CR edges


def _edges(name: str, edges, positive: bool) -> tuple[float, ...]:
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size < 2 or not np.all(np.isfinite(e)) or not np.all(np.diff(e) > 0):
        raise ValueError(f"{name} must be a 1-D strictly increasing sequence of >= 2 finite edges, got {edges!r}")
    if positive and not e[0] > 0:
        raise ValueError(f"{name} must be > 0 (log-spaced quantity), got first edge {e[0]}")
    return tuple(float(x) for x in e)


class XODBinning(eqx.Module):
    """Bin edges of the (CR, HR, z) observable diagram (static: they fix array shapes).

    Defaults: 8 log bins in CR[0.5–2] from 0.02 (seed 001's cut) to 3 counts s⁻¹,
    6 log bins in HR = CR[1–2]/CR[0.5–1] from 0.1 to 2, 4 bins in z from 0.1
    to 0.5 (seed 001's lightcone range). The simulated XOD uses the same object.

    Attributes:
        cr_edges: (n_cr + 1,) CR[0.5–2] edges [counts s⁻¹], increasing, > 0.
        hr_edges: (n_hr + 1,) HR edges, increasing, > 0.
        z_edges: (n_z + 1,) redshift edges, increasing, > 0.
    """

    cr_edges: tuple[float, ...] = eqx.field(static=True)
    hr_edges: tuple[float, ...] = eqx.field(static=True)
    z_edges: tuple[float, ...] = eqx.field(static=True)

    def __init__(self, cr_edges=None, hr_edges=None, z_edges=None):
        if cr_edges is None:
            cr_edges = np.geomspace(0.02, 3.0, 9)
        if hr_edges is None:
            hr_edges = np.geomspace(0.1, 2.0, 7)
        if z_edges is None:
            z_edges = np.linspace(0.1, 0.5, 5)
        self.cr_edges = _edges("cr_edges", cr_edges, True)
        self.hr_edges = _edges("hr_edges", hr_edges, True)
        self.z_edges = _edges("z_edges", z_edges, True)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(n_cr, n_hr, n_z)."""
        return (len(self.cr_edges) - 1, len(self.hr_edges) - 1, len(self.z_edges) - 1)


class SurveySpec(eqx.Module):
    """Survey, selection and quadrature settings of the analytic XOD (all static).

    Attributes:
        area_deg2: survey area [deg²] (seed 001: 200).
        cr_cut: selection CR[0.5–2] > cr_cut [counts s⁻¹] (seed 001: 0.02).
        sigma_log10_cr: CR measurement error [dex], ≥ 0.
        sigma_log10_hr: HR measurement error [dex], > 0 (smooths HR bins).
        mdef: mass definition of the scaling relations (default '500c').
        log10_M_min, log10_M_max: mass integration range, log10(M / h⁻¹ M☉).
        n_mass: Gauss–Legendre nodes in ln M.
        n_z_per_bin: Gauss–Legendre nodes per redshift bin.
        n_gh: Gauss–Hermite nodes over the ln T scatter.
        n_sigma_knots: masses at which `sigma_R` is evaluated; σ and its slope
            at the n_mass nodes are Hermite-interpolated from them
            (`hmf.sigma_and_slope_interpolated`); 0 evaluates σ at every node.
        out_of_range, delta_interp: Tinker Δ-table handling (`hmf.mass_function`).
        selection: ``"cut"`` (default; the hard cut CR_measured > cr_cut, seed 001)
            or ``"xxl_c1"`` (no cut; each cluster weighted by the injection–recovery
            P(C1 | CR_true, r_c, z) of `jaxcluster.observation.selection`, module
            docstring). ``"xxl_c1"`` needs mdef = '500c'.
        selection_path: npz of `save_selection_table` for ``"xxl_c1"`` (default
            None: the shipped `jaxcluster/data/selection_xxl_c1.npz`); read when
            `expected_xod` is traced, unless a table is passed to it.
        core_radius_r500: β-model core radius as a fraction of R500c, x_c = r_c / R500c
            (dimensionless), in (0, 2]. Default 0.24: x_c,0 = 0.24 ± 0.04 fitted to the
            CR–HR diagram of the XMM archive clusters by Clerc et al. 2012 (MNRAS 423,
            3561, arXiv:1109.4441). The same form (r_c ∝ R500c) is used by the XXL C1
            selection modelling (Pacaud et al. 2018, A&A 620, A10), whose adopted value
            could not be checked here; 0.15 is another value common in the literature.
        selection_total_flux: whether P(C1) is taken at the β-model's total CR,
            CR_500 / f_ap (default True, the table's CR is a total flux), or at CR_500.
        n_cr_quad: Gauss–Legendre nodes in log10 CR_true per CR bin (and per tail) for
            ``"xxl_c1"``; ≥ 2 (default 16: the measured table's logistics are as narrow
            as 0.03 dex).
    """

    area_deg2: float = eqx.field(static=True, default=200.0)
    cr_cut: float = eqx.field(static=True, default=0.02)
    sigma_log10_cr: float = eqx.field(static=True, default=0.0)
    sigma_log10_hr: float = eqx.field(static=True, default=0.05)
    mdef: str = eqx.field(static=True, default="500c")
    log10_M_min: float = eqx.field(static=True, default=12.5)
    log10_M_max: float = eqx.field(static=True, default=15.8)
    n_mass: int = eqx.field(static=True, default=40)
    n_z_per_bin: int = eqx.field(static=True, default=6)
    n_gh: int = eqx.field(static=True, default=5)
    n_sigma_knots: int = eqx.field(static=True, default=12)
    out_of_range: str = eqx.field(static=True, default="clip")
    delta_interp: str = eqx.field(static=True, default="spline")
    selection: str = eqx.field(static=True, default="cut")
    selection_path: str | None = eqx.field(static=True, default=None)
    core_radius_r500: float = eqx.field(static=True, default=CORE_RADIUS_R500_CLERC12)
    selection_total_flux: bool = eqx.field(static=True, default=True)
    n_cr_quad: int = eqx.field(static=True, default=16)

    def __check_init__(self):
        if not self.area_deg2 > 0 or not self.area_deg2 <= 41253.0:
            raise ValueError(f"area_deg2 = {self.area_deg2} is outside its allowed range (0, 41253]")
        if not 0 < self.cr_cut < math.inf:
            raise ValueError(f"cr_cut = {self.cr_cut} is outside its allowed range (0, inf) counts/s")
        if not 0 <= self.sigma_log10_cr < math.inf:
            raise ValueError(f"sigma_log10_cr = {self.sigma_log10_cr} is outside its allowed range [0, inf)")
        if not 0 < self.sigma_log10_hr < math.inf:
            raise ValueError(f"sigma_log10_hr = {self.sigma_log10_hr} is outside its allowed range (0, inf)")
        for name in ("log10_M_min", "log10_M_max"):
            if not 8.0 <= getattr(self, name) <= 17.0:
                raise ValueError(f"{name} = {getattr(self, name)} is outside its allowed range [8, 17] "
                                 "(log10 M / h⁻¹ M☉)")
        if not self.log10_M_min < self.log10_M_max:
            raise ValueError(f"log10_M_min = {self.log10_M_min} must be < log10_M_max = {self.log10_M_max}")
        for name in ("n_mass", "n_z_per_bin", "n_gh"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 10_000:
                raise ValueError(f"{name} = {v!r} is outside its allowed range: an integer in [1, 10000]")
        if not isinstance(self.n_sigma_knots, int) or self.n_sigma_knots == 1 or self.n_sigma_knots < 0:
            raise ValueError(f"n_sigma_knots = {self.n_sigma_knots!r} is outside its allowed range: 0 or an integer >= 2")
        _parse_mdef(self.mdef)
        _check_out_of_range(self.out_of_range, self.delta_interp)
        if not isinstance(self.selection, str) or self.selection not in SELECTIONS:
            raise ValueError(f"selection = {self.selection!r} is not allowed; choose from {SELECTIONS}")
        if self.selection_path is not None and not isinstance(self.selection_path, str):
            raise ValueError(f"selection_path = {self.selection_path!r} must be None or a path (str)")
        if self.selection_path is not None and self.selection != "xxl_c1":
            raise ValueError(f"selection_path = {self.selection_path!r} is only used with selection='xxl_c1', "
                             f"got selection={self.selection!r}")
        if isinstance(self.core_radius_r500, bool) or not 0 < self.core_radius_r500 <= 2.0:
            raise ValueError(f"core_radius_r500 = {self.core_radius_r500!r} is outside its allowed range (0, 2] "
                             "(r_c / R500c)")
        if not isinstance(self.selection_total_flux, bool):
            raise ValueError(f"selection_total_flux = {self.selection_total_flux!r} must be a bool")
        if not isinstance(self.n_cr_quad, int) or isinstance(self.n_cr_quad, bool) or not 2 <= self.n_cr_quad <= 1000:
            raise ValueError(f"n_cr_quad = {self.n_cr_quad!r} is outside its allowed range: an integer in [2, 1000]")
        if self.selection == "xxl_c1" and _parse_mdef(self.mdef) != _parse_mdef("500c"):
            raise ValueError(f"mdef = {self.mdef!r}: selection='xxl_c1' needs mdef='500c' (r_c = core_radius_r500 "
                             "× R500c)")

    @property
    def solid_angle_sr(self) -> float:
        """Survey solid angle Ω [sr]."""
        return self.area_deg2 * DEG2_TO_SR

    @property
    def aperture_fraction(self) -> float:
        """f_ap = 1 − (1 + 1/x_c²)^(−1/2): flux fraction of a projected β = 2/3 profile inside R500
        (1 when `selection_total_flux` is False)."""
        if not self.selection_total_flux:
            return 1.0
        return 1.0 - (1.0 + 1.0 / self.core_radius_r500**2) ** -0.5


def comoving_volume_element(cosmo: Cosmology, z: Float[ArrayLike, "*z"]) -> Float[Array, "*z"]:
    r"""$dV/dz\,dΩ = (c/H_0)\, D_M^2 / E(z)$ [h⁻³ Mpc³ sr⁻¹]."""
    z = jnp.asarray(z, dtype=cosmo.Omega_m.dtype)
    return C_OVER_H0_MPC_H * transverse_comoving_distance(cosmo, z) ** 2 / E(cosmo, 1.0 / (1.0 + z))


def _z_nodes(z_edges: tuple[float, ...], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Legendre nodes and weights in each z bin: (n_zb, n) each (float64 numpy)."""
    x, w = np.polynomial.legendre.leggauss(n)
    lo, hi = np.asarray(z_edges[:-1])[:, None], np.asarray(z_edges[1:])[:, None]
    return lo + 0.5 * (hi - lo) * (x[None, :] + 1.0), 0.5 * (hi - lo) * w[None, :]


def _lnM_nodes(lo10: float, hi10: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(n)
    a, b = lo10 * math.log(10.0), hi10 * math.log(10.0)
    return a + 0.5 * (b - a) * (x + 1.0), 0.5 * (b - a) * w


def _cr_nodes(cr_edges: tuple[float, ...], sigma_log10_cr: float, n: int) -> tuple[np.ndarray, ...]:
    """Nodes x_q = log10 CR_true, weights w_q and measurement kernel K[q, i] of the ``"xxl_c1"`` CR integral.

    Gauss–Legendre with `n` nodes on every CR bin (and, when σ_CR > 0, on the two
    tails of 6 σ_CR beyond the outer edges); K[q, i] is the probability that a
    cluster of true log10 CR x_q is measured in bin i (an indicator when σ_CR = 0).

    Returns:
        x: (Q,) log10 CR_true [log10 counts s⁻¹]; w: (Q,) weights [dex]; K: (Q, n_cr).
    """
    u = np.log10(np.asarray(cr_edges, dtype=np.float64))
    seg = list(zip(u[:-1], u[1:]))
    if sigma_log10_cr > 0:
        seg = [(u[0] - _TAIL_SIGMAS * sigma_log10_cr, u[0])] + seg + [(u[-1], u[-1] + _TAIL_SIGMAS * sigma_log10_cr)]
    t, wt = np.polynomial.legendre.leggauss(n)
    lo, hi = np.asarray(seg)[:, 0:1], np.asarray(seg)[:, 1:2]
    x = (lo + 0.5 * (hi - lo) * (t[None, :] + 1.0)).ravel()
    w = (0.5 * (hi - lo) * wt[None, :]).ravel()
    if sigma_log10_cr > 0:
        from scipy.special import ndtr as ndtr_np

        cdf = ndtr_np((u[None, :] - x[:, None]) / sigma_log10_cr)
        K = cdf[:, 1:] - cdf[:, :-1]
    else:
        K = np.repeat(np.eye(u.size - 1), n, axis=0)
    return x, w, K


def _selection_table(survey: SurveySpec, table, dtype):
    """The `SelectionTable` to use (`table`, or the one `survey.selection_path` names), its arrays cast to dtype."""
    if table is None:
        from ..observation.selection import load_selection_table

        table = load_selection_table(survey.selection_path)
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype=dtype) if eqx.is_array(a) else a, table)


def _selected_cr_probability(cosmo, survey, binning, table, mu_log10_cr, sigma_lnL, lnM, zq):
    r"""$P_i^{\rm CR}$ of the ``"xxl_c1"`` selection (module docstring): (Z, M, G, n_cr).

    Args:
        mu_log10_cr: (Z, M, G) mean log10 CR_500 [counts s⁻¹] at the quadrature nodes.
        sigma_lnL: () L–T scatter (the true-CR log-normal width, × 1/ln 10 in dex).
        lnM: (M,) ln(M500c / h⁻¹ M☉); zq: (Z,) redshifts.
    """
    from ..observation.selection import selection_probability

    dtype = mu_log10_cr.dtype
    x_np, w_np, K_np = _cr_nodes(binning.cr_edges, survey.sigma_log10_cr, survey.n_cr_quad)
    x, w, K = (jnp.asarray(v, dtype=dtype) for v in (x_np, w_np, K_np))
    # R500c [h⁻¹ Mpc, physical] and r_c [arcsec] at the (z, M) nodes
    rho_c = RHO_CRIT0_MSUN_H2_MPC3 * E(cosmo, 1.0 / (1.0 + zq)) ** 2                     # (Z,) h² M☉ Mpc⁻³
    r500 = (3.0 * jnp.exp(lnM)[None, :] / (4.0 * math.pi * 500.0 * rho_c[:, None])) ** (1.0 / 3.0)  # (Z, M)
    d_a = angular_diameter_distance(cosmo, zq)                                             # (Z,) h⁻¹ Mpc
    rc = survey.core_radius_r500 * r500 / d_a[:, None] * ARCSEC_PER_RAD                   # (Z, M)
    rc = eqx.error_if(rc, ~(jnp.isfinite(rc) & (rc > 0)), "core radius r_c must be finite and > 0")
    n_z, n_m, n_q = rc.shape[0], rc.shape[1], x.shape[0]
    shape = (n_z, n_m, n_q)
    cr_tot = 10.0 ** x / survey.aperture_fraction                                          # (Q,) counts s⁻¹
    p_sel = selection_probability(table, jnp.broadcast_to(cr_tot[None, None, :], shape),
                                  jnp.broadcast_to(rc[..., None], shape),
                                  jnp.broadcast_to(zq[:, None, None], shape)).astype(dtype)  # (Z, M, Q)
    p_sel = eqx.error_if(p_sel, ~(jnp.isfinite(p_sel) & (p_sel >= 0) & (p_sel <= 1)),
                         "selection probability must be finite and in [0, 1] (check the selection table)")
    s_true = sigma_lnL / math.log(10.0)                                                   # dex
    d = (x[None, None, None, :] - mu_log10_cr[..., None]) / s_true                         # (Z, M, G, Q)
    pdf = jnp.exp(-0.5 * d**2) / (s_true * math.sqrt(2.0 * math.pi)) * w[None, None, None, :]
    return jnp.einsum("zmgq,zmq,qi->zmgi", pdf, p_sel, K)


def halo_counts(
    cosmo: Cosmology,
    z_edges: tuple[float, ...],
    log10_M_min: float,
    log10_M_max: float,
    area_deg2: float,
    mdef: str = "500c",
    n_mass: int = 64,
    n_z_per_bin: int = 6,
    delta_interp: str = "spline",
) -> Float[Array, " n_z"]:
    r"""Expected number of halos with $M_{\min} < M < M_{\max}$ in each redshift bin.

    $N_k = Ω \int_{z_k}^{z_{k+1}} dz \frac{dV}{dz dΩ} \int_{\ln M_{\min}}^{\ln M_{\max}} \frac{dn}{d\ln M} d\ln M$
    (a mass-limited sample: the quadrature of `expected_xod` without observables).

    Args:
        cosmo: cosmology.
        z_edges: (n_z + 1,) redshift bin edges (static).
        log10_M_min: lower mass limit, log10(M / h⁻¹ M☉).
        log10_M_max: upper mass limit, log10(M / h⁻¹ M☉).
        area_deg2: survey area [deg²].
        mdef: mass definition, as `SurveySpec`.
        n_mass: mass quadrature nodes, as `SurveySpec`.
        n_z_per_bin: redshift quadrature nodes per bin, as `SurveySpec`.
        delta_interp: Tinker Δ interpolation, as `SurveySpec`.

    Returns:
        (n_z,) expected counts.
    """
    spec = SurveySpec(area_deg2=area_deg2, mdef=mdef, log10_M_min=log10_M_min, log10_M_max=log10_M_max,
                      n_mass=n_mass, n_z_per_bin=n_z_per_bin, delta_interp=delta_interp)
    z_edges = _edges("z_edges", z_edges, False)
    dtype = cosmo.Omega_m.dtype
    zq, wz = (jnp.asarray(v, dtype=dtype) for v in _z_nodes(z_edges, n_z_per_bin))
    lnM, wM = (jnp.asarray(v, dtype=dtype) for v in _lnM_nodes(log10_M_min, log10_M_max, n_mass))
    growth = growth_table(cosmo)
    dndlnM = mass_function(cosmo, jnp.exp(lnM), zq, mdef, growth, delta_interp=delta_interp)  # (n_zb, n, n_M)
    n_per_vol = jnp.sum(dndlnM * wM[None, None, :], axis=-1)
    return spec.solid_angle_sr * jnp.sum(wz * comoving_volume_element(cosmo, zq) * n_per_vol, axis=-1)


def expected_xod(
    cosmo: Cosmology,
    scaling: ScalingRelations,
    tables: XrayTables,
    survey: SurveySpec | None = None,
    binning: XODBinning | None = None,
    selection_table: eqx.Module | None = None,
) -> Float[Array, "n_cr n_hr n_z"]:
    """Expected counts λ in the (CR, HR, z) bins (module docstring for the model).

    jit-, grad-, jacfwd- and vmap-able in every dynamic field of `cosmo` and
    `scaling` (pass `survey` and `binning`, which are static, unchanged).

    Args:
        cosmo: cosmology (Ω_m, σ_8 vary; others fixed in the seed 001 setup).
        scaling: M–T and L–T relations (nuisance parameters).
        tables: `XrayTables` (e.g. `XrayTables.default()`, EPIC-pn).
        survey: area, CR cut, measurement errors, quadrature (default `SurveySpec()`).
        binning: bin edges (default `XODBinning()`).
        selection_table: a `jaxcluster.observation.SelectionTable` for
            ``survey.selection == "xxl_c1"`` (default: read `survey.selection_path`,
            or the shipped table); ignored with ``"cut"``.

    Returns:
        (n_cr, n_hr, n_z) expected counts, in cosmo's float dtype.
    """
    survey = SurveySpec() if survey is None else survey
    binning = XODBinning() if binning is None else binning
    dtype = cosmo.Omega_m.dtype
    scaling = scaling.check()

    zq_np, wz_np = _z_nodes(binning.z_edges, survey.n_z_per_bin)
    n_zb, n_zq = zq_np.shape
    zq = jnp.asarray(zq_np.ravel(), dtype=dtype)                           # (Z,)
    lnM_np, wM_np = _lnM_nodes(survey.log10_M_min, survey.log10_M_max, survey.n_mass)
    lnM, wM = jnp.asarray(lnM_np, dtype=dtype), jnp.asarray(wM_np, dtype=dtype)
    xg, wg = np.polynomial.hermite.hermgauss(survey.n_gh)
    xg = jnp.asarray(xg * math.sqrt(2.0), dtype=dtype)                       # standard-normal nodes
    wg = jnp.asarray(wg / math.sqrt(math.pi), dtype=dtype)

    growth = growth_table(cosmo)
    if survey.n_sigma_knots:
        knots = np.linspace(lnM_np[0], lnM_np[-1], survey.n_sigma_knots)
        sig0, slope = sigma_and_slope_interpolated(cosmo, lnM, jnp.asarray(knots, dtype=dtype))
    else:
        sig0, slope = sigma_and_slope(cosmo, jnp.exp(lnM))
    dndlnM = mass_function_from_sigma(cosmo, jnp.exp(lnM), sig0, slope, zq, survey.mdef, growth,
                                      survey.out_of_range, survey.delta_interp)  # (Z, M)
    # halo density per z node: Ω dV/dz dΩ × dn/dlnM × quadrature weights
    dens = (survey.solid_angle_sr * jnp.asarray(wz_np.ravel(), dtype=dtype) * comoving_volume_element(cosmo, zq))
    dens = dens[:, None] * dndlnM * wM[None, :]                            # (Z, M)

    # T nodes: (Z, M, G)
    mu_lnT = scaling.mean_ln_T(cosmo, jnp.exp(lnM)[None, :], zq[:, None])  # (Z, M)
    lnT = mu_lnT[..., None] + scaling.sigma_lnT * xg[None, None, :]        # (Z, M, G)
    # one redshift at a time: the emissivity tables' single-z fast path
    # The tables clip T to their knots (0.1–20 keV by default) anyway; clipping ln T
    # here only keeps exp() finite and > 0 when a sampler visits extreme coefficients.
    T_keV = jnp.exp(jnp.clip(lnT, math.log(1e-4), math.log(1e4)))
    ln_cr_per_L = jax.vmap(lambda T, z: _ln_cr_per_L_at_z(tables, cosmo, T, z))(T_keV, zq)  # (Z, M, G, 2)
    zg = zq[:, None, None]
    ln10 = math.log(10.0)
    mu_L = scaling.mean_ln_L(cosmo, lnT, zg)
    ln_cr_per_L_tot = jnp.logaddexp(ln_cr_per_L[..., 0], ln_cr_per_L[..., 1])
    mu_log10_cr = (mu_L + ln_cr_per_L_tot) / ln10                          # (Z, M, G)
    log10_hr = (ln_cr_per_L[..., 1] - ln_cr_per_L[..., 0]) / ln10
    s_cr = jnp.sqrt((scaling.sigma_lnL / ln10) ** 2 + survey.sigma_log10_cr**2)

    if survey.selection == "cut":
        # the cut raises the lower CR edges (measured CR must pass both)
        cr_e = np.log10(np.maximum(np.asarray(binning.cr_edges), survey.cr_cut))
        cr_e = jnp.asarray(cr_e, dtype=dtype)
        cdf_cr = ndtr((cr_e[None, None, None, :] - mu_log10_cr[..., None]) / s_cr)  # (Z, M, G, n_cr+1)
        p_cr = cdf_cr[..., 1:] - cdf_cr[..., :-1]
    else:  # "xxl_c1": P(C1 | true CR, r_c, z) inside the CR integral (module docstring)
        table = _selection_table(survey, selection_table, dtype)
        p_cr = _selected_cr_probability(cosmo, survey, binning, table, mu_log10_cr, scaling.sigma_lnL, lnM, zq)
    hr_e = jnp.asarray(np.log10(np.asarray(binning.hr_edges)), dtype=dtype)
    cdf_hr = ndtr((hr_e[None, None, None, :] - log10_hr[..., None]) / survey.sigma_log10_hr)
    p_hr = cdf_hr[..., 1:] - cdf_hr[..., :-1]                              # (Z, M, G, n_hr)

    w = dens[..., None] * wg[None, None, :]                                # (Z, M, G)
    lam_z = jnp.einsum("zmg,zmgi,zmgj->zij", w, p_cr, p_hr)                # (Z, n_cr, n_hr)
    lam = jnp.sum(lam_z.reshape(n_zb, n_zq, *lam_z.shape[1:]), axis=1)     # (n_zb, n_cr, n_hr)
    return jnp.moveaxis(lam, 0, -1)


def poisson_mock(key: PRNGKeyArray, lam: Float[ArrayLike, "*b"]) -> Float[Array, "*b"]:
    """A Poisson realisation of the expected counts λ (as floats, λ's dtype)."""
    lam = jnp.asarray(lam)
    lam = eqx.error_if(lam, ~(lam >= 0), "lam must be >= 0")
    return jax.random.poisson(key, lam).astype(lam.dtype)


def poisson_log_likelihood(
    counts: Float[ArrayLike, "*b"], lam: Float[ArrayLike, "*b"]
) -> Float[Array, ""]:
    r"""$\ln\mathcal L = \sum_i [n_i \ln λ_i − λ_i − \ln Γ(n_i+1)]$ over all bins.

    Bins with λ = 0 and n = 0 contribute 0 (with a zero gradient); non-integer n (an
    Asimov data set n = λ(θ_fid)) is allowed.
    """
    n = jnp.asarray(counts)
    lam = jnp.asarray(lam)
    if n.shape != lam.shape:
        raise ValueError(f"counts shape {n.shape} != lam shape {lam.shape}")
    n = n.astype(lam.dtype)
    # Double `where` so that an empty bin (λ underflowing to 0, n = 0) has a
    # zero term *and* a zero gradient (xlogy's derivative there is 0/0).
    pos = lam > 0
    lam_safe = jnp.where(pos, lam, 1.0)
    term = jnp.where(pos, n * jnp.log(lam_safe) - lam, jnp.where(n > 0, -jnp.inf, 0.0))
    return jnp.sum(term - gammaln(n + 1.0))
