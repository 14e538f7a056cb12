r"""Diffusion sampling speed: the `lax.scan` reverse-SDE sampler against diffrax's SDE solve (CPU).

Same score model (the default-sized `NCSNpp`, untrained: the cost does not
depend on the weights), same VE SDE, same number of Euler–Maruyama steps, same
batch of samples drawn with `jax.vmap` over keys:

* ``scan``: `jaxcluster.fields.euler_maruyama` (a `lax.scan` over steps);
* ``diffrax``: `jaxcluster.fields.diffrax_sde` (diffrax `Euler` on a
  `VirtualBrownianTree`, `ConstantStepSize`, the same steps; diffrax issue #517
  reports this path as slow for diffusion sampling).

and, as the floor both share, ``network_only``: a `lax.scan` that only
evaluates the score network the same number of times (no noise, no SDE
coefficients), so each sampler's overhead over the network is visible.

Timing: jit warm-up first (compile time reported separately), then
``--repeats`` rounds, each calling the three in turn (interleaved, so a change
of load on the shared machine hits all of them); the median per sampler.
``samples_per_second`` = batch / median time; the ratio is of the medians.

Usage: ``python benchmarks/fields.py [--n-steps 50 --batch 4] [--quick]``; writes
``benchmarks/results/fields.json`` (``--quick``: fields_quick.json). Runs
with fewer steps or samples than the defaults say so in ``problem.reduced``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-pix", type=int, default=32, help="map side [pixels]")
    ap.add_argument("--n-steps", type=int, default=100, help="reverse-SDE steps (both samplers)")
    ap.add_argument("--batch", type=int, default=8, help="samples per call (vmapped over keys)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="16 px, 20 steps, 2 samples, 1 repeat")
    args = ap.parse_args(argv)
    if args.quick:
        args.n_pix, args.n_steps, args.batch, args.repeats = 16, 20, 2, 1

    import diffrax
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from jaxcluster.fields import NCSNpp, VESDE, ConditionedScore, ScoreModel, diffrax_sde, euler_maruyama

    sde = VESDE(1e-3, 1.0)
    model = eqx.filter_jit(lambda k: ScoreModel(NCSNpp(1, 2, key=k), sde))(jax.random.key(0))
    cond = jax.random.uniform(jax.random.key(1), (2, args.n_pix, args.n_pix), jnp.float32)
    shape = (1, args.n_pix, args.n_pix)

    def network_only(score, sde, shape, *, key, n_steps):
        # the score network n_steps times in a lax.scan, nothing else: the floor of both samplers
        x = sde.prior_sample(shape, key=key)
        ts = jnp.linspace(1.0, 1e-5, n_steps + 1, dtype=jnp.float32)
        return jax.lax.scan(lambda x, t: (x + 1e-3 * score(x, t), None), x, ts[:-1])[0]

    def sampler_fn(sampler):
        @eqx.filter_jit
        def draw(model, cond, key):
            score = ConditionedScore(model, cond)
            keys = jax.random.split(key, args.batch)
            return jax.vmap(lambda k: sampler(score, sde, shape, key=k, n_steps=args.n_steps))(keys)

        return draw

    out = {}
    draws = {"scan": sampler_fn(euler_maruyama), "diffrax": sampler_fn(diffrax_sde),
             "network_only": sampler_fn(network_only)}
    for name, draw in draws.items():
        t0 = time.perf_counter()
        draw(model, cond, jax.random.key(2)).block_until_ready()
        out[name] = {"first_call_s": time.perf_counter() - t0, "times_s": []}
    # interleaved repetitions: a load change on the shared machine hits both samplers
    for r in range(args.repeats):
        for name, draw in draws.items():
            t0 = time.perf_counter()
            x = draw(model, cond, jax.random.key(3 + r))
            x.block_until_ready()
            out[name]["times_s"].append(time.perf_counter() - t0)
            out[name]["finite"] = bool(jnp.all(jnp.isfinite(x)))
    for name, o in out.items():
        o["median_s"] = med = statistics.median(o["times_s"])
        o["samples_per_second"] = args.batch / med
        print(f"{name:8s} first call {o['first_call_s']:6.1f} s, median {med:6.2f} s, {args.batch / med:7.2f} samples/s")
    ratio = out["scan"]["samples_per_second"] / out["diffrax"]["samples_per_second"]
    print(f"scan / diffrax samples_per_second = {ratio:.2f}")
    # per-repetition ratios (same round, so the same load): their spread says how far the median ratio is to be trusted
    per_round = [d / s for s, d in zip(out["scan"]["times_s"], out["diffrax"]["times_s"])]
    defaults = {"n_pix": 32, "n_steps": 100, "batch": 8}
    reduced = {k: {"default": v, "used": getattr(args, k)} for k, v in defaults.items() if getattr(args, k) < v}
    n_params = sum(x.size for x in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array)))
    result = {
        "benchmark": "fields",
        "what": "VE-SDE diffusion sampling: lax.scan Euler-Maruyama vs diffrax SDE (Euler, VirtualBrownianTree)",
        "environment": {
            "jax": jax.__version__, "diffrax": diffrax.__version__, "equinox": eqx.__version__,
            "python": platform.python_version(), "backend": jax.default_backend(), "device": "cpu",
            "cpu_count": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
            "dtype": "float32", "note": "CPU only; machine shared with other jobs while measured",
        },
        "problem": {"model": "NCSNpp default (base 16, channel_mult (1, 2), 1 res block/level)", "n_params": int(n_params),
                    "n_pix": args.n_pix, "x_channels": 1, "cond_channels": 2, "n_steps": args.n_steps,
                    "batch": args.batch, "repeats": args.repeats, "sde": {"sigma_min": 1e-3, "sigma_max": 1.0},
                    "reduced": reduced or None,
                    "reduced_why": ("fewer steps / samples than the defaults to keep the run inside its 10-minute time box "
                                    "on the shared 2-core CPU; the cost per step and sample does not depend on them")
                    if reduced else None},
        "samplers": out,
        "samples_per_second": {"scan": out["scan"]["samples_per_second"], "diffrax": out["diffrax"]["samples_per_second"]},
        "ratio_scan_over_diffrax": ratio,
        "ratio_per_round_scan_over_diffrax": per_round,
        "timing_order": "interleaved: each round calls scan, diffrax, network_only in turn",
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / ("fields_quick.json" if args.quick else "fields.json")
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
