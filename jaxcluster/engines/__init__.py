"""Execution engines, existing ones and not ours.

One simulation over many processes:

* `distributed`: `jax.distributed` (one process per GPU under `srun`, or
  explicit coordinator settings), gloo collectives on CPUs, only process 0
  writing; `jaxcluster.nbody.domain` decomposes a box over all their devices.

Campaigns of independent chunks (`jaxcluster.io.Campaign`):

* `slurm`: SLURM job arrays; each array task is a worker that visits its
  share of the chunks first (`ArrayTask`, from ``SLURM_ARRAY_TASK_ID``).
* `dask`: Dask distributed (a running scheduler, e.g. from dask-jobqueue's
  ``SLURMCluster``, or a local cluster); one task per chunk, Dask's retries,
  rescheduling on lost workers. Dask is the optional ``[cluster]`` extra,
  imported only when used.

Both run the same chunk protocol (claims, publish-once, digests, merge by the
last worker, `jaxcluster.io.campaign`), so they can even share one output.
"""

from .slurm import ArrayTask

__all__ = ["ArrayTask", "run_on_dask"]


def run_on_dask(*args, **kwargs):
    """`jaxcluster.engines.dask.run_on_dask` (imports Dask on first use)."""
    from .dask import run_on_dask as run

    return run(*args, **kwargs)
