r"""Monte-Carlo averages over realisations (PRNG keys) and their standard errors.

A sensitivity of the simulated survey is an average over realisations: for
$K$ keys with per-key values $x_k$ (an XOD, a Jacobian, a fitted slope),

$$ \bar x = \frac1K \sum_k x_k, \qquad
   \mathrm{SE}(\bar x) = \sqrt{\frac{1}{K(K-1)} \sum_k (x_k - \bar x)^2}, $$

the unbiased sample variance divided by $K$ (the standard error of the mean
of independent realisations). Differences of two estimates that used the
**same keys** (common random numbers, e.g. autodiff against finite
differences) are compared through the per-key differences $d_k$, whose
standard error is much smaller than either estimate's: `paired_sigma`.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

__all__ = ["MCEstimate", "mc_estimate", "paired_sigma"]


class MCEstimate(eqx.Module):
    """Mean of K realisations and its Monte-Carlo standard error (same shape).

    Attributes:
        mean: (*shape) mean over the realisations.
        stderr: (*shape) standard error of the mean, √(s²/K) with the unbiased s².
        n: number of realisations K (static).
    """

    mean: Float[Array, "*shape"]
    stderr: Float[Array, "*shape"]
    n: int = eqx.field(static=True)


def mc_estimate(samples: Float[ArrayLike, "n *shape"], axis: int = 0) -> MCEstimate:
    """Mean over `axis` and its standard error (module docstring).

    Args:
        samples: per-realisation values, realisations along `axis` (at least 2).
        axis: the realisation axis.

    Returns:
        `MCEstimate` with that axis reduced.

    Raises:
        ValueError: fewer than 2 realisations (no error estimate).
    """
    x = jnp.asarray(samples)
    n = x.shape[axis]
    if n < 2:
        raise ValueError(f"samples has {n} realisation(s) along axis {axis}; the allowed range is >= 2")
    mean = jnp.mean(x, axis=axis)
    var = jnp.var(x, axis=axis, ddof=1)
    return MCEstimate(mean=mean, stderr=jnp.sqrt(var / n), n=n)


def paired_sigma(a: Float[ArrayLike, "n *shape"], b: Float[ArrayLike, "n *shape"], floor: float = 0.0) -> Float[Array, "*shape"]:
    r"""|mean(a − b)| / SE(a − b) for per-realisation values computed with the same keys.

    Args:
        a: (K, *shape) first estimator per key (e.g. autodiff derivatives).
        b: (K, *shape) second estimator per key (e.g. finite differences).
        floor: added in quadrature to the standard error (e.g. round-off), ≥ 0;
            entries with zero difference and zero error give 0.

    Returns:
        (*shape) deviation in units of the Monte-Carlo standard error of the difference.
    """
    if not floor >= 0:
        raise ValueError(f"floor = {floor} is outside its allowed range [0, inf)")
    d = mc_estimate(jnp.asarray(a) - jnp.asarray(b))
    se = jnp.sqrt(d.stderr**2 + floor**2)
    dev = jnp.abs(d.mean)
    return jnp.where(dev > 0, dev / jnp.where(se > 0, se, 1.0) + jnp.where(se > 0, 0.0, jnp.inf), 0.0)
