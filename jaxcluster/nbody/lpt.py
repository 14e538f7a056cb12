r"""First- and second-order Lagrangian perturbation theory (1LPT, 2LPT).

$x = q + D_1 Ψ_1 + D_2 Ψ_2$ with $Ψ_1 = -∇∇^{-2}δ_L$ and
$Ψ_2 = +∇∇^{-2}δ^{(2)}$, $δ^{(2)} = \sum_{i<j} (φ_{,ii}φ_{,jj} - φ_{,ij}^2)$,
$∇^2φ = δ_L$; $D_2 ≈ -\frac37 D_1^2$ is negative (Bouchet et al. 1995,
Scoccimarro 1998). Momenta are $p = a^3 E\, dx/da = G_1 Ψ_1 + G_2 Ψ_2$, the
variable the N-body solver integrates. Derivatives are exact (i k) on the
particle lattice, where the particles sit, so no interpolation is involved.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from ..cosmology import Cosmology, GrowthTable
from .config import PMConfig
from .mesh import force_from_density, rfft_wavevectors

__all__ = ["lpt_displacements", "lpt", "second_order_source"]


def second_order_source(hessian) -> Array:
    r"""$δ^{(2)} = \sum_{i<j} (φ_{,ii}φ_{,jj} - φ_{,ij}^2)$ from `hessian(i, j)` → φ_{,ij} (any layout, e.g. one slab)."""
    diag = [hessian(i, i) for i in range(3)]
    delta2 = diag[0] * diag[1] + diag[0] * diag[2] + diag[1] * diag[2]
    for i, j in ((0, 1), (0, 2), (1, 2)):
        delta2 = delta2 - hessian(i, j) ** 2
    return delta2


def lpt_displacements(
    delta_lin: Float[Array, "nx ny nz"], config: PMConfig, order: int = 2
) -> tuple[Float[Array, "n_ptcl 3"], Float[Array, "n_ptcl 3"]]:
    """Ψ₁ and Ψ₂ [h⁻¹ Mpc] of the lattice particles, for δ_L at a = 1.

    Ψ₂ is zeros for `order=1`.
    """
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order}")
    shape = config.particle_shape
    if delta_lin.shape != shape:
        raise ValueError(f"delta_lin shape {delta_lin.shape} must equal config.particle_shape {shape}")
    h = config.particle_spacing
    delta_k = jnp.fft.rfftn(delta_lin)
    psi1 = force_from_density(delta_k, shape, gradient="exact").reshape(-1, 3) * h
    if order == 1:
        return psi1, jnp.zeros_like(psi1)
    kvec = rfft_wavevectors(shape, dtype=delta_lin.dtype)
    k2 = kvec[0] ** 2 + kvec[1] ** 2 + kvec[2] ** 2
    ctype = delta_k.dtype
    inv_k2 = jnp.where(k2 > 0, 1.0 / jnp.where(k2 > 0, k2, 1.0), 0.0)
    phi_k = -delta_k * inv_k2.astype(ctype)  # ∇²φ = δ, in cells²

    def hessian(i, j):  # φ_{,ij} (dimensionless, cell units cancel)
        return jnp.fft.irfftn(-(kvec[i] * kvec[j]).astype(ctype) * phi_k, s=shape)

    delta2 = second_order_source(hessian)
    # Ψ₂ = +∇∇⁻²δ⁽²⁾ (Crocce et al. 2006, eq. 5): minus the force kernel, as D₂ < 0 carries the sign.
    psi2 = -force_from_density(jnp.fft.rfftn(delta2), shape, gradient="exact").reshape(-1, 3) * h
    return psi1, psi2


def lpt(
    delta_lin: Float[Array, "nx ny nz"],
    cosmo: Cosmology,
    growth: GrowthTable,
    config: PMConfig,
    a: float | Float[Array, ""],
    order: int = 2,
) -> tuple[Float[Array, "n_ptcl 3"], Float[Array, "n_ptcl 3"]]:
    """Positions [h⁻¹ Mpc] and momenta p = a³E dx/da [h⁻¹ Mpc] at scale factor `a`.

    Args:
        delta_lin: linear overdensity at a = 1 (`linear_field`).
        cosmo: the cosmology.
        growth: its `growth_table`.
        config: the box.
        a: scale factor of the initial conditions.
        order: 1 (Zel'dovich) or 2 (2LPT).
    """
    psi1, psi2 = lpt_displacements(delta_lin, config, order)
    # Growth in the table's (default float) precision, as `kdk_factors` does.
    a = jnp.asarray(a, dtype=jnp.result_type(float))
    q = config.lattice(delta_lin.dtype)
    d1, d2 = growth.D1(a).astype(q.dtype), growth.D2(a).astype(q.dtype)
    g1, g2 = growth.G1(cosmo, a).astype(q.dtype), growth.G2(cosmo, a).astype(q.dtype)
    pos = q + d1 * psi1 + d2 * psi2
    p = g1 * psi1 + g2 * psi2
    return pos, p
