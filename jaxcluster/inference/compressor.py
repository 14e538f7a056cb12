r"""Neural compression of the XOD (seed 001 §3): a ResNet CNN from the (CR, HR, z) diagram to a summary.

**Network.** The XOD (n_cr, n_hr, n_z) is an image of n_cr × n_hr pixels with
the n_z redshift bins as channels. Four ResNet blocks (He et al. 2015) of
three 3×3 convolutions each ("same" padding, GELU; a 1×1 convolution on the
skip path where the width changes) are followed by a three-layer MLP, as in
seed 001 §3. There is no pooling: the diagram is only a few pixels across.

**Normalisation.** Inputs and targets are mapped to [0, 1] by `Normaliser`s
fitted on the training split (per-bin minimum and maximum; the counts go
through log(1 + n) first, as they span orders of magnitude), and both are
stored in the `Compressor` next to the network.

**Heads.** With θ̃ the normalised parameters:

* ``"mse"``: the network outputs θ̂ (d,) trained with the mean squared error,
  i.e. an estimate of the posterior mean E[θ̃ | x] under the training prior
  (seed 001's choice).
* ``"gaussian"``: mean μ (d,) and variances s² = softplus(·) + ε (d,), trained
  with the Gaussian negative log-likelihood
  $\frac12\sum_α [(θ̃_α − μ_α)^2 / s_α^2 + \ln s_α^2]$, whose minimiser is
  the conditional mean *and* variance (a "moment network", Jeffrey & Wandelt 2020).
* ``"gaussian_full"``: mean μ and a full covariance through the Cholesky
  factor L of the precision (positive diagonal), NLL
  $\frac12 \lVert L^T(θ̃ − μ)\rVert^2 − \sum_α \ln L_{αα}$.

Seed 001 Appendix A attributes the slope of its Ω_m rank histogram to the MSE
regression (Lanzieri et al. 2024). The NLL heads also say how well each θ is
measured, and their summary (`Compressor.summary`: μ and ln s) carries that
to the posterior estimator.

**Training.** Adam (optax), mini-batches from a per-epoch permutation, a
whole epoch compiled as one `lax.scan` over batches; early stopping on a
validation split (best parameters kept); a checkpoint after every epoch
(one file, JSON header + `eqx.tree_serialise_leaves`, written to a
temporary name and renamed) from which `train_compressor` resumes after a
kill. Epoch e uses the key `fold_in(key, e)`, so a resumed training follows
the same path as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..io.atomic import read_tree, write_tree

__all__ = [
    "HEADS",
    "Normaliser",
    "ResNetBlock",
    "ResNetCompressor",
    "Compressor",
    "TrainResult",
    "compressor_loss",
    "train_compressor",
    "save_compressor",
    "load_compressor",
]

HEADS = ("mse", "gaussian", "gaussian_full")
_VAR_FLOOR = 1e-6  # normalised units: keeps the NLL finite before the variance has been learnt
_F32 = jnp.float32


class Normaliser(eqx.Module):
    """Affine map of each feature to [0, 1] from its training-set range (optionally after log(1 + x)).

    Attributes:
        low: per-feature minimum over the training set (after the log if `log1p`).
        high: per-feature maximum; features with high = low are mapped to 0.
        log1p: apply log(1 + x) first (counts).
    """

    low: Float[Array, "*feature"]
    high: Float[Array, "*feature"]
    log1p: bool = eqx.field(static=True)

    @classmethod
    def fit(cls, x: Float[ArrayLike, "n *feature"], log1p: bool = False) -> Normaliser:
        """Fit on samples x (leading axis: samples).

        Args:
            x: (n, ...) training samples.
            log1p: transform with log(1 + x) first (x ≥ 0).

        Returns:
            The fitted `Normaliser` (float32).
        """
        x = np.asarray(x, dtype=np.float64)
        if x.ndim < 1 or x.shape[0] < 1:
            raise ValueError(f"x must have a leading sample axis with >= 1 sample, got shape {x.shape}")
        if log1p:
            if np.any(x < 0):
                raise ValueError("x must be >= 0 for log1p (counts)")
            x = np.log1p(x)
        return cls(jnp.asarray(x.min(axis=0), _F32), jnp.asarray(x.max(axis=0), _F32), bool(log1p))

    def _scale(self):
        span = self.high - self.low
        return jnp.where(span > 0, span, jnp.ones_like(span))

    def __call__(self, x: Float[ArrayLike, "*batch_feature"]) -> Float[Array, "*batch_feature"]:
        """Normalise x (a sample, or a batch with leading axes) to [0, 1] on the training range."""
        x = jnp.asarray(x, _F32)
        if self.log1p:
            x = jnp.log1p(x)
        lead = x.ndim - self.low.ndim
        return (x - self.low.reshape((1,) * lead + self.low.shape)) / self._scale().reshape((1,) * lead + self.low.shape)

    def inverse(self, y: Float[ArrayLike, "*batch_feature"]) -> Float[Array, "*batch_feature"]:
        """Inverse of `__call__`."""
        y = jnp.asarray(y, _F32)
        lead = y.ndim - self.low.ndim
        x = y * self._scale().reshape((1,) * lead + self.low.shape) + self.low.reshape((1,) * lead + self.low.shape)
        return jnp.expm1(x) if self.log1p else x

    def scale(self) -> Float[Array, "*feature"]:
        """d(original)/d(normalised) for a linear normaliser (to convert variances); needs log1p=False."""
        if self.log1p:
            raise ValueError("scale() is only defined for a linear normaliser (log1p=False)")
        return self._scale()


class ResNetBlock(eqx.Module):
    """Three 3×3 convolutions with a residual connection: act(x' + conv₃(act(conv₂(act(conv₁ x))))).

    x' is x, or a 1×1 convolution of x when the number of channels changes.
    """

    convs: tuple[eqx.nn.Conv2d, eqx.nn.Conv2d, eqx.nn.Conv2d]
    skip: eqx.nn.Conv2d | None

    def __init__(self, in_channels: int, out_channels: int, *, key: PRNGKeyArray):
        k = jax.random.split(key, 4)
        chans = (in_channels, out_channels, out_channels, out_channels)
        self.convs = tuple(eqx.nn.Conv2d(chans[i], chans[i + 1], 3, padding="SAME", key=k[i], dtype=_F32)
                           for i in range(3))
        self.skip = None if in_channels == out_channels else eqx.nn.Conv2d(
            in_channels, out_channels, 1, key=k[3], dtype=_F32)

    def __call__(self, x: Float[Array, "c_in h w"]) -> Float[Array, "c_out h w"]:
        h = x
        for i, conv in enumerate(self.convs):
            h = conv(h)
            if i < 2:
                h = jax.nn.gelu(h)
        return jax.nn.gelu(h + (x if self.skip is None else self.skip(x)))


def _n_out(head: str, d: int) -> int:
    return {"mse": d, "gaussian": 2 * d, "gaussian_full": d + d * (d + 1) // 2}[head]


class ResNetCompressor(eqx.Module):
    """Seed 001's compressor network: 4 ResNet blocks of 3 convolutions, then a 3-layer MLP.

    Attributes:
        blocks: the ResNet blocks.
        mlp: dense layers (2 hidden).
        n_param: d, the number of parameters.
        head: ``"mse"``, ``"gaussian"`` or ``"gaussian_full"`` (sets the output size).
    """

    blocks: tuple[ResNetBlock, ...]
    mlp: eqx.nn.MLP
    n_param: int = eqx.field(static=True)
    head: str = eqx.field(static=True)

    def __init__(self, xod_shape: tuple[int, int, int], n_param: int, head: str = "mse", width: int = 32,
                 hidden: int = 128, n_blocks: int = 4, *, key: PRNGKeyArray):
        """Args:
            xod_shape: (n_cr, n_hr, n_z) of the input XOD.
            n_param: number of parameters d, ≥ 1.
            head: output head, one of `HEADS`.
            width: channels of the ResNet blocks.
            hidden: width of the MLP's two hidden layers.
            n_blocks: ResNet blocks (seed 001: 4).
            key: PRNG key for the initial weights.
        """
        if head not in HEADS:
            raise ValueError(f"head = {head!r} is not allowed; choose from {HEADS}")
        if len(xod_shape) != 3 or min(xod_shape) < 1:
            raise ValueError(f"xod_shape must be (n_cr, n_hr, n_z) of positive sizes, got {xod_shape}")
        for name, v in (("n_param", n_param), ("width", width), ("hidden", hidden), ("n_blocks", n_blocks)):
            if not (isinstance(v, int) and v >= 1):
                raise ValueError(f"{name} = {v!r} is outside its allowed range: an integer >= 1")
        n_cr, n_hr, n_z = xod_shape
        kb, km = jax.random.split(key)
        kbs = jax.random.split(kb, n_blocks)
        self.blocks = tuple(ResNetBlock(n_z if i == 0 else width, width, key=kbs[i]) for i in range(n_blocks))
        self.mlp = eqx.nn.MLP(width * n_cr * n_hr, _n_out(head, n_param), hidden, depth=2,
                              activation=jax.nn.gelu, key=km, dtype=_F32)
        self.n_param, self.head = int(n_param), head

    def __call__(self, x: Float[Array, "n_cr n_hr n_z"]) -> Float[Array, " n_out"]:
        """Raw head outputs for one normalised XOD."""
        h = jnp.moveaxis(x, -1, 0)  # redshift bins as channels: (n_z, n_cr, n_hr)
        for block in self.blocks:
            h = block(h)
        return self.mlp(h.reshape(-1))


def _tril_indices(d: int):
    return np.tril_indices(d)


def _gaussian_parts(head: str, out: Float[Array, " n_out"], d: int):
    """(μ, s², None) for "gaussian" or (μ, None, L) (precision Cholesky) for "gaussian_full"."""
    mu = out[:d]
    if head == "gaussian":
        return mu, jax.nn.softplus(out[d:]) + _VAR_FLOOR, None
    rows, cols = _tril_indices(d)
    raw = jnp.zeros((d, d), out.dtype).at[rows, cols].set(out[d:])
    diag = jax.nn.softplus(jnp.diagonal(raw)) + 1e-3
    L = jnp.tril(raw, -1) + jnp.diag(diag)
    return mu, None, L


def compressor_loss(network: ResNetCompressor, x: Float[Array, "batch n_cr n_hr n_z"],
                    y: Float[Array, "batch d"]) -> Float[Array, ""]:
    """Mean loss over a batch of normalised (XOD, θ̃): MSE or Gaussian NLL (module docstring).

    Args:
        network: the `ResNetCompressor`.
        x: (batch, n_cr, n_hr, n_z) normalised XODs.
        y: (batch, d) normalised parameters.

    Returns:
        Scalar loss (per sample; the NLL without its constant d ln(2π)/2).
    """
    out = jax.vmap(network)(x)
    d = network.n_param
    if network.head == "mse":
        return jnp.mean(jnp.sum((out - y) ** 2, axis=-1))

    def nll(o, t):
        mu, var, L = _gaussian_parts(network.head, o, d)
        r = t - mu
        if var is not None:
            return 0.5 * jnp.sum(r**2 / var + jnp.log(var))
        z = L.T @ r
        return 0.5 * jnp.sum(z**2) - jnp.sum(jnp.log(jnp.diagonal(L)))

    return jnp.mean(jax.vmap(nll)(out, y))


class Compressor(eqx.Module):
    """A trained compressor: network and the two normalisers (XOD → [0, 1], θ → [0, 1]).

    Attributes:
        network: `ResNetCompressor`.
        x_norm: XOD normaliser (log1p, per bin).
        theta_norm: parameter normaliser (linear, per parameter).
    """

    network: ResNetCompressor
    x_norm: Normaliser
    theta_norm: Normaliser

    @property
    def head(self) -> str:
        return self.network.head

    def predict(self, xod: Float[ArrayLike, "n_cr n_hr n_z"]) -> tuple[Float[Array, " d"], Float[Array, "d d"] | None]:
        """Estimate of θ and (NLL heads) its covariance, in θ's units, for one XOD.

        Args:
            xod: (n_cr, n_hr, n_z) counts.

        Returns:
            (mean (d,), covariance (d, d) or None for the MSE head).
        """
        out = self.network(self.x_norm(xod))
        d = self.network.n_param
        s = self.theta_norm.scale()
        if self.head == "mse":
            return self.theta_norm.inverse(out), None
        mu, var, L = _gaussian_parts(self.head, out, d)
        cov_n = jnp.diag(var) if var is not None else jnp.linalg.inv(L @ L.T)
        return self.theta_norm.inverse(mu), cov_n * s[:, None] * s[None, :]

    def summary(self, xod: Float[ArrayLike, "n_cr n_hr n_z"]) -> Float[Array, " k"]:
        """The compressed statistic fed to a posterior estimator, in normalised units.

        ``"mse"``: θ̂ (d,); ``"gaussian"``: (μ, ln s) (2d,); ``"gaussian_full"``: (μ, ln √diag Σ) (2d,).

        Args:
            xod: (n_cr, n_hr, n_z) counts.

        Returns:
            (k,) summary.
        """
        out = self.network(self.x_norm(xod))
        d = self.network.n_param
        if self.head == "mse":
            return out
        mu, var, L = _gaussian_parts(self.head, out, d)
        if var is None:
            var = jnp.diagonal(jnp.linalg.inv(L @ L.T))
        return jnp.concatenate([mu, 0.5 * jnp.log(var)])


class TrainResult(NamedTuple):
    """What `train_compressor` returns.

    Attributes:
        compressor: the `Compressor` with the best validation loss.
        history: per-epoch ``train_loss`` and ``val_loss`` lists, ``best_epoch``, ``stopped_early``.
    """

    compressor: Compressor
    history: dict


def _config(xod_shape, n_param, head, width, hidden, n_blocks, lr, batch_size, val_fraction, patience, seed_info):
    return dict(xod_shape=list(xod_shape), n_param=int(n_param), head=head, width=int(width), hidden=int(hidden),
                n_blocks=int(n_blocks), learning_rate=float(lr), batch_size=int(batch_size),
                val_fraction=float(val_fraction), patience=int(patience), data=seed_info)


def _read_header(path: Path) -> dict:
    with open(path, "rb") as f:
        return json.loads(f.readline().decode())


def _read_tree(path: Path, like):
    return read_tree(path, like)[1]


@eqx.filter_jit
def _run_epoch(params, opt_state, X, Y, key, static, learning_rate, n_batches, batch_size):
    """One epoch as one compiled program: a `lax.scan` of Adam steps over a random batch order.

    At module level (static settings as arguments) so that repeated or resumed
    trainings with the same settings reuse the compilation.
    """
    optim = optax.adam(learning_rate)
    n_train = X.shape[0]
    idx = jax.random.permutation(key, n_train)[: n_batches * batch_size].reshape(n_batches, batch_size)

    def step(carry, b):
        p, s = carry
        loss, g = eqx.filter_value_and_grad(lambda pp: compressor_loss(eqx.combine(pp, static), X[b], Y[b]))(p)
        upd, s = optim.update(g, s, p)
        return (eqx.apply_updates(p, upd), s), loss

    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), idx)
    return params, opt_state, jnp.mean(losses)


@eqx.filter_jit
def _val_loss(params, Xv, Yv, static):
    return compressor_loss(eqx.combine(params, static), Xv, Yv)


def train_compressor(
    xod: Float[ArrayLike, "n n_cr n_hr n_z"],
    theta: Float[ArrayLike, "n d"],
    *,
    key: PRNGKeyArray,
    head: str = "mse",
    width: int = 32,
    hidden: int = 128,
    n_blocks: int = 4,
    learning_rate: float = 1e-3,
    batch_size: int = 128,
    max_epochs: int = 200,
    patience: int = 20,
    val_fraction: float = 0.1,
    checkpoint: str | os.PathLike | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a compressor on (XOD, θ) pairs: Adam, compiled epochs, early stopping, resumable checkpoints.

    Args:
        xod: (n, n_cr, n_hr, n_z) XODs (counts).
        theta: (n, d) parameters.
        key: PRNG key (initial weights, validation split, batch order).
        head: ``"mse"``, ``"gaussian"`` or ``"gaussian_full"`` (module docstring).
        width: ResNet channels.
        hidden: MLP hidden width.
        n_blocks: ResNet blocks.
        learning_rate: Adam step size.
        batch_size: samples per step (the last partial batch of an epoch is dropped).
        max_epochs: maximum number of epochs.
        patience: stop after this many epochs without a better validation loss.
        val_fraction: fraction of the samples held out for validation, in (0, 0.5].
        checkpoint: file written after every epoch; if it exists (same settings and
            data size) training resumes from it.
        progress: tqdm bar over epochs.

    Returns:
        `TrainResult(compressor, history)`.

    Raises:
        ValueError: bad shapes or settings, or a checkpoint made with other settings.
    """
    from tqdm.auto import tqdm

    xod = np.asarray(xod, dtype=np.float32)
    theta = np.asarray(theta, dtype=np.float32)
    if xod.ndim != 4 or theta.ndim != 2 or xod.shape[0] != theta.shape[0]:
        raise ValueError(f"xod must be (n, n_cr, n_hr, n_z) and theta (n, d) with the same n, got {xod.shape}, {theta.shape}")
    if not 0 < val_fraction <= 0.5:
        raise ValueError(f"val_fraction = {val_fraction} is outside its allowed range (0, 0.5]")
    n = xod.shape[0]
    n_val = max(1, int(round(val_fraction * n)))
    n_train = n - n_val
    if not (isinstance(batch_size, int) and 1 <= batch_size <= n_train):
        raise ValueError(f"batch_size = {batch_size!r} is outside its allowed range [1, n_train = {n_train}]")
    for name, v in (("max_epochs", max_epochs), ("patience", patience)):
        if not (isinstance(v, int) and v >= 1):
            raise ValueError(f"{name} = {v!r} is outside its allowed range: an integer >= 1")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate = {learning_rate} is outside its allowed range (0, inf)")

    k_init, k_split, k_epoch = jax.random.split(key, 3)
    order = np.asarray(jax.random.permutation(k_split, n))
    tr, va = order[n_val:], order[:n_val]
    x_norm = Normaliser.fit(xod[tr], log1p=True)
    theta_norm = Normaliser.fit(theta[tr])
    X, Y = x_norm(xod[tr]), theta_norm(theta[tr])
    Xv, Yv = x_norm(xod[va]), theta_norm(theta[va])

    network = ResNetCompressor(xod.shape[1:], theta.shape[1], head, width, hidden, n_blocks, key=k_init)
    params, static = eqx.partition(network, eqx.is_array)
    opt_state = optax.adam(learning_rate).init(params)
    n_batches = n_train // batch_size

    config = _config(xod.shape[1:], theta.shape[1], head, width, hidden, n_blocks, learning_rate, batch_size,
                     val_fraction, patience, dict(n=int(n)))
    state = dict(epoch=0, best_val=math.inf, best_epoch=-1, bad_epochs=0, train_loss=[], val_loss=[])
    best = params
    ckpt = None if checkpoint is None else Path(checkpoint)
    if ckpt is not None and ckpt.exists():
        header = _read_header(ckpt)
        if header["config"] != config:
            raise ValueError(f"checkpoint {ckpt} was made with other settings {header['config']} != {config}")
        state = header["state"]
        params, opt_state, best = _read_tree(ckpt, (params, opt_state, best))

    with tqdm(total=max_epochs, initial=state["epoch"], unit="epoch", disable=not progress) as bar:
        while state["epoch"] < max_epochs and state["bad_epochs"] < patience:
            e = state["epoch"]
            # optax's Adam bias correction raises an int32 count to float powers, which
            # strict dtype promotion (our tests' setting) rejects: trace it with standard promotion.
            with jax.numpy_dtype_promotion("standard"):
                params, opt_state, tl = _run_epoch(params, opt_state, X, Y, jax.random.fold_in(k_epoch, e), static,
                                                   float(learning_rate), n_batches, batch_size)
            vl = float(_val_loss(params, Xv, Yv, static))
            state["train_loss"].append(float(tl))
            state["val_loss"].append(vl)
            if vl < state["best_val"]:
                state.update(best_val=vl, best_epoch=e, bad_epochs=0)
                best = params
            else:
                state["bad_epochs"] += 1
            state["epoch"] = e + 1
            if ckpt is not None:
                write_tree(ckpt, dict(config=config, state=state), (params, opt_state, best))
            bar.set_postfix(train=f"{tl:.4g}", val=f"{vl:.4g}")
            bar.update(1)
    history = dict(train_loss=state["train_loss"], val_loss=state["val_loss"], best_epoch=state["best_epoch"],
                   stopped_early=state["bad_epochs"] >= patience)
    return TrainResult(Compressor(eqx.combine(best, static), x_norm, theta_norm), history)


def save_compressor(path: str | os.PathLike, compressor: Compressor) -> None:
    """Write a compressor (JSON header with its architecture + `eqx.tree_serialise_leaves`)."""
    net = compressor.network
    header = dict(
        xod_shape=list(compressor.x_norm.low.shape), n_param=net.n_param, head=net.head,
        width=net.blocks[0].convs[0].out_channels, hidden=net.mlp.width_size, n_blocks=len(net.blocks),
    )
    write_tree(Path(path), header, compressor)


_HEADER_INTS = {"n_param": (1, 10_000), "width": (1, 100_000), "hidden": (1, 100_000), "n_blocks": (1, 1_000)}


def _check_compressor_header(path: Path, h) -> None:
    from ..io.checks import LoadError

    if not isinstance(h, dict):
        raise LoadError(f"{path}: the header is not a JSON object: not a compressor file")
    missing = [k for k in ("xod_shape", "head", *_HEADER_INTS) if k not in h]
    if missing:
        raise LoadError(f"{path}: header keys {missing} missing: not a compressor written by save_compressor")
    shape = h["xod_shape"]
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(v, int) and 1 <= v <= 10_000 for v in shape)):
        raise LoadError(f"{path}: header xod_shape = {shape!r} must be three integers in [1, 10000]")
    if h["head"] not in HEADS:
        raise LoadError(f"{path}: header head = {h['head']!r} is not one of {HEADS}")
    for k, (lo, hi) in _HEADER_INTS.items():
        v = h[k]
        if not (isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi):
            raise LoadError(f"{path}: header {k} = {v!r} is outside its allowed range: an integer in [{lo}, {hi}]")


def load_compressor(path: str | os.PathLike) -> Compressor:
    """Read a compressor written by `save_compressor`, checked.

    Raises:
        ValueError: the file is missing, not a compressor (header keys, types and ranges), truncated,
            shaped for another architecture, or holds non-finite weights; the message names the file.
    """
    from ..io.checks import LoadError

    path = Path(path)
    if not path.is_file():
        raise LoadError(f"compressor {path} does not exist")
    try:
        h = _read_header(path)
    except (ValueError, UnicodeDecodeError) as err:
        raise LoadError(f"{path}: the first line is not a JSON header ({type(err).__name__}): not a compressor "
                        "file") from None
    _check_compressor_header(path, h)
    net = ResNetCompressor(tuple(h["xod_shape"]), h["n_param"], h["head"], h["width"], h["hidden"], h["n_blocks"],
                           key=jax.random.key(0))
    shape, d = tuple(h["xod_shape"]), h["n_param"]
    like = Compressor(net, Normaliser(jnp.zeros(shape, _F32), jnp.zeros(shape, _F32), True),
                      Normaliser(jnp.zeros((d,), _F32), jnp.zeros((d,), _F32), False))
    comp = _read_tree(path, like)
    bad = [i for i, leaf in enumerate(jax.tree.leaves(eqx.filter(comp, eqx.is_inexact_array)))
           if not bool(jnp.all(jnp.isfinite(leaf)))]
    if bad:
        raise LoadError(f"{path}: {len(bad)} weight array(s) hold NaN or inf (a diverged or damaged compressor)")
    return comp
