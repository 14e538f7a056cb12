"""Static description of a particle-mesh simulation box."""

from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["PMConfig"]


class PMConfig(eqx.Module):
    """Geometry of a periodic PM simulation: box, particle lattice and force mesh.

    All fields are static (they fix array shapes); vary cosmology, not this,
    inside `jit`.

    Args:
        box_size: (L_x, L_y, L_z) comoving side lengths [h⁻¹ Mpc]; rectangular
            boxes are allowed but the particle lattice spacing L_i / n_i must be
            the same along every axis (isotropic cells).
        particle_shape: (n_x, n_y, n_z) particles per side (one per lattice site).
        mesh_shape: force-mesh shape; an integer multiple of `particle_shape`,
            the same factor on every axis. Defaults to `particle_shape`.
        gradient: Fourier gradient kernel of the force, "fd4" (FastPM) or "exact".

    Raises:
        ValueError: non-positive or non-finite sizes, fractional or negative counts,
            more than 2**31 − 1 particles or cells, anisotropic cells, or a mesh
            that is not an integer multiple of the particle lattice (the message
            names the parameter and its allowed range).
    """

    box_size: tuple[float, float, float] = eqx.field(static=True)
    particle_shape: tuple[int, int, int] = eqx.field(static=True)
    mesh_shape: tuple[int, int, int] = eqx.field(static=True)
    gradient: str = eqx.field(static=True)

    def __init__(
        self,
        box_size: float | tuple[float, float, float],
        particle_shape: int | tuple[int, int, int],
        mesh_shape: int | tuple[int, int, int] | None = None,
        gradient: str = "fd4",
    ):
        from ..params import check_triple

        box = check_triple("box_size", box_size, 0.0, math.inf, low_open=True)
        ptcl = check_triple("particle_shape", particle_shape, 2, 2**31 - 1, integer=True)
        mesh = ptcl if mesh_shape is None else check_triple("mesh_shape", mesh_shape, 1, 2**31 - 1, integer=True)
        if math.prod(ptcl) >= 2**31 or math.prod(mesh) >= 2**31:
            raise ValueError(f"particle_shape = {ptcl}, mesh_shape = {mesh}: at most 2**31 - 1 particles and mesh "
                             "cells (int32 indices)")
        if any(m % n for m, n in zip(mesh, ptcl)):
            raise ValueError(f"mesh_shape = {mesh} must be an integer multiple of particle_shape = {ptcl}")
        factors = {m // n for m, n in zip(mesh, ptcl)}
        if len(factors) != 1 or factors == {0}:
            raise ValueError(f"mesh_shape = {mesh} must refine particle_shape = {ptcl} by the same integer factor on every axis")
        spacing = [b / n for b, n in zip(box, ptcl)]
        if max(spacing) - min(spacing) > 1e-6 * max(spacing):
            raise ValueError(f"box_size / particle_shape = {spacing} must be equal on every axis (isotropic cells)")
        if gradient not in ("fd4", "exact"):
            raise ValueError(f"gradient must be 'fd4' or 'exact', got {gradient!r}")
        self.box_size, self.particle_shape, self.mesh_shape, self.gradient = box, ptcl, mesh, gradient

    @property
    def mesh_factor(self) -> int:
        """Force-mesh cells per particle-lattice spacing, along each axis."""
        return self.mesh_shape[0] // self.particle_shape[0]

    @property
    def particle_spacing(self) -> float:
        """Lattice spacing of the particles [h⁻¹ Mpc]."""
        return self.box_size[0] / self.particle_shape[0]

    @property
    def cell_size(self) -> float:
        """Force-mesh cell size [h⁻¹ Mpc]."""
        return self.box_size[0] / self.mesh_shape[0]

    @property
    def n_particles(self) -> int:
        return math.prod(self.particle_shape)

    @property
    def volume(self) -> float:
        """Box volume [h⁻³ Mpc³]."""
        return math.prod(self.box_size)

    def lattice(self, dtype=None) -> Float[Array, "n_ptcl 3"]:
        """Unperturbed particle positions q on the lattice nodes [h⁻¹ Mpc], C order."""
        dtype = dtype or jnp.result_type(float)
        axes = [jnp.arange(n, dtype=dtype) * self.particle_spacing for n in self.particle_shape]
        grid = jnp.stack(jnp.meshgrid(*axes, indexing="ij"), axis=-1)
        return grid.reshape(-1, 3)
