r"""One large box over many devices: mesh slabs or pencils, and the particles that live in them.

`SlabDecomposition` cuts a periodic box into P slabs along x, one per
device of a 1-D `jax.sharding.Mesh` (the devices of one process, or of many
processes under `jax.distributed`). `PencilDecomposition` cuts x and y over a
2-D (Px, Py) mesh (`pencil_mesh`): device (i, j) holds x ∈ [i n_x/Px, …),
y ∈ [j n_y/Py, …), all z. Both are a `Decomposition`, and slabs are the
Py = 1 case of the same code (an axis over one device is neither padded nor
exchanged nor transposed). Each device holds

* the mesh cells of its block (`blocks`: x-slabs, or (x, y) pencils), and
* the particles whose **Lagrangian** (lattice) position is in that block,
  in **block order**: the devices' blocks one after the other (x-block
  major), each in C order, so that the particle axis of (n_ptcl, 3) arrays
  split in Px·Py equal parts is exactly this (`particles`, a `NamedSharding`
  over the particle axis). For slabs block order *is* the lattice's C order
  (its x index varies slowest). For Py > 1 a Lagrangian (x, y) block is not
  a contiguous range of the C order, so pencils keep the flat (n_ptcl, 3)
  arrays of the single-device code (the solver, the adjoint and `vmap` are
  unchanged) in block order, and `to_lattice_order` / `from_lattice_order`
  convert (a global permutation, for output and comparisons). The white
  noise is drawn on the mesh-shaped lattice, sharded as `blocks`, so the
  same key gives the same box on any layout (partitionable threefry).

Particles never change device. A particle displaced out of its block still
paints and reads through the block's **halo**: every device paints into a
buffer padded by h cells on the left and h + 1 on the right (the extra one
for the CIC corner) along each cut axis, adds the overhangs into its
neighbours' blocks with `ppermute`s, along x first and then along y (the x
exchange carries the y padding, which the y exchange then passes on, so a
corner overhang reaches the diagonal neighbour), and, to read a field,
fills the same padding from its neighbours with the transposed
`ppermute`s (y first, then x). The PM force is read one component at a time
(a `lax.map` over the three): each is transformed back to its block, padded
and read before the next, so one padded buffer is live instead of three
(per-device memory 0.25 of one device's at 512³ on 4 slabs, against 0.31
reading the 4-point gradient of a padded potential: `benchmarks/scaling.py`).
The FFTs are the slab and pencil transforms of `jaxcluster.nbody.sharding`
(`_pencil_fft`: rfft along z, `all_to_all` over y, fft along y, `all_to_all`
over x, fft along x; plain JAX since jaxDecomp is not packaged here).
No device ever holds the full mesh or more than its 1/(Px·Py) of the particles.

**Slabs or pencils.** Slabs need h + 1 ≤ n_x/P, so at most n_x/(h + 1)
devices; pencils need h + 1 ≤ n_x/Px and ≤ n_y/Py, so up to
(n_x/(h + 1)) × (n_y/(h + 1)). The FFT layout adds Px | n_y (and Py | n_y,
Px | n_x); n_z/2 + 1 is zero-padded to a multiple of Py. Below the slab
limit slabs pad less (2h + 1 planes against a ring of both widths) and
transpose once per 3-D FFT instead of twice: prefer them; use pencils when
there are more devices than slabs.

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

**A particle further than the halo** (along a cut axis) would have its mass
dropped or wrapped into the wrong cell. It is never silent: every paint and read counts such
particles across devices (`psum`) and, if there is one, returns NaN on
every device, so the whole run turns NaN; `simulate_decomposed`,
`jaxcluster run --distributed` and `simulate --distributed` then raise an
error naming the halo. (Not `eqx.error_if`: its
callback runs on one device, inside the step loop, while the others wait
in the next collective, and the program deadlocks.)

The physics stays in the single-device modules; this module only lays
their mesh operations out over devices (`paint`, `read`, the slab and pencil
FFTs; `SlabMesh` / `PencilMesh` for the eLDL painters) and provides the
decomposed IC → LPT → FastPM chain on them. The survey's line-of-sight
projection (`survey.decomposed`) runs on slabs only.
"""

from __future__ import annotations

import abc
import math
from functools import partial
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, Shaped

from ..cosmology import Cosmology, GrowthTable, growth_table, linear_power
from .config import PMConfig
from .lpt import second_order_source
from .mesh import gradient_kernel, paint_cic, read_cic, read_gradient
from .sharding import _pencil_fft, _pencil_ifft, device_mesh
from .solver import NBodyResult, nbody

__all__ = [
    "Decomposition",
    "SlabDecomposition",
    "PencilDecomposition",
    "pencil_mesh",
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
    "PencilMesh",
]


class _Grid(NamedTuple):
    """How the box's x and y are cut over the device mesh: the mesh axis cutting each (None: not cut) and its size.

    Slabs are (name, None, P, 1). An axis of size 1 is held whole: no padding,
    no exchange, no transpose, the periodic single-device paint along it.
    """

    x: str | None
    y: str | None
    px: int
    py: int

    @property
    def names(self) -> tuple[str, ...]:
        """The device-mesh axes, for reductions over all devices."""
        return tuple(n for n in (self.x, self.y) if n is not None)

    @property
    def cut(self) -> tuple[int, ...]:
        """Array axes (0: x, 1: y) cut over more than one device: the padded, exchanged ones."""
        return tuple(a for a, p in ((0, self.px), (1, self.py)) if p > 1)

    def size(self, axis: int) -> int:
        return (self.px, self.py)[axis]

    def name(self, axis: int) -> str | None:
        return (self.x, self.y)[axis]

    def index(self, axis: int):
        """This device's block index along array axis 0 (x) or 1 (y) (inside `shard_map`)."""
        name = self.name(axis)
        return jnp.int32(0) if name is None or self.size(axis) == 1 else jax.lax.axis_index(name)

    @property
    def fft_axes(self) -> tuple[str | None, str | None]:
        """The mesh axes the pencil FFT transposes over (none for an axis of one device)."""
        return (self.x if self.px > 1 else None, self.y if self.py > 1 else None)


def pencil_mesh(px: int | None = None, py: int | None = None, devices=None, axis_names: tuple[str, str] = ("x", "y")) -> Mesh:
    """A 2-D (Px, Py) device mesh over `devices` (default all of `jax.devices()`), for `PencilDecomposition`.

    Px × Py must equal the number of devices; with neither given, the most
    nearly square factorisation with Px ≥ Py.
    """
    devices = jax.devices() if devices is None else list(devices)
    n = len(devices)
    if px is None and py is None:
        py = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    if px is None:
        px = n // py if py and n % py == 0 else -1
    if py is None:
        py = n // px if px and n % px == 0 else -1
    if px < 1 or py < 1 or px * py != n:
        raise ValueError(f"px × py = {px} × {py} must equal the {n} devices")
    return Mesh(np.asarray(devices).reshape(px, py), tuple(axis_names))


class Decomposition(eqx.Module):
    """A periodic box cut over a device mesh in x (and y), with a halo of `halo` mesh cells: slabs or pencils.

    The common code of `SlabDecomposition` (1-D mesh, Py = 1) and
    `PencilDecomposition` (2-D mesh): every function of this module takes
    either. Particles are held in **block order** (`particles`): the
    devices' Lagrangian blocks one after the other, x-block major, each in C
    order. For Py = 1 that is the lattice's C order itself.
    """

    mesh: eqx.AbstractVar[Mesh]
    halo: eqx.AbstractVar[int]

    @property
    @abc.abstractmethod
    def grid(self) -> _Grid: ...

    @property
    def n_devices(self) -> int:
        return self.grid.px * self.grid.py

    @property
    def particles(self) -> NamedSharding:
        """Sharding of (n_ptcl, …) particle arrays in block order: each device its Lagrangian block."""
        names = self.grid.names
        return NamedSharding(self.mesh, PartitionSpec(names[0] if len(names) == 1 else names))

    @property
    def blocks(self) -> NamedSharding:
        """Sharding of (n_x, n_y, n_z, …) mesh arrays: x-slabs, or (x, y) pencils."""
        return NamedSharding(self.mesh, PartitionSpec(*self.grid.names))

    @property
    def slabs(self) -> NamedSharding:
        """`blocks` (the name slabs had first)."""
        return self.blocks

    @abc.abstractmethod
    def _refuse_halo(self, block: tuple[int, int], reach: int) -> None:
        """Raise the error naming the halo's allowed range for (n_x/Px, n_y/Py) blocks."""

    @abc.abstractmethod
    def check_fft(self, shape: tuple[int, int, int], name: str = "mesh_shape") -> None:
        """Refuse a grid the decomposed FFT cannot cut, naming the parameter."""

    @abc.abstractmethod
    def check_particles(self, particle_shape: tuple[int, int, int]) -> None:
        """Refuse a lattice that does not cut into Lagrangian blocks, naming the parameter."""

    def check(self, mesh_shape: tuple[int, int, int], particle_shape: tuple[int, int, int] | None = None,
              reach: int = 1) -> None:
        """Refuse a box this decomposition cannot paint on (FFT layout, Lagrangian blocks, halo), naming the parameter.

        `reach`: cells beyond the halo a read touches on the right (1 for CIC, 3 for CIC of the
        4-point gradient, which the fd4 eLDL layers read); halo + reach must fit in one block along
        each cut axis.
        """
        self.check_fft(mesh_shape)
        if particle_shape is not None:
            self.check_particles(particle_shape)
        g = self.grid
        block = tuple(mesh_shape[a] // g.size(a) for a in g.cut)
        if block and self.halo + reach > min(block):
            self._refuse_halo(tuple(mesh_shape[a] // g.size(a) for a in (0, 1)), reach)

    def padded_shape(self, mesh_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """Shape of one device's paint/read buffer: its block plus 2 halo + 1 cells along each cut axis."""
        g = self.grid
        out = [mesh_shape[a] // g.size(a) for a in (0, 1)] + [mesh_shape[2]]
        for a in g.cut:
            out[a] += 2 * self.halo + 1
        return tuple(out)

    def mesh_ops(self, mesh_shape: tuple[int, int, int], particle_shape: tuple[int, int, int] | None = None):
        """The `nbody.mesh.MeshOps` of one device's block of `mesh_shape`, for use inside `shard_map`."""
        g = self.grid
        return PencilMesh(tuple(mesh_shape), self.halo, (g.x, g.y), (g.px, g.py),
                          None if particle_shape is None else tuple(particle_shape))

    def lattice(self, config: PMConfig, dtype=None) -> Float[Array, "n_ptcl 3"]:
        """Unperturbed lattice positions q [h⁻¹ Mpc] in block order, sharded as `particles`."""
        dtype = dtype or jnp.result_type(float)
        g = self.grid
        body = lambda: _local_lattice(config.particle_shape, config.particle_spacing, g, dtype)
        return jax.shard_map(body, mesh=self.mesh, in_specs=(), out_specs=self.particles.spec)()

    def to_lattice_order(self, x: Shaped[Array, "n_ptcl *rest"], particle_shape: tuple[int, int, int]
                         ) -> Shaped[Array, "n_ptcl *rest"]:
        """(n_ptcl, …) in block order → the lattice's C order (what single-device code uses). A global
        permutation: for comparisons and output, not inside a step."""
        px, py = self.grid.px, self.grid.py
        if py == 1:
            return x
        nx, ny, nz = particle_shape
        rest = x.shape[1:]
        y = x.reshape(px, py, nx // px, ny // py, nz, *rest)
        return jnp.swapaxes(y, 1, 2).reshape(x.shape)

    def from_lattice_order(self, x: Shaped[Array, "n_ptcl *rest"], particle_shape: tuple[int, int, int]
                           ) -> Shaped[Array, "n_ptcl *rest"]:
        """Inverse of `to_lattice_order`: C lattice order → block order."""
        px, py = self.grid.px, self.grid.py
        if py == 1:
            return x
        nx, ny, nz = particle_shape
        rest = x.shape[1:]
        y = x.reshape(px, nx // px, py, ny // py, nz, *rest)
        return jnp.swapaxes(y, 1, 2).reshape(x.shape)


def _check_halo_value(halo) -> None:
    if not isinstance(halo, (int, np.integer)) or isinstance(halo, bool) or halo < 0:
        raise ValueError(f"halo = {halo!r} is outside its allowed range: an integer >= 0 (mesh cells)")


class SlabDecomposition(Decomposition):
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
            raise ValueError(f"mesh must be a 1-D device mesh, got axes {self.mesh.axis_names} (a 2-D mesh: "
                             "PencilDecomposition)")
        _check_halo_value(self.halo)

    @property
    def axis_name(self) -> str:
        return self.mesh.axis_names[0]

    @property
    def grid(self) -> _Grid:
        return _Grid(self.axis_name, None, int(self.mesh.shape[self.axis_name]), 1)

    def check_fft(self, shape: tuple[int, int, int], name: str = "mesh_shape") -> None:
        """Refuse a grid the slab FFT cannot decompose (n_x, n_y multiples of P), naming the parameter."""
        p = self.n_devices
        if shape[0] % p or shape[1] % p:
            raise ValueError(f"{name} = {tuple(shape)}: n_x and n_y must be multiples of the {p} devices (slabs "
                             "and the transposed FFT layout)")

    def check_particles(self, particle_shape: tuple[int, int, int]) -> None:
        p = self.n_devices
        if particle_shape[0] % p:
            raise ValueError(f"particle_shape = {tuple(particle_shape)}: n_x must be a multiple of the {p} devices "
                             "(Lagrangian slabs)")

    def _refuse_halo(self, block, reach):
        p, nx_loc = self.n_devices, block[0]
        raise ValueError(f"halo = {self.halo} cells is outside its allowed range [0, {nx_loc - reach}] for "
                         f"{p} slabs of {nx_loc} cells: use fewer devices, a smaller halo, or pencils "
                         "(PencilDecomposition)")

    def padded_width(self, nx: int) -> int:
        """x-planes of the paint/read buffer of one device: n_x/P + 2 halo + 1."""
        return nx // self.n_devices + 2 * self.halo + 1


class PencilDecomposition(Decomposition):
    """(x, y) pencils of a periodic box over a 2-D (Px, Py) device mesh, with a halo of `halo` mesh cells.

    Device (i, j) holds the mesh block x ∈ [i n_x/Px, (i+1) n_x/Px),
    y ∈ [j n_y/Py, (j+1) n_y/Py), all z, and the particles whose Lagrangian
    position is in it, in **block order** (`Decomposition`; convert with
    `to_lattice_order`). For more devices than slabs: the halo need only fit
    n_x/Px and n_y/Py cells, so up to (n_x/(h+1)) × (n_y/(h+1)) devices.
    Slabs are the Py = 1 case (the same code).

    Args:
        mesh: 2-D `jax.sharding.Mesh` (default `pencil_mesh()`: all devices, axes ("x", "y"),
            the most nearly square Px × Py); its first axis cuts x, its second y.
        halo: how far [mesh cells] a particle may sit outside its Lagrangian block in x or y,
            integer ≥ 0; halo + 1 ≤ min(n_x/Px, n_y/Py) (checked by `check`).
    """

    mesh: Mesh = eqx.field(static=True)
    halo: int = eqx.field(static=True)

    def __init__(self, mesh: Mesh | None = None, halo: int = 8):
        self.mesh = pencil_mesh() if mesh is None else mesh
        self.halo = halo

    def __check_init__(self):
        if len(self.mesh.axis_names) != 2:
            raise ValueError(f"mesh must be a 2-D (Px, Py) device mesh, got axes {self.mesh.axis_names} "
                             "(pencil_mesh builds one; a 1-D mesh: SlabDecomposition)")
        _check_halo_value(self.halo)

    @property
    def grid(self) -> _Grid:
        x, y = self.mesh.axis_names
        return _Grid(x, y, int(self.mesh.shape[x]), int(self.mesh.shape[y]))

    def check_fft(self, shape: tuple[int, int, int], name: str = "mesh_shape") -> None:
        """Refuse a grid the pencil FFT cannot cut: Px | n_x, Py | n_y, and Px | n_y (the transposed layout)."""
        g = self.grid
        nx, ny, _ = shape
        if nx % g.px:
            raise ValueError(f"{name} = {tuple(shape)}: n_x = {nx} must be a multiple of Px = {g.px} (the device "
                             f"mesh's '{g.x}' axis)")
        if ny % g.py or ny % g.px:
            raise ValueError(f"{name} = {tuple(shape)}: n_y = {ny} must be a multiple of Py = {g.py} (the device "
                             f"mesh's '{g.y}' axis) and of Px = {g.px} (the transposed FFT layout)")

    def check_particles(self, particle_shape: tuple[int, int, int]) -> None:
        g = self.grid
        if particle_shape[0] % g.px or particle_shape[1] % g.py:
            raise ValueError(f"particle_shape = {tuple(particle_shape)}: n_x must be a multiple of Px = {g.px} and "
                             f"n_y of Py = {g.py} (Lagrangian blocks)")

    def _refuse_halo(self, block, reach):
        g = self.grid
        nxl, nyl = block
        sides = [n for n, p in ((nxl, g.px), (nyl, g.py)) if p > 1]
        raise ValueError(f"halo = {self.halo} cells is outside its allowed range [0, {min(sides) - reach}] for "
                         f"{g.px} × {g.py} pencils of {nxl} × {nyl} cells: use fewer devices along the thin "
                         "axis or a smaller halo")


# ------------------------------------------------------------ inside shard_map


def _neighbours(n_dev):
    to_right = [(i, (i + 1) % n_dev) for i in range(n_dev)]
    to_left = [(i, (i - 1) % n_dev) for i in range(n_dev)]
    return to_right, to_left


def _to_block_frame(pos_cell, shape, grid: _Grid, halo):
    """Positions [cells] in the padded buffer's frame, and the number outside it.

    Along each cut axis the coordinate is taken relative to the block start
    at the periodic image nearest the block's centre, then shifted by the
    halo; uncut axes stay periodic.
    """
    cols = [pos_cell[:, 0], pos_cell[:, 1], pos_cell[:, 2]]
    outside = jnp.zeros(pos_cell.shape[:1], dtype=bool)
    for a in grid.cut:
        n, n_loc = shape[a], shape[a] // grid.size(a)
        rel = cols[a] - (grid.index(a) * n_loc).astype(pos_cell.dtype)
        rel = rel - n * jnp.round((rel - 0.5 * n_loc) / n)
        u = rel + halo
        lower = jnp.floor(u)
        outside = outside | (lower < 0) | (lower > n_loc + 2 * halo - 1)  # the upper CIC corner must be a buffer cell
        cols[a] = u
    return jnp.stack(cols, axis=1), jnp.sum(outside.astype(jnp.int32))


def _poison(x, n_outside, grid: _Grid):
    """x, or NaN everywhere if any device has a particle outside its halo (module docstring)."""
    bad = jax.lax.psum(n_outside, grid.names) > 0
    return jnp.where(bad, jnp.asarray(jnp.nan, x.dtype), x)


def _along(axis, start, stop):
    return (slice(None),) * axis + (slice(start, stop),)


def _halo_sum_axis(buf, halo, axis_name, n_dev, axis):
    """Padded buffer → its block along `axis`, with the neighbours' overhangs along that axis added."""
    n_loc = buf.shape[axis] - 2 * halo - 1
    to_right, to_left = _neighbours(n_dev)
    own = buf[_along(axis, halo, halo + n_loc)]
    own = own.at[_along(axis, 0, halo + 1)].add(jax.lax.ppermute(buf[_along(axis, halo + n_loc, None)], axis_name,
                                                                 to_right))
    if halo:
        own = own.at[_along(axis, n_loc - halo, None)].add(jax.lax.ppermute(buf[_along(axis, 0, halo)], axis_name,
                                                                            to_left))
    return own


def _halo_fill_axis(own, halo, axis_name, n_dev, axis):
    """Block → buffer padded along `axis` with the neighbours' cells (the transpose of `_halo_sum_axis`)."""
    n_loc = own.shape[axis]
    to_right, to_left = _neighbours(n_dev)
    right = jax.lax.ppermute(own[_along(axis, 0, halo + 1)], axis_name, to_left)
    if not halo:
        return jnp.concatenate([own, right], axis=axis)
    left = jax.lax.ppermute(own[_along(axis, n_loc - halo, None)], axis_name, to_right)
    return jnp.concatenate([left, own, right], axis=axis)


def _halo_sum(buf, halo, grid: _Grid):
    """(Wx, Wy, nz, …) painted buffer → (n_x/Px, n_y/Py, nz, …) block: overhangs sent along x, then along y.

    x first, over the y-padded width: a corner overhang goes to the x neighbour's
    y padding, which the y exchange then sends on to the diagonal neighbour.
    """
    for a in grid.cut:
        buf = _halo_sum_axis(buf, halo, grid.name(a), grid.size(a), a)
    return buf


def _halo_fill(own, halo, grid: _Grid):
    """Block → padded buffer (the transpose of `_halo_sum`): y first, then x over the y-padded width."""
    for a in reversed(grid.cut):
        own = _halo_fill_axis(own, halo, grid.name(a), grid.size(a), a)
    return own


def _block_shape(shape, grid: _Grid):
    return (shape[0] // grid.px, shape[1] // grid.py, shape[2])


def local_paint(pos_cell, mass, mesh_shape, halo, grid: _Grid):
    """Per-device CIC paint (inside `shard_map`): this device's particles → its block, NaN if one is outside the halo."""
    u, outside = _to_block_frame(pos_cell, mesh_shape, grid, halo)
    padded = list(_block_shape(mesh_shape, grid))
    for a in grid.cut:
        padded[a] += 2 * halo + 1
    buf = paint_cic(u, mass, tuple(padded))
    return _poison(_halo_sum(buf, halo, grid), outside, grid)


def local_read(block, pos_cell, halo, grid: _Grid):
    """Per-device CIC read (inside `shard_map`) of a (n_x/Px, n_y/Py, nz, …) block at this device's particles."""
    shape = (block.shape[0] * grid.px, block.shape[1] * grid.py, block.shape[2])
    u, outside = _to_block_frame(pos_cell, shape, grid, halo)
    return _poison(read_cic(_halo_fill(block, halo, grid), u), outside, grid)


def _fft(block, grid: _Grid):
    return _pencil_fft(block, *grid.fft_axes)


def _ifft(block_k, nz, grid: _Grid):
    return _pencil_ifft(block_k, nz, *grid.fft_axes)


def local_wavevectors(shape, grid: _Grid, dtype):
    """Angular wavenumbers [rad per cell] of this device's block of the transposed (k_x, k_y/Px, k_z/Py) layout.

    The z frequencies are zero-padded to a multiple of Py as in `_pencil_fft` (those modes are zero and dropped).
    """
    nx, ny, nz = shape
    kx = jnp.asarray(2 * np.pi * np.fft.fftfreq(nx).reshape(-1, 1, 1), dtype)
    ky = jnp.asarray(2 * np.pi * np.fft.fftfreq(ny).reshape(1, -1, 1), dtype)
    kz_np = 2 * np.pi * np.fft.rfftfreq(nz)
    kz = jnp.asarray(np.pad(kz_np, (0, -kz_np.size % grid.py)).reshape(1, 1, -1), dtype)
    if grid.px > 1:
        ny_loc = ny // grid.px
        ky = jax.lax.dynamic_slice_in_dim(ky, grid.index(0) * ny_loc, ny_loc, axis=1)
    if grid.py > 1:
        nz_loc = kz.shape[2] // grid.py
        kz = jax.lax.dynamic_slice_in_dim(kz, grid.index(1) * nz_loc, nz_loc, axis=2)
    return kx, ky, kz


def _inverse_k2(kvec):
    k2 = kvec[0] ** 2 + kvec[1] ** 2 + kvec[2] ** 2
    return jnp.where(k2 > 0, 1.0 / jnp.where(k2 > 0, k2, 1.0), 0.0)


def local_force_from_density_k(delta_k, shape, gradient, grid: _Grid, real_dtype):
    """F = −∇∇⁻²δ [cells] from a transposed-layout δ_k: the (n_x/Px, n_y/Py, nz, 3) block (as `mesh.force_from_density`)."""
    kvec = local_wavevectors(shape, grid, real_dtype)
    inv_k2 = _inverse_k2(kvec)
    i_unit = jnp.asarray(1j, dtype=delta_k.dtype)  # strict promotion forbids float × complex
    force_k = jnp.stack(
        [i_unit * (gradient_kernel(ki, gradient) * inv_k2).astype(delta_k.dtype) * delta_k for ki in kvec], axis=-1
    )
    return _ifft(force_k, shape[2], grid)


def _local_lattice(particle_shape, spacing, grid: _Grid, dtype):
    """This device's Lagrangian block of lattice positions q [h⁻¹ Mpc], (n_loc, 3) in C order within the block."""
    nxl, nyl, nz = _block_shape(particle_shape, grid)
    axes = [(jnp.arange(n, dtype=jnp.int32) + grid.index(a) * n).astype(dtype) * spacing if a < 2 else
            jnp.arange(n, dtype=dtype) * spacing for a, n in enumerate((nxl, nyl, nz))]
    return jnp.stack(jnp.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


class _BlockMeshOps(eqx.Module):
    """The mesh operations of `jaxcluster.nbody.mesh.FullMesh` on one device's block, inside `shard_map`."""

    shape: eqx.AbstractVar[tuple[int, int, int]]
    halo: eqx.AbstractVar[int]

    @property
    @abc.abstractmethod
    def grid(self) -> _Grid: ...

    @property
    def is_full(self) -> bool:
        return False

    @property
    def n_dev(self) -> int:
        return self.grid.px * self.grid.py

    def paint(self, pos_cell, mass):
        return local_paint(pos_cell, mass, self.shape, self.halo, self.grid)

    def read(self, field, pos_cell):
        return local_read(field, pos_cell, self.halo, self.grid)

    def read_gradient(self, phi, pos_cell):
        """`mesh.read_gradient` (4-point stencil, CIC) of a φ block: φ padded by the halo and the stencil's reach."""
        g = self.grid
        padded = _halo_fill(phi, self.halo + 2, g)  # 2 + halo | block | halo + 3, along each cut axis
        u, outside = _to_block_frame(pos_cell, self.shape, g, self.halo)
        u = u + jnp.asarray([2.0 if a in g.cut else 0.0 for a in range(3)], u.dtype)[None, :]
        # read_gradient wraps over the padded buffer; positions within the halo never reach the wrap.
        return _poison(read_gradient(padded, u), outside, g)

    def rfftn(self, field):
        return _fft(field, self.grid)

    def irfftn(self, field_k):
        return _ifft(field_k, self.shape[2], self.grid)

    def wavevectors(self, dtype):
        return local_wavevectors(self.shape, self.grid, dtype)

    def total(self, x):
        return jax.lax.psum(x, self.grid.names)


class SlabMesh(_BlockMeshOps):
    """The mesh operations of `jaxcluster.nbody.mesh.FullMesh` on one device's slab, inside `shard_map`.

    Fields are (n_x/P, ny, nz) x-slabs, their transforms the (n_x, ny/P, nz/2+1)
    y-slabs of `local_wavevectors`, positions this device's particles in mesh
    cells. Painting and reading go through the halo (module docstring); a
    particle outside it turns the result NaN on every device.
    """

    shape: tuple[int, int, int] = eqx.field(static=True)
    halo: int = eqx.field(static=True)
    axis_name: str = eqx.field(static=True)
    n_devices: int = eqx.field(static=True)

    def __init__(self, shape, halo, axis_name, n_dev):
        self.shape, self.halo, self.axis_name, self.n_devices = tuple(shape), halo, axis_name, n_dev

    @property
    def grid(self) -> _Grid:
        return _Grid(self.axis_name, None, self.n_devices, 1)

    def subsample(self, pos_cell, stride):
        """Every `stride`-th particle of the global lattice order, as masses 1/0 on this device's particles
        (the slabs do not start on multiples of the stride), and how many there are in all."""
        n_loc = pos_cell.shape[0]
        local = jnp.arange(n_loc)
        index = self.grid.index(0).astype(local.dtype) * n_loc + local
        mass = (index % stride == 0).astype(pos_cell.dtype) * jnp.ones_like(pos_cell[:, 0])
        return pos_cell, mass, len(range(0, n_loc * self.n_devices, stride))


class PencilMesh(_BlockMeshOps):
    """The mesh operations of `jaxcluster.nbody.mesh.FullMesh` on one device's (x, y) block, inside `shard_map`.

    Fields are (n_x/Px, n_y/Py, nz) blocks, their transforms (n_x, n_y/Px,
    nzp/Py) blocks (`local_wavevectors`), positions this device's particles
    (block order) in mesh cells. `particle_shape` (default `shape`) is the
    particle lattice, which `subsample` needs to find the global lattice index.
    Build it with `Decomposition.mesh_ops`.
    """

    shape: tuple[int, int, int] = eqx.field(static=True)
    halo: int = eqx.field(static=True)
    axes: tuple[str | None, str | None] = eqx.field(static=True)
    devices: tuple[int, int] = eqx.field(static=True)
    particle_shape: tuple[int, int, int] | None = eqx.field(static=True, default=None)

    @property
    def grid(self) -> _Grid:
        return _Grid(*self.axes, *self.devices)

    def subsample(self, pos_cell, stride):
        """Every `stride`-th particle of the global (C) lattice order, as masses 1/0 on this device's particles,
        and how many there are in all."""
        g = self.grid
        ps = self.shape if self.particle_shape is None else self.particle_shape
        nxl, nyl, nz = _block_shape(ps, g)
        i, j, k = jnp.unravel_index(jnp.arange(pos_cell.shape[0]), (nxl, nyl, nz))
        x0, y0 = (g.index(a).astype(i.dtype) * n for a, n in ((0, nxl), (1, nyl)))
        index = ((x0 + i) * ps[1] + y0 + j) * nz + k
        mass = (index % stride == 0).astype(pos_cell.dtype) * jnp.ones_like(pos_cell[:, 0])
        return pos_cell, mass, len(range(0, math.prod(ps), stride))


# ------------------------------------------------------------------ public API


def _particle_spec(dec):
    return dec.particles.spec


def _block_spec(dec):
    return dec.blocks.spec


def paint_decomposed(
    pos: Float[Array, "n_ptcl 3"],
    mass: Float[Array, "n_ptcl *channels"],
    box_size: tuple[float, float, float],
    mesh_shape: tuple[int, int, int],
    decomposition: Decomposition,
) -> Float[Array, "nx ny nz *channels"]:
    """`paint_cic` of positions [h⁻¹ Mpc] on a decomposed box; returns the mesh sharded in slabs or pencils.

    Each device paints its own (Lagrangian-block, block-order) particles; see the module docstring.
    """
    dec = decomposition
    dec.check(mesh_shape)
    cell = jnp.asarray([b / n for b, n in zip(box_size, mesh_shape)], dtype=pos.dtype)

    def body(x, m):
        return local_paint(x / cell[None, :], m, tuple(mesh_shape), dec.halo, dec.grid)

    spec = _particle_spec(dec)
    return jax.shard_map(body, mesh=dec.mesh, in_specs=(spec, spec), out_specs=_block_spec(dec))(pos, mass)


def read_decomposed(
    field: Float[Array, "nx ny nz *channels"],
    pos: Float[Array, "n_ptcl 3"],
    box_size: tuple[float, float, float],
    decomposition: Decomposition,
) -> Float[Array, "n_ptcl *channels"]:
    """`read_cic` of a decomposed mesh at positions [h⁻¹ Mpc] held in Lagrangian blocks (block order)."""
    dec = decomposition
    mesh_shape = tuple(field.shape[:3])
    dec.check(mesh_shape)
    cell = jnp.asarray([b / n for b, n in zip(box_size, mesh_shape)], dtype=pos.dtype)

    def body(f, x):
        return local_read(f, x / cell[None, :], dec.halo, dec.grid)

    spec = _particle_spec(dec)
    return jax.shard_map(body, mesh=dec.mesh, in_specs=(_block_spec(dec), spec), out_specs=spec)(field, pos)


def _local_pm_force(pos_loc, config, halo, grid: _Grid):
    cell = config.cell_size
    pos_cell = pos_loc / cell
    # Built from pos (not jnp.full) so that it varies over the device axis like pos: paint_cic's
    # custom VJP returns a device-varying cotangent for it, and shard_map checks that the types match.
    mass = jnp.ones_like(pos_cell[:, 0]) * float(config.mesh_factor**3)
    rho = local_paint(pos_cell, mass, config.mesh_shape, halo, grid)
    delta_k = _fft(rho, grid)  # the mean (k = 0) is dropped by the kernel, so ρ serves as δ
    kvec = local_wavevectors(config.mesh_shape, grid, rho.dtype)
    inv_k2 = _inverse_k2(kvec)
    i_unit = jnp.asarray(1j, dtype=delta_k.dtype)  # strict promotion forbids float × complex
    u, outside = _to_block_frame(pos_cell, config.mesh_shape, grid, halo)
    kernels = [lambda k=k: i_unit * (gradient_kernel(k, config.gradient) * inv_k2).astype(delta_k.dtype) for k in kvec]

    def component(a):
        # F_a = i g(k_a) δ_k / k² (as mesh.force_from_density; for fd4, g is the 4-point stencil's symbol),
        # one component per loop iteration: one halo-padded force block is live at a time, not three.
        block = _ifft(jax.lax.switch(a, kernels) * delta_k, config.mesh_shape[2], grid)
        return read_cic(_halo_fill(block, halo, grid), u)

    force = jax.lax.map(component, jnp.arange(3)).T  # (n, 3)
    return _poison(force, outside, grid) * cell


def _reach(config: PMConfig) -> int:
    return 1  # the force is read with CIC from halo-padded component slabs, whatever the gradient kernel


def pm_force_decomposed(
    pos: Float[Array, "n_ptcl 3"], config: PMConfig, decomposition: Decomposition
) -> Float[Array, "n_ptcl 3"]:
    r"""`pm_force` with particles and mesh decomposed in slabs or pencils (module docstring).

    Same physics as `pm_force` (CIC paint of mass `mesh_factor³` per particle,
    $F_k = i g(k) δ_k / k^2$, CIC read) up to round-off.

    Args:
        pos: (n_ptcl, 3) positions [h⁻¹ Mpc] in block order (the lattice's C
            order for slabs), best already sharded as `decomposition.particles`.
        config: the box; its mesh and lattice cut as `decomposition.check` requires.
        decomposition: the slabs or pencils and the halo.

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
    body = lambda x: _local_pm_force(x, config, dec.halo, dec.grid)
    spec = _particle_spec(dec)
    return jax.shard_map(body, mesh=dec.mesh, in_specs=spec, out_specs=spec)(pos)


def linear_field_decomposed(
    noise: Float[Array, "nx ny nz"], cosmo: Cosmology, config: PMConfig, decomposition: Decomposition,
    wiggles: bool = True,
) -> Float[Array, "nx ny nz"]:
    """`linear_field` with the lattice decomposed: δ_L(a = 1) on `config.particle_shape`, sharded as `blocks`."""
    dec = decomposition
    if noise.shape != config.particle_shape:
        raise ValueError(f"noise shape {noise.shape} must equal config.particle_shape {config.particle_shape}")
    dec.check_fft(config.particle_shape, "particle_shape")
    shape, spacing = config.particle_shape, config.particle_spacing

    grid = dec.grid

    def body(w, c):
        kvec = local_wavevectors(shape, grid, w.dtype)
        k = jnp.sqrt(kvec[0] ** 2 + kvec[1] ** 2 + kvec[2] ** 2) / spacing
        pk = linear_power(c, k.astype(jnp.result_type(c.Omega_m)), wiggles=wiggles).astype(w.dtype)
        amp = jnp.where(k > 0, jnp.sqrt(jnp.where(k > 0, pk, 1.0) / spacing**3), 0.0)
        w_k = _fft(w, grid)
        return _ifft(w_k * amp.astype(w_k.dtype), shape[2], grid)

    spec = _block_spec(dec)
    return jax.shard_map(body, mesh=dec.mesh, in_specs=(spec, PartitionSpec()), out_specs=spec)(noise, cosmo)


def _local_lpt_displacements(delta, shape, spacing, order, grid: _Grid):
    q = _local_lattice(shape, spacing, grid, delta.dtype)
    delta_k = _fft(delta, grid)
    psi1 = local_force_from_density_k(delta_k, shape, "exact", grid, delta.dtype).reshape(-1, 3) * spacing
    if order == 1:
        return q, psi1, jnp.zeros_like(psi1)
    kvec = local_wavevectors(shape, grid, delta.dtype)
    ctype = delta_k.dtype
    phi_k = -delta_k * _inverse_k2(kvec).astype(ctype)  # ∇²φ = δ (as lpt.lpt_displacements)

    def hessian(i, j):
        return _ifft(-(kvec[i] * kvec[j]).astype(ctype) * phi_k, shape[2], grid)

    d2_k = _fft(second_order_source(hessian), grid)
    psi2 = -local_force_from_density_k(d2_k, shape, "exact", grid, delta.dtype).reshape(-1, 3) * spacing
    return q, psi1, psi2


def lpt_decomposed(
    delta_lin: Float[Array, "nx ny nz"],
    cosmo: Cosmology,
    growth: GrowthTable,
    config: PMConfig,
    a: float | Float[Array, ""],
    decomposition: Decomposition,
    order: int = 2,
) -> tuple[Float[Array, "n_ptcl 3"], Float[Array, "n_ptcl 3"]]:
    """`lpt` on a decomposed lattice: positions [h⁻¹ Mpc] and momenta [h⁻¹ Mpc] in Lagrangian blocks (block order).

    `delta_lin` (n_x, n_y, n_z) is best sharded as `decomposition.blocks`.
    """
    dec = decomposition
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order}")
    if delta_lin.shape != config.particle_shape:
        raise ValueError(f"delta_lin shape {delta_lin.shape} must equal config.particle_shape {config.particle_shape}")
    dec.check_fft(config.particle_shape, "particle_shape")
    shape, spacing = config.particle_shape, config.particle_spacing
    body = lambda d: _local_lpt_displacements(d, shape, spacing, order, dec.grid)
    spec = _particle_spec(dec)
    q, psi1, psi2 = jax.shard_map(body, mesh=dec.mesh, in_specs=_block_spec(dec), out_specs=(spec, spec, spec))(
        delta_lin)
    a = jnp.asarray(a, dtype=jnp.result_type(float))
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
    decomposition: Decomposition,
    growth: GrowthTable | None = None,
    adjoint: str = "reversible",
    checkpoints: int | None = 4,
) -> NBodyResult:
    """`nbody` for one box with particles and mesh decomposed (`pm_force_decomposed`); same arguments and result.

    `pos`, `p` (n_ptcl, 3) are in block order (Lagrangian blocks); the result's
    `pos`, `p` (n_snap, n_ptcl, 3) are sharded along the particle axis.
    Gradients (either adjoint) go through the decomposed force.
    """
    dec = decomposition
    dec.check(config.mesh_shape, config.particle_shape, reach=_reach(config))
    pos = jax.lax.with_sharding_constraint(pos, dec.particles)
    p = jax.lax.with_sharding_constraint(p, dec.particles)
    res = nbody(pos, p, cosmo, config, a_steps, snapshots, growth=growth, adjoint=adjoint, checkpoints=checkpoints,
                force_fn=partial(pm_force_decomposed, config=config, decomposition=dec))
    snap = NamedSharding(dec.mesh, PartitionSpec(None, *_particle_spec(dec)))
    return NBodyResult(a=res.a, pos=jax.lax.with_sharding_constraint(res.pos, snap),
                       p=jax.lax.with_sharding_constraint(res.p, snap))


@eqx.filter_jit
def _simulate_decomposed_jit(key, cosmo, config, a_steps, snapshots, dec, lpt_order, adjoint, checkpoints):
    dtype = jnp.result_type(float)
    noise = jax.lax.with_sharding_constraint(jax.random.normal(key, config.particle_shape, dtype=dtype), dec.blocks)
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
    decomposition: Decomposition,
    lpt_order: int = 2,
    adjoint: str = "reversible",
    checkpoints: int | None = 4,
) -> NBodyResult:
    """White noise → δ_L → LPT at `a_steps[0]` → FastPM, for one box decomposed over all devices of `decomposition`.

    The same key gives the same box on any number of devices or processes:
    the noise is `jax.random.normal(key, particle_shape)` under partitionable
    threefry (JAX's default), whose values do not depend on the sharding,
    and each device draws only its slab or pencil. Under `jax.distributed` every
    process calls it with the same arguments.

    Args:
        key: PRNG key of the box's white noise.
        cosmo: cosmology (scalar fields).
        config: the box.
        a_steps: step boundaries in a; LPT at `a_steps[0]`.
        snapshots: scale factors to save (each one of `a_steps`); default the last.
        decomposition: slabs or pencils and the halo.
        lpt_order: 1 or 2, as in `lpt`.
        adjoint: `"reversible"` or `"checkpoint"`, as in `nbody`.
        checkpoints: states stored by the checkpoint adjoint, as in `nbody`.

    Returns:
        `NBodyResult` whose `pos`, `p` (n_snap, n_ptcl, 3) [h⁻¹ Mpc] are in block
        order (the lattice's C order for slabs; `decomposition.to_lattice_order`
        for pencils), sharded in Lagrangian blocks.

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
            f"outside its {'slab' if dec.grid.py == 1 else 'pencil'} (the run is NaN): raise "
            f"{type(dec).__name__}(halo=...) above the largest displacement along a cut axis "
            "(max_displacement of a single-device run, or halo_for)")
    return res


def max_displacement(pos: Float[Array, "n_ptcl 3"], config: PMConfig, decomposition: Decomposition | None = None
                     ) -> Float[Array, "3"]:
    """Largest |x − q| per axis [h⁻¹ Mpc] of lattice-ordered particles (periodic): what the halo must exceed.

    With `decomposition`, `pos` is in its block order (as `simulate_decomposed` returns it).
    """
    q = config.lattice(pos.dtype) if decomposition is None else decomposition.lattice(config, pos.dtype)
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
