"""One process of a `jax.distributed` run on localhost (run by tests/nbody/test_distributed.py, not by pytest).

    python distributed_worker.py PROCESS_ID NUM_PROCESSES PORT OUT.npz

Each process has the virtual CPU devices its XLA_FLAGS give it; the box is
decomposed over the devices of all processes. Process 0 writes the gathered
results for the test to compare with a single-device run: the PM box over all
4 devices, and a survey box's eLDL fields and maps over 2 devices, one per
process (`clump_particles`, so that the comparison has hot gas).
"""

import sys

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxcluster.cosmology import Cosmology  # noqa: E402
from jaxcluster.engines.distributed import gather, initialize, is_writer  # noqa: E402
from jaxcluster.nbody import PMConfig, step_grid  # noqa: E402
from jaxcluster.nbody.domain import SlabDecomposition, SlabMesh, paint_decomposed, simulate_decomposed  # noqa: E402
from jaxcluster.nbody.sharding import device_mesh  # noqa: E402

CONFIG = PMConfig(64.0, 16, 32)
A_STEPS = step_grid(0.1, 0.6, 3)
SEED = 3
HALO = 5
SURVEY_HALO = 10


def survey_config():
    """1 deg² at 1 h⁻¹ Mpc cells, 48 boxes from z = 0.1: the nearest box is 28 × 28 × 24 cells."""
    from jaxcluster.survey import SurveyConfig

    return SurveyConfig(area_deg2=1.0, z_min=0.1, z_max=0.5, n_boxes=48, cell_size=1.0, perp_multiple=4)


def clump_particles(geom, seed: int = 0) -> np.ndarray:
    """Lattice particles jittered by up to 3 cells (many cross the slabs' boundaries), and those within 8 cells
    of a point on the slab boundary, on the line of sight, squeezed 5× towards it: a hot clump in the eLDL."""
    rng = np.random.default_rng(seed)
    shape = geom.mesh_shape
    q = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3) * geom.cell_size
    pos = q + rng.uniform(-3, 3, q.shape) * geom.cell_size
    centre = np.array([0.5 * shape[0] + 0.3, 0.5 * shape[1], 0.5 * shape[2]]) * geom.cell_size
    near = np.linalg.norm(q - centre, axis=1) < 8 * geom.cell_size
    pos[near] = centre + 0.2 * (q[near] - centre)
    return pos


def survey_box(dec):
    """eLDL n_e and T, and the maps, of `clump_particles` in the nearest box, decomposed over `dec`."""
    import equinox as eqx
    from jax.sharding import PartitionSpec

    from jaxcluster.baryons import default_eldl
    from jaxcluster.params import ThetaSim
    from jaxcluster.survey.decomposed import box_maps_decomposed
    from jaxcluster.survey.lightcone import box_layout
    from jaxcluster.xray.emissivity import default_emissivity_table

    cfg = survey_config()
    geom = cfg.geometry
    theta, eldl, table = ThetaSim(), default_eldl(), default_emissivity_table()
    layout = box_layout(Cosmology.from_theta(theta), geom)
    z, chi, depth = layout.z[0], layout.chi[0], layout.depth
    host = clump_particles(geom)
    pos = jax.make_array_from_callback(host.shape, dec.particles, lambda index: host[index])
    maps = eqx.filter_jit(box_maps_decomposed)(pos, theta, z, chi, depth, cfg, eldl, table, dec)
    ops = SlabMesh(geom.mesh_shape, dec.halo, dec.axis_name, dec.n_devices)
    n_e, T = eqx.filter_jit(lambda x: jax.shard_map(
        lambda p: eldl(p, theta, z, geom.box_size, geom.mesh_shape, ops), mesh=dec.mesh,
        in_specs=PartitionSpec(dec.axis_name), out_specs=PartitionSpec(dec.axis_name), check_vma=False)(x))(pos)
    return dict(n_e=gather(n_e), T=gather(T), count_rate=gather(maps.count_rate), mass=gather(maps.mass),
                y=gather(maps.y))


def main(process_id: int, num_processes: int, port: int, out: str) -> None:
    initialize(f"localhost:{port}", num_processes, process_id, timeout_s=60)
    dec = SlabDecomposition(halo=HALO)  # over jax.devices(): every process's devices
    res = simulate_decomposed(jax.random.key(SEED), Cosmology(0.3, 0.8), CONFIG, A_STEPS, decomposition=dec)
    pos = res.pos[-1]
    ones = jnp.ones_like(pos[:, 0])
    rho = jax.jit(lambda x, m: paint_decomposed(x, m, CONFIG.box_size, CONFIG.mesh_shape, dec))(pos, ones)
    arrays = dict(pos=gather(pos), rho=gather(rho), n_devices=jax.device_count(),
                  local_devices=len(jax.local_devices()), processes=jax.process_count())
    # a survey box over one device of each process: slabs wide enough for the clump's displacements
    firsts = [next(d for d in jax.devices() if d.process_index == p) for p in range(jax.process_count())]
    arrays |= survey_box(SlabDecomposition(device_mesh("x", firsts), halo=SURVEY_HALO))
    if is_writer():
        np.savez(out, **arrays)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
