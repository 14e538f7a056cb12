"""Minibatch training of a field network with early stopping and checkpoints that survive a kill.

Shared by the mass-map networks (`jaxcluster.fields.unet`, `jaxcluster.fields.diffusion`):
the model and its loss differ, the loop does not. Adam (optax) with global-norm
clipping; every ``eval_every`` steps the validation loss is computed with a
fixed key (so it is comparable between evaluations), the best model is kept,
and training stops after ``patience`` evaluations without improvement. The
whole state (parameters, optimiser state, best model, counters, PRNG key) is
written atomically to ``checkpoint`` at each evaluation; a rerun with the same
path resumes where the kill left it, and a finished run returns its best model
at once.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from ..io.atomic import read_tree, write_tree

__all__ = ["FitConfig", "FitResult", "fit"]


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Settings of `fit`.

    Attributes:
        max_steps: optimiser steps at most.
        batch_size: samples per step (drawn without replacement within an epoch).
        learning_rate: Adam step size.
        clip_norm: global gradient-norm clip.
        eval_every: steps between validation evaluations (and checkpoints).
        patience: evaluations without improvement before stopping.
        seed: PRNG seed of the batches and of the loss's own randomness.
    """

    max_steps: int = 2000
    batch_size: int = 16
    learning_rate: float = 1e-3
    clip_norm: float = 1.0
    eval_every: int = 50
    patience: int = 10
    seed: int = 0

    def __post_init__(self):
        from ..params import check_scalar

        for name in ("max_steps", "batch_size", "eval_every", "patience"):
            check_scalar(name, getattr(self, name), 1, 2**31 - 1, integer=True)
        for name in ("learning_rate", "clip_norm"):
            check_scalar(name, getattr(self, name), 0.0, 1e6, low_open=True)
        check_scalar("seed", self.seed, 0, 2**32 - 1, integer=True)


class FitResult(eqx.Module):
    """Outcome of `fit`.

    Attributes:
        model: the model with the best validation loss.
        train_loss: (n_eval,) mean training loss over each evaluation interval.
        valid_loss: (n_eval,) validation loss at each evaluation.
        steps: optimiser steps taken.
        stopped_early: whether patience ran out before ``max_steps``.
    """

    model: Any
    train_loss: np.ndarray
    valid_loss: np.ndarray
    steps: int
    stopped_early: bool


def _n_samples(data) -> int:
    sizes = {jnp.shape(leaf)[0] for leaf in jax.tree.leaves(data)}
    if len(sizes) != 1:
        raise ValueError(f"every array of a data set must share its leading (sample) axis, got sizes {sorted(sizes)}")
    return sizes.pop()


def _save(path: Path, tree, meta: dict) -> None:
    # One file, written atomically: the counters and losses (JSON header) always match the arrays.
    write_tree(path, meta, tree)


def _optimiser(learning_rate: float, clip_norm: float) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(clip_norm), optax.adam(learning_rate))


# Module level, with the loss and the optimiser settings as static arguments: repeated `fit`
# calls with the same loss function (a resumed run, a test) reuse the compiled step.
@eqx.filter_jit
def _train_step(params, static, opt_state, batch, key, loss_fn, opt_settings):
    def loss_of(p):
        return loss_fn(eqx.combine(p, static), batch, key)

    loss, grads = jax.value_and_grad(loss_of)(params)
    # optax's bias correction mixes a Python float and an int32 counter: allowed under strict promotion.
    with jax.numpy_dtype_promotion("standard"):
        updates, opt_state = _optimiser(*opt_settings).update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


@eqx.filter_jit
def _valid_loss(params, static, valid, key, loss_fn):
    return loss_fn(eqx.combine(params, static), valid, key)


def fit(
    model: PyTree,
    loss_fn: Callable[[PyTree, PyTree, PRNGKeyArray], Float[Array, ""]],
    train: PyTree,
    valid: PyTree,
    config: FitConfig = FitConfig(),
    *,
    checkpoint: str | os.PathLike | None = None,
    progress: bool = False,
) -> FitResult:
    """Train ``model`` on ``loss_fn`` with Adam, early stopping and resumable checkpoints.

    Args:
        model: an Equinox module (its inexact arrays are trained).
        loss_fn: ``loss_fn(model, batch, key) -> scalar``, the mean loss of a
            batch (a pytree of arrays with a leading sample axis); ``key`` feeds
            the loss's own randomness (noise levels, dropped views).
        train: training set, a pytree of arrays sharing their leading axis.
        valid: validation set, same structure (evaluated in one batch).
        config: optimiser and stopping settings. A resumed run may raise
            ``max_steps``; the optimiser settings must be those of the checkpoint.
        checkpoint: file to save to and resume from (``.eqx``, `jaxcluster.io.atomic.write_tree`: a JSON
            header with the counters and losses, then the arrays; atomic); default none. It records the
            settings and the digests of the initial model and of the data; a resume with others is refused,
            naming them.
        progress: show a tqdm bar.

    Returns:
        `FitResult` with the best-validation model and the loss history.
    """
    n_train = _n_samples(train)
    _n_samples(valid)
    batch_size = min(config.batch_size, n_train)
    opt_settings = (config.learning_rate, config.clip_norm)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt_state = _optimiser(*opt_settings).init(params)
    key = jax.random.key(config.seed)
    valid_key = jax.random.fold_in(key, 2**31 - 1)
    state = (params, opt_state, params, jnp.asarray(np.inf, jnp.float32), jax.random.key_data(key))
    meta = {"step": 0, "n_bad": 0, "train_loss": [], "valid_loss": []}
    path = None if checkpoint is None else Path(checkpoint)
    if path is not None:
        from ..io.chunks import pytree_digest

        # what a checkpoint must have been made with (max_steps may be raised on a resume)
        settings = {k: v for k, v in dataclasses.asdict(config).items() if k != "max_steps"}
        meta["ident"] = dict(config=settings, model=pytree_digest(model), train=pytree_digest(train),
                             valid=pytree_digest(valid))
    if path is not None and path.exists():
        ident = meta["ident"]
        meta, state = read_tree(path, state)  # ValueError naming the file if it is not a whole checkpoint
        theirs = meta.get("ident", {})
        diff = [k for k in ident if theirs.get(k) != ident[k]]
        diff += [f"config.{k}" for k in ident["config"] if theirs.get("config", {}).get(k) != ident["config"][k]]
        if diff:
            raise ValueError(f"checkpoint {path} was made with another {', '.join(sorted(set(diff)))}: "
                             "use another checkpoint file, or remove it to start again")

    params, opt_state, best, best_loss, key_data = state
    key = jax.random.wrap_key_data(key_data)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.max_steps, initial=meta["step"])
    interval: list[float] = []

    def finished():
        return meta["n_bad"] >= config.patience or meta["step"] >= config.max_steps

    while not finished():
        key, k_perm = jax.random.split(key)
        perm = np.asarray(jax.random.permutation(k_perm, n_train))
        for start in range(0, n_train - batch_size + 1, batch_size):
            key, k_step = jax.random.split(key)
            batch = jax.tree.map(lambda a: a[perm[start:start + batch_size]], train)
            params, opt_state, loss = _train_step(params, static, opt_state, batch, k_step, loss_fn, opt_settings)
            interval.append(float(loss))
            meta["step"] += 1
            if bar is not None:
                bar.update(1)
            if meta["step"] % config.eval_every == 0 or meta["step"] == config.max_steps:
                v = float(_valid_loss(params, static, valid, valid_key, loss_fn))
                meta["train_loss"].append(float(np.mean(interval)))
                meta["valid_loss"].append(v)
                interval = []
                if v < float(best_loss):
                    best, best_loss, meta["n_bad"] = params, jnp.asarray(v, jnp.float32), 0
                else:
                    meta["n_bad"] += 1
                if path is not None:
                    _save(path, (params, opt_state, best, best_loss, jax.random.key_data(key)), meta)
                if finished():
                    break
    if bar is not None:
        bar.close()
    return FitResult(
        model=eqx.combine(best, static),
        train_loss=np.asarray(meta["train_loss"]),
        valid_loss=np.asarray(meta["valid_loss"]),
        steps=meta["step"],
        stopped_early=meta["n_bad"] >= config.patience,
    )
