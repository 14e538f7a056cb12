r"""The Navarro–Frenk–White halo: enclosed mass, mass-definition conversion, c(M), particle sampling.

With $x = r / R_{200c}$ and concentration $c = c_{200c}$, the enclosed-mass
fraction of an NFW halo is $M(<x R_{200c}) / M_{200c} = μ(c x) / μ(c)$, with
$μ(y) = \ln(1 + y) - y / (1 + y)$. Radii are in whatever unit `R200c` is given
in; masses in h⁻¹ M☉. Used to build injected halos for testing the halo
finder and by the synthetic gas model for the dark-matter structure of halos.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

__all__ = [
    "nfw_mu",
    "nfw_enclosed_fraction",
    "nfw_radius_ratio",
    "concentration_duffy08",
    "sample_nfw_positions",
]


def nfw_mu(y: Float[ArrayLike, "*y"]) -> Float[Array, "*y"]:
    r"""$μ(y) = \ln(1+y) - y/(1+y)$, the NFW enclosed mass in units of $4π ρ_s r_s^3$."""
    y = jnp.asarray(y)
    return jnp.log1p(y) - y / (1.0 + y)


def nfw_enclosed_fraction(x: Float[ArrayLike, "*x"], c: Float[ArrayLike, "*#x"]) -> Float[Array, "*x"]:
    r"""$M(<x R_{200c}) / M_{200c} = μ(c x) / μ(c)$ for an untruncated NFW halo of concentration c."""
    return nfw_mu(jnp.asarray(c) * x) / nfw_mu(c)


# jit: eagerly, the loop body (a closure over c) would be traced and compiled anew on every call.
@functools.partial(jax.jit, static_argnames=("delta_ratio", "n_iter"))
def nfw_radius_ratio(c: Float[ArrayLike, "*c"], delta_ratio: float, n_iter: int = 40) -> Float[Array, "*c"]:
    r"""$x_Δ = R_Δ / R_{200c}$ where the mean enclosed density is `delta_ratio` × 200 ρ_c.

    Solves $μ(c x) / μ(c) = \text{delta\_ratio}\; x^3$ by bisection in log x
    over [1e-3, 10] (the left side over $x^3$ decreases monotonically).
    For $R_{500c}$ pass `delta_ratio = 500 / 200`; then
    $M_{500c} / M_{200c} = 2.5\,x^3$.
    """
    c = jnp.asarray(c)
    lo = jnp.full(c.shape, math.log(1e-3), dtype=c.dtype)
    hi = jnp.full(c.shape, math.log(10.0), dtype=c.dtype)

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        x = jnp.exp(mid)
        above = nfw_enclosed_fraction(x, c) > delta_ratio * x**3  # still inside R_Δ
        return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

    lo, hi = jax.lax.fori_loop(0, n_iter, body, (lo, hi))
    return jnp.exp(0.5 * (lo + hi))


def concentration_duffy08(M200c: Float[ArrayLike, "*M"], z: Float[ArrayLike, "*#M"]) -> Float[Array, "*M"]:
    r"""Duffy et al. (2008) $c_{200c} = 5.71\,(M_{200c} / 2\times10^{12} h^{-1} M_☉)^{-0.084} (1+z)^{-0.47}$.

    The fit to their full (relaxed and unrelaxed) WMAP5 sample, NFW, Δ = 200c
    (their Table 1); $M_{200c}$ in h⁻¹ M☉.
    """
    M200c = jnp.asarray(M200c)
    return 5.71 * (M200c / 2e12) ** -0.084 * (1.0 + jnp.asarray(z, dtype=M200c.dtype)) ** -0.47


def sample_nfw_positions(
    key: PRNGKeyArray,
    n: int,
    c: float | Float[Array, ""],
    R200c: float | Float[Array, ""],
    x_max: float = 2.0,
    dtype=None,
) -> Float[Array, "n 3"]:
    r"""Positions of `n` particles drawn from an NFW profile truncated at `x_max` R_200c, about the origin.

    Radii by inverting the enclosed-mass fraction, $μ(c x) = u\,μ(c x_{max})$
    with u uniform (bisection in log x); directions isotropic.

    Args:
        key: PRNG key.
        n: number of particles (all within `x_max` R_200c).
        c: concentration c_200c.
        R200c: radius R_200c (its unit is that of the result).
        x_max: truncation radius in units of R_200c.

    Returns:
        (n, 3) offsets from the halo centre, in units of `R200c`'s.
    """
    dtype = dtype or jnp.result_type(float)
    c = jnp.asarray(c, dtype=dtype)
    k_r, k_dir = jax.random.split(key)
    target = jax.random.uniform(k_r, (n,), dtype=dtype) * nfw_mu(c * x_max)
    lo = jnp.full((n,), math.log(1e-6), dtype=dtype)
    hi = jnp.full((n,), math.log(x_max), dtype=dtype)

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        inside = nfw_mu(c * jnp.exp(mid)) < target
        return jnp.where(inside, mid, lo), jnp.where(inside, hi, mid)

    lo, hi = jax.lax.fori_loop(0, 60, body, (lo, hi))
    r = jnp.exp(0.5 * (lo + hi)) * jnp.asarray(R200c, dtype=dtype)
    direction = jax.random.normal(k_dir, (n, 3), dtype=dtype)
    direction = direction / jnp.linalg.norm(direction, axis=-1, keepdims=True)
    return r[:, None] * direction
