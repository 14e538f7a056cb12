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


def paired_sigma(
    a: Float[ArrayLike, "n *shape"],
    b: Float[ArrayLike, "n *shape"],
    floor: float = 0.0,
    count_step: float | None = None,
) -> Float[Array, "*shape"]:
    r"""|mean(a − b)| / SE(a − b) for per-realisation values computed with the same keys.

    **Counting noise** (`count_step`). When b is a finite difference of a
    histogram, $b_k = ΔN_k / 2h$ with $ΔN_k$ the net number of sources that
    crossed a bin edge between θ − h and θ + h, crossings are rare events and
    the sample variance of b is a poor estimate of its variance: it is exactly
    0 in a bin where no crossing happened in K keys, although crossings occur
    there at a rate $|E\,b|\,2h$ per key. Under the null ($E\,b = E\,a$)
    the crossings are Poisson with $\mathrm{Var}\,ΔN_k ≥ |E\,a|\,2h$, so
    $\mathrm{Var}\,b_k ≥ |\bar a| / 2h$; with `count_step` = 2h the variance
    of the difference is floored at $s_a^2 + |\bar a|/2h$ (the covariance of a
    smooth a with rare jumps of b is neglected). Without it a bin with no
    crossing tests a's mean against its own standard error alone.

    Args:
        a: (K, *shape) first estimator per key (e.g. autodiff derivatives).
        b: (K, *shape) second estimator per key (e.g. finite differences).
        floor: added in quadrature to the standard error (e.g. round-off), ≥ 0;
            entries with zero difference and zero error give 0.
        count_step: 2h of a histogram's finite difference b (above), > 0; None: sample variance only.

    Returns:
        (*shape) deviation in units of the Monte-Carlo standard error of the difference.
    """
    if not floor >= 0:
        raise ValueError(f"floor = {floor} is outside its allowed range [0, inf)")
    if count_step is not None and not count_step > 0:
        raise ValueError(f"count_step = {count_step} is outside its allowed range (0, inf)")
    a = jnp.asarray(a)
    d = mc_estimate(a - jnp.asarray(b))
    se2 = d.stderr**2
    if count_step is not None:
        ea = mc_estimate(a)
        se2 = jnp.maximum(se2, ea.stderr**2 + jnp.abs(ea.mean) / (count_step * d.n))
    se = jnp.sqrt(se2 + floor**2)
    dev = jnp.abs(d.mean)
    return jnp.where(dev > 0, dev / jnp.where(se > 0, se, 1.0) + jnp.where(se > 0, 0.0, jnp.inf), 0.0)
