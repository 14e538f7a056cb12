"""Our MDN posterior against sbi 0.27's (PyTorch) on the same data, architecture and CPU.

    pip install -e .[bench]      # torch==2.13.0 (CPU) and sbi==0.27.0
    python benchmarks/npe.py [--n-train 20000] [--out benchmarks/results/npe.json]

**Data.** The analytic-model (θ, XOD) pairs of the exact check
(`benchmarks/npe_exact.py`, stage 1; simulated here if its cache is absent):
θ = (Ω_m, σ_8, log10_M0), summary √counts of the 24-bin XOD. Both
estimators see the same parameters y = logit of the flat-prior ones
(identity for the Gaussian nuisance), so sbi's MDN and ours model the same
density; sbi z-scores y and x itself, ours does likewise.

**Architecture and training.** Identical: 10 full-covariance Gaussian
components, 2 hidden layers of 50 (ReLU), Adam 5·10⁻⁴, batch 200, 10 %
validation, patience 20, gradient-norm clip 5 (sbi's defaults; ours,
`TrainConfig()`).

**Measurements.**

* ``epoch_time_ratio_vs_sbi`` = (our median epoch wall time) / (sbi's median
  ``epoch_durations_sec``); an epoch is one pass over the training pairs plus
  the validation loss in both. Ours excludes the first (compiling) epoch, which is reported
  separately. Target: ≤ 1/3.
* ``val_logprob_diff_vs_sbi`` = mean ln q(y | x) over a common held-out set
  of pairs neither saw (ours − sbi's), in y space (our standardisation's
  Jacobian added back). Target: ≥ 0 within noise.

Threads: torch gets ``torch.set_num_threads(n)`` with n the number of CPU
cores, which is what XLA's CPU backend uses for its intra-op pool; both run
in this one process, one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # the analytic simulator (if run) in float64; the NPE is float32

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from npe_exact import analytic_problem, bounds, stage_simulate, summary  # noqa: E402

from jaxcluster.inference import ParameterSpace, TrainConfig, train_posterior  # noqa: E402


def _to_y(theta: np.ndarray) -> np.ndarray:
    lo, hi = bounds()
    space = ParameterSpace(lo, hi)
    return np.asarray(jax.vmap(space.to_y)(jnp.asarray(theta, jnp.float32)), np.float64)


def run_sbi(y_tr, x_tr, y_te, x_te, threads: int, seed: int, max_epochs: int) -> dict:
    import torch
    from sbi.inference import NPE
    from sbi.neural_nets import posterior_nn

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    # a wide box on y only tells sbi the dimension (the MDN ignores the prior when training)
    d = y_tr.shape[1]
    from sbi.utils import BoxUniform

    prior = BoxUniform(-1e3 * torch.ones(d), 1e3 * torch.ones(d))
    de = posterior_nn(model="mdn", hidden_features=50, num_components=10)
    inf = NPE(prior=prior, density_estimator=de, show_progress_bars=False)
    inf.append_simulations(torch.as_tensor(y_tr, dtype=torch.float32), torch.as_tensor(x_tr, dtype=torch.float32))
    t0 = time.perf_counter()
    est = inf.train(training_batch_size=200, learning_rate=5e-4, validation_fraction=0.1, stop_after_epochs=20,
                    clip_max_norm=5.0, max_num_epochs=max_epochs)
    total = time.perf_counter() - t0
    with torch.no_grad():
        lp = est.log_prob(torch.as_tensor(y_te, dtype=torch.float32)[None],
                          torch.as_tensor(x_te, dtype=torch.float32))[0].numpy()
    s = inf._summary
    return dict(epochs=int(s["epochs_trained"][-1]), epoch_seconds=float(np.median(s["epoch_durations_sec"])),
                train_seconds=total, best_validation_loss=float(s["best_validation_loss"][-1]),
                test_logprob=float(np.mean(lp)), threads=threads, torch_version=torch.__version__)


def run_ours(theta_tr, x_tr, y_te, x_te, seed: int, max_epochs: int) -> dict:
    lo, hi = bounds()
    cfg = TrainConfig(max_epochs=max_epochs)
    t0 = time.perf_counter()
    post, hist = train_posterior(theta_tr, x_tr, lo, hi, cfg, key=jax.random.key(seed))
    total = time.perf_counter() - t0
    sp = post.space
    u = (jnp.asarray(y_te, jnp.float32) - sp.shift) / sp.scale
    lp_u = jax.jit(jax.vmap(post.log_prob_u))(u, jnp.asarray(x_te, jnp.float32))
    lp_y = np.asarray(lp_u, np.float64) - float(jnp.sum(jnp.log(sp.scale)))
    return dict(epochs=hist["epochs"], epoch_seconds=hist["epoch_seconds"],
                first_epoch_seconds_including_compile=hist["first_epoch_seconds"], train_seconds=total,
                best_validation_loss_u_space=float(hist["best_val_loss"][0]), test_logprob=float(np.mean(lp_y)))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-train", type=int, default=20000, help="pairs for training (+ validation)")
    p.add_argument("--n-test", type=int, default=2000, help="common held-out pairs for the log-prob comparison")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-epochs", type=int, default=1000,
                   help="cap on epochs for both (early stopping otherwise); a small cap times epochs only")
    p.add_argument("--work", default="out/npe_exact")
    p.add_argument("--out", default="benchmarks/results/npe.json")
    args = p.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sims = stage_simulate(work, analytic_problem(), 30000, 300, 5, 0)
    theta, x = sims["theta_train"], summary(sims["x_train"])
    if args.n_train + args.n_test > len(theta):
        raise ValueError(f"n_train + n_test = {args.n_train + args.n_test} exceeds the {len(theta)} simulated pairs")
    th_tr, x_tr = theta[: args.n_train], x[: args.n_train]
    th_te, x_te = theta[-args.n_test:], x[-args.n_test:]
    y_tr, y_te = _to_y(th_tr), _to_y(th_te)
    threads = os.cpu_count() or 1
    ours = run_ours(th_tr, x_tr, y_te, x_te, args.seed, args.max_epochs)
    print("ours", ours, flush=True)
    theirs = run_sbi(y_tr, x_tr, y_te, x_te, threads, args.seed, args.max_epochs)
    print("sbi", theirs, flush=True)
    out = dict(
        benchmark="MDN NPE (10 full-covariance components, 2x50 ReLU) vs sbi 0.27, same data, same CPU",
        data="analytic XOD model of benchmarks/npe_exact.py: theta = (Omega_m, sigma_8, log10_M0), sqrt counts",
        n_train_plus_validation=args.n_train, n_test=args.n_test, max_epochs=args.max_epochs,
        epoch_time_ratio_vs_sbi=ours["epoch_seconds"] / theirs["epoch_seconds"],
        val_logprob_diff_vs_sbi=ours["test_logprob"] - theirs["test_logprob"],
        val_logprob_note="mean ln q(y|x) on common held-out pairs, y = logit-space parameters",
        ours=ours, sbi=theirs,
        threads=dict(torch_set_num_threads=threads, xla_cpu="all cores (XLA default intra-op pool)",
                      cpu_count=os.cpu_count()),
        jax_version=jax.__version__, platform=platform.platform(),
        note="shared 2-core CPU (other jobs ran concurrently); both measured in the same process, one after the other",
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps({k: out[k] for k in ("epoch_time_ratio_vs_sbi", "val_logprob_diff_vs_sbi")}))
    return out


if __name__ == "__main__":
    main()
