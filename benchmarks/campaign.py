"""Campaign engines on this machine: 1 and 2 workers of one core each, Dask and SLURM-array-style, vs no engine.

Every worker is its own process pinned to one core (``taskset -c i``) with
XLA's CPU thread pools at one thread, so that the 2-worker figure measures
the engine and not XLA's threads. The workload is `jaxcluster dataset
generate --simulator survey` at a small configuration (one 4 deg² lightcone
of 12 boxes, 1 h⁻¹ Mpc cells, 4 PM steps per box, sep detection; one XOD per
chunk). Figures:

* ``throughput_xod_per_h``: steady-state XODs per hour (after each
  worker's first chunk, which compiles) for the direct loop (no engine, one
  process calling ``make_chunk``, before and after the rest), Dask with 1
  and 2 busy workers, and 1 and 2 array-task processes
  (`jaxcluster.io.run_worker`, as under ``sbatch --array``);
* ``two_worker_efficiency``: Dask throughput with 2 workers over twice that
  with 1, median over 3 alternated pairs of phases of one 2-worker cluster
  (``dask worker`` processes on a scheduler started here), so that the load
  changes of this shared machine hit both; ``array_two_worker_efficiency``
  for array tasks (one pair of runs, not alternated);
* ``engine_overhead_fraction``: the share of the workers' time not spent in
  ``make_chunk`` (claims, heartbeats, publishing with fsync, Dask's dispatch
  and result transfer), Dask, 2 busy workers; ``array_...`` likewise;
* ``dask_1_over_direct``, ``array_1_over_direct``: one worker's throughput
  over the plain loop's (mean of the runs before and after, whose ratio
  ``direct_drift`` shows how much the shared machine moved meanwhile): what
  running inside the engine's process costs the chunk itself;
* ``projection_seed001``: seed 001's 48 000-XOD campaign on N GPUs, as a
  model with its inputs stated.

    python benchmarks/campaign.py            # ≈ 6 min on 2 cores
    python benchmarks/campaign.py --quick    # 2 XODs per worker and phase, results/campaign_quick.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

from jaxcluster.engines.dask import quiet_environment

ROOT = Path(__file__).resolve().parents[1]
ONE_CORE = {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
            "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            # Dask's event-loop tick (20 ms), system monitor (0.5 s) and stack profiler (10 ms) wake
            # Python threads that, on a worker pinned to one core, take the core and the GIL from the
            # chunk: 2.8-3.1 s per XOD with Dask's defaults against 2.2-2.4 s in a plain process, 2.45 s
            # with these (the settings `run_on_dask` gives its local clusters, `engines.dask.QUIET`)
            **quiet_environment()}
JOB = dict(simulator="survey", area=4.0, n_boxes=12, cell_size=1.0, pixel=3.0, steps=4)


def _env() -> dict:
    return {**os.environ, **ONE_CORE, "PYTHONPATH": str(ROOT)}


def _steady(tasks: list[dict]) -> dict:
    """Per-worker steady rate and busy share from task records (t_start, t_end, compute_s, worker)."""
    by: dict[str, list[dict]] = {}
    for t in tasks:
        by.setdefault(t["worker"], []).append(t)
    rate, span_all, compute_all = 0.0, 0.0, 0.0
    per = {}
    for w, ts in by.items():
        ts.sort(key=lambda t: t["t_start"])
        if len(ts) < 2:
            continue
        steady = ts[1:]  # the first chunk of a worker compiles
        span = steady[-1]["t_end"] - ts[0]["t_end"]  # includes the engine's gaps between chunks
        compute = sum(t["compute_s"] for t in steady)
        rate += len(steady) / span
        span_all += span
        compute_all += compute
        per[w] = {"chunks": len(ts), "steady_span_s": span, "steady_compute_s": compute,
                  "compile_chunk_s": ts[0]["compute_s"]}
    return {"xod_per_s": rate, "overhead_fraction": 1.0 - compute_all / span_all if span_all else None,
            "per_worker": per, "compute_s_per_xod": compute_all / max(1, sum(len(v) - 1 for v in by.values()))}


def direct(n: int, tmp: Path) -> dict:
    """No engine: one pinned process calling make_chunk n + 1 times."""
    script = textwrap.dedent(f"""
        import json, time
        from jaxcluster.inference.cli import DatasetJob
        campaign = DatasetJob(n={n + 1}, out={str(tmp / 'direct.h5')!r}, **{JOB!r})()
        tasks = []
        for c in range({n + 1}):
            t0 = time.time()
            campaign.make_chunk(c)
            t1 = time.time()
            tasks.append(dict(t_start=t0, t_end=t1, compute_s=t1 - t0, worker="direct"))
        print(json.dumps(tasks))
    """)
    tmp.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", script], env=_env(), check=True,
                         capture_output=True, text=True).stdout
    return _steady(json.loads(out.strip().splitlines()[-1]))


def _pinned_dask_workers(address: str, n_workers: int) -> list[subprocess.Popen]:
    dask = str(Path(sys.executable).with_name("dask"))
    return [subprocess.Popen(["taskset", "-c", str(i), dask, "worker", address, "--nthreads", "1", "--nworkers", "1",
                              "--no-dashboard"], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for i in range(n_workers)]


def on_dask(n: int, pairs: int, tmp: Path) -> dict:
    """Two pinned `dask worker` processes on a scheduler started here; phases of 1 and 2 busy workers, alternated.

    One campaign, compiled once per worker (a warm-up chunk each). Then, `pairs` times: n chunks
    restricted to the first worker, and 2n chunks over both. Alternating the phases puts the
    load changes of this shared machine on both figures alike. The tasks are the engine's own
    (`engines.dask._chunk_task`: claim, compute, publish); the campaign is merged at the end.
    """
    import hashlib
    import pickle

    from distributed import Client, LocalCluster

    from jaxcluster.engines.dask import _chunk_task
    from jaxcluster.inference.cli import DatasetJob
    from jaxcluster.io.campaign import merge_campaign

    cluster = LocalCluster(n_workers=0, processes=True, protocol="tcp", dashboard_address=None)
    workers = _pinned_dask_workers(cluster.scheduler_address, 2)
    total = 2 + pairs * 3 * n
    job = DatasetJob(n=total, out=str(tmp / "dask.h5"), **JOB)
    key = hashlib.sha256(pickle.dumps(job)).hexdigest()
    phases = []
    try:
        with Client(cluster.scheduler_address) as client:  # the LocalCluster counts only its own workers
            deadline = time.time() + 180
            while len(client.scheduler_info()["workers"]) < 2:
                if time.time() > deadline:
                    raise RuntimeError("the 2 dask workers did not connect in 180 s")
                time.sleep(0.2)
            addrs = sorted(client.scheduler_info()["workers"])

            def run(chunks, on):
                futs = [client.submit(_chunk_task, job, key, c, 120.0, 3, workers=on, allow_other_workers=False,
                                      pure=False, key=f"bench-{c}") for c in chunks]
                t0 = time.perf_counter()
                tasks = client.gather(futs)
                return tasks, time.perf_counter() - t0

            warm, _ = run([0], addrs[:1])
            warm += run([1], addrs[1:])[0]
            c = 2
            for _ in range(pairs):
                for w in (1, 2):
                    tasks, wall = run(range(c, c + w * n), addrs[:w])
                    c += w * n
                    compute = sum(t["compute_s"] for t in tasks)
                    phases.append({"workers": w, "xod_per_s": w * n / wall, "wall_s": wall,
                                   "compute_s_per_xod": compute / (w * n),
                                   "overhead_fraction": 1.0 - compute / (w * wall)})
        report_out = merge_campaign(job())
        assert report_out.exists()
    finally:
        for wk in workers:
            wk.terminate()
        for wk in workers:
            wk.wait()
        cluster.close()
    one = [p for p in phases if p["workers"] == 1]
    two = [p for p in phases if p["workers"] == 2]
    eff = [b["xod_per_s"] / (2 * a["xod_per_s"]) for a, b in zip(one, two)]
    return {"phases": phases, "efficiency_per_pair": eff, "compile_chunk_s": [t["compute_s"] for t in warm],
            "xod_per_s_1": float(np.median([p["xod_per_s"] for p in one])),
            "xod_per_s_2": float(np.median([p["xod_per_s"] for p in two])),
            "overhead_fraction_2": float(np.median([p["overhead_fraction"] for p in two])),
            "overhead_fraction_1": float(np.median([p["overhead_fraction"] for p in one])),
            "two_worker_efficiency": float(np.median(eff))}


def on_array(n_tasks: int, n: int, tmp: Path) -> dict:
    """`n_tasks` array-task processes, pinned one per core, sharing one output (`run_worker`)."""
    tmp.mkdir(parents=True, exist_ok=True)
    out = tmp / f"array{n_tasks}.h5"
    script = textwrap.dedent("""
        import json, sys
        from jaxcluster.engines import ArrayTask
        from jaxcluster.inference.cli import DatasetJob
        from jaxcluster.io import ChunkStore, run_worker
        task = ArrayTask(int(sys.argv[1]), int(sys.argv[2]))
        campaign = DatasetJob(n=int(sys.argv[3]), out=sys.argv[4], **json.loads(sys.argv[5]))()
        r = run_worker(campaign, order=task.order(campaign.n_chunks), task=task.label(), merge=False)
        store = ChunkStore(campaign.out, campaign.n_chunks)
        print(json.dumps([dict(store.info(c), worker=task.label()) for c in r.published]))
    """)
    n_xod = n_tasks * (n + 1)
    t0 = time.perf_counter()
    procs = [subprocess.Popen(["taskset", "-c", str(i), sys.executable, "-c", script, str(i), str(n_tasks),
                               str(n_xod), str(out), json.dumps(JOB)], env=_env(), stdout=subprocess.PIPE, text=True)
             for i in range(n_tasks)]
    tasks = []
    for p in procs:
        stdout, _ = p.communicate()
        assert p.returncode == 0
        tasks += json.loads(stdout.strip().splitlines()[-1])
    wall = time.perf_counter() - t0
    for t in tasks:
        t["worker"] = t["task"]
    return {**_steady(tasks), "wall_s": wall, "n_xod": n_xod}


def projection(efficiency: float, overhead: float) -> dict:
    """Seed 001's campaign on N GPUs: a model, with its inputs."""
    n_xod, gpu_h = 48_000, 2_000.0  # seed 001 §3: 48 000 survey XODs in ~2 000 GPU-hours (V100)
    per_xod_s = gpu_h * 3600 / n_xod  # 150 GPU-s per XOD, seed 001's own figure (no GPU measured here)
    model = {}
    for n_gpu in (1, 8, 32, 128, 512):
        # one worker per GPU, independent chunks: time = n × t / (N × (1 − overhead)); the merge (one
        # sequential read of the chunk files, ~MB each) is not modelled
        model[str(n_gpu)] = {"hours": n_xod * per_xod_s / (n_gpu * (1.0 - overhead)) / 3600}
    return {"model": "T(N) = n_xod * t_xod / (N * (1 - engine_overhead_fraction)), one worker per GPU",
            "inputs": {"n_xod": n_xod, "t_xod_gpu_s": per_xod_s,
                       "t_xod_source": "seed 001: ~2000 GPU-hours for 48000 XODs (V100); not measured here",
                       "engine_overhead_fraction": overhead, "two_worker_efficiency_cpu": efficiency},
            "hours_by_n_gpu": model}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 XODs per worker and phase, 1 pair of phases")
    args = p.parse_args()
    n, pairs = (2, 1) if args.quick else (6, 3)
    import distributed
    import jax

    tmp = Path(tempfile.mkdtemp(prefix="jaxcluster-campaign-"))
    try:
        res = {"direct_1": direct(n, tmp / "direct")}
        res["dask"] = on_dask(n, pairs, tmp / "dask")
        for w in (1, 2):
            res[f"array_{w}"] = on_array(w, n, tmp / f"array{w}")
        res["direct_1_end"] = direct(n, tmp / "end")  # the machine's drift over the run (it is shared)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rate = {k: v["xod_per_s"] for k, v in res.items() if "xod_per_s" in v}
    rate["dask_1"], rate["dask_2"] = res["dask"]["xod_per_s_1"], res["dask"]["xod_per_s_2"]
    direct_rate = 0.5 * (rate["direct_1"] + rate["direct_1_end"])
    out = {
        "throughput_xod_per_h": {k: 3600 * v for k, v in rate.items()},
        "two_worker_efficiency": res["dask"]["two_worker_efficiency"],
        "two_worker_efficiency_per_pair": res["dask"]["efficiency_per_pair"],
        "array_two_worker_efficiency": rate["array_2"] / (2 * rate["array_1"]),
        "engine_overhead_fraction": res["dask"]["overhead_fraction_2"],
        "engine_overhead_fraction_dask_1": res["dask"]["overhead_fraction_1"],
        "array_engine_overhead_fraction": res["array_2"]["overhead_fraction"],
        # a Dask worker's chunk against the same chunk in a plain process (mean of the runs before
        # and after): the worker's own threads share its core
        "dask_1_over_direct": rate["dask_1"] / direct_rate,
        "array_1_over_direct": rate["array_1"] / direct_rate,
        "direct_drift": rate["direct_1_end"] / rate["direct_1"] - 1.0,
        "compute_s_per_xod_one_core": res["direct_1"]["compute_s_per_xod"],
        "runs": res,
        "workload": {**JOB, "xod_per_chunk": 1, "steady_xod_per_worker_per_phase": n, "dask_phase_pairs": pairs},
        "environment": {"jax": jax.__version__, "distributed": distributed.__version__,
                        "python": platform.python_version(), "cpu_count": os.cpu_count(),
                        "machine": platform.machine(), "worker_threads": ONE_CORE["XLA_FLAGS"]},
    }
    out["projection_seed001"] = projection(out["two_worker_efficiency"], out["engine_overhead_fraction"])
    path = ROOT / "benchmarks" / "results" / ("campaign_quick.json" if args.quick else "campaign.json")
    path.write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k not in ("runs", "projection_seed001")}, indent=1))


if __name__ == "__main__":
    main()
