r"""Gaussian initial conditions: white noise and the linear density field.

The randomness and the physics are split so that gradients reach the initial
modes: `white_noise(key, shape)` draws the modes, `linear_field(noise, ...)`
colours them deterministically. With δ_k the unnormalised DFT,
$⟨|δ_k|^2⟩ = N P(k) / V_{cell}$, i.e. $P(k) = V ⟨|δ_k|^2⟩ / N^2$.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..cosmology import Cosmology, linear_power
from .config import PMConfig
from .mesh import rfft_wavevectors

__all__ = ["white_noise", "linear_field"]


def white_noise(key: PRNGKeyArray, shape: tuple[int, int, int], dtype=None) -> Float[Array, "nx ny nz"]:
    """Unit-variance Gaussian white noise on the particle lattice (the initial modes)."""
    return jax.random.normal(key, shape, dtype=dtype or jnp.result_type(float))


def linear_field(
    noise: Float[Array, "nx ny nz"], cosmo: Cosmology, config: PMConfig, wiggles: bool = True
) -> Float[Array, "nx ny nz"]:
    r"""Linear overdensity at a = 1 on the particle lattice, $δ_k = w_k \sqrt{P(k)/V_{cell}}$.

    Args:
        noise: white noise of shape `config.particle_shape` (`white_noise`).
        cosmo: cosmology; P(k) is its σ_8-normalised Eisenstein–Hu spectrum.
        config: the box (rectangular boxes give anisotropic fundamental modes).
        wiggles: BAO in the transfer function.

    Returns:
        δ_L(x, a=1), dimensionless; scale by D_1(a) for other times.
    """
    if noise.shape != config.particle_shape:
        raise ValueError(f"noise shape {noise.shape} must equal config.particle_shape {config.particle_shape}")
    spacing = config.particle_spacing
    kx, ky, kz = rfft_wavevectors(config.particle_shape, dtype=noise.dtype)
    k = jnp.sqrt(kx**2 + ky**2 + kz**2) / spacing  # h Mpc⁻¹
    pk = linear_power(cosmo, k, wiggles=wiggles).astype(noise.dtype)
    # Double where: √P has an infinite derivative at P(k=0) = 0 (NaN gradients otherwise).
    amp = jnp.where(k > 0, jnp.sqrt(jnp.where(k > 0, pk, 1.0) / spacing**3), 0.0)
    noise_k = jnp.fft.rfftn(noise)
    return jnp.fft.irfftn(noise_k * amp.astype(noise_k.dtype), s=config.particle_shape)
