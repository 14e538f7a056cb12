"""Campaigns on real engines: SLURM-array-like worker processes sharing one output, Dask with a worker killed.

Every test compares the merged file, byte for byte, with an uninterrupted
single-process run of the same campaign.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from jaxcluster.io.campaign import run_worker
from jaxcluster.io.chunks import parts_dir
from jaxcluster.io.claims import claim_owner

from ._toy import Toy

ROOT = Path(__file__).resolve().parents[2]


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ref.h5"
    assert run_worker(Toy(str(out))()).merged
    return out


def test_merge_command_writes_the_workers_file(tmp_path, reference):
    """`merge_dataset` (`jaxcluster dataset merge`) on chunks left unmerged equals a worker's own merge."""
    from jaxcluster.inference.datasets import merge_dataset

    out = tmp_path / "d.h5"
    assert run_worker(Toy(str(out))(), merge=False).out is None
    assert merge_dataset(out) == out and _sha(out) == _sha(reference) and not parts_dir(out).exists()


def test_array_tasks_and_a_stray_worker_share_one_output(tmp_path, reference):
    """Tasks 0 and 1 of a 2-task array, and task 0 started again by mistake, at once on one output."""
    out, ready = tmp_path / "d.h5", tmp_path / "ready"
    ready.mkdir()
    script = textwrap.dedent("""
        import json, sys
        sys.path.insert(0, {root!r})
        from tests.engines._toy import Toy
        from jaxcluster.engines import ArrayTask
        from jaxcluster.io import run_worker
        import pathlib, time
        task = ArrayTask({i}, 2)
        campaign = Toy({out!r}, sleep=0.15)()
        ready = pathlib.Path({ready!r})  # start together: imports take seconds, the campaign less
        (ready / "{i}{tag}").touch()
        while len(list(ready.iterdir())) < 3:
            time.sleep(0.01)
        r = run_worker(campaign, order=task.order(campaign.n_chunks), task=task.label() + {tag!r}, lease_s=60.0)
        print(json.dumps(dict(computed=r.computed, published=r.published, merged=r.merged, out=str(r.out))))
    """)
    code = {(i, tag): script.format(root=str(ROOT), i=i, out=str(out), tag=tag, ready=str(ready))
            for i, tag in ((0, ""), (1, ""), (0, " (stray)"))}
    procs = [subprocess.Popen([sys.executable, "-c", code[i, tag]],
                              stdout=subprocess.PIPE, text=True)
             for i, tag in ((0, ""), (1, ""), (0, " (stray)"))]
    reports = []
    for p in procs:
        stdout, _ = p.communicate(timeout=240)
        assert p.returncode == 0
        reports.append(json.loads(stdout.strip().splitlines()[-1]))
    n_chunks = 10
    computed = sorted(c for r in reports for c in r["computed"])
    published = sorted(c for r in reports for c in r["published"])
    assert published == list(range(n_chunks))  # nothing lost, nothing written twice
    assert computed == list(range(n_chunks))  # and nothing even computed twice
    assert sum(r["merged"] for r in reports) == 1 and all(r["out"] == str(out) for r in reports)
    assert sum(bool(r["computed"]) for r in reports) >= 2, "the workers did not overlap"
    assert _sha(out) == _sha(reference) and not parts_dir(out).exists()


def test_dask_worker_killed_mid_chunk(tmp_path, reference):
    """A local Dask cluster of 2 worker processes; one is killed (SIGKILL) while it holds a chunk,
    and one chunk fails once (Dask retries it): the merged file equals the uninterrupted run."""
    pytest.importorskip("distributed")
    from jaxcluster.engines.dask import run_on_dask

    out = tmp_path / "d.h5"
    killed = []

    def kill_a_worker_mid_chunk():
        claims, deadline = parts_dir(out) / "claims", time.time() + 120
        while time.time() < deadline:
            if len(list(parts_dir(out).glob("chunk_*.h5"))) >= 2:
                for path in claims.glob("chunk_*.claim"):
                    if path.stem == "chunk_000009":  # the failing chunk is left to Dask's retries
                        continue
                    owner = claim_owner(path)
                    if owner is not None and owner.pid != os.getpid():
                        os.kill(owner.pid, signal.SIGKILL)
                        killed.append((owner.pid, path.stem))
                        return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_a_worker_mid_chunk)
    killer.start()
    report = run_on_dask(Toy(str(out), sleep=0.25, fail_once=9), n_workers=2, lease_s=60.0, max_attempts=3,
                         progress=False)
    killer.join()
    assert killed, "no worker was killed"
    assert report.failed == {} and report.out == out
    assert sorted(t["chunk"] for t in report.tasks) == list(range(10))
    published = sorted(t["chunk"] for t in report.tasks if t["published"])
    # the victim may have published chunks before the kill whose task results died with it (the one it held
    # the claim of, published in the instant before the kill, or one finished before the client fetched its
    # result): Dask reruns those tasks, which find the chunk published and compute nothing. So every chunk is
    # published once, by a reported task or by the victim
    assert len(set(published)) == len(published)
    by_victim = set(range(10)) - set(published)
    assert all(not t["computed"] for t in report.tasks if t["chunk"] in by_victim)
    assert _sha(out) == _sha(reference) and not parts_dir(out).exists()  # and nothing was lost


def test_cli_slurm_array_task_status_and_merge(tmp_path, monkeypatch, capsys):
    """`--task-id/--num-tasks` from SLURM's variables; a killed task; `status`; `merge` refused then done."""
    from jaxcluster.cli import main
    from jaxcluster.io.chunks import ChunkStore

    out = tmp_path / "a.h5"
    cmd = ["dataset", "generate", "--simulator", "analytic", "--n", "12", "--chunk-size", "4", "--batch-size", "2",
           "--params", "Omega_m,sigma_8", "--out", str(out), "--no-progress"]
    # task 1 of `--array=2-3`: SLURM numbers it 3, from SLURM_ARRAY_TASK_MIN = 2
    for k, v in {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "2", "SLURM_ARRAY_TASK_COUNT": "2"}.items():
        monkeypatch.setenv(k, v)
    real_publish = ChunkStore.publish

    def killed_after_first_chunk(self, c, *a):
        real_publish(self, c, *a)
        raise KeyboardInterrupt  # what a kill right after the write looks like to the files

    monkeypatch.setattr(ChunkStore, "publish", killed_after_first_chunk)
    with pytest.raises(KeyboardInterrupt):
        main(cmd)
    monkeypatch.setattr(ChunkStore, "publish", real_publish)
    store = ChunkStore(out, 3)
    assert store.done_chunks() == [1] and store.info(1)["task"] == "array task 1/2"  # its own share first
    assert not list((parts_dir(out) / "claims").iterdir())  # the claim went with the process

    assert main(["dataset", "status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1/3 chunks done (4/12 rows)" in text and "2 missing" in text
    assert main(["dataset", "status", str(out), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["done"] == 1 and st["missing"] == 2 and st["n_rows"] == 12 and not st["merged"]
    assert main(["dataset", "merge", str(out)]) == 2
    assert "2 of 3 chunks are missing" in capsys.readouterr().err
    assert main([*cmd[:-1], "--seed", "5", "--no-progress"]) == 2  # other settings on the partial output
    assert "seed: 0 there, 5 requested" in capsys.readouterr().err

    for k in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT"):
        monkeypatch.delenv(k)
    assert main([*cmd, "--task-id", "0", "--num-tasks", "2"]) == 0  # task 0 finishes the campaign and merges
    assert main(["dataset", "merge", str(out)]) == 0
    assert main(["dataset", "status", str(out)]) == 0
    assert "merged" in capsys.readouterr().out
    assert main([*cmd, "--task-id", "2", "--num-tasks", "2"]) == 2
    assert "task_id = 2" in capsys.readouterr().err


def test_quiet_worker_settings_reach_dask_and_jobqueue_scripts():
    """The environment `quiet_environment` gives is read by Dask as `QUIET`, and fits a dask-jobqueue script."""
    dask = pytest.importorskip("dask")
    jobqueue = pytest.importorskip("dask_jobqueue")
    from jaxcluster.engines.dask import QUIET, quiet_environment

    env = quiet_environment()
    parsed = dask.config.collect_env(env)
    for key, value in QUIET.items():
        assert dask.config.get(key, config=parsed) == value
    exports = [f"export {k}={v}" for k, v in env.items()]
    with jobqueue.SLURMCluster(cores=4, processes=1, memory="32GB", walltime="01:00:00",
                               job_extra_directives=["--gres=gpu:1"], job_script_prologue=exports,
                               worker_extra_args=["--nthreads", "1"]) as cluster:
        script = cluster.job_script()
    assert "#SBATCH --gres=gpu:1" in script and all(line in script for line in exports)


def test_cli_on_a_running_dask_scheduler(tmp_path, capsys):
    """`dataset generate --scheduler ADDRESS` (as with a dask-jobqueue cluster) equals the single-process run."""
    distributed = pytest.importorskip("distributed")
    from jaxcluster.cli import main

    cmd = ["dataset", "generate", "--simulator", "analytic", "--n", "6", "--chunk-size", "2", "--batch-size", "2",
           "--params", "Omega_m,sigma_8", "--x64", "--no-progress"]
    assert main([*cmd, "--out", str(tmp_path / "one.h5")]) == 0
    # a scheduler and a worker thread in this process (an address like dask-jobqueue's, no process start-up)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as c:
        assert main([*cmd, "--out", str(tmp_path / "dask.h5"), "--scheduler", c.scheduler_address]) == 0
    assert main([*cmd, "--out", str(tmp_path / "local.h5"), "--dask-workers", "1"]) == 0
    assert capsys.readouterr().out.count("3 chunks on Dask") == 2
    assert _sha(tmp_path / "one.h5") == _sha(tmp_path / "dask.h5") == _sha(tmp_path / "local.h5")
    both = ["--dask-workers", "1", "--task-id", "0", "--num-tasks", "2"]
    assert main([*cmd, "--out", str(tmp_path / "x.h5"), *both]) == 2
    assert "exclude each other" in capsys.readouterr().err
