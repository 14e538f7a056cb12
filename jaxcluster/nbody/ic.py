r"""Initial conditions: white noise, the linear density field, and momenta for snapshot restarts.

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

__all__ = ["white_noise", "linear_field", "momentum_from_velocity", "velocity_from_momentum"]


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
    # P(k) in the cosmology's precision, the field in the noise's (float32 fields, float64 tables).
    pk = linear_power(cosmo, k.astype(jnp.result_type(cosmo.Omega_m)), wiggles=wiggles).astype(noise.dtype)
    # Double where: √P has an infinite derivative at P(k=0) = 0 (NaN gradients otherwise).
    amp = jnp.where(k > 0, jnp.sqrt(jnp.where(k > 0, pk, 1.0) / spacing**3), 0.0)
    noise_k = jnp.fft.rfftn(noise)
    return jnp.fft.irfftn(noise_k * amp.astype(noise_k.dtype), s=config.particle_shape)


# Peculiar velocity u = a dx/dt [km/s] and our momentum p = a³E dx/da [h⁻¹ Mpc]:
# dx/da = u / (a² H), so p = a u / H₀ with H₀ = 100 km s⁻¹ (h⁻¹ Mpc)⁻¹.
_H0_KM_S_PER_MPC_H = 100.0


def momentum_from_velocity(
    velocity_km_s: Float[Array, "n_ptcl 3"], a: float | Float[Array, ""], gadget: bool = False
) -> Float[Array, "n_ptcl 3"]:
    r"""Momenta $p = a^3 E\, dx/da$ [h⁻¹ Mpc] from peculiar velocities, for a snapshot restart.

    $p = a\,u / H_0$ with $u = a\,dx/dt$ the peculiar velocity [km s⁻¹] and
    $H_0 = 100$ km s⁻¹ (h⁻¹ Mpc)⁻¹. Gadget/AREPO snapshots store
    $u/\sqrt{a}$; pass `gadget=True` to convert those directly.

    Args:
        velocity_km_s: (n_ptcl, 3) peculiar velocities [km s⁻¹] (or Gadget's u/√a).
        a: scale factor of the snapshot.
        gadget: whether the velocities are in Gadget's u/√a convention.
    """
    a = jnp.asarray(a, dtype=velocity_km_s.dtype)
    u = velocity_km_s * jnp.sqrt(a) if gadget else velocity_km_s
    return a * u / _H0_KM_S_PER_MPC_H


def velocity_from_momentum(p: Float[Array, "n_ptcl 3"], a: float | Float[Array, ""]) -> Float[Array, "n_ptcl 3"]:
    """Peculiar velocities u = a dx/dt [km s⁻¹] from momenta p [h⁻¹ Mpc]; inverse of `momentum_from_velocity`."""
    a = jnp.asarray(a, dtype=p.dtype)
    return _H0_KM_S_PER_MPC_H * p / a
