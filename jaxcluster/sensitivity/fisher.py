r"""Simulation-based Fisher matrix of the Poisson XOD likelihood.

With $λ_i(θ)$ the **mean soft XOD over realisations** (the expected counts
of bin i) and $J_{ia} = ∂λ_i/∂θ_a$ its Jacobian (autodiff through the
survey pipeline, segmentation held fixed; `gradients.xod_sensitivity`),

$$ F_{ab} = \sum_{i:\,λ_i > λ_{\min}} \frac{1}{λ_i}\frac{∂λ_i}{∂θ_a}\frac{∂λ_i}{∂θ_b}
          = J^T \mathrm{diag}(1/λ)\,J, $$

as for the analytic model (`jaxcluster.analytic.fisher_matrix`; reuse its
`marginal_errors`, `figure_of_merit`, `plot_fisher_corner`).

**Monte-Carlo noise.** $\hat J$ is a mean over K keys, so
$E[\hat J^T W \hat J] = J^T W J + \sum_i W_{ii} \mathrm{Cov}(\hat J_{i\cdot})$:
the noise *adds* information that is not there. `simulation_fisher`
returns that term, $N_{ab} = \sum_i \mathrm{SE}(J_{ia})\mathrm{SE}(J_{ib})ρ_{i,ab}/λ_i$
(estimated from the per-key Jacobians), so the caller can subtract it or
check it is small; it falls as 1/K.

**Survey area.** λ and J are those of the simulated survey; both scale with
the area, so a survey `area_scale` times larger has F times `area_scale`
(the errors shrink as 1/√area_scale), cosmic variance between lightcones
being ignored as in the Poisson likelihood itself.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

__all__ = ["poisson_fisher", "simulation_fisher"]


def poisson_fisher(
    lam: Float[ArrayLike, "*bins"], jac: Float[ArrayLike, "n_param *bins"], lam_min: float = 1e-8
) -> Float[Array, "n_param n_param"]:
    """F = Jᵀ diag(1/λ) J over the bins with λ > lam_min (symmetrised).

    Args:
        lam: expected counts per bin, any shape.
        jac: (n_param, *lam.shape) derivatives ∂λ/∂θ_a.
        lam_min: bins with λ ≤ lam_min are left out, ≥ 0.

    Returns:
        (n_param, n_param) Fisher matrix.

    Raises:
        ValueError: shapes that do not match, or a negative lam_min.
    """
    lam, jac = jnp.asarray(lam), jnp.asarray(jac)
    if jac.shape[1:] != lam.shape:
        raise ValueError(f"jac shape {jac.shape} must be (n_param, *lam.shape) with lam.shape = {lam.shape}")
    if not lam_min >= 0:
        raise ValueError(f"lam_min = {lam_min} is outside its allowed range [0, inf)")
    flat = lam.reshape(-1)
    J = jac.reshape(jac.shape[0], -1).T  # (n_bin, P)
    keep = flat > lam_min
    w = jnp.where(keep, 1.0 / jnp.where(keep, flat, 1.0), 0.0)
    F = J.T @ (w[:, None] * J)
    return 0.5 * (F + F.T)


def simulation_fisher(
    lam_samples: Float[ArrayLike, "n_key *bins"],
    jac_samples: Float[ArrayLike, "n_key n_param *bins"],
    lam_min: float = 1e-8,
    area_scale: float = 1.0,
) -> tuple[Float[Array, "n_param n_param"], Float[Array, "n_param n_param"]]:
    """Fisher matrix of the mean soft XOD from per-realisation XODs and Jacobians, and its MC-noise term.

    Args:
        lam_samples: (K, *bins) soft XODs, one per key.
        jac_samples: (K, n_param, *bins) their Jacobians ∂XOD/∂θ.
        lam_min: bins with mean λ ≤ lam_min are left out.
        area_scale: survey area over the simulated one (F scales linearly), > 0.

    Returns:
        (F, N): F = Jᵀ diag(1/λ) J of the means (times area_scale), and N the
        Monte-Carlo noise term it contains (module docstring; also times area_scale).
        F − N is the noise-corrected estimate.
    """
    if not area_scale > 0:
        raise ValueError(f"area_scale = {area_scale} is outside its allowed range (0, inf)")
    lam_s, jac_s = jnp.asarray(lam_samples), jnp.asarray(jac_samples)
    k = lam_s.shape[0]
    if k < 2 or jac_s.shape[0] != k:
        raise ValueError(f"need >= 2 realisations with matching counts, got {k} XODs and {jac_s.shape[0]} Jacobians")
    lam = jnp.mean(lam_s, axis=0)
    jac = jnp.mean(jac_s, axis=0)
    F = poisson_fisher(lam, jac, lam_min)
    # covariance of the mean Jacobian, bin by bin, between parameters
    dev = (jac_s - jac[None]).reshape(k, jac.shape[0], -1)  # (K, P, n_bin)
    cov = jnp.einsum("kai,kbi->iab", dev, dev) / (k - 1) / k
    flat = lam.reshape(-1)
    keep = flat > lam_min
    w = jnp.where(keep, 1.0 / jnp.where(keep, flat, 1.0), 0.0)
    N = jnp.einsum("i,iab->ab", w, cov)
    return area_scale * F, area_scale * 0.5 * (N + N.T)
