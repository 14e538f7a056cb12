"""MSE vs Gaussian-NLL compressor heads on held-out analytic Poisson mocks (seed 001 Appendix A's concern).

Trains `train_compressor` with head="mse" and head="gaussian" on the same
(θ, XOD) set (`jaxcluster dataset generate --simulator analytic`) and
compares the compressed summaries θ̂ with the true θ on held-out mocks:

* bias: mean(θ̂ − θ), in units of the prior width;
* rmse: root-mean-square error, in units of the prior width;
* slope: least-squares slope of θ̂ against θ (1: unbiased over the whole prior;
  < 1: estimates pulled towards the prior centre);
* edge bias: mean(θ̂ − θ) / rmse for θ in the lowest and in the highest 10 % of its range;
* NLL head only: std of (θ̂ − θ)/σ̂ and the fraction with |θ̂ − θ| < σ̂ (0.683 if calibrated).

    python benchmarks/compressor_heads.py --data analytic.h5 [--n-test 2000] [--epochs 150]

Writes benchmarks/results/compressor_heads.json.
"""

import argparse
import json
import pathlib
import time

import jax
import numpy as np

from jaxcluster.inference import load_dataset
from jaxcluster.inference.compressor import train_compressor


def _metrics(theta, est, sigma, low, high):
    width = high - low
    out = {}
    for j in range(theta.shape[1]):
        t, e = theta[:, j], est[:, j]
        r = e - t
        rmse = float(np.sqrt(np.mean(r**2)))
        lo = t < low[j] + 0.1 * width[j]
        hi = t > high[j] - 0.1 * width[j]
        m = dict(bias=float(np.mean(r) / width[j]), rmse=rmse / width[j],
                 slope=float(np.polyfit(t, e, 1)[0]),
                 edge_bias_low=float(np.mean(r[lo]) / rmse), edge_bias_high=float(np.mean(r[hi]) / rmse))
        if sigma is not None:
            z = r / sigma[:, j]
            m.update(z_std=float(np.std(z)), coverage_68=float(np.mean(np.abs(z) < 1)))
        out[j] = m
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="dataset from `jaxcluster dataset generate --simulator analytic`")
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--patience", type=int, default=15)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results" / "compressor_heads.json"))
    args = ap.parse_args(argv)
    ds = load_dataset(args.data)
    names = ds.metadata["param_names"]
    low, high = np.asarray(ds.metadata["prior_low"]), np.asarray(ds.metadata["prior_high"])
    n = len(ds.theta)
    tr = slice(0, n - args.n_test)
    te = slice(n - args.n_test, n)
    results = dict(data=str(args.data), n_train_and_val=n - args.n_test, n_test=args.n_test, params=names,
                   metadata=ds.metadata["metadata"], device=str(jax.devices()[0].device_kind), heads={})
    for head in ("mse", "gaussian"):
        t0 = time.perf_counter()
        res = train_compressor(ds.xod[tr], ds.theta[tr], key=jax.random.key(0), head=head, width=args.width,
                               hidden=args.hidden, max_epochs=args.epochs, patience=args.patience, progress=True)
        wall = time.perf_counter() - t0
        mean, cov = jax.vmap(res.compressor.predict)(ds.xod[te])
        sigma = None if cov is None else np.sqrt(np.diagonal(np.asarray(cov), axis1=1, axis2=2))
        m = _metrics(ds.theta[te], np.asarray(mean, np.float64), sigma, low, high)
        results["heads"][head] = dict(
            train_seconds=wall, epochs=len(res.history["val_loss"]), best_epoch=res.history["best_epoch"],
            per_param={names[j]: v for j, v in m.items()})
        print(head, f"{wall:.0f} s,", len(res.history["val_loss"]), "epochs")
        for j, v in m.items():
            print(f"  {names[j]:10s} " + " ".join(f"{k}={x:+.3f}" for k, x in v.items()))
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(results, indent=1))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
