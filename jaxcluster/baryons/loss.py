r"""The eLDL training losses of seed 001 (eqs. 5–6): smoothed, dark-matter-weighted L1 residuals.

With fields on the comoving mesh (n_e in units of its cosmic mean, T in keV,
ρ_DM normalised to mean 1),

$$ \mathcal L_{n_e} = \Big\langle \big| O_s * [(n_{e,LDL}^2 - n_{e,true}^2)\, T_{true}^{1/2}] \big|\; ρ_{DM} \Big\rangle_{mask}, $$
$$ \mathcal L_T = \Big\langle \big| O_s * [n_{e,true}^2\, (T_{LDL}^{1/2} - T_{true}^{1/2})] \big|\; ρ_{DM} \Big\rangle_{mask}, $$

where the residual is the X-ray emissivity's, ∝ n_e² T^{1/2}, so the model
is trained where clusters shine. The smoothing $\hat O_s(k) = 1 + k^{-n}$
(n = 1, k in h Mpc⁻¹, as Dai & Seljak 2021 prescribe) up-weights large
scales; its k = 0 term is dropped (the mean of the residual is kept once).
The average runs over the voxels of `mask` (the spatial train/validation
split, `slab_mask`), so a loss is comparable between boxes of any size.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from ..nbody.mesh import rfft_wavevectors

__all__ = ["smooth", "n_e_loss", "T_loss", "slab_mask"]


def smooth(field: Float[Array, "nx ny nz"], box_size: tuple[float, float, float], n: float = 1.0) -> Float[Array, "nx ny nz"]:
    r"""Convolve with $\hat O_s(k) = 1 + k^{-n}$ (k in h Mpc⁻¹; the k = 0 mode gets 1)."""
    shape = field.shape
    kx, ky, kz = rfft_wavevectors(shape, dtype=field.dtype)
    cells = [b / s for b, s in zip(box_size, shape)]
    k = jnp.sqrt((kx / cells[0]) ** 2 + (ky / cells[1]) ** 2 + (kz / cells[2]) ** 2)
    kernel = 1.0 + jnp.where(k > 0, jnp.where(k > 0, k, 1.0) ** -n, 0.0)
    modes = jnp.fft.rfftn(field)
    return jnp.fft.irfftn(modes * kernel.astype(modes.dtype), s=shape)


def _weighted_l1(residual, rho_dm, mask, box_size, n):
    r = jnp.abs(smooth(residual, box_size, n)) * rho_dm
    if mask is None:
        return jnp.mean(r)
    w = mask.astype(r.dtype)
    return jnp.sum(r * w) / jnp.maximum(jnp.sum(w), 1.0)


def n_e_loss(
    n_e_pred: Float[Array, "nx ny nz"],
    n_e_true: Float[Array, "nx ny nz"],
    T_true: Float[Array, "nx ny nz"],
    rho_dm: Float[Array, "nx ny nz"],
    box_size: tuple[float, float, float],
    mask: Bool[Array, "nx ny nz"] | None = None,
    n: float = 1.0,
) -> Float[Array, ""]:
    """Seed 001 eq. (5): n_e (mean units) with the true T [keV]; ρ_DM normalised to mean 1."""
    return _weighted_l1((n_e_pred**2 - n_e_true**2) * jnp.sqrt(T_true), rho_dm, mask, box_size, n)


def T_loss(
    T_pred: Float[Array, "nx ny nz"],
    n_e_true: Float[Array, "nx ny nz"],
    T_true: Float[Array, "nx ny nz"],
    rho_dm: Float[Array, "nx ny nz"],
    box_size: tuple[float, float, float],
    mask: Bool[Array, "nx ny nz"] | None = None,
    n: float = 1.0,
) -> Float[Array, ""]:
    """Seed 001 eq. (6): T [keV] with the true n_e (mean units); ρ_DM normalised to mean 1."""
    # sqrt has an infinite slope at 0 (a ReLU output): floor it for finite gradients.
    return _weighted_l1(n_e_true**2 * (jnp.sqrt(jnp.maximum(T_pred, 1e-12)) - jnp.sqrt(T_true)), rho_dm, mask, box_size, n)


def slab_mask(mesh_shape: tuple[int, int, int], validation_fraction: float = 0.2, validation: bool = False) -> Bool[Array, "nx ny nz"]:
    """Spatial train/validation split: the last `validation_fraction` of the box along x is validation.

    Returns the training mask (`validation=False`) or the validation mask.
    """
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction = {validation_fraction} must lie in (0, 1)")
    nx = mesh_shape[0]
    n_val = max(1, round(validation_fraction * nx))
    is_val = jnp.arange(nx) >= nx - n_val
    sel = is_val if validation else ~is_val
    return jnp.broadcast_to(sel[:, None, None], mesh_shape)
