r"""jaxcluster's FastPM engine against jaxpm 0.1.6: speed, peak memory, accuracy vs steps.

Same problem for both codes: 2LPT initial conditions at a = 0.1 computed once
with `jaxcluster.nbody.lpt` (jaxpm gets them converted to its cell units:
positions / Δ, momenta / Δ, Δ the cell size; see
tests/nbody/test_jaxpm_crosscheck.py), a box of 4 h⁻¹ Mpc cells, one particle
per cell and mesh_factor 1 (jaxpm's only option), N steps linear in a from
0.1 to 1, float32 (JAX's default).

* jaxcluster: `nbody` (FastPM kick-drift-kick, one PM force per step); both
  adjoints when `nbody` takes `adjoint=` ("checkpoint": diffrax
  RecursiveCheckpointAdjoint with 4 checkpoints, "reversible": reverse-time
  adjoint), else the checkpointed solve.
* jaxpm: `jaxpm.pm.make_diffrax_ode` integrated with `diffrax.LeapfrogMidpoint`
  on `StepTo` over the same grid: one force per step, the cheapest
  same-step-count integration (SemiImplicitEuler costs the same but is first
  order), with diffrax's default adjoint (`RecursiveCheckpointAdjoint()`).

Measured: the forward run, and the gradient of loss = Σ δ² (final density
painted with each code's own CIC) with respect to the initial state (x, p),
which is the same input for both codes. Timings: after a jit warm-up, ours and
jaxpm's calls interleaved in one process; a ratio is the median over
repetitions of ours / jaxpm within each repetition (the ratio of the medians
is kept as `*_ratio_of_medians`). Peak RSS:
one subprocess per measurement (`--worker ...`), `ru_maxrss` at its end
(compilation included; nothing subtracted). Accuracy: max and mean |P/P_ref − 1|
over k ≤ k_Nyq/2 against a 100-step run of our solver, for each code.

On a GPU the run adds our forward time per step at 256³ (`step_ms_256_gpu`;
pmwd's published figure is ~8 ms per step on an H100 PCIe);
`python benchmarks/pm.py --worker steptime-N` prints it for any N on any
backend.

Usage: `python benchmarks/pm.py [--quick]`; writes benchmarks/results/pm.json
(`--quick`: 64³ only, fewer repetitions, writes pm_quick.json).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

A_INIT, A_FINAL, CELL = 0.1, 1.0, 4.0  # CELL: h⁻¹ Mpc
OMEGA_M, OMEGA_B = 0.3, 0.049
RESULTS = Path(__file__).resolve().parent / "results"


# ----------------------------------------------------------------- problem


def _setup(n):
    import jax
    import jax.numpy as jnp

    from jaxcluster.cosmology import Cosmology, growth_table
    from jaxcluster.nbody import PMConfig, linear_field, lpt, white_noise

    config = PMConfig(CELL * n, n)
    cosmo = Cosmology(Omega_m=OMEGA_M, sigma_8=0.8)
    growth = growth_table(cosmo)
    delta_lin = linear_field(white_noise(jax.random.key(0), config.particle_shape), cosmo, config)
    pos, p = lpt(delta_lin, cosmo, growth, config, A_INIT, order=2)
    return config, cosmo, growth, jax.block_until_ready(pos), jax.block_until_ready(p), jnp


def _jaxpm_cosmology():
    import jax_cosmo as jc

    # Its own object: sharing one between jax_cosmo and jaxpm raises KeyError 'h'.
    return jc.Cosmology(Omega_c=OMEGA_M - OMEGA_B, Omega_b=OMEGA_B, h=0.6711, n_s=0.9624,
                        sigma8=0.8, Omega_k=0.0, w0=-1.0, wa=0.0)


def _has_adjoint_kw():
    from jaxcluster.nbody import nbody

    return "adjoint" in inspect.signature(nbody).parameters


def _ours_fns(config, cosmo, growth, n_steps, adjoint):
    """jit-ed (forward final positions, grad of Σδ² w.r.t. (x, p))."""
    import jax
    import jax.numpy as jnp

    from jaxcluster.nbody import nbody, paint_cic, step_grid

    grid = step_grid(A_INIT, A_FINAL, n_steps)
    kw = {} if adjoint is None else dict(adjoint=adjoint)
    if adjoint in (None, "checkpoint"):
        kw["checkpoints"] = 4

    def run(pos, p):
        return nbody(pos, p, cosmo, config, grid, growth=growth, **kw).pos[-1]

    def loss(pos, p):
        x = run(pos, p)
        rho = paint_cic(x / config.cell_size, jnp.ones(x.shape[:1], x.dtype), config.mesh_shape)
        return jnp.sum((rho - 1.0) ** 2)

    return jax.jit(run), jax.jit(jax.grad(loss, argnums=(0, 1)))


def _jaxpm_fns(config, n_steps, solver_name="LeapfrogMidpoint"):
    """jit-ed (forward final positions [cells], grad of Σδ² w.r.t. y0 = [x, v] in cells)."""
    import diffrax
    import jax
    import jax.numpy as jnp
    import jaxpm.pm as jpm
    from jaxpm.painting import cic_paint

    from jaxcluster.nbody import step_grid

    jcc = _jaxpm_cosmology()
    ts = jnp.asarray(step_grid(A_INIT, A_FINAL, n_steps), dtype=jnp.result_type(float))
    term = diffrax.ODETerm(jpm.make_diffrax_ode(config.mesh_shape))
    solver = getattr(diffrax, solver_name)()

    def run(y0):
        sol = diffrax.diffeqsolve(term, solver, t0=ts[0], t1=ts[-1], dt0=None, y0=y0, args=jcc,
                                  stepsize_controller=diffrax.StepTo(ts=ts), max_steps=n_steps,
                                  saveat=diffrax.SaveAt(t1=True))
        return sol.ys[0, 0]

    def loss(y0):
        rho = cic_paint(jnp.zeros(config.mesh_shape, y0.dtype), run(y0))
        return jnp.sum((rho - 1.0) ** 2)

    return jax.jit(run), jax.jit(jax.grad(loss))


def _timed(fn, *args):
    import jax

    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t


# ----------------------------------------------------------------- workers


def worker_rss(spec: str) -> dict:
    """One measurement in this process: 'ours-grad-128-10-reversible', 'jaxpm-fwd-64-10', ..."""
    parts = spec.split("-")
    code, kind, n, n_steps = parts[0], parts[1], int(parts[2]), int(parts[3])
    adjoint = parts[4] if len(parts) > 4 else None
    config, cosmo, growth, pos, p, jnp = _setup(n)
    if code == "ours":
        fwd, grad = _ours_fns(config, cosmo, growth, n_steps, adjoint)
        fn, args = (fwd, (pos, p)) if kind == "fwd" else (grad, (pos, p))
    else:
        fwd, grad = _jaxpm_fns(config, n_steps)
        y0 = jnp.stack([pos / config.cell_size, p / config.cell_size])
        fn, args = (fwd, (y0,)) if kind == "fwd" else (grad, (y0,))
    first = _timed(fn, *args)  # compile + one run: what the peak RSS covers
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return dict(spec=spec, first_call_s=first, peak_rss_MiB=rss_kib / 1024)


def worker_timing(n: int, n_steps: int, reps: int, all_adjoints: bool) -> dict:
    """Interleaved steady-state timings of every variant, in one process."""
    config, cosmo, growth, pos, p, jnp = _setup(n)
    y0 = jnp.stack([pos / config.cell_size, p / config.cell_size])
    variants = {}
    adjoints = ["checkpoint", "reversible"] if _has_adjoint_kw() else [None]
    if not all_adjoints:
        adjoints = adjoints[-1:]
    for adj in adjoints:
        f, g = _ours_fns(config, cosmo, growth, n_steps, adj)
        variants[f"ours_fwd_{adj or 'checkpoint'}"] = (f, (pos, p))
        variants[f"ours_grad_{adj or 'checkpoint'}"] = (g, (pos, p))
    f, g = _jaxpm_fns(config, n_steps)
    variants["jaxpm_fwd"] = (f, (y0,))
    variants["jaxpm_grad"] = (g, (y0,))
    compile_s = {k: _timed(fn, *a) for k, (fn, a) in variants.items()}
    times = {k: [] for k in variants}
    for _ in range(reps):
        for k, (fn, a) in variants.items():
            times[k].append(_timed(fn, *a))
    # Ours and jaxpm's calls of one repetition run back to back, so the ratio within
    # a repetition cancels slow drifts in the machine's load (a shared 2-core CPU).
    paired = {k: statistics.median(t / r for t, r in zip(v, times[f"jaxpm_{k.split('_')[1]}"]))
              for k, v in times.items() if k.startswith("ours_")}
    return dict(n=n, n_steps=n_steps, first_call_s=compile_s, times_s=times,
                median_s={k: statistics.median(v) for k, v in times.items()}, paired_ratio=paired)


def worker_step_time(n: int, reps: int = 5) -> dict:
    """Our forward cost per FastPM step at n³ (one particle per cell): (t(20 steps) − t(10 steps)) / 10.

    The difference removes the fixed cost of a run (LPT is outside, but the
    growth factors and the first force are inside); medians of `reps` calls.
    """
    config, cosmo, growth, pos, p, _ = _setup(n)
    adjoint = "reversible" if _has_adjoint_kw() else None
    t = {}
    for ns in (10, 20):
        fwd = _ours_fns(config, cosmo, growth, ns, adjoint)[0]
        _timed(fwd, pos, p)  # compile
        t[ns] = statistics.median(_timed(fwd, pos, p) for _ in range(reps))
    return dict(n=n, seconds_10_steps=t[10], seconds_20_steps=t[20], step_ms=(t[20] - t[10]) / 10 * 1e3)


def worker_accuracy(n: int, steps: list[int], jaxpm_too: bool) -> dict:
    """P(k) error vs a 100-step run of our solver, for our solver and jaxpm's leapfrog."""
    import jax
    import numpy as np

    from jaxcluster.nbody import paint_cic
    from jaxcluster.nbody.power import correlation_coefficient, power_spectrum

    config, cosmo, growth, pos, p, jnp = _setup(n)
    cell = config.cell_size

    def density(x):
        m = paint_cic(x / cell, jnp.ones(x.shape[:1], x.dtype), config.mesh_shape)
        return m / jnp.mean(m) - 1.0

    def errors(x, ref):
        d, dr = density(x), density(ref)
        k, pk, _ = power_spectrum(d, config.box_size)
        _, pr, _ = power_spectrum(dr, config.box_size)
        _, r, _ = correlation_coefficient(d, dr, config.box_size)
        sel = np.asarray(k) <= 0.5 * np.pi / cell
        e = np.abs(np.asarray(pk / pr)[sel] - 1.0)
        return dict(max=float(e.max()), mean=float(e.mean()), min_r=float(np.asarray(r)[sel].min()))

    adjoint = "checkpoint" if _has_adjoint_kw() else None
    ref = _ours_fns(config, cosmo, growth, 100, adjoint)[0](pos, p)
    out = dict(n=n, reference="jaxcluster FastPM KDK, 100 steps", ours={}, jaxpm_leapfrog={})
    y0 = jnp.stack([pos / cell, p / cell])
    for ns in steps:
        out["ours"][ns] = errors(_ours_fns(config, cosmo, growth, ns, adjoint)[0](pos, p), ref)
        if jaxpm_too:
            out["jaxpm_leapfrog"][ns] = errors(_jaxpm_fns(config, ns)[0](y0) * cell, ref)
    if jaxpm_too:  # the two codes' converged solutions against each other
        out["jaxpm_leapfrog"][100] = errors(_jaxpm_fns(config, 100)[0](y0) * cell, ref)
    jax.clear_caches()
    return out


# ----------------------------------------------------------------- driver


def _spawn(args: list[str]) -> dict:
    cmd = [sys.executable, __file__, *args]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _environment() -> dict:
    import diffrax
    import jax
    import jaxpm

    dev = jax.devices()[0]
    return dict(jax=jax.__version__, diffrax=diffrax.__version__,
                jaxpm=getattr(jaxpm, "__version__", "0.1.6"), python=platform.python_version(),
                backend=jax.default_backend(), device=str(dev.device_kind),
                cpu_count=os.cpu_count(), affinity=len(os.sched_getaffinity(0)),
                x64=bool(jax.config.jax_enable_x64), dtype="float32", machine=platform.machine())


def _save(out: dict, quick: bool) -> Path:
    """Write (possibly partial) results, so a late failure keeps what was measured."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / ("pm_quick.json" if quick else "pm.json")
    path.write_text(json.dumps(out, indent=2) + "\n")
    return path


def main(quick: bool) -> dict:
    t_start = time.perf_counter()
    sizes = [64] if quick else [64, 128]
    n_steps = 10
    reps = 2 if quick else 5
    adjoints = ["checkpoint", "reversible"] if _has_adjoint_kw() else [None]
    out = dict(benchmark="pm", environment=_environment(),
               problem=dict(a_init=A_INIT, a_final=A_FINAL, cell_Mpc_h=CELL, mesh_factor=1,
                            lpt_order=2, n_steps=n_steps, steps="linear in a",
                            loss="sum over mesh of (painted density - 1)^2, gradient w.r.t. initial (x, p)",
                            jaxpm_solver="diffrax.LeapfrogMidpoint + StepTo, default RecursiveCheckpointAdjoint()",
                            ours_solver="FastPMKDK; adjoints: " + ", ".join(a or "checkpoint(4)" for a in adjoints)),
               ratio_convention="ours / jaxpm (below 1: jaxcluster faster or smaller)")
    # Accuracy against steps.
    print("[pm] accuracy ...", file=sys.stderr, flush=True)
    acc = _spawn(["--worker", "accuracy-64"])
    out["accuracy_64"] = acc
    for ns, e in acc["ours"].items():
        out[f"pk_err_{ns}_steps"] = e["max"]
        out[f"pk_err_mean_{ns}_steps"] = e["mean"]
    for ns, e in acc["jaxpm_leapfrog"].items():
        out[f"jaxpm_pk_err_{ns}_steps"] = e["max"]
        out[f"jaxpm_pk_err_mean_{ns}_steps"] = e["mean"]
    _save(out, quick)
    for n in sizes:
        print(f"[pm] timing {n}^3 ...", file=sys.stderr, flush=True)
        # Both adjoints at 64³; at 128³ the default one only (time budget).
        adj_n = adjoints if n == 64 else adjoints[-1:]
        timing = _spawn(["--worker", f"timing-{n}-{n_steps}-{reps}-{'all' if n == 64 else 'default'}"])
        rss = {}
        specs = [f"ours-fwd-{n}-{n_steps}" + (f"-{adjoints[-1]}" if adjoints[-1] else ""), f"jaxpm-fwd-{n}-{n_steps}",
                 *[f"ours-grad-{n}-{n_steps}" + (f"-{a}" if a else "") for a in adj_n], f"jaxpm-grad-{n}-{n_steps}"]
        for spec in specs:
            print(f"[pm] rss {spec} ...", file=sys.stderr, flush=True)
            rss[spec] = _spawn(["--worker", spec])
        med = timing["median_s"]
        default = adjoints[-1] or "checkpoint"  # nbody's default adjoint when there are two
        suffix = "" if n == 128 or quick else f"_{n}"
        paired = timing["paired_ratio"]
        out[f"forward_ratio_vs_jaxpm{suffix}"] = paired[f"ours_fwd_{default}"]
        out[f"grad_ratio_vs_jaxpm{suffix}"] = paired[f"ours_grad_{default}"]
        out[f"forward_ratio_of_medians{suffix}"] = med[f"ours_fwd_{default}"] / med["jaxpm_fwd"]
        out[f"grad_ratio_of_medians{suffix}"] = med[f"ours_grad_{default}"] / med["jaxpm_grad"]
        out[f"peak_rss_ratio_vs_jaxpm{suffix}"] = (
            rss[specs[1 + len(adj_n)]]["peak_rss_MiB"] / rss[specs[-1]]["peak_rss_MiB"])
        for i, a in enumerate(adj_n):
            if a:
                out[f"grad_ratio_vs_jaxpm_{a}{suffix}"] = paired[f"ours_grad_{a}"]
                out[f"peak_rss_ratio_vs_jaxpm_{a}{suffix}"] = (
                    rss[specs[2 + i]]["peak_rss_MiB"] / rss[specs[-1]]["peak_rss_MiB"])
        out[f"forward_peak_rss_ratio_vs_jaxpm{suffix}"] = rss[specs[0]]["peak_rss_MiB"] / rss[specs[1]]["peak_rss_MiB"]
        out[f"timing_{n}"] = timing
        out[f"peak_rss_{n}"] = rss
        _save(out, quick)
    # Gradient memory against step count (our default adjoint, and both if there are two),
    # at 64³ (the 40-step gradients at 128³ do not fit the time budget).
    n_mem = 64
    for a in adjoints:
        tag = "" if a == adjoints[-1] else f"_{a}"
        for ns in (10, 40):
            spec = f"ours-grad-{n_mem}-{ns}" + (f"-{a}" if a else "")
            print(f"[pm] rss {spec} ...", file=sys.stderr, flush=True)
            r = out[f"peak_rss_{n_mem}"].get(spec) or _spawn(["--worker", spec])
            out[f"grad_peak_rss_{ns}_steps{tag}"] = r["peak_rss_MiB"]
            out[f"grad_first_call_s_{ns}_steps{tag}"] = r["first_call_s"]
    if out["environment"]["backend"] == "gpu":
        # The GPU figure: pmwd published ~8 ms per step at 256³ on an H100 PCIe.
        print("[pm] step time 256^3 ...", file=sys.stderr, flush=True)
        st = _spawn(["--worker", "steptime-256"])
        out["step_ms_256_gpu"] = st["step_ms"]
        out["step_time_256_gpu"] = st
        out["step_ms_256_reference"] = "pmwd: ~8 ms per step at 256³ on an H100 PCIe (Li et al. 2022)"
    out["grad_peak_rss_n"] = n_mem
    out["grad_peak_rss_adjoint"] = adjoints[-1] or "checkpoint"
    out["total_runtime_s"] = time.perf_counter() - t_start
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64³ only, fewer repetitions")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ns = ap.parse_args()
    if ns.worker:
        w = ns.worker
        if w.startswith("timing-"):
            _, n, steps, reps, which = w.split("-")
            res = worker_timing(int(n), int(steps), int(reps), which == "all")
        elif w.startswith("steptime-"):
            res = worker_step_time(int(w.split("-")[1]))
        elif w.startswith("accuracy-"):
            res = worker_accuracy(int(w.split("-")[1]), [5, 10, 20, 40], jaxpm_too=True)
        else:
            res = worker_rss(w)
        print(json.dumps(res))
        sys.exit(0)
    result = main(ns.quick)
    path = _save(result, ns.quick)
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict)}, indent=2))
    print(f"wrote {path}", file=sys.stderr)
