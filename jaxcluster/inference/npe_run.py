"""A neural posterior trained on a dataset, end to end: compressor, posterior, calibration, all in one folder.

This is what ``jaxcluster npe train | infer | validate`` run, as a library:

* `train_npe(dataset, out, settings)`: the (θ, XOD) dataset of ``jaxcluster
  dataset generate`` is split into training pairs and held-out test pairs
  (``settings.test_fraction``, a permutation fixed by the seed); XODs are
  reduced to summaries, either by the seed 001 ResNet compressor
  (``summary="compressor"``, Gaussian head: the summary is the posterior mean
  and log-width of θ) or as √counts (``summary="sqrt"``, the
  variance-stabilised bins, as sbi users do for Poisson data); the MDN or
  spline-flow ensemble (`npe.train_posterior`) is fitted to the summaries; the
  test pairs give a calibration report (SBC ranks, HPD coverage, TARP).
* Every stage checkpoints after each epoch and writes its product
  atomically, so a killed ``train`` run again resumes where it stopped and
  ends with the same bits; the folder's ``settings.json`` (settings and the
  SHA-256 of the dataset's arrays, `io.atomic.record_settings`) is written
  first, and a rerun with other settings or another dataset is refused,
  naming the difference;
  ``npe.json`` (the manifest: settings, provenance, bins, histories,
  calibration figures) is written last and marks the folder complete.
* `load_npe(out)` gives a `TrainedNPE`: ``summary(xod)``,
  ``sample(key, xod, n)``, ``log_prob(θ, xod)``.
* `calibration(trained, theta, xod, key=…)` and `write_calibration` check a
  trained posterior on any test set (``npe validate``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .compressor import Compressor, load_compressor, save_compressor, train_compressor
from .npe import NeuralPosterior, TrainConfig, load_posterior, save_posterior, train_posterior

__all__ = ["NPESettings", "TrainedNPE", "train_npe", "load_npe", "calibration", "write_calibration", "SUMMARIES"]

SUMMARIES = ("compressor", "sqrt")
_BATCH = 512  # XODs per compiled call when summarising a dataset


class NPESettings(eqx.Module):
    """What `train_npe` does (every field is recorded, and a resume must match it).

    Attributes:
        summary: ``"compressor"`` (ResNet, seed 001 §3.2) or ``"sqrt"`` (√counts).
        estimator: ``"mdn"`` or ``"flow"`` (`npe.TrainConfig`).
        n_members: ensemble size of the posterior.
        epochs: maximum epochs of the posterior; ``patience`` epochs without a better validation loss stop it.
        patience: early-stopping patience (posterior and compressor).
        batch_size: pairs per step of the posterior (at most the training pairs after validation).
        learning_rate: Adam step of the posterior.
        compressor_epochs: maximum epochs of the compressor.
        compressor_width, compressor_hidden, compressor_blocks: ResNet channels, MLP width, blocks.
        compressor_batch_size: XODs per compressor step.
        test_fraction: share of the dataset held out for the calibration report, in [0, 0.5).
        n_draws: posterior draws per test XOD in the calibration report.
        seed: seed of the split, initialisations and batch orders.
    """

    summary: str = "compressor"
    estimator: str = "mdn"
    n_members: int = 1
    epochs: int = 300
    patience: int = 20
    batch_size: int = 200
    learning_rate: float = 5e-4
    compressor_epochs: int = 30
    compressor_width: int = 16
    compressor_hidden: int = 64
    compressor_blocks: int = 2
    compressor_batch_size: int = 128
    test_fraction: float = 0.1
    n_draws: int = 500
    seed: int = 0

    def __check_init__(self):
        if self.summary not in SUMMARIES:
            raise ValueError(f"summary = {self.summary!r} is not allowed; choose from {SUMMARIES}")
        if self.estimator not in ("mdn", "flow"):
            raise ValueError(f"estimator = {self.estimator!r} is not allowed; choose 'mdn' or 'flow'")
        for name in ("n_members", "epochs", "patience", "batch_size", "compressor_epochs", "compressor_width",
                     "compressor_hidden", "compressor_blocks", "compressor_batch_size", "n_draws"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} = {v!r} is outside its allowed range: an integer >= 1")
        if not 0.0 <= self.test_fraction < 0.5:
            raise ValueError(f"test_fraction = {self.test_fraction} is outside its allowed range [0, 0.5)")
        if not 0 < self.learning_rate < float("inf"):
            raise ValueError(f"learning_rate = {self.learning_rate} is outside its allowed range (0, inf)")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ValueError(f"seed = {self.seed!r} is outside its allowed range [0, 2**32)")

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}

    def train_config(self) -> TrainConfig:
        return TrainConfig(estimator=self.estimator, n_members=self.n_members, max_epochs=self.epochs,
                           patience=self.patience, batch_size=self.batch_size, learning_rate=self.learning_rate)


class TrainedNPE(eqx.Module):
    """A trained summary + posterior: q(θ | XOD).

    Attributes:
        posterior: the `NeuralPosterior` on summaries.
        compressor: the `Compressor` (None for √counts summaries).
        xod_shape: (n_cr, n_hr, n_z) of the XODs it was trained on (static).
    """

    posterior: NeuralPosterior
    compressor: Compressor | None
    xod_shape: tuple[int, int, int] = eqx.field(static=True)

    @property
    def names(self) -> tuple[str, ...]:
        return self.posterior.names

    def summary(self, xod: Float[ArrayLike, "n_cr n_hr n_z"]) -> Float[Array, " k"]:
        """The summary of one XOD (counts)."""
        xod = jnp.asarray(xod, jnp.float32)
        if xod.shape != self.xod_shape:
            raise ValueError(f"xod must have shape {self.xod_shape} (the training XODs'), got {xod.shape}")
        return _xod_summary(self.compressor, xod)

    def sample(self, key: PRNGKeyArray, xod: Float[ArrayLike, "n_cr n_hr n_z"], n: int) -> Float[Array, "n d"]:
        """n posterior draws of θ given one XOD."""
        return self.posterior.sample(key, self.summary(xod), n)

    def log_prob(self, theta: Float[ArrayLike, " d"], xod: Float[ArrayLike, "n_cr n_hr n_z"]) -> Float[Array, ""]:
        """ln q(θ | XOD)."""
        return self.posterior.log_prob(theta, self.summary(xod))


def _xod_summary(compressor: Compressor | None, xod: Float[Array, "n_cr n_hr n_z"]) -> Float[Array, " k"]:
    """The compressor's summary, or √counts (flattened) without one."""
    if compressor is None:
        return jnp.sqrt(jnp.maximum(xod, 0.0)).reshape(-1)
    return compressor.summary(xod)


@eqx.filter_jit
def _summary_batch(compressor: Compressor | None, xod: Array) -> Array:
    return jax.vmap(lambda x: _xod_summary(compressor, x))(xod)


def _summaries(compressor: Compressor | None, xod: np.ndarray) -> np.ndarray:
    """(n, k) summaries of (n, n_cr, n_hr, n_z) XODs, in compiled batches."""
    return np.concatenate([np.asarray(_summary_batch(compressor, jnp.asarray(xod[i:i + _BATCH], jnp.float32)),
                                      np.float64) for i in range(0, len(xod), _BATCH)])


@eqx.filter_jit
def _draws(post: NeuralPosterior, keys: Array, s: Array, n: int) -> Array:
    return jax.vmap(lambda k, x: post.sample(k, x, n))(keys, s)


@eqx.filter_jit
def _log_probs(post: NeuralPosterior, theta: Array, s: Array) -> Array:
    return jax.vmap(jax.vmap(post.log_prob, in_axes=(0, None)))(theta, s)


def _write_json(path: Path, obj: Any) -> None:
    from ..io.atomic import write_json
    from ..io.provenance import clean_json

    write_json(path, clean_json(obj, 10))


def _save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    from ..io.atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format=path.suffix[1:])
    plt.close(fig)


def _split(n: int, settings: NPESettings) -> tuple[np.ndarray, np.ndarray]:
    n_test = int(round(settings.test_fraction * n))
    order = np.random.default_rng(settings.seed).permutation(n)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def _dataset_record(path: Path, memory_check: bool = True) -> tuple[Any, dict[str, Any]]:
    from ..io.chunks import array_digest
    from .datasets import load_dataset

    data = load_dataset(path, memory_check=memory_check)
    theta, xod, meta = data.theta, data.xod, data.metadata
    if theta.ndim != 2 or xod.ndim != 4 or len(theta) != len(xod):
        raise ValueError(f"dataset {path}: theta {theta.shape} and xod {xod.shape} are not (n, d) and (n, n_cr, n_hr, n_z)")
    if not (np.all(np.isfinite(theta)) and np.all(np.isfinite(xod))):
        raise ValueError(f"dataset {path}: theta and xod must be finite")
    for k in ("param_names", "prior_low", "prior_high"):
        if k not in meta:
            raise ValueError(f"dataset {path} has no {k!r} attribute: not written by `jaxcluster dataset generate`")
    record = dict(path=str(path), digest=array_digest({"theta": theta, "xod": xod}), n=int(len(theta)),
                  param_names=[str(v) for v in meta["param_names"]], prior_low=[float(v) for v in meta["prior_low"]],
                  prior_high=[float(v) for v in meta["prior_high"]], xod_shape=list(xod.shape[1:]),
                  xod_edges=meta.get("xod_edges"), simulator=(meta.get("metadata") or {}).get("simulator"),
                  area_deg2=meta.get("area_deg2", (meta.get("metadata") or {}).get("area_deg2")))
    return data, record


def train_npe(dataset: str | os.PathLike, out: str | os.PathLike, settings: NPESettings = NPESettings(), *,
              progress: bool = True, say: Callable[[str], None] = lambda text: None,
              memory_check: bool = True) -> TrainedNPE:
    """Train (or resume training) a compressor and posterior on a dataset; write everything to ``out``.

    Args:
        dataset: merged HDF5 file of ``jaxcluster dataset generate``.
        out: output folder (created).
        settings: `NPESettings`.
        progress: tqdm bars over epochs.
        say: receives one line per stage (the CLI prints them).
        memory_check: refuse at once a training set whose estimated memory
            (`engines.memory.estimate_training_bytes`) exceeds the memory available.

    Returns:
        The `TrainedNPE` (also on disk: `load_npe(out)`).

    Raises:
        ValueError: a bad dataset, or ``out`` holds a training with other settings or another dataset.

    Writes ``settings.json`` (first), ``checkpoints/`` (removed at the end),
    ``compressor.eqx``, ``posterior.{eqx,json}``, ``training.json``,
    ``training.png``, ``calibration.json``, ``ranks.png``, ``coverage.png``
    and ``npe.json`` (last).
    """
    from ..io.provenance import provenance

    out = Path(out)
    data, record = _dataset_record(Path(dataset), memory_check)
    n = record["n"]
    from ..engines.memory import check_memory, estimate_training_bytes

    check_memory(estimate_training_bytes(n, record["xod_shape"], len(record["param_names"])),
                 f"training on {n} XODs of {dataset}", enabled=memory_check)
    train, test = _split(n, settings)
    cfg = settings.train_config()
    n_val = max(1, int(round(cfg.validation_fraction * len(train))))
    if len(train) - n_val < cfg.batch_size:
        raise ValueError(f"batch_size = {cfg.batch_size} is outside its allowed range [1, {len(train) - n_val}] "
                         f"(the training pairs after validation, of {n} in {dataset})")
    mine = dict(settings=settings.to_dict(), dataset=record)
    out.mkdir(parents=True, exist_ok=True)
    from ..io.atomic import record_settings

    # the first write; a rerun with other settings or another dataset is refused, naming each difference
    record_settings(out / "settings.json", dict(settings.to_dict(), dataset_sha256=record["digest"]))
    if (out / "npe.json").exists():
        say(f"{out} is already trained on these settings and this dataset")
        return load_npe(out)[0]
    ckpt = out / "checkpoints"
    ckpt.mkdir(exist_ok=True)
    key = jax.random.key(settings.seed)
    k_comp, k_post, k_cal = jax.random.split(key, 3)
    names = tuple(record["param_names"])
    theta, xod = np.asarray(data.theta, np.float64), np.asarray(data.xod, np.float32)

    history: dict[str, Any] = {}
    compressor = None
    if settings.summary == "compressor":
        path = out / "compressor.eqx"
        if path.exists():
            say(f"compressor: done ({path.name})")
            compressor = load_compressor(path)
            history["compressor"] = json.loads((ckpt / "compressor_history.json").read_text()) \
                if (ckpt / "compressor_history.json").exists() else None
        else:
            say(f"compressor: ResNet on {len(train)} XODs of shape {tuple(xod.shape[1:])} …")
            res = train_compressor(xod[train], theta[train], key=k_comp, head="gaussian",
                                   width=settings.compressor_width, hidden=settings.compressor_hidden,
                                   n_blocks=settings.compressor_blocks, max_epochs=settings.compressor_epochs,
                                   patience=settings.patience,
                                   batch_size=min(settings.compressor_batch_size, len(train) // 2),
                                   checkpoint=ckpt / "compressor.ckpt", progress=progress)
            compressor = res.compressor
            history["compressor"] = res.history
            _write_json(ckpt / "compressor_history.json", res.history)
            save_compressor(path, compressor)

    post_path = out / "posterior"
    if post_path.with_suffix(".json").exists() and post_path.with_suffix(".eqx").exists():
        say("posterior: done (posterior.eqx)")
        posterior, _ = load_posterior(post_path)
        history["posterior"] = json.loads((ckpt / "posterior_history.json").read_text()) \
            if (ckpt / "posterior_history.json").exists() else None
    else:
        say(f"summaries of {n} XODs ({settings.summary}) …")
        s_train = _summaries(compressor, xod[train])
        say(f"posterior: {settings.estimator} × {settings.n_members} on {len(train)} pairs, "
            f"summaries of {s_train.shape[1]} numbers …")
        posterior, hist = train_posterior(theta[train], s_train, np.asarray(record["prior_low"]),
                                          np.asarray(record["prior_high"]), cfg,
                                          key=k_post, names=names, progress=progress,
                                          checkpoint=ckpt / "posterior.ckpt")
        history["posterior"] = hist
        _write_json(ckpt / "posterior_history.json", hist)
        save_posterior(post_path, posterior, cfg)
    trained = TrainedNPE(posterior, compressor, tuple(int(v) for v in xod.shape[1:]))

    if history.get("posterior") is not None:
        _write_json(out / "training.json", history)
        _save_figure(_training_figure(history), out / "training.png")

    report = None
    if len(test):
        say(f"calibration on {len(test)} held-out XODs × {settings.n_draws} draws …")
        report = calibration(trained, theta[test], xod[test], key=k_cal, n_draws=settings.n_draws,
                             lo=np.asarray(record["prior_low"]), hi=np.asarray(record["prior_high"]))
        write_calibration(out, report, names)
    manifest = dict(mine, provenance=provenance("npe train", seed=settings.seed, settings=settings.to_dict()),
                    n_train=int(len(train)), n_test=int(len(test)), names=list(names),
                    calibration=None if report is None else _calibration_figures(report, names),
                    products=sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith(".")))
    _write_json(out / "npe.json", manifest)
    import shutil

    shutil.rmtree(ckpt, ignore_errors=True)  # the products are complete: the checkpoints have served
    return trained


def load_npe(out: str | os.PathLike) -> tuple[TrainedNPE, dict[str, Any]]:
    """Read a folder written by `train_npe`: (trained posterior, manifest ``npe.json``).

    Raises:
        ValueError: the folder is not a complete training (names what is missing).
    """
    out = Path(out)
    manifest_path = out / "npe.json"
    if not manifest_path.exists():
        hint = " (the training is unfinished: run the same `npe train` command again)" \
            if (out / "settings.json").exists() else ""
        raise ValueError(f"{out} is not a trained NPE folder: no npe.json{hint}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{manifest_path} is corrupt ({err})") from None
    posterior, _ = load_posterior(out / "posterior")
    compressor = load_compressor(out / "compressor.eqx") if manifest["settings"]["summary"] == "compressor" else None
    shape = tuple(int(v) for v in manifest["dataset"]["xod_shape"])
    if tuple(posterior.names) != tuple(manifest["names"]):
        raise ValueError(f"{out}: posterior names {posterior.names} differ from the manifest's {manifest['names']}")
    return TrainedNPE(posterior, compressor, shape), manifest


def calibration(trained: TrainedNPE, theta: Float[ArrayLike, "n d"], xod: Float[ArrayLike, "n n_cr n_hr n_z"], *,
                key: PRNGKeyArray, n_draws: int = 500, lo: ArrayLike | None = None,
                hi: ArrayLike | None = None) -> dict[str, Any]:
    """SBC ranks, HPD and marginal coverage, and TARP of a trained posterior on test pairs.

    Args:
        trained: the posterior.
        theta: (n, d) true parameters.
        xod: (n, n_cr, n_hr, n_z) their XODs.
        key: PRNG key of the draws.
        n_draws: draws per test XOD.
        lo: (d,) lower corner of the prior box (TARP's rescaling; default the smallest true values).
        hi: (d,) upper corner (default the largest true values).

    Returns:
        ``ranks`` (n, d), ``rank_ks_pvalue`` (d,), ``hpd`` (levels, coverage, ks_pvalue),
        ``marginal`` (levels, coverage (k, d)), ``tarp`` (alpha, ecp, ks_pvalue, max_abs_deviation),
        ``n_test``, ``n_draws``.
    """
    from .diagnostics import expected_coverage, marginal_coverage, rank_histogram, sbc_ranks, tarp

    theta = np.asarray(theta, np.float64)
    xod = np.asarray(xod, np.float32)
    s = jnp.asarray(_summaries(trained.compressor, xod), jnp.float32)
    post = trained.posterior
    keys = jax.random.split(key, len(theta))
    draws = np.concatenate([np.asarray(_draws(post, keys[i:i + 64], s[i:i + 64], n_draws), np.float64)
                            for i in range(0, len(theta), 64)])
    lp_draws = np.concatenate([np.asarray(_log_probs(post, jnp.asarray(draws[i:i + 64], jnp.float32), s[i:i + 64]))
                               for i in range(0, len(theta), 64)])
    lp_true = np.asarray(jax.vmap(post.log_prob)(jnp.asarray(theta, jnp.float32), s))
    ranks = sbc_ranks(theta, draws)
    lo = theta.min(0) if lo is None else np.asarray(lo, np.float64)
    hi = theta.max(0) if hi is None else np.asarray(hi, np.float64)
    return dict(ranks=ranks, rank_ks_pvalue=rank_histogram(ranks, n_draws, n_bins=10)["ks_pvalue"],
                hpd=expected_coverage(lp_true, lp_draws), marginal=marginal_coverage(theta, draws),
                tarp=tarp(theta, draws, lo=lo, hi=hi), n_test=int(len(theta)), n_draws=int(n_draws),
                posterior_std=draws.std(axis=1).mean(0), prior_std=(hi - lo) / np.sqrt(12.0))


def _calibration_figures(report: Mapping[str, Any], names) -> dict[str, Any]:
    """The report's headline numbers (for JSON)."""
    hpd, tp = report["hpd"], report["tarp"]
    return dict(
        n_test=report["n_test"], n_draws=report["n_draws"],
        sbc_rank_ks_pvalue=dict(zip(names, np.asarray(report["rank_ks_pvalue"]).tolist())),
        hpd_ks_pvalue=float(hpd["ks_pvalue"]),
        hpd_max_abs_coverage_error=float(np.max(np.abs(hpd["coverage"] - hpd["levels"]))),
        tarp_ks_pvalue=float(tp["ks_pvalue"]), tarp_max_abs_deviation=float(tp["max_abs_deviation"]),
        posterior_std_over_prior_std=dict(zip(names, (np.asarray(report["posterior_std"])
                                                      / np.asarray(report["prior_std"])).tolist())),
    )


def write_calibration(out: str | os.PathLike, report: Mapping[str, Any], names, *, prefix: str = "") -> dict[str, Path]:
    """Write ``calibration.json`` (headline numbers and the curves), ``ranks.png`` and ``coverage.png`` (with ``prefix``)."""
    from .diagnostics import plot_coverage, plot_rank_histograms

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f"{prefix}{k}.{ext}" for k, ext in (("calibration", "json"), ("ranks", "png"),
                                                           ("coverage", "png"))}
    hpd, tp = report["hpd"], report["tarp"]
    _write_json(paths["calibration"], dict(
        _calibration_figures(report, names), ranks=np.asarray(report["ranks"]),
        hpd=dict(levels=hpd["levels"], coverage=hpd["coverage"]), tarp=dict(alpha=tp["alpha"], ecp=tp["ecp"]),
        marginal=dict(levels=report["marginal"]["levels"], coverage=report["marginal"]["coverage"])))
    _save_figure(plot_rank_histograms(report["ranks"], report["n_draws"], list(names), n_bins=10), paths["ranks"])
    fig = plot_coverage({"HPD regions": (hpd["levels"], hpd["coverage"]), "TARP": (tp["alpha"], tp["ecp"])})
    fig.axes[0].set_title(f"{report['n_test']} test XODs × {report['n_draws']} draws", fontsize=9)
    fig.tight_layout()
    _save_figure(fig, paths["coverage"])
    return paths


def _training_figure(history: Mapping[str, Any]):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    panels = [k for k in ("compressor", "posterior") if history.get(k)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 3.6), squeeze=False)
    for ax, k in zip(axes[0], panels):
        h = history[k]
        tr, va = np.asarray(h["train_loss"], np.float64), np.asarray(h["val_loss"], np.float64)
        tr, va = tr.reshape(len(tr), -1), va.reshape(len(va), -1)
        epochs = np.arange(1, len(tr) + 1)
        for m in range(tr.shape[1]):
            lab = f" (member {m})" if tr.shape[1] > 1 else ""
            ax.plot(epochs, tr[:, m], color=f"C{m}", ls="--", lw=1, label=f"training{lab}")
            ax.plot(epochs, va[:, m], color=f"C{m}", lw=1.5, label=f"validation{lab}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("Gaussian NLL of θ" if k == "compressor" else r"$-\ln q(\theta\,|\,s)$")
        ax.set_title("ResNet compressor" if k == "compressor" else "posterior", fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
