r"""Halo mass function: σ(M) from the linear P(k) and the Tinker et al. (2008) fit.

Units (ARCHITECTURE §2): masses M in h⁻¹ M☉, comoving radii in h⁻¹ Mpc,
number densities in comoving h³ Mpc⁻³.

**σ(M).** The Lagrangian radius of a mass M is
$R(M) = \left(\frac{3M}{4π\bar ρ_m}\right)^{1/3}$ with the comoving mean
matter density $\bar ρ_m = Ω_m ρ_{\rm crit,0}$ [h² M☉ Mpc⁻³]; then
$σ(M, z) = σ(R(M), a{=}1)\,D_1(z)$ with `jaxcluster.cosmology.sigma_R` (top-hat
window, Eisenstein–Hu P(k), σ_8-normalised) and the growth table's $D_1$.
$σ(R)$ is evaluated once per mass knot at z = 0 (a vectorised Simpson sum over
4097 ln k nodes, ~1 ms for 64 masses), and $d\ln σ/d\ln M = \frac13 d\ln σ/d\ln R$
comes from forward-mode autodiff of the same sum (`jax.jvp`), so it is the
exact derivative of the σ actually used.

**Tinker et al. (2008).**

$$ \frac{dn}{d\ln M} = f(σ)\,\frac{\bar ρ_m}{M}\,\left|\frac{d\ln σ}{d\ln M}\right|, \qquad
   f(σ) = A\left[\left(\frac{σ}{b}\right)^{-a} + 1\right] e^{-c/σ^2}, $$

with $(A_0, a_0, b_0, c_0)$ from Tinker et al. (2008) Table 2 for
Δ_m = 200 … 3200 (overdensity relative to the *mean* matter density),
interpolated in one of three ways (``delta_interp``):

* ``"spline"`` (the default): a natural cubic spline in $\log_{10} Δ_m$. Our
  choice, not a copy of another code's: it is C², so λ(θ) and its gradient
  are smooth in Ω_m (M500c moves Δ_m = 500/Ω_m(z) across the table knots),
  which the Fisher matrix and NUTS want;
* ``"loglinear"``: piecewise linear in $\log_{10} Δ_m$, as CCL does since
  v2.1 (``pyccl/halos/hmfunc/tinker08.py``: ``scipy.interpolate.interp1d``
  on ``log10(delta)``, linear by default; CCL ≤ 2.0 used an Akima spline in
  log10 Δ in C);
* ``"linear"``: piecewise linear in Δ_m, as colossus does.

The piecewise-linear ones have kinks in ∂λ/∂Ω_m at the knots. The choices
differ by up to ~7 % in dn/dlnM for M500c at 10^15.5 h⁻¹ M☉ (c varies fast
between the knots and enters as $e^{-c/σ^2}$; docs/pipeline/analytic.md), a
systematic of the fit itself. The redshift evolution is that of their eqs. (5)–(8):
$A = A_0(1+z)^{-0.14}$, $a = a_0(1+z)^{-0.06}$, $b = b_0(1+z)^{-α}$,
$\log_{10} α = -[0.75/\log_{10}(Δ_m/75)]^{1.2}$, $c = c_0$.

A mass defined against the critical density, $M_{Δ_c}$, has
$Δ_m = Δ_c/Ω_m(z)$ (so M500c ↔ Δ_m = 500/Ω_m(z)). The fit is only calibrated
for 200 ≤ Δ_m ≤ 3200; with Ω_m < 0.156, M500c at z ≈ 0 lies above it.
`out_of_range="clip"` (default) evaluates the parameters at the nearest table
end (only the α(Δ) evolution term uses the true Δ_m), so a sampler exploring
low Ω_m keeps running; `out_of_range="error"` raises through `eqx.error_if`
instead (also under jit).

References:
    Tinker, J. et al. 2008, ApJ 688, 709 (Table 2; eqs. 3, 5–8).
"""

from __future__ import annotations

import math
import re

import equinox as eqx
import interpax
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ..cosmology import (
    RHO_CRIT0_MSUN_H2_MPC3,
    Cosmology,
    GrowthTable,
    Omega_m_a,
    growth_table,
    sigma_R,
)

__all__ = [
    "TINKER08_DELTA",
    "TINKER08_TABLE",
    "mean_matter_density",
    "lagrangian_radius",
    "sigma_M",
    "sigma_and_slope",
    "delta_mean",
    "tinker08_parameters",
    "tinker08_f",
    "mass_function",
    "mass_function_from_sigma",
    "sigma_and_slope_interpolated",
]

# Tinker et al. 2008, Table 2: Δ_m and (A0, a0, b0, c0).
TINKER08_DELTA: tuple[float, ...] = (200.0, 300.0, 400.0, 600.0, 800.0, 1200.0, 1600.0, 2400.0, 3200.0)
TINKER08_TABLE: dict[str, tuple[float, ...]] = {
    "A": (0.186, 0.200, 0.212, 0.218, 0.248, 0.255, 0.260, 0.260, 0.260),
    "a": (1.47, 1.52, 1.56, 1.61, 1.87, 2.13, 2.30, 2.53, 2.66),
    "b": (2.57, 2.25, 2.05, 1.87, 1.59, 1.51, 1.46, 1.44, 1.41),
    "c": (1.19, 1.27, 1.34, 1.45, 1.58, 1.80, 1.97, 2.24, 2.44),
}
_MDEF_RE = re.compile(r"^(\d+(?:\.\d*)?)([mc])$")
_OUT_OF_RANGE = ("clip", "error")
_DELTA_INTERP = ("spline", "loglinear", "linear")  # log10 Δ cubic (C²), log10 Δ linear (CCL), Δ linear (colossus)


def _parse_mdef(mdef: str) -> tuple[float, str]:
    m = _MDEF_RE.match(mdef) if isinstance(mdef, str) else None
    if m is None:
        raise ValueError(f"mdef = {mdef!r}: must be '<Δ>m' or '<Δ>c', e.g. '200m' or '500c'")
    return float(m.group(1)), m.group(2)


def _check_out_of_range(out_of_range: str, delta_interp: str = "spline") -> None:
    if out_of_range not in _OUT_OF_RANGE:
        raise ValueError(f"out_of_range = {out_of_range!r}: must be one of {_OUT_OF_RANGE}")
    if delta_interp not in _DELTA_INTERP:
        raise ValueError(f"delta_interp = {delta_interp!r}: must be one of {_DELTA_INTERP}")


def mean_matter_density(cosmo: Cosmology) -> Float[Array, ""]:
    r"""Comoving mean matter density $\bar ρ_m = Ω_m ρ_{\rm crit,0}$ [h² M☉ Mpc⁻³]."""
    return cosmo.Omega_m * RHO_CRIT0_MSUN_H2_MPC3


def lagrangian_radius(cosmo: Cosmology, M: Float[ArrayLike, "*M"]) -> Float[Array, "*M"]:
    r"""Comoving Lagrangian radius $R = (3M / 4π\bar ρ_m)^{1/3}$ [h⁻¹ Mpc] of a mass M [h⁻¹ M☉]."""
    M = jnp.asarray(M, dtype=cosmo.Omega_m.dtype)
    return (3.0 * M / (4.0 * math.pi * mean_matter_density(cosmo))) ** (1.0 / 3.0)


def sigma_and_slope(
    cosmo: Cosmology, M: Float[ArrayLike, " n_M"]
) -> tuple[Float[Array, " n_M"], Float[Array, " n_M"]]:
    r"""σ(M) at z = 0 and $d\ln σ / d\ln M$, in one vectorised pass.

    Args:
        cosmo: the cosmology (Eisenstein–Hu P(k) with BAO, σ_8-normalised).
        M: (n_M,) masses [h⁻¹ M☉], > 0.

    Returns:
        (σ(M, z=0), dlnσ/dlnM), each (n_M,). The slope is the exact
        derivative of the quadrature (forward-mode AD of `sigma_R`).
    """
    M = jnp.asarray(M, dtype=cosmo.Omega_m.dtype)
    if M.ndim != 1:
        raise ValueError(f"M must be 1-D (n_M,), got shape {M.shape}")
    M = eqx.error_if(M, ~(M > 0), "M must be > 0 (h⁻¹ M☉)")
    ln_R = jnp.log(lagrangian_radius(cosmo, M))
    ln_sig, dln_sig_dln_R = jax.jvp(
        lambda x: jnp.log(sigma_R(cosmo, jnp.exp(x))), (ln_R,), (jnp.ones_like(ln_R),)
    )
    return jnp.exp(ln_sig), dln_sig_dln_R / 3.0  # R ∝ M^{1/3}


def sigma_M(
    cosmo: Cosmology,
    M: Float[ArrayLike, " n_M"],
    z: Float[ArrayLike, "*z"] = 0.0,
    growth: GrowthTable | None = None,
) -> Float[Array, "*z n_M"]:
    """RMS linear overdensity σ(M, z) = σ(R(M)) D_1(z) for masses M [h⁻¹ M☉]."""
    sig0, _ = sigma_and_slope(cosmo, M)
    z = jnp.asarray(z, dtype=sig0.dtype)
    if growth is None:
        growth = growth_table(cosmo)
    d1 = growth.D1(1.0 / (1.0 + z))
    return d1[..., None] * sig0.reshape((1,) * z.ndim + sig0.shape)


def delta_mean(cosmo: Cosmology, z: Float[ArrayLike, "*z"], mdef: str) -> Float[Array, "*z"]:
    r"""Overdensity relative to the mean matter density, Δ_m, of a mass definition at z.

    '<Δ>m' gives Δ_m = Δ; '<Δ>c' gives Δ_m = Δ / Ω_m(z).
    """
    delta, ref = _parse_mdef(mdef)
    z = jnp.asarray(z, dtype=cosmo.Omega_m.dtype)
    if ref == "m":
        return jnp.full(z.shape, delta, dtype=z.dtype)
    return delta / Omega_m_a(cosmo, 1.0 / (1.0 + z))


def tinker08_parameters(
    delta_m: Float[ArrayLike, "*z"],
    z: Float[ArrayLike, "*z"],
    out_of_range: str = "clip",
    delta_interp: str = "spline",
) -> tuple[Float[Array, "*z"], Float[Array, "*z"], Float[Array, "*z"], Float[Array, "*z"]]:
    r"""Tinker et al. (2008) (A, a, b, c) at overdensity Δ_m (mean density) and redshift z.

    Args:
        delta_m: overdensity relative to the mean matter density.
        z: redshift ≥ 0, same shape as delta_m (or broadcastable to it).
        out_of_range: "clip" (evaluate the table at the nearest end of
            [200, 3200]) or "error" (`eqx.error_if`, also under jit).
        delta_interp: how Table 2 is interpolated between its Δ knots: "spline" (natural cubic
            spline in log10 Δ, smooth; default), "loglinear" (linear in log10 Δ, as CCL) or
            "linear" (linear in Δ, as colossus); module docstring.

    Returns:
        (A, a, b, c), each of delta_m's shape.

    Raises:
        ValueError: an ``out_of_range`` or ``delta_interp`` not among the choices above.
    """
    _check_out_of_range(out_of_range, delta_interp)  # an unknown delta_interp must not fall through to the spline
    delta_m = jnp.asarray(delta_m)
    dtype = delta_m.dtype if jnp.issubdtype(delta_m.dtype, jnp.floating) else jnp.result_type(float)
    delta_m = delta_m.astype(dtype)
    z = jnp.broadcast_to(jnp.asarray(z, dtype=dtype), delta_m.shape)
    lo, hi = TINKER08_DELTA[0], TINKER08_DELTA[-1]
    if out_of_range == "error":
        delta_m = eqx.error_if(
            delta_m, ~((delta_m >= lo) & (delta_m <= hi)),
            f"Delta_m is outside the Tinker et al. 2008 table range [{lo}, {hi}] (e.g. M500c with Omega_m(z) < 0.156)",
        )
    x = jnp.log10(jnp.asarray(TINKER08_DELTA, dtype=dtype))
    fp = jnp.stack([jnp.asarray(TINKER08_TABLE[k], dtype=dtype) for k in "Aabc"], axis=-1)
    xq = jnp.clip(jnp.log10(delta_m), x[0], x[-1]).ravel()
    if delta_interp == "linear":
        dq, dk = 10.0**xq, 10.0**x
        p = jnp.stack([jnp.interp(dq, dk, fp[:, i]) for i in range(4)], axis=-1)
    elif delta_interp == "loglinear":
        p = jnp.stack([jnp.interp(xq, x, fp[:, i]) for i in range(4)], axis=-1)
    else:
        # interpax mixes integer coefficient matrices with floats and broadcasts
        # arrays of different rank: allow both locally (tests run strict).
        with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
            p = interpax.interp1d(xq, x, fp, method="cubic2")
    A0, a0, b0, c0 = (p[:, i].reshape(delta_m.shape) for i in range(4))
    # The z-evolution exponent uses the true Δ_m (well defined for any Δ_m > 75).
    alpha = 10.0 ** (-((0.75 / jnp.log10(delta_m / 75.0)) ** 1.2))
    opz = 1.0 + z
    return A0 * opz**-0.14, a0 * opz**-0.06, b0 * opz**-alpha, c0


def tinker08_f(
    sigma: Float[ArrayLike, "*z n_M"],
    delta_m: Float[ArrayLike, "*z"],
    z: Float[ArrayLike, "*z"],
    out_of_range: str = "clip",
    delta_interp: str = "spline",
) -> Float[Array, "*z n_M"]:
    r"""Tinker et al. (2008) multiplicity $f(σ) = A[(σ/b)^{-a} + 1]e^{-c/σ^2}$.

    Args:
        sigma: (*z, n_M) σ(M, z).
        delta_m: (*z) overdensity relative to the mean density.
        z: (*z) redshift.
        out_of_range: see `tinker08_parameters`.
        delta_interp: see `tinker08_parameters`.
    """
    sigma = jnp.asarray(sigma)
    A, a, b, c = tinker08_parameters(delta_m, z, out_of_range, delta_interp)
    A, a, b, c = (v[..., None] for v in (A, a, b, c))
    return A * ((sigma / b) ** (-a) + 1.0) * jnp.exp(-c / sigma**2)


def mass_function(
    cosmo: Cosmology,
    M: Float[ArrayLike, " n_M"],
    z: Float[ArrayLike, "*z"],
    mdef: str = "500c",
    growth: GrowthTable | None = None,
    out_of_range: str = "clip",
    delta_interp: str = "spline",
) -> Float[Array, "*z n_M"]:
    r"""Tinker et al. (2008) $dn/d\ln M$ [h³ Mpc⁻³, comoving].

    jit-, grad- and jacfwd-able in every cosmological parameter (Ω_m, σ_8, …).

    Args:
        cosmo: cosmology.
        M: (n_M,) halo masses $M_Δ$ [h⁻¹ M☉] in the definition `mdef`.
        z: redshift(s) ≥ 0, any shape (*z).
        mdef: '200m', '500c', or any '<Δ>m' / '<Δ>c' (static).
        growth: a precomputed `growth_table(cosmo)` (solved if None).
        out_of_range: "clip" or "error" for Δ_m outside [200, 3200] (module docstring).
        delta_interp: Tinker table interpolation: "spline" (cubic in log10 Δ, smooth; default),
            "loglinear" (linear in log10 Δ, as CCL) or "linear" (linear in Δ, as colossus).

    Returns:
        (*z, n_M) dn/dlnM.

    Raises:
        ValueError: bad `mdef`, `out_of_range` or M not 1-D.
        XlaRuntimeError (eqx.error_if): M ≤ 0, z < 0, or (with "error") Δ_m out of the table.
    """
    _parse_mdef(mdef)
    _check_out_of_range(out_of_range, delta_interp)
    M = jnp.asarray(M, dtype=cosmo.Omega_m.dtype)
    sig0, slope = sigma_and_slope(cosmo, M)
    return mass_function_from_sigma(cosmo, M, sig0, slope, z, mdef, growth, out_of_range, delta_interp)


def mass_function_from_sigma(
    cosmo: Cosmology,
    M: Float[ArrayLike, " n_M"],
    sigma0: Float[ArrayLike, " n_M"],
    dlnsigma_dlnM: Float[ArrayLike, " n_M"],
    z: Float[ArrayLike, "*z"],
    mdef: str = "500c",
    growth: GrowthTable | None = None,
    out_of_range: str = "clip",
    delta_interp: str = "spline",
) -> Float[Array, "*z n_M"]:
    """`mass_function` with σ(M, z=0) and dlnσ/dlnM given (e.g. interpolated from knots).

    Args:
        sigma0: (n_M,) σ(M) at z = 0.
        dlnsigma_dlnM: (n_M,) its log slope.

    The other arguments are as in `mass_function`.
    """
    _parse_mdef(mdef)
    _check_out_of_range(out_of_range, delta_interp)
    if growth is None:
        growth = growth_table(cosmo)
    M = jnp.asarray(M, dtype=cosmo.Omega_m.dtype)
    z = jnp.asarray(z, dtype=cosmo.Omega_m.dtype)
    z = eqx.error_if(z, ~(z >= 0), "z must be >= 0")
    sig0, slope = jnp.asarray(sigma0), jnp.asarray(dlnsigma_dlnM)
    lead = (1,) * z.ndim
    sig = growth.D1(1.0 / (1.0 + z))[..., None] * sig0.reshape(*lead, -1)
    f = tinker08_f(sig, delta_mean(cosmo, z, mdef), z, out_of_range, delta_interp)
    return f * (mean_matter_density(cosmo) / M).reshape(*lead, -1) * jnp.abs(slope).reshape(*lead, -1)


def sigma_and_slope_interpolated(
    cosmo: Cosmology, lnM: Float[ArrayLike, " n_M"], lnM_knots: Float[ArrayLike, " n_knot"]
) -> tuple[Float[Array, " n_M"], Float[Array, " n_M"]]:
    r"""σ(M) at z = 0 and dlnσ/dlnM at many masses from `sigma_R` at a few knots.

    Cubic Hermite interpolation of ln σ in ln M through the values *and* exact
    slopes at the knots (4th-order accurate; ln σ(ln M) is nearly linear, so
    16 knots over 12.5 ≤ log10 M ≤ 15.8 reproduce σ to ~1e-6 and the slope to
    ~1e-4). This is what makes `expected_xod` fast: `sigma_R` costs ~0.4 ms
    per radius (4097 k nodes).

    Args:
        lnM: (n_M,) ln(M / h⁻¹ M☉), inside [lnM_knots[0], lnM_knots[-1]].
        lnM_knots: (n_knot,) increasing knots, n_knot ≥ 2.
    """
    lnM = jnp.asarray(lnM)
    xk = jnp.asarray(lnM_knots, dtype=lnM.dtype)
    sk, dk = sigma_and_slope(cosmo, jnp.exp(xk))
    yk = jnp.log(sk)
    i = jnp.clip(jnp.searchsorted(xk, lnM, side="right") - 1, 0, xk.shape[0] - 2)
    h = xk[i + 1] - xk[i]
    t = (lnM - xk[i]) / h
    t2, t3 = t * t, t * t * t
    h00, h10, h01, h11 = 2 * t3 - 3 * t2 + 1, t3 - 2 * t2 + t, -2 * t3 + 3 * t2, t3 - t2
    y = h00 * yk[i] + h10 * h * dk[i] + h01 * yk[i + 1] + h11 * h * dk[i + 1]
    dy = ((6 * t2 - 6 * t) * yk[i] + (3 * t2 - 4 * t + 1) * h * dk[i]
          + (-6 * t2 + 6 * t) * yk[i + 1] + (3 * t2 - 2 * t) * h * dk[i + 1]) / h
    return jnp.exp(y), dy
