r"""Scaling the PM engine out over devices with `jax.sharding`.

Two independent ways to use several devices:

* **A batch of boxes** (`simulate_batch`): independent simulations (one per
  cosmology and white-noise field) are split along a leading batch axis over a
  1-D device mesh. Each device runs `vmap` of linear field → LPT → N-body on
  its share; there is no communication at all. The batch must be a multiple
  of the device count.

* **One large box** (`pm_force_sharded`, `nbody_sharded`): the force mesh is
  decomposed in x-slabs over a 1-D device mesh and the particles are split
  by index. The distributed FFT is an explicit slab decomposition written with
  `jax.shard_map`: a local `rfft` along z and `fft` along y on each
  (n_x/P, n_y, n_z) slab, an `all_to_all` transpose to (n_x, n_y/P, n_z/2+1)
  y-slabs, the `fft` along x, the Poisson and gradient kernels applied in that
  transposed layout, and the same steps in reverse.

Why the explicit slab FFT (measured by `benchmarks/sharding.py`, results in
`benchmarks/results/sharding.json`, with 4 fake CPU devices on 2 shared cores,
so the numbers are relative only): the δ → F force at 128³, float64, per device:

* XLA's own partitioning (δ on a `NamedSharding` along x, `jnp.fft.rfftn`
  under `jit`) compiles to an `all-gather` of the whole mesh followed by
  a replicated FFT on every device: 1.1 s, 68 MB temp, vs 0.26 s and 51 MB
  on one device. That is not a decomposition.
* jaxdecomp 0.3.1 `pfft3d`/`pifft3d` runs on CPU devices: 0.44 s, 34 MB temp,
  4 `all-to-all`s. It is a complex-to-complex transform with a transposed
  (k_y, k_z, k_x) output, and it needs a compiled extension.
* The rfft slab scheme here: 0.41 s, 35 MB temp, 2 `all-to-all`s, error vs
  one device 6e-16. It is plain JAX (differentiable, no extra dependency) and
  keeps the rfft layout our kernels use.

On CPU, jaxdecomp and the slab scheme are close. The slab scheme was chosen
for being plain JAX with the rfft layout. On GPUs jaxdecomp (cuDecomp)
should be measured again. Slabs limit the device count to min(n_x, n_y);
for more devices `_pencil_fft` / `_pencil_ifft` cut x and y over a 2-D
device mesh (two `all_to_all`s each way, over y then x; jaxDecomp's `pfft3d`
is not installable here, so they are plain JAX too), and `_slab_fft` is
their Py = 1 case. `nbody.domain.PencilDecomposition` uses them.

Painting and reading with a decomposed mesh: particle positions are
all-gathered (n_ptcl × 3 numbers per device, 1/8 of the mesh for a 2× force
mesh), each device paints or reads only the CIC corners that fall in its own
slab (the other corners are dropped), and the per-particle forces are
summed back to their owners with `psum_scatter`. No device ever holds the
full mesh, and no halo is needed because each corner belongs to exactly one
slab. Known limit: each device touches all n_ptcl particles, so painting and
reading are not parallelised (the mesh memory and FFT are). For boxes whose
particles do not fit one device, use `jaxcluster.nbody.domain`: particles
held in the slabs they start in, a halo exchange, and the same slab FFT.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, ArrayLike, Float

from ..cosmology import Cosmology, GrowthTable, growth_table
from .config import PMConfig
from .ic import linear_field
from .lpt import lpt
from .mesh import gradient_kernel
from .solver import NBodyResult, nbody

__all__ = [
    "device_mesh",
    "batch_sharding",
    "simulate_batch",
    "slab_force_from_density",
    "pm_force_sharded",
    "nbody_sharded",
]

# The 8 corners of a CIC cell, (8, 3) of 0/1.
_CORNERS = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=np.int32)


def device_mesh(axis_name: str = "batch", devices: Any = None) -> Mesh:
    """A 1-D device mesh named `axis_name` over `devices` (default: all of `jax.devices()`)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (axis_name,))


def _axis_of(mesh: Mesh) -> tuple[str, int]:
    if len(mesh.axis_names) != 1:
        raise ValueError(f"expected a 1-D device mesh, got axes {mesh.axis_names} of shape {dict(mesh.shape)}")
    name = mesh.axis_names[0]
    return name, int(mesh.shape[name])


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading-axis sharding over the (1-D) device mesh: what `simulate_batch` takes and returns."""
    name, _ = _axis_of(mesh)
    return NamedSharding(mesh, PartitionSpec(name))


# ---------------------------------------------------------------- batch of boxes


def _one_box(noise, cosmo, a_steps, snapshots, config, lpt_order, checkpoints):
    growth = growth_table(cosmo)
    delta = linear_field(noise, cosmo, config)
    pos, p = lpt(delta, cosmo, growth, config, a_steps[0], order=lpt_order)
    return nbody(pos, p, cosmo, config, a_steps, snapshots, growth=growth, checkpoints=checkpoints)


@eqx.filter_jit
def _simulate_batch_jit(noise, cosmo, a_steps, snapshots, config, mesh, lpt_order, checkpoints):
    name, _ = _axis_of(mesh)
    spec = PartitionSpec(name)

    def local(noise_l, cosmo_l):  # this device's share of the batch
        run = lambda n, c: _one_box(n, c, a_steps, snapshots, config, lpt_order, checkpoints)
        return jax.vmap(run)(noise_l, cosmo_l)

    # The vmapped NBodyResult leaves all carry the batch axis (`a` is broadcast to
    # (batch, n_snap)); shard_map rebuilds the module by unflattening, not __init__.
    return jax.shard_map(local, mesh=mesh, in_specs=(spec, spec), out_specs=spec, check_vma=False)(noise, cosmo)


def simulate_batch(
    noise: Float[Array, "batch nx ny nz"],
    cosmo: Cosmology,
    config: PMConfig,
    a_steps: Float[ArrayLike, " n_step_plus_1"],
    snapshots: Float[ArrayLike, " n_snap"] | None = None,
    *,
    mesh: Mesh | None = None,
    lpt_order: int = 2,
    checkpoints: int = 4,
) -> NBodyResult:
    """Run a batch of independent boxes (white noise → δ_L → LPT → FastPM), split over devices.

    Each box is exactly `nbody(*lpt(linear_field(noise[i], cosmo[i], config), …))`
    started at `a_steps[0]`; the batch is cut into equal contiguous shares, one
    per device of `mesh`, and each device `vmap`s over its share (no
    communication).

    Args:
        noise: (batch, *config.particle_shape) white noise, one field per box
            (`white_noise` with one key per box).
        cosmo: a `Cosmology` whose fields all have a leading batch axis, e.g.
            `jax.vmap(lambda om, s8: Cosmology(om, s8))(om, s8)`.
        config: the box (static, shared by all boxes).
        a_steps: step boundaries in a (e.g. `step_grid`), shared; LPT at `a_steps[0]`.
        snapshots: scale factors to save, each one of `a_steps`; default the last.
        mesh: 1-D `jax.sharding.Mesh`; default `device_mesh("batch")` over all devices.
        lpt_order: 1 or 2.
        checkpoints: as in `nbody`.

    Returns:
        `NBodyResult` with a leading batch axis: `a` (batch, n_snap), `pos` and `p`
        (batch, n_snap, n_ptcl, 3) [h⁻¹ Mpc], sharded along the batch axis over `mesh`.

    Raises:
        ValueError: the batch is not a multiple of the device count, or the
            cosmology's batch axis does not match the noise's.
    """
    mesh = device_mesh("batch") if mesh is None else mesh
    _, n_dev = _axis_of(mesh)
    if noise.ndim != 4 or noise.shape[1:] != config.particle_shape:
        raise ValueError(f"noise must have shape (batch, *{config.particle_shape}), got {noise.shape}")
    n_batch = noise.shape[0]
    if n_batch % n_dev:
        raise ValueError(f"batch size {n_batch} must be a multiple of the number of devices {n_dev}")
    for leaf in jax.tree.leaves(cosmo):
        if jnp.ndim(leaf) != 1 or jnp.shape(leaf)[0] != n_batch:
            raise ValueError(f"every Cosmology field must have shape ({n_batch},) (one per box), got {jnp.shape(leaf)}")
    if lpt_order not in (1, 2):
        raise ValueError(f"lpt_order must be 1 or 2, got {lpt_order}")
    a_steps = jnp.asarray(a_steps, dtype=noise.dtype)
    snapshots = a_steps[-1:] if snapshots is None else jnp.atleast_1d(jnp.asarray(snapshots, dtype=noise.dtype))
    if not isinstance(a_steps, jax.core.Tracer) and not isinstance(snapshots, jax.core.Tracer):
        s, g = np.asarray(snapshots), np.asarray(a_steps)
        if g.ndim != 1 or g.size < 2 or np.any(np.diff(g) <= 0):
            raise ValueError("a_steps must be a strictly increasing 1-D array of at least 2 scale factors")
        if not np.all(np.isclose(s[:, None], g[None, :], rtol=1e-6, atol=0).any(axis=1)):
            raise ValueError(f"snapshots {s} must be among a_steps (use step_grid to insert them)")
    sharding = batch_sharding(mesh)
    noise, cosmo = jax.device_put((noise, cosmo), sharding)
    return _simulate_batch_jit(noise, cosmo, a_steps, snapshots, config, mesh, lpt_order, checkpoints)


# ------------------------------------------------- one box: slab-decomposed mesh


def _check_decomposition(config: PMConfig, n_dev: int, n_ptcl: int | None = None) -> None:
    nx, ny, _ = config.mesh_shape
    if nx % n_dev or ny % n_dev:
        raise ValueError(f"mesh_shape {config.mesh_shape}: n_x and n_y must be multiples of the {n_dev} devices (slabs)")
    if n_ptcl is not None and n_ptcl % n_dev:
        raise ValueError(f"n_ptcl = {n_ptcl} must be a multiple of the {n_dev} devices")


def _pencil_fft(block, x_axis: str | None, y_axis: str | None):
    """(nx/Px, ny/Py, nz, *ch) real block → (nx, ny/Px, nzp/Py, *ch) complex block of the rfftn (inside `shard_map`).

    The pencil transform over a 2-D device mesh (we would call jaxDecomp's
    `pfft3d` if it were packaged here; it is not, so this is plain JAX): the
    rfft along z (never cut), an `all_to_all` over `y_axis` that trades y for
    the z frequencies, the fft along y, an `all_to_all` over `x_axis` that
    trades x for the y frequencies, the fft along x. The n_z/2 + 1 z
    frequencies are zero-padded to nzp, a multiple of Py, for the first
    transpose. A `None` axis is not cut (Py = 1 is the slab transform:
    nzp = n_z/2 + 1 and no first transpose).
    """
    a = jnp.fft.rfft(block, axis=2)
    if y_axis is not None:
        pad = -a.shape[2] % jax.lax.axis_size(y_axis)
        if pad:  # zero modes: whatever a kernel multiplies them by, the inverse drops them
            a = jnp.pad(a, [(0, 0), (0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 3))
        a = jax.lax.all_to_all(a, y_axis, split_axis=2, concat_axis=1, tiled=True)  # (nx/Px, ny, nzp/Py)
    a = jnp.fft.fft(a, axis=1)
    if x_axis is not None:
        a = jax.lax.all_to_all(a, x_axis, split_axis=1, concat_axis=0, tiled=True)  # (nx, ny/Px, nzp/Py)
    return jnp.fft.fft(a, axis=0)


def _pencil_ifft(a, nz: int, x_axis: str | None, y_axis: str | None):
    """Inverse of `_pencil_fft`: (nx, ny/Px, nzp/Py, *ch) complex → (nx/Px, ny/Py, nz, *ch) real block."""
    a = jnp.fft.ifft(a, axis=0)
    if x_axis is not None:
        a = jax.lax.all_to_all(a, x_axis, split_axis=0, concat_axis=1, tiled=True)
    a = jnp.fft.ifft(a, axis=1)
    if y_axis is not None:
        a = jax.lax.all_to_all(a, y_axis, split_axis=1, concat_axis=2, tiled=True)[:, :, : nz // 2 + 1]
    return jnp.fft.irfft(a, n=nz, axis=2)


def _slab_fft(slab, axis_name):
    """(nx/P, ny, nz) real x-slab → (nx, ny/P, nz//2+1) complex y-slab of the rfftn (the pencil transform, Py = 1)."""
    return _pencil_fft(slab, axis_name, None)


def _slab_ifft(a, nz, axis_name):
    """Inverse of `_slab_fft`: (nx, ny/P, nzr, *ch) complex y-slab → (nx/P, ny, nz, *ch) real x-slab."""
    return _pencil_ifft(a, nz, axis_name, None)


def _local_force_from_density(slab, mesh_shape, gradient, axis_name, n_dev):
    """Per-device body of `slab_force_from_density` (inside `shard_map`)."""
    nx, ny, nz = mesh_shape
    ny_loc = ny // n_dev
    delta_k = _slab_fft(slab, axis_name)  # (nx, ny_loc, nzr), y offset = rank · ny_loc
    # Angular wavenumbers [rad per cell] as in mesh.rfft_wavevectors; ky is this device's y-slab.
    kx = jnp.asarray(2 * np.pi * np.fft.fftfreq(nx).reshape(-1, 1, 1), slab.dtype)
    ky = jnp.asarray(2 * np.pi * np.fft.fftfreq(ny).reshape(1, -1, 1), slab.dtype)
    kz = jnp.asarray(2 * np.pi * np.fft.rfftfreq(nz).reshape(1, 1, -1), slab.dtype)
    y0 = jax.lax.axis_index(axis_name) * ny_loc
    ky = jax.lax.dynamic_slice_in_dim(ky, y0, ny_loc, axis=1)
    k2 = kx**2 + ky**2 + kz**2
    inv_k2 = jnp.where(k2 > 0, 1.0 / jnp.where(k2 > 0, k2, 1.0), 0.0)
    # Same kernel as mesh.force_from_density: F_k = i g(k) δ_k / k².
    # Explicit casts: strict dtype promotion forbids float × complex.
    i_unit = jnp.asarray(1j, dtype=delta_k.dtype)
    force_k = jnp.stack(
        [i_unit * (gradient_kernel(ki, gradient) * inv_k2).astype(delta_k.dtype) * delta_k for ki in (kx, ky, kz)],
        axis=-1,
    )
    return _slab_ifft(force_k, nz, axis_name)


def slab_force_from_density(
    delta: Float[Array, "nx ny nz"], config: PMConfig, mesh: Mesh
) -> Float[Array, "nx ny nz 3"]:
    r"""$F = -∇∇^{-2}δ$ on the mesh [cells], with the FFTs decomposed in x-slabs over `mesh`.

    The distributed counterpart of `force_from_density(jnp.fft.rfftn(delta), …)`.

    Args:
        delta: (nx, ny, nz) density on `config.mesh_shape` (any sharding; it is
            laid out in x-slabs over the devices).
        config: the box (`mesh_shape`, `gradient`).
        mesh: 1-D device mesh; its size P must divide n_x and n_y.

    Returns:
        (nx, ny, nz, 3) force per unit $\frac32Ω_m$ in cells, sharded in x-slabs.
    """
    name, n_dev = _axis_of(mesh)
    _check_decomposition(config, n_dev)
    if delta.shape != config.mesh_shape:
        raise ValueError(f"delta shape {delta.shape} must equal config.mesh_shape {config.mesh_shape}")
    body = lambda s: _local_force_from_density(s, config.mesh_shape, config.gradient, name, n_dev)
    spec = PartitionSpec(name)
    return jax.shard_map(body, mesh=mesh, in_specs=spec, out_specs=spec)(delta)


def _slab_stencil(pos_cell, mesh_shape, x0, nx_loc):
    """Flat slab indices (n, 8) of the CIC corners (out of range = corner not in this slab) and offsets (n, 3)."""
    _, ny, nz = mesh_shape
    cell = jnp.floor(pos_cell)
    frac = pos_cell - cell
    idx = jnp.mod(cell.astype(jnp.int32)[:, None, :] + _CORNERS[None, :, :], jnp.asarray(mesh_shape, jnp.int32)[None, None, :])
    ix = idx[..., 0] - x0
    inside = (ix >= 0) & (ix < nx_loc)
    flat = (ix * ny + idx[..., 1]) * nz + idx[..., 2]
    return jnp.where(inside, flat, nx_loc * ny * nz), frac


def _cic_weights(frac):
    per_axis = jnp.where(_CORNERS[None, :, :] == 1, frac[:, None, :], 1.0 - frac[:, None, :])
    return jnp.prod(per_axis, axis=-1)


def _paint_slab(pos_cell, mass, mesh_shape, x0, nx_loc):
    """CIC-paint all particles, keeping the corners in slab [x0, x0 + nx_loc): (nx_loc, ny, nz)."""
    flat, frac = _slab_stencil(pos_cell, mesh_shape, x0, nx_loc)
    vals = _cic_weights(frac) * mass[:, None]
    out = jnp.zeros((nx_loc * mesh_shape[1] * mesh_shape[2],), dtype=vals.dtype)
    out = out.at[flat.reshape(-1)].add(vals.reshape(-1), mode="drop")
    return out.reshape(nx_loc, *mesh_shape[1:])


def _read_slab(slab, pos_cell, mesh_shape, x0):
    """CIC-read (n, *ch) from the corners in this slab only (the others count as zero)."""
    nx_loc = slab.shape[0]
    channels = slab.shape[3:]
    flat, frac = _slab_stencil(pos_cell, mesh_shape, x0, nx_loc)
    vals = slab.reshape(-1, *channels).at[flat].get(mode="fill", fill_value=0.0)  # (n, 8, *ch)
    w = _cic_weights(frac)
    return jnp.sum(vals * w.reshape(w.shape + (1,) * len(channels)), axis=1)


def _local_pm_force(pos_loc, config, axis_name, n_dev):
    """Per-device body of `pm_force_sharded`: (n/P, 3) positions → (n/P, 3) forces."""
    mesh_shape = config.mesh_shape
    nx_loc = mesh_shape[0] // n_dev
    x0 = jax.lax.axis_index(axis_name) * nx_loc
    cell = config.cell_size
    pos_cell = jax.lax.all_gather(pos_loc, axis_name, tiled=True) / cell  # (n, 3), everyone's particles
    mass = jnp.full(pos_cell.shape[:1], float(config.mesh_factor**3), dtype=pos_cell.dtype)
    rho = _paint_slab(pos_cell, mass, mesh_shape, x0, nx_loc)
    force_slab = _local_force_from_density(rho, mesh_shape, config.gradient, axis_name, n_dev)
    partial_force = _read_slab(force_slab, pos_cell, mesh_shape, x0)  # this slab's corners only
    return jax.lax.psum_scatter(partial_force, axis_name, scatter_dimension=0, tiled=True) * cell


def pm_force_sharded(pos: Float[Array, "n_ptcl 3"], config: PMConfig, mesh: Mesh) -> Float[Array, "n_ptcl 3"]:
    r"""`pm_force` with the mesh decomposed in x-slabs and the particles split over `mesh`.

    Same physics and result as `pm_force` (CIC paint of mass `mesh_factor³`
    per particle, $F_k = i g(k) δ_k / k^2$, CIC read) up to round-off: the
    8-corner CIC sum of each particle is split between the slabs that own the
    corners and added back with `psum_scatter`.

    Args:
        pos: (n_ptcl, 3) comoving positions [h⁻¹ Mpc]; best passed already
            sharded along the particle axis over `mesh` (`batch_sharding(mesh)`).
        config: the box; `mesh_shape[0]` and `mesh_shape[1]` must be multiples
            of the device count P.
        mesh: 1-D device mesh (`device_mesh("x")`); P must divide n_ptcl.

    Returns:
        (n_ptcl, 3) force per unit $\frac32Ω_m$ [h⁻¹ Mpc], sharded along the
        particle axis.

    Raises:
        ValueError: shapes not divisible by the device count, or `pos` not (n_ptcl, 3).
    """
    name, n_dev = _axis_of(mesh)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"pos must have shape (n_ptcl, 3), got {pos.shape}")
    _check_decomposition(config, n_dev, pos.shape[0])
    body = lambda x: _local_pm_force(x, config, name, n_dev)
    spec = PartitionSpec(name)
    return jax.shard_map(body, mesh=mesh, in_specs=spec, out_specs=spec)(pos)


def nbody_sharded(
    pos: Float[Array, "n_ptcl 3"],
    p: Float[Array, "n_ptcl 3"],
    cosmo: Cosmology,
    config: PMConfig,
    a_steps: Float[ArrayLike, " n_step_plus_1"],
    snapshots: Float[ArrayLike, " n_snap"] | None = None,
    *,
    mesh: Mesh,
    growth: GrowthTable | None = None,
    adjoint: str = "reversible",
    checkpoints: int | None = 4,
) -> NBodyResult:
    """`nbody` for one large box, with the force mesh decomposed over `mesh` (`pm_force_sharded`).

    Same arguments and result as `nbody`; positions and momenta are split
    along the particle axis over the devices for the whole run.

    Args:
        pos: (n_ptcl, 3) initial positions [h⁻¹ Mpc].
        p: (n_ptcl, 3) initial momenta p = a³E dx/da [h⁻¹ Mpc].
        cosmo: cosmology.
        config: the box; n_x, n_y of the mesh and n_ptcl multiples of the device count.
        a_steps: step boundaries in a.
        snapshots: scale factors to save, each one of `a_steps`; default the last.
        mesh: 1-D device mesh.
        growth: `growth_table(cosmo)`, solved here if not given.
        adjoint: `"reversible"` or `"checkpoint"`, as in `nbody`.
        checkpoints: states stored by the checkpoint adjoint.

    Returns:
        `NBodyResult`: `pos`, `p` of shape (n_snap, n_ptcl, 3), sharded along the particle axis.
    """
    name, n_dev = _axis_of(mesh)
    _check_decomposition(config, n_dev, config.n_particles)
    particle_sharding = NamedSharding(mesh, PartitionSpec(name))
    pos = jax.lax.with_sharding_constraint(pos, particle_sharding)
    p = jax.lax.with_sharding_constraint(p, particle_sharding)
    res = nbody(pos, p, cosmo, config, a_steps, snapshots, growth=growth, adjoint=adjoint, checkpoints=checkpoints,
                force_fn=partial(pm_force_sharded, config=config, mesh=mesh))
    snap_sharding = NamedSharding(mesh, PartitionSpec(None, name))  # (n_snap, n_ptcl, 3) split by particle
    return NBodyResult(a=res.a, pos=jax.lax.with_sharding_constraint(res.pos, snap_sharding),
                       p=jax.lax.with_sharding_constraint(res.p, snap_sharding))
