"""SLURM job arrays as campaign workers: which chunks array task I visits first.

A campaign of n chunks run as ``sbatch --array=0-(N-1)`` gives task I the
chunks c with c mod N = I (interleaved, so that every task gets early and
late chunks alike); after its share a task goes on with chunks that others
have not taken, so the array finishes even when some tasks die or start
late, and the last task to find every chunk present merges
(`jaxcluster.io.run_worker`). Tasks that start again (a requeue, a second
array by mistake) skip what is present.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["ArrayTask"]


@dataclass(frozen=True)
class ArrayTask:
    """Task `index` of an array of `count` tasks.

    Attributes:
        index: 0 ≤ index < count.
        count: number of tasks, ≥ 1.
    """

    index: int
    count: int

    def __post_init__(self):
        if not (isinstance(self.count, int) and self.count >= 1):
            raise ValueError(f"num_tasks = {self.count!r} is outside its allowed range: an integer >= 1")
        if not (isinstance(self.index, int) and 0 <= self.index < self.count):
            raise ValueError(f"task_id = {self.index!r} is outside its allowed range: an integer in "
                             f"[0, {self.count - 1}] (num_tasks = {self.count})")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ArrayTask | None:
        """The array task of this process from SLURM's variables; None outside a job array.

        ``SLURM_ARRAY_TASK_ID`` counts from ``SLURM_ARRAY_TASK_MIN`` in steps of
        ``SLURM_ARRAY_TASK_STEP`` (``--array=1-16`` or ``0-30:2`` give tasks 0…15).
        """
        env = os.environ if environ is None else environ
        if "SLURM_ARRAY_TASK_ID" not in env:
            return None
        try:
            task_id = int(env["SLURM_ARRAY_TASK_ID"])
            low = int(env.get("SLURM_ARRAY_TASK_MIN", 0))
            step = int(env.get("SLURM_ARRAY_TASK_STEP", 1)) or 1
            count = int(env["SLURM_ARRAY_TASK_COUNT"])
        except (KeyError, ValueError) as err:
            raise ValueError(f"SLURM job array variables are incomplete or not integers ({err}); pass "
                             f"--task-id and --num-tasks") from None
        return cls((task_id - low) // step, count)

    def share(self, n_chunks: int) -> list[int]:
        """The chunks of this task: c ≡ index (mod count)."""
        return list(range(self.index, int(n_chunks), self.count))

    def order(self, n_chunks: int) -> list[int]:
        """This task's share, then every other chunk (starting after its own first one)."""
        own = self.share(n_chunks)
        mine = set(own)
        rest = [(self.index + 1 + k) % n_chunks for k in range(n_chunks)]
        return own + [c for c in rest if c not in mine]

    def label(self) -> str:
        """``"array task I/N"``."""
        return f"array task {self.index}/{self.count}"
