r"""One large box over many devices: mesh slabs, and the particles that live in them.

`SlabDecomposition` cuts a periodic box into P slabs along x, one per
device of a 1-D `jax.sharding.Mesh` (the devices of one process, or of many
processes under `jax.distributed`). Each device holds

* the mesh cells of its slab, x ∈ [r n_x/P, (r+1) n_x/P), and
* the particles whose **Lagrangian** (lattice) position is in that slab: in C
  order the lattice's x index varies slowest, so the particle axis of
  (n_ptcl, 3) arrays split in P equal parts is exactly this (a
  `NamedSharding` over the particle axis).

Particles never change device. A particle displaced out of its slab still
paints and reads through the slab's **halo**: every device paints into a
buffer of n_x/P + 2h + 1 x-cells (h cells on the left, h + 1 on the right,
the extra one for the CIC corner), adds the overhangs into its neighbours'
slabs with two `ppermute`s, and, to read a field, fills the same padding
from its neighbours with the two transposed `ppermute`s. The PM force is
read one component at a time (a `lax.map` over the three): each is
transformed back to its slab, padded and read before the next, so one
padded buffer is live instead of three (per-device memory 0.25 of one
device's at 512³ on 4 devices, against 0.31 reading the 4-point gradient
of a padded potential: `benchmarks/scaling.py`). The FFTs are the
slab transforms of `jaxcluster.nbody.sharding` (two `all_to_all`s each way).
No device ever holds the full mesh or more than its 1/P of the particles.

**Why a Lagrangian layout with a halo rather than FastPM's particle exchange.**
Exchange (send the particles that left a slab to its neighbour every step)
keeps the padding minimal but needs buffers whose size changes from step to
step, which `jit` cannot express: one would have to allocate a fixed
capacity per neighbour (a guess, with overflow), permute particle order
every step (which the reversible adjoint must undo), and send positions
*and* momenta. The halo costs memory instead: 2h + 1 extra x-planes of the
paint and read buffers per device, i.e. a fraction (2h + 1)/(n_x/P) of the
slab, and two plane exchanges per paint or read. For a 1 h⁻¹ Gpc box at
1024³ cells on 16 GPUs (64-cell slabs) and the ≈ 20 h⁻¹ Mpc largest x
displacement of a z = 0 box (20 cells; see `max_displacement`), that is +64 %
of a slab buffer but no particle memory, no reordering and fixed shapes, so
the PM step, its reversible adjoint and `vmap` are unchanged. JaxPM
(Modi, Lanusse, Campagne et al.) made the same choice.

**A particle further than the halo** would have its mass dropped or wrapped
into the wrong cell. It is never silent: every paint and read counts such
particles across devices (`psum`) and, if there is one, returns NaN on
every device, so the whole run turns NaN; `simulate_decomposed`,
`jaxcluster run --distributed` and `simulate --distributed` then raise an
error naming the halo. (Not `eqx.error_if`: its
callback runs on one device, inside the step loop, while the others wait
in the next collective, and the program deadlocks.)

The physics stays in the single-device modules; this module only lays
their mesh operations out over devices (`paint`, `read`, the slab FFTs) and
provides the decomposed IC → LPT → FastPM chain on them.
"""

from __future__ import annotations

import math
from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..cosmology import Cosmology, GrowthTable, growth_table, linear_power
from .config import PMConfig
from .lpt import second_order_source
from .mesh import gradient_kernel, paint_cic, read_cic, read_gradient
from .sharding import _slab_fft, _slab_ifft, device_mesh
from .solver import NBodyResult, nbody

__all__ = [
    "SlabDecomposition",
    "paint_decomposed",
    "read_decomposed",
    "pm_force_decomposed",
    "linear_field_decomposed",
    "lpt_decomposed",
    "nbody_decomposed",
    "simulate_decomposed",
    "max_displacement",
    "halo_for",
    "halo_for_box",
    "rms_displacement",
    "SlabMesh",
]


class SlabDecomposition(eqx.Module):
    """x-slabs of a periodic box over a 1-D device mesh, with a halo of `halo` mesh cells.

    Args:
        mesh: 1-D `jax.sharding.Mesh` (default: all `jax.devices()`, axis "x");
            under `jax.distributed` it spans the devices of every process.
        halo: how far [mesh cells] a particle may sit outside its Lagrangian
            slab, integer ≥ 0; choose it above the largest x displacement
            (`max_displacement`, in h⁻¹ Mpc, divided by the cell size). It must
            leave room in the slab: halo + 1 ≤ n_x / P (checked by `check`).
    """

    mesh: Mesh = eqx.field(static=True)
    halo: int = eqx.field(static=True)

    def __init__(self, mesh: Mesh | None = None, halo: int = 8):
        self.mesh = device_mesh("x") if mesh is None else mesh
        self.halo = halo

    def __check_init__(self):
        if len(self.mesh.axis_names) != 1:
            raise ValueError(f"mesh must be a 1-D device mesh, got axes {self.mesh.axis_names}")
        if not isinstance(self.halo, (int, np.integer)) or isinstance(self.halo, bool) or self.halo < 0:
            raise ValueError(f"halo = {self.halo!r} is outside its allowed range: an integer >= 0 (mesh cells)")

    @property
    def axis_name(self) -> str:
        return self.mesh.axis_names[0]

    @property
    def n_devices(self) -> int:
        return int(self.mesh.shape[self.axis_name])

    @property
    def particles(self) -> NamedSharding:
        """Sharding of (n_ptcl, …) particle arrays: Lagrangian slabs."""
        return NamedSharding(self.mesh, PartitionSpec(self.axis_name))

    @property
    def slabs(self) -> NamedSharding:
        """Sharding of (n_x, n_y, n_z, …) mesh arrays: x-slabs."""
        return NamedSharding(self.mesh, PartitionSpec(self.axis_name))

    def check_fft(self, shape: tuple[int, int, int], name: str = "mesh_shape") -> None:
        """Refuse a grid the slab FFT cannot decompose (n_x, n_y multiples of P), naming the parameter."""
        p = self.n_devices
        if shape[0] % p or shape[1] % p:
            raise ValueError(f"{name} = {tuple(shape)}: n_x and n_y must be multiples of the {p} devices (slabs "
                             "and the transposed FFT layout)")

    def check(self, mesh_shape: tuple[int, int, int], particle_shape: tuple[int, int, int] | None = None,
              reach: int = 1) -> None:
        """Refuse a box this decomposition cannot paint on (slabs, Lagrangian slabs, halo), naming the parameter.

        `reach`: cells beyond the halo a read touches on the right (1 for CIC, 3 for CIC of the
        4-point gradient, which the fd4 PM force reads); halo + reach must fit in one slab.
        """
        self.check_fft(mesh_shape)
        nx = mesh_shape[0]
        p = self.n_devices
        if particle_shape is not None and particle_shape[0] % p:
            raise ValueError(f"particle_shape = {tuple(particle_shape)}: n_x must be a multiple of the {p} devices "
                             "(Lagrangian slabs)")
        if self.halo + reach > nx // p:
            raise ValueError(f"halo = {self.halo} cells is outside its allowed range [0, {nx // p - reach}] for "
                             f"{p} slabs of {nx // p} cells: use fewer devices or a smaller halo")

    def padded_width(self, nx: int) -> int:
        """x-planes of the paint/read buffer of one device: n_x/P + 2 halo + 1."""
        return nx // self.n_devices + 2 * self.halo + 1


# ------------------------------------------------------------ inside shard_map


def _neighbours(n_dev):
    to_right = [(i, (i + 1) % n_dev) for i in range(n_dev)]
    to_left = [(i, (i - 1) % n_dev) for i in range(n_dev)]
    return to_right, to_left


def _to_slab_frame(pos_cell, nx, nx_loc, x0, halo):
    """Positions [cells] in the padded buffer's frame, and the number outside it.

    x is taken relative to the slab start at the periodic image nearest the
    slab's centre, then shifted by the halo; y and z stay periodic.
    """
    rel = pos_cell[:, 0] - x0.astype(pos_cell.dtype)
    rel = rel - nx * jnp.round((rel - 0.5 * nx_loc) / nx)
    u = rel + halo
    lower = jnp.floor(u)
    outside = (lower < 0) | (lower > nx_loc + 2 * halo - 1)  # the upper CIC corner must be a buffer plane
    return jnp.concatenate([u[:, None], pos_cell[:, 1:]], axis=1), jnp.sum(outside.astype(jnp.int32))


def _poison(x, n_outside, axis_name):
    """x, or NaN everywhere if any device has a particle outside its halo (module docstring)."""
    bad = jax.lax.psum(n_outside, axis_name) > 0
    return jnp.where(bad, jnp.asarray(jnp.nan, x.dtype), x)


def _halo_sum(buf, halo, axis_name, n_dev):
    """(W, ny, nz, …) painted buffer → (n_x/P, ny, nz, …) slab with the neighbours' overhangs added."""
    nx_loc = buf.shape[0] - 2 * halo - 1
    to_right, to_left = _neighbours(n_dev)
    own = buf[halo : halo + nx_loc]
    own = own.at[: halo + 1].add(jax.lax.ppermute(buf[halo + nx_loc :], axis_name, to_right))
    if halo:
        own = own.at[nx_loc - halo :].add(jax.lax.ppermute(buf[:halo], axis_name, to_left))
    return own


def _halo_fill(own, halo, axis_name, n_dev):
    """(n_x/P, ny, nz, …) slab → (W, ny, nz, …) buffer padded with the neighbours' planes (transpose of `_halo_sum`)."""
    nx_loc = own.shape[0]
    to_right, to_left = _neighbours(n_dev)
    right = jax.lax.ppermute(own[: halo + 1], axis_name, to_left)
    if not halo:
        return jnp.concatenate([own, right], axis=0)
    left = jax.lax.ppermute(own[nx_loc - halo :], axis_name, to_right)
    return jnp.concatenate([left, own, right], axis=0)


def _slab_origin(nx, axis_name, n_dev):
    nx_loc = nx // n_dev
    return nx_loc, jax.lax.axis_index(axis_name) * nx_loc


def local_paint(pos_cell, mass, mesh_shape, halo, axis_name, n_dev):
    """Per-device CIC paint (inside `shard_map`): this device's particles → its slab, and the count outside the halo."""
    nx, ny, nz = mesh_shape
    nx_loc, x0 = _slab_origin(nx, axis_name, n_dev)
    u, outside = _to_slab_frame(pos_cell, nx, nx_loc, x0, halo)
    buf = paint_cic(u, mass, (nx_loc + 2 * halo + 1, ny, nz))
    return _poison(_halo_sum(buf, halo, axis_name, n_dev), outside, axis_name)


def local_read(slab, pos_cell, halo, axis_name, n_dev):
    """Per-device CIC read (inside `shard_map`) of a (n_x/P, ny, nz, …) slab at this device's particles."""
    nx_loc = slab.shape[0]
    nx = nx_loc * n_dev
    _, x0 = _slab_origin(nx, axis_name, n_dev)
    u, outside = _to_slab_frame(pos_cell, nx, nx_loc, x0, halo)
    return _poison(read_cic(_halo_fill(slab, halo, axis_name, n_dev), u), outside, axis_name)


def local_wavevectors(shape, axis_name, n_dev, dtype):
    """Angular wavenumbers [rad per cell] of this device's block of the transposed (k_x, k_y/P, k_z) rfft layout."""
    nx, ny, nz = shape
    ny_loc = ny // n_dev
    kx = jnp.asarray(2 * np.pi * np.fft.fftfreq(nx).reshape(-1, 1, 1), dtype)
    ky = jnp.asarray(2 * np.pi * np.fft.fftfreq(ny).reshape(1, -1, 1), dtype)
    kz = jnp.asarray(2 * np.pi * np.fft.rfftfreq(nz).reshape(1, 1, -1), dtype)
    ky = jax.lax.dynamic_slice_in_dim(ky, jax.lax.axis_index(axis_name) * ny_loc, ny_loc, axis=1)
    return kx, ky, kz


def _inverse_k2(kvec):
    k2 = kvec[0] ** 2 + kvec[1] ** 2 + kvec[2] ** 2
    return jnp.where(k2 > 0, 1.0 / jnp.where(k2 > 0, k2, 1.0), 0.0)


def local_force_from_density_k(delta_k, shape, gradient, axis_name, n_dev, real_dtype):
    """F = −∇∇⁻²δ [cells] from a transposed-layout δ_k: the (n_x/P, ny, nz, 3) slab (as `mesh.force_from_density`)."""
    kvec = local_wavevectors(shape, axis_name, n_dev, real_dtype)
    inv_k2 = _inverse_k2(kvec)
    i_unit = jnp.asarray(1j, dtype=delta_k.dtype)  # strict promotion forbids float × complex
    force_k = jnp.stack(
        [i_unit * (gradient_kernel(ki, gradient) * inv_k2).astype(delta_k.dtype) * delta_k for ki in kvec], axis=-1
    )
    return _slab_ifft(force_k, shape[2], axis_name)


class SlabMesh(eqx.Module):
    """The mesh operations of `jaxcluster.nbody.mesh.FullMesh` on one device's slab, inside `shard_map`.

    Fields are (n_x/P, ny, nz) x-slabs, their transforms the (n_x, ny/P, nz/2+1)
    y-slabs of `local_wavevectors`, positions this device's particles in mesh
    cells. Painting and reading go through the halo (module docstring); a
    particle outside it turns the result NaN on every device.
    """

    shape: tuple[int, int, int] = eqx.field(static=True)
    halo: int = eqx.field(static=True)
    axis_name: str = eqx.field(static=True)
    n_dev: int = eqx.field(static=True)

    @property
    def is_full(self) -> bool:
        return False

    def paint(self, pos_cell, mass):
        return local_paint(pos_cell, mass, self.shape, self.halo, self.axis_name, self.n_dev)

    def read(self, field, pos_cell):
        return local_read(field, pos_cell, self.halo, self.axis_name, self.n_dev)

    def read_gradient(self, phi, pos_cell):
        """`mesh.read_gradient` (4-point stencil, CIC) of a φ slab: φ padded by the halo and the stencil's reach."""
        nx = self.shape[0]
        nx_loc, x0 = _slab_origin(nx, self.axis_name, self.n_dev)
        padded = _halo_fill(phi, self.halo + 2, self.axis_name, self.n_dev)  # 2 + halo | slab | halo + 3
        u, outside = _to_slab_frame(pos_cell, nx, nx_loc, x0, self.halo)
        u = u + jnp.asarray([2.0, 0.0, 0.0], u.dtype)[None, :]
        # read_gradient wraps x over the padded buffer; positions within the halo never reach the wrap.
        return _poison(read_gradient(padded, u), outside, self.axis_name)

    def rfftn(self, field):
        return _slab_fft(field, self.axis_name)

    def irfftn(self, field_k):
        return _slab_ifft(field_k, self.shape[2], self.axis_name)

    def wavevectors(self, dtype):
        return local_wavevectors(self.shape, self.axis_name, self.n_dev, dtype)

    def total(self, x):
        return jax.lax.psum(x, self.axis_name)

    def subsample(self, pos_cell, stride):
        """Every `stride`-th particle of the global lattice order, as masses 1/0 on this device's particles
        (the slabs do not start on multiples of the stride), and how many there are in all."""
        n_loc = pos_cell.shape[0]
        index = jax.lax.axis_index(self.axis_name) * n_loc + jnp.arange(n_loc)
        mass = (index % stride == 0).astype(pos_cell.dtype) * jnp.ones_like(pos_cell[:, 0])
        return pos_cell, mass, len(range(0, n_loc * self.n_dev, stride))


# ------------------------------------------------------------------ public API


def _particle_spec(dec):
    return PartitionSpec(dec.axis_name)


def paint_decomposed(
    pos: Float[Array, "n_ptcl 3"],
    mass: Float[Array, "n_ptcl *channels"],
    box_size: tuple[float, float, float],
    mesh_shape: tuple[int, int, int],
    decomposition: SlabDecomposition,
) -> Float[Array, "nx ny nz *channels"]:
    """`paint_cic` of positions [h⁻¹ Mpc] on a box decomposed in x-slabs; returns the mesh sharded in slabs.

    Each device paints its own (Lagrangian-slab) particles; see the module docstring.
    """
    dec = decomposition
    dec.check(mesh_shape)
    cell = jnp.asarray([b / n for b, n in zip(box_size, mesh_shape)], dtype=pos.dtype)

    def body(x, m):
        return local_paint(x / cell[None, :], m, tuple(mesh_shape), dec.halo, dec.axis_name, dec.n_devices)

    spec = _particle_spec(dec)
    return jax.shard_map(body, mesh=dec.mesh, in_specs=(spec, spec), out_specs=spec)(pos, mass)


def read_decomposed(
    field: Float[Array, "nx ny nz *channels"],
    pos: Float[Array, "n_ptcl 3"],
    box_size: tuple[float, float, float],
    decomposition: SlabDecomposition,
) -> Float[Array, "n_ptcl *channels"]:
    """`read_cic` of a slab-decomposed mesh at positions [h⁻¹ Mpc] held in Lagrangian slabs."""
    dec = decomposition
    mesh_shape = tuple(field.shape[:3])
    dec.check(mesh_shape)
    cell = jnp.asarray([b / n for b, n in zip(box_size, mesh_shape)], dtype=pos.dtype)

    def body(f, x):
        return local_read(f, x / cell[None, :], dec.halo, dec.axis_name, dec.n_devices)

    spec = _particle_spec(dec)
    return jax.shard_map(body, mesh=dec.mesh, in_specs=(spec, spec), out_specs=spec)(field, pos)


def _local_pm_force(pos_loc, config, halo, axis_name, n_dev):
    cell = config.cell_size
    pos_cell = pos_loc / cell
    # Built from pos (not jnp.full) so that it varies over the device axis like pos: paint_cic's
    # custom VJP returns a device-varying cotangent for it, and shard_map checks that the types match.
    mass = jnp.ones_like(pos_cell[:, 0]) * float(config.mesh_factor**3)
    rho = local_paint(pos_cell, mass, config.mesh_shape, halo, axis_name, n_dev)
    delta_k = _slab_fft(rho, axis_name)  # the mean (k = 0) is dropped by the kernel, so ρ serves as δ
    kvec = local_wavevectors(config.mesh_shape, axis_name, n_dev, rho.dtype)
    inv_k2 = _inverse_k2(kvec)
    i_unit = jnp.asarray(1j, dtype=delta_k.dtype)  # strict promotion forbids float × complex
    nx_loc = rho.shape[0]
    u, outside = _to_slab_frame(pos_cell, config.mesh_shape[0], nx_loc, jax.lax.axis_index(axis_name) * nx_loc, halo)
    kernels = [lambda k=k: i_unit * (gradient_kernel(k, config.gradient) * inv_k2).astype(delta_k.dtype) for k in kvec]

    def component(a):
        # F_a = i g(k_a) δ_k / k² (as mesh.force_from_density; for fd4, g is the 4-point stencil's symbol),
        # one component per loop iteration: one halo-padded force slab is live at a time, not three.
        slab = _slab_ifft(jax.lax.switch(a, kernels) * delta_k, config.mesh_shape[2], axis_name)
        return read_cic(_halo_fill(slab, halo, axis_name, n_dev), u)

    force = jax.lax.map(component, jnp.arange(3)).T  # (n, 3)
    return _poison(force, outside, axis_name) * cell


def _reach(config: PMConfig) -> int:
    return 1  # the force is read with CIC from halo-padded component slabs, whatever the gradient kernel


def pm_force_decomposed(
    pos: Float[Array, "n_ptcl 3"], config: PMConfig, decomposition: SlabDecomposition
) -> Float[Array, "n_ptcl 3"]:
    r"""`pm_force` with particles and mesh decomposed in x-slabs (module docstring).

    Same physics as `pm_force` (CIC paint of mass `mesh_factor³` per particle,
    $F_k = i g(k) δ_k / k^2$, CIC read) up to round-off.

    Args:
        pos: (n_ptcl, 3) positions [h⁻¹ Mpc] in lattice (C) order, best already
            sharded as `decomposition.particles`.
        config: the box; n_x, n_y of the mesh and n_x of the lattice multiples of P.
        decomposition: the slabs and halo.

    Returns:
        (n_ptcl, 3) force per unit $\frac32Ω_m$ [h⁻¹ Mpc], sharded like `pos`.

    Raises:
        ValueError: shapes the decomposition cannot hold (a particle further
            than the halo from its slab makes every force NaN: module docstring).
    """
    dec = decomposition
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"pos must have shape (n_ptcl, 3), got {pos.shape}")
    dec.check(config.mesh_shape, config.particle_shape, reach=_reach(config))
    body = lambda x: _local_pm_force(x, config, dec.halo, dec.axis_name, dec.n_devices)
    spec = _particle_spec(dec)
    return jax.shard_map(body, mesh=dec.mesh, in_specs=spec, out_specs=spec)(pos)


def linear_field_decomposed(
    noise: Float[Array, "nx ny nz"], cosmo: Cosmology, config: PMConfig, decomposition: SlabDecomposition,
    wiggles: bool = True,
) -> Float[Array, "nx ny nz"]:
    """`linear_field` with the lattice in x-slabs: δ_L(a = 1) on `config.particle_shape`, sharded in slabs."""
    dec = decomposition
    if noise.shape != config.particle_shape:
        raise ValueError(f"noise shape {noise.shape} must equal config.particle_shape {config.particle_shape}")
    dec.check_fft(config.particle_shape, "particle_shape")
    shape, spacing = config.particle_shape, config.particle_spacing

    def body(w, c):
        kvec = local_wavevectors(shape, dec.axis_name, dec.n_devices, w.dtype)
        k = jnp.sqrt(kvec[0] ** 2 + kvec[1] ** 2 + kvec[2] ** 2) / spacing
        pk = linear_power(c, k.astype(jnp.result_type(c.Omega_m)), wiggles=wiggles).astype(w.dtype)
        amp = jnp.where(k > 0, jnp.sqrt(jnp.where(k > 0, pk, 1.0) / spacing**3), 0.0)
        w_k = _slab_fft(w, dec.axis_name)
        return _slab_ifft(w_k * amp.astype(w_k.dtype), shape[2], dec.axis_name)

    spec = _particle_spec(dec)
    return jax.shard_map(body, mesh=dec.mesh, in_specs=(spec, PartitionSpec()), out_specs=spec)(noise, cosmo)


def _local_lpt_displacements(delta, shape, spacing, order, axis_name, n_dev):
    delta_k = _slab_fft(delta, axis_name)
    psi1 = local_force_from_density_k(delta_k, shape, "exact", axis_name, n_dev, delta.dtype).reshape(-1, 3) * spacing
    if order == 1:
        return psi1, jnp.zeros_like(psi1)
    kvec = local_wavevectors(shape, axis_name, n_dev, delta.dtype)
    ctype = delta_k.dtype
    phi_k = -delta_k * _inverse_k2(kvec).astype(ctype)  # ∇²φ = δ (as lpt.lpt_displacements)

    def hessian(i, j):
        return _slab_ifft(-(kvec[i] * kvec[j]).astype(ctype) * phi_k, shape[2], axis_name)

    d2_k = _slab_fft(second_order_source(hessian), axis_name)
    psi2 = -local_force_from_density_k(d2_k, shape, "exact", axis_name, n_dev, delta.dtype).reshape(-1, 3) * spacing
    return psi1, psi2


def lpt_decomposed(
    delta_lin: Float[Array, "nx ny nz"],
    cosmo: Cosmology,
    growth: GrowthTable,
    config: PMConfig,
    a: float | Float[Array, ""],
    decomposition: SlabDecomposition,
    order: int = 2,
) -> tuple[Float[Array, "n_ptcl 3"], Float[Array, "n_ptcl 3"]]:
    """`lpt` on a slab-decomposed lattice: positions [h⁻¹ Mpc] and momenta [h⁻¹ Mpc], in Lagrangian slabs."""
    dec = decomposition
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order}")
    if delta_lin.shape != config.particle_shape:
        raise ValueError(f"delta_lin shape {delta_lin.shape} must equal config.particle_shape {config.particle_shape}")
    dec.check_fft(config.particle_shape, "particle_shape")
    shape, spacing = config.particle_shape, config.particle_spacing
    body = lambda d: _local_lpt_displacements(d, shape, spacing, order, dec.axis_name, dec.n_devices)
    spec = _particle_spec(dec)
    psi1, psi2 = jax.shard_map(body, mesh=dec.mesh, in_specs=spec, out_specs=(spec, spec))(delta_lin)
    a = jnp.asarray(a, dtype=jnp.result_type(float))
    q = jax.lax.with_sharding_constraint(config.lattice(delta_lin.dtype), dec.particles)
    d1, d2 = growth.D1(a).astype(q.dtype), growth.D2(a).astype(q.dtype)
    g1, g2 = growth.G1(cosmo, a).astype(q.dtype), growth.G2(cosmo, a).astype(q.dtype)
    return q + d1 * psi1 + d2 * psi2, g1 * psi1 + g2 * psi2


def nbody_decomposed(
    pos: Float[Array, "n_ptcl 3"],
    p: Float[Array, "n_ptcl 3"],
    cosmo: Cosmology,
    config: PMConfig,
    a_steps: Float[ArrayLike, " n_step_plus_1"],
    snapshots: Float[ArrayLike, " n_snap"] | None = None,
    *,
    decomposition: SlabDecomposition,
    growth: GrowthTable | None = None,
    adjoint: str = "reversible",
    checkpoints: int | None = 4,
) -> NBodyResult:
    """`nbody` for one box with particles and mesh decomposed (`pm_force_decomposed`); same arguments and result.

    `pos`, `p` (n_ptcl, 3) are in lattice order (Lagrangian slabs); the result's
    `pos`, `p` (n_snap, n_ptcl, 3) are sharded along the particle axis.
    Gradients (either adjoint) go through the decomposed force.
    """
    dec = decomposition
    dec.check(config.mesh_shape, config.particle_shape, reach=_reach(config))
    pos = jax.lax.with_sharding_constraint(pos, dec.particles)
    p = jax.lax.with_sharding_constraint(p, dec.particles)
    res = nbody(pos, p, cosmo, config, a_steps, snapshots, growth=growth, adjoint=adjoint, checkpoints=checkpoints,
                force_fn=partial(pm_force_decomposed, config=config, decomposition=dec))
    snap = NamedSharding(dec.mesh, PartitionSpec(None, dec.axis_name))
    return NBodyResult(a=res.a, pos=jax.lax.with_sharding_constraint(res.pos, snap),
                       p=jax.lax.with_sharding_constraint(res.p, snap))


@eqx.filter_jit
def _simulate_decomposed_jit(key, cosmo, config, a_steps, snapshots, dec, lpt_order, adjoint, checkpoints):
    dtype = jnp.result_type(float)
    noise = jax.lax.with_sharding_constraint(jax.random.normal(key, config.particle_shape, dtype=dtype), dec.slabs)
    growth = growth_table(cosmo)
    delta = linear_field_decomposed(noise, cosmo, config, dec)
    pos, p = lpt_decomposed(delta, cosmo, growth, config, a_steps[0], dec, order=lpt_order)
    res = nbody_decomposed(pos, p, cosmo, config, a_steps, snapshots, decomposition=dec, growth=growth,
                           adjoint=adjoint, checkpoints=checkpoints)
    return res, jnp.all(jnp.isfinite(res.pos))


def simulate_decomposed(
    key: PRNGKeyArray,
    cosmo: Cosmology,
    config: PMConfig,
    a_steps: Float[ArrayLike, " n_step_plus_1"],
    snapshots: Float[ArrayLike, " n_snap"] | None = None,
    *,
    decomposition: SlabDecomposition,
    lpt_order: int = 2,
    adjoint: str = "reversible",
    checkpoints: int | None = 4,
) -> NBodyResult:
    """White noise → δ_L → LPT at `a_steps[0]` → FastPM, for one box decomposed over all devices of `decomposition`.

    The same key gives the same box on any number of devices or processes:
    the noise is `jax.random.normal(key, particle_shape)` under partitionable
    threefry (JAX's default), whose values do not depend on the sharding,
    and each device draws only its slab. Under `jax.distributed` every
    process calls it with the same arguments.

    Args:
        key: PRNG key of the box's white noise.
        cosmo: cosmology (scalar fields).
        config: the box.
        a_steps: step boundaries in a; LPT at `a_steps[0]`.
        snapshots: scale factors to save (each one of `a_steps`); default the last.
        decomposition: slabs and halo.
        lpt_order: 1 or 2, as in `lpt`.
        adjoint: `"reversible"` or `"checkpoint"`, as in `nbody`.
        checkpoints: states stored by the checkpoint adjoint, as in `nbody`.

    Returns:
        `NBodyResult` whose `pos`, `p` (n_snap, n_ptcl, 3) [h⁻¹ Mpc] are in lattice
        order, sharded in Lagrangian slabs.

    Raises:
        ValueError: a box the decomposition cannot hold, or (called outside
            `jit`) a particle that moved further than the halo.
    """
    dec = decomposition
    dec.check(config.mesh_shape, config.particle_shape, reach=_reach(config))
    if lpt_order not in (1, 2):
        raise ValueError(f"lpt_order must be 1 or 2, got {lpt_order}")
    if not jax.config.jax_threefry_partitionable:
        raise ValueError("jax_threefry_partitionable must be True: otherwise the noise depends on the device count")
    dtype = jnp.result_type(float)
    a_steps = jnp.asarray(a_steps, dtype=dtype)
    snapshots = a_steps[-1:] if snapshots is None else jnp.atleast_1d(jnp.asarray(snapshots, dtype=dtype))
    res, finite = _simulate_decomposed_jit(key, cosmo, config, a_steps, snapshots, dec, lpt_order, adjoint, checkpoints)
    if not isinstance(finite, jax.core.Tracer) and not bool(finite):
        raise ValueError(
            f"a particle moved more than the halo of {dec.halo} mesh cells ({dec.halo * config.cell_size:.3g} h⁻¹ Mpc) "
            "outside its slab (the run is NaN): raise SlabDecomposition(halo=...) above the largest x displacement "
            "(max_displacement of a single-device run, or halo_for)")
    return res


def max_displacement(pos: Float[Array, "n_ptcl 3"], config: PMConfig) -> Float[Array, "3"]:
    """Largest |x − q| per axis [h⁻¹ Mpc] of lattice-ordered particles (periodic): what the halo must exceed."""
    q = config.lattice(pos.dtype)
    box = jnp.asarray(config.box_size, dtype=pos.dtype)[None, :]
    d = pos - q
    d = d - box * jnp.round(d / box)
    return jnp.max(jnp.abs(d), axis=0)


def halo_for(displacement_mpc_h: float, config: PMConfig, margin: float = 1.25) -> int:
    """Halo [cells] for a largest x displacement [h⁻¹ Mpc], with a safety `margin` (≥ 1)."""
    if not displacement_mpc_h >= 0 or not math.isfinite(displacement_mpc_h):
        raise ValueError(f"displacement_mpc_h = {displacement_mpc_h} is outside its allowed range [0, inf) h⁻¹ Mpc")
    if not margin >= 1:
        raise ValueError(f"margin = {margin} is outside its allowed range [1, inf)")
    return int(math.ceil(margin * displacement_mpc_h / config.cell_size))


def rms_displacement(cosmo: Cosmology, box_size: tuple[float, float, float], spacing: float, a: float = 1.0) -> float:
    r"""Linear-theory rms 1-D displacement [h⁻¹ Mpc] of particles of lattice `spacing` [h⁻¹ Mpc] in a box at `a`.

    $σ_Ψ^2 = \frac{D(a)^2}{6π^2} \int_{2π/L}^{k_N} P_\mathrm{lin}(k)\, dk$ per axis (Zel'dovich), with
    k_N = π/spacing the particles' Nyquist wavenumber and L the longest side (the box has no longer modes).
    """
    if not 0 < a <= 1:
        raise ValueError(f"a = {a} is outside its allowed range (0, 1]")
    k = np.geomspace(2 * math.pi / max(box_size), math.pi / spacing, 2048)
    pk = np.asarray(linear_power(cosmo, jnp.asarray(k)))
    d1 = float(growth_table(cosmo).D1(jnp.asarray(a, dtype=jnp.result_type(float))))
    return d1 * math.sqrt(np.trapezoid(pk, k) / (6 * math.pi**2))


def halo_for_box(cosmo: Cosmology, config: PMConfig, a: float = 1.0, n_sigma: float = 6.0) -> int:
    r"""A halo [mesh cells] from linear theory: `n_sigma` times `rms_displacement` at `a`, plus one cell.

    The largest of N Gaussian displacements is ≈ √(2 ln N) σ (5.1 σ for 64³
    particles, 6.4 σ for 1024³); the default 6 σ held in every box we ran
    (`tests/nbody/test_domain.py` checks one). Nonlinear infall adds little
    to the largest displacements, which come from the bulk flows that linear
    theory sets.
    """
    if not n_sigma > 0:
        raise ValueError(f"n_sigma = {n_sigma} is outside its allowed range (0, inf)")
    sigma = rms_displacement(cosmo, config.box_size, config.particle_spacing, a)
    return int(math.ceil(n_sigma * sigma / config.cell_size)) + 1
