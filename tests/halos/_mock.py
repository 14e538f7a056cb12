"""Particle sets with known halos: NFW spheres on a uniform random background."""

import math

import jax
import jax.numpy as jnp

from jaxcluster.cosmology import Cosmology
from jaxcluster.halos import concentration_duffy08, critical_density_comoving, nfw_enclosed_fraction, particle_mass
from jaxcluster.halos import nfw_radius_ratio, sample_nfw_positions


def nfw_box(key, box, n_side, halos, cosmo: Cosmology, a=1.0, x_max=2.0):
    """Background of n_side³ uniform particles plus NFW halos (M200c [h⁻¹ M☉], centre, velocity [km/s]).

    Returns float32 positions, peculiar velocities, the particle mass, and per-halo truth
    dicts (M200c, R200c, M500c, R500c comoving, centre, velocity).
    """
    n_bg = n_side**3
    mass = float(particle_mass(cosmo, (box,) * 3, n_bg))
    rho_c = float(critical_density_comoving(cosmo, a))
    keys = jax.random.split(key, len(halos) + 1)
    pos = [jax.random.uniform(keys[0], (n_bg, 3), dtype=jnp.float32) * box]
    vel = [jnp.zeros((n_bg, 3), dtype=jnp.float32)]
    truth = []
    for k, (M200c, centre, v) in zip(keys[1:], halos):
        c = float(concentration_duffy08(M200c, 1.0 / a - 1.0))
        R200c = (3.0 * M200c / (4.0 * math.pi * 200.0 * rho_c)) ** (1.0 / 3.0)
        n = round(M200c * float(nfw_enclosed_fraction(x_max, c)) / mass)
        offsets = sample_nfw_positions(k, n, c, R200c, x_max=x_max, dtype=jnp.float32)
        pos.append(jnp.mod(offsets + jnp.asarray(centre, dtype=jnp.float32)[None, :], box))
        vel.append(jnp.broadcast_to(jnp.asarray(v, dtype=jnp.float32)[None, :], (n, 3)))
        x5 = float(nfw_radius_ratio(c, 2.5))
        truth.append(dict(M200c=M200c, R200c=R200c, M500c=2.5 * x5**3 * M200c, R500c=x5 * R200c, centre=centre, vel=v))
    return jnp.concatenate(pos), jnp.concatenate(vel), mass, truth
