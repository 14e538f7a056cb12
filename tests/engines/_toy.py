"""A toy dataset campaign that worker processes (Dask, array tasks) can import and build."""

import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from jaxcluster.inference.datasets import BoxPrior, dataset_campaign
from jaxcluster.io.chunks import ChunkStore

PRIOR = BoxPrior(["a", "b"], [0.1, 0.5], [1.0, 2.0], [False, True])


@dataclass(frozen=True)
class Toy:
    """Poisson counts of a θ-dependent (4, 3, 2) intensity; `sleep` seconds per chunk; optional failures."""

    out: str
    n: int = 40
    chunk_size: int = 4
    sleep: float = 0.0
    fail_once: int = -1  # this chunk raises on its first attempt (then the retry succeeds)

    def __call__(self):
        jax.config.update("jax_enable_x64", True)  # as the test process (conftest)
        sleep, out, fail_once = self.sleep, self.out, self.fail_once

        def slow(x):
            time.sleep(sleep)
            return x

        def toy(theta, key):
            lam = jnp.exp(jnp.linspace(0.0, 3.0, 24).reshape(4, 3, 2) * theta[0] + theta[1])
            lam = jax.pure_callback(slow, jax.ShapeDtypeStruct(lam.shape, lam.dtype), lam,
                                    vmap_method="broadcast_all")
            return jax.random.poisson(key, lam).astype(lam.dtype)

        campaign = dataset_campaign(toy, PRIOR, self.n, out, seed=7, design="latin_hypercube",
                                    chunk_size=self.chunk_size, batch_size=2,
                                    metadata={"simulator": "toy", "a_later_key": 1})  # not in sorted order
        if fail_once < 0:
            return campaign
        inner = campaign.make_chunk

        def make_chunk(c):
            if c == fail_once and not ChunkStore(campaign.out, campaign.n_chunks).failures(c):
                raise RuntimeError(f"transient failure of chunk {c}")
            return inner(c)

        return type(campaign)(**{**campaign.__dict__, "make_chunk": make_chunk})
