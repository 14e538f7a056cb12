"""One process of a `jax.distributed` run on localhost (run by tests/nbody/test_distributed.py, not by pytest).

    python distributed_worker.py PROCESS_ID NUM_PROCESSES PORT OUT.npz

Each process has the virtual CPU devices its XLA_FLAGS give it; the box is
decomposed over the devices of all processes. Process 0 writes the gathered
results for the test to compare with a single-device run.
"""

import sys

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxcluster.cosmology import Cosmology  # noqa: E402
from jaxcluster.engines.distributed import gather, initialize, is_writer  # noqa: E402
from jaxcluster.nbody import PMConfig, step_grid  # noqa: E402
from jaxcluster.nbody.domain import SlabDecomposition, paint_decomposed, simulate_decomposed  # noqa: E402

CONFIG = PMConfig(64.0, 16, 32)
A_STEPS = step_grid(0.1, 0.6, 3)
SEED = 3
HALO = 5


def main(process_id: int, num_processes: int, port: int, out: str) -> None:
    initialize(f"localhost:{port}", num_processes, process_id, timeout_s=60)
    dec = SlabDecomposition(halo=HALO)  # over jax.devices(): every process's devices
    res = simulate_decomposed(jax.random.key(SEED), Cosmology(0.3, 0.8), CONFIG, A_STEPS, decomposition=dec)
    pos = res.pos[-1]
    ones = jnp.ones_like(pos[:, 0])
    rho = jax.jit(lambda x, m: paint_decomposed(x, m, CONFIG.box_size, CONFIG.mesh_shape, dec))(pos, ones)
    arrays = dict(pos=gather(pos), rho=gather(rho), n_devices=jax.device_count(),
                  local_devices=len(jax.local_devices()), processes=jax.process_count())
    if is_writer():
        np.savez(out, **arrays)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
