r"""One lightcone box decomposed over devices: PM → eLDL paint → count rates → projected maps, on x-slabs.

The counterpart of `pipeline.box_particles` and `maps.box_maps` for boxes that
do not fit one device (issue #21). The box's transverse x axis is cut into
slabs over the devices of a `SlabDecomposition` (one process or many under
`jax.distributed`); the line of sight, the mesh's last axis, is never cut,
so each device projects its own columns:

* **particles**: white noise from the box's key (the same numbers on any
  number of devices), linear field, 2LPT and FastPM with particles in
  Lagrangian slabs (`nbody.domain`);
* **eLDL**: the same `ExtendedLDL`, its layers painting, filtering and reading
  through `nbody.domain.SlabMesh` inside one `shard_map`;
* **count rates, y, mass**: per voxel on each slab, summed along the line of
  sight (`maps.box_columns`);
* **maps**: the x-slab columns resampled onto the pixels (`maps.project_columns`):
  per-device partial sums and one reduction, done by XLA on the sharded columns.

The maps are small (n_pix²) and replicated; detection and measurement then
run as in the single-device pipeline. Results equal the single-device ones
to round-off (tests/test_survey_decomposed.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from ..baryons.eldl import ExtendedLDL
from ..cosmology import Cosmology, GrowthTable, growth_table
from ..nbody.domain import (
    Decomposition,
    SlabDecomposition,
    SlabMesh,
    linear_field_decomposed,
    lpt_decomposed,
    nbody_decomposed,
)
from ..params import ThetaSim
from ..xray.emissivity import EmissivityTable
from .detect import Catalogue
from .maps import BoxColumns, BoxMaps, box_columns, project_columns
from .pipeline import SurveyConfig, detect_and_measure

__all__ = ["check_decomposition", "box_particles_decomposed", "box_maps_decomposed", "simulate_box_decomposed"]


def _require_slabs(decomposition: Decomposition) -> None:
    if not isinstance(decomposition, SlabDecomposition):
        raise ValueError(f"decomposition = {type(decomposition).__name__}: the survey projects each device's columns "
                         "along the line of sight on x-slabs only; use SlabDecomposition (pencils run the PM and "
                         "the paint, nbody.domain, not the survey maps)")


def check_decomposition(config: SurveyConfig, decomposition: Decomposition, eldl: ExtendedLDL | None = None) -> None:
    """Refuse a survey whose boxes this decomposition cannot hold, naming the parameter.

    The PM mesh (`mesh_factor` × the voxels) and the eLDL's mesh (the voxels) must
    both split into slabs that hold the halo and the reach of their reads. Slabs
    only: pencils (`PencilDecomposition`) are refused.
    """
    _require_slabs(decomposition)
    geom = config.geometry
    if geom.n_perp % decomposition.n_devices:
        raise ValueError(f"the boxes' n_perp = {geom.n_perp} transverse cells must be a multiple of the "
                         f"{decomposition.n_devices} devices: build the SurveyConfig with perp_multiple="
                         f"{decomposition.n_devices}")
    pm = geom.pm_config(config.mesh_factor)
    decomposition.check(pm.mesh_shape, pm.particle_shape)  # the PM force is read with CIC (reach 1)
    fd4 = eldl is not None and any(layer.gradient == "fd4" for ldl in (eldl.n_e_base, eldl.T_base)
                                   for layer in ldl.displacements)
    decomposition.check(geom.mesh_shape, reach=3 if fd4 else 1)


def box_particles_decomposed(
    theta: ThetaSim,
    key: PRNGKeyArray,
    z: Float[ArrayLike, ""],
    config: SurveyConfig,
    decomposition: SlabDecomposition,
    *,
    growth: GrowthTable | None = None,
) -> Float[Array, "n_ptcl 3"]:
    """`pipeline.box_particles` with particles and mesh decomposed: (n_ptcl, 3) [h⁻¹ Mpc] in Lagrangian slabs.

    Same key, same particles as the single-device function (to round-off).
    """
    dec = decomposition
    cosmo = Cosmology.from_theta(theta)
    growth = growth_table(cosmo) if growth is None else growth
    pm = config.geometry.pm_config(config.mesh_factor)
    dtype = jnp.result_type(float)
    a_init = 1.0 / (1.0 + config.z_init)
    frac = jnp.linspace(0.0, 1.0, config.n_steps + 1, dtype=dtype)
    # The same draw as white_noise(key, shape): partitionable threefry gives each device its slab of it.
    noise = jax.lax.with_sharding_constraint(jax.random.normal(key, pm.particle_shape, dtype=dtype), dec.slabs)
    pos, p = lpt_decomposed(linear_field_decomposed(noise, cosmo, pm, dec), cosmo, growth, pm, a_init, dec, order=2)
    a_box = 1.0 / (1.0 + jnp.asarray(z).astype(dtype))
    run = nbody_decomposed(pos, p, cosmo, pm, a_init + (a_box - a_init) * frac, decomposition=dec, growth=growth)
    return run.pos[-1]


def box_maps_decomposed(
    pos: Float[Array, "n_ptcl 3"],
    theta: ThetaSim,
    z: Float[ArrayLike, ""],
    chi: Float[ArrayLike, ""],
    depth: Float[ArrayLike, ""],
    config: SurveyConfig,
    eldl: ExtendedLDL,
    table: EmissivityTable,
    decomposition: Decomposition,
) -> BoxMaps:
    """`maps.box_maps` of Lagrangian-slab particles: eLDL, count rates and columns on each device's slab.

    Args:
        pos: (n_ptcl, 3) [h⁻¹ Mpc] in lattice order, sharded as `decomposition.particles`.
        theta, z, chi, depth: as `maps.box_maps`.
        config: the survey (its geometry).
        eldl, table: the baryon painter and the emissivity table (replicated).
        decomposition: slabs and halo.

    Returns:
        `BoxMaps` on the survey pixels (replicated).
    """
    dec = decomposition
    _require_slabs(dec)
    geom = config.geometry
    cosmo = Cosmology.from_theta(theta)
    ops = SlabMesh(geom.mesh_shape, dec.halo, dec.axis_name, dec.n_devices)

    def body(pos_loc):  # θ, the eLDL, the table and the cosmology are closed over: the same on every device
        return box_columns(pos_loc, theta, z, depth, geom, eldl, table, cosmo, ops)

    spec = PartitionSpec(dec.axis_name)
    # check_vma=False: the count-rate code's eqx.error_if (n_e ≥ 0) builds a cond whose two branches
    # shard_map's type check would see as differently varying; every device evaluates it on its own slab.
    columns: BoxColumns = jax.shard_map(body, mesh=dec.mesh, in_specs=spec, out_specs=spec, check_vma=False)(pos)
    return project_columns(columns, chi, geom)


def simulate_box_decomposed(
    theta: ThetaSim,
    key: PRNGKeyArray,
    z: Float[Array, ""],
    chi: Float[Array, ""],
    depth: Float[Array, ""],
    config: SurveyConfig,
    *,
    eldl: ExtendedLDL,
    table: EmissivityTable,
    decomposition: SlabDecomposition,
    segmentation: Int[Array, "n_pix n_pix"] | None = None,
    growth: GrowthTable | None = None,
) -> tuple[BoxMaps, Int[Array, "n_pix n_pix"], Catalogue]:
    """`pipeline.simulate_box` with the box decomposed over `decomposition`'s devices (same arguments and result).

    Call under `jit` (`eqx.filter_jit`); under `jax.distributed` every process
    calls it with the same arguments. A particle further than the halo from
    its slab makes the maps NaN (`nbody.domain`).
    """
    check_decomposition(config, decomposition, eldl)
    pos = box_particles_decomposed(theta, key, z, config, decomposition, growth=growth)
    maps = box_maps_decomposed(pos, theta, z, chi, depth, config, eldl, table, decomposition)
    seg, cat = detect_and_measure(maps, z, config, segmentation)
    return maps, seg, cat
