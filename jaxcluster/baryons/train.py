r"""Staged eLDL training (seed 001 Fig. 1) with checkpoints that survive a kill.

Stages, each resumable:

1. ``base_n_e``, ``base_T``: the base LDL parameters Θ_fid for n_e and T on
   the CV-like set at z = 0.21, full-batch L-BFGS (optax, backtracking line
   search) from a thresholded power-law warm start (`warm_start`);
   the iterate with the best validation loss is kept.
2. ``net_n_e``: the n_e hypernetwork's MLP on the LH-like set at
   z = 0.21 (Adam, minibatches of boxes, early stopping); n_e has no z
   dependence (seed 001 §2.2.2). The hypernetworks are anchored,
   δΘ(θ_fid) = δΘ_0 (`eldl.Hypernetwork`): the small LH boxes teach the
   θ dependence, never the fiducial weights.
3. ``net_T_<z>``: one T hypernetwork per training redshift of the LH-like
   set, each starting from the z = 0.21 one; its δΘ_0 is the change of the
   warm-start power law of T from z = 0.21 to its z on the CV boxes.

The losses are seed 001 eqs. (5)–(6) (`jaxcluster.baryons.loss`); the
train/validation split is spatial: the last `validation_fraction` of every
box along x is never trained on. Data are directories of `save_run` files,
``<set>/<sample>/z<z>.h5`` with fields ``n_e_cm3``, ``T_keV`` and ``rho_dm``
(what `generate_training_set` writes, and what real CAMELS snapshots give
through `jaxcluster.io.voxelise_gas` plus a PM restart).

Checkpoints: ``<out>/checkpoints/<stage>.eqx`` (`jaxcluster.io.atomic.write_tree`:
a JSON header with the stage's loss history, then the parameters, optimiser
state, best iterate and counters), written atomically every
`checkpoint_every` steps; a finished stage leaves ``<stage>.done.eqx`` (its
header holds the stage's metrics: weights and metrics are one file) and is
skipped on a rerun. ``<out>/settings.json``, the first write, records the
settings, the structure and initial weights' digest of the model and the
SHA-256 of every training file used; a rerun with anything else is refused,
naming the difference. A kill at any point resumes to the same bits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float

from ..clihelp import odd_positive, seed_type
from ..cosmology import RHO_CRIT0_MSUN_H2_MPC3, Cosmology
from ..io.atomic import read_tree, record_settings, write_tree
from ..io.chunks import pytree_digest
from ..io.runs import load_run
from ..params import PARAM_NAMES, ThetaSim
from .eldl import ExtendedLDL, ldl_params
from .ldl import GRADIENTS, LDL, ActivationLayer, paint_one_plus_delta
from .loss import T_loss, n_e_loss, slab_mask
from .synthetic import _RHO_TO_NE
from .training_sets import check_complete

__all__ = [
    "TrainingConfig", "TrainingBoxes", "load_training_boxes", "mean_electron_density", "warm_start", "fit_activation",
    "train_eldl", "evaluate_eldl",
]


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Settings of `train_eldl` (defaults: the shipped weights' run)."""

    base_redshift: float = 0.21
    base_iterations: int = 60
    hyper_epochs: int = 40
    learning_rate: float = 3e-3
    batch_size: int = 4
    patience: int = 8
    validation_fraction: float = 0.2
    smoothing_n: float = 1.0
    checkpoint_every: int = 5
    seed: int = 0

    def __post_init__(self):
        for name in ("base_iterations", "hyper_epochs", "batch_size", "patience", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} = {getattr(self, name)} must be >= 1")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction = {self.validation_fraction} must lie in (0, 1)")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate = {self.learning_rate} must be > 0")


class TrainingBoxes(eqx.Module):
    """Boxes of one redshift, stacked on a leading axis.

    Attributes:
        pos: (n_box, n_ptcl, 3) dark-matter positions [h⁻¹ Mpc].
        n_e: (n_box, n, n, n) electron density in units of the cosmic mean.
        T_keV: (n_box, n, n, n) mass-weighted temperature [keV].
        rho_dm: (n_box, n, n, n) dark-matter density in units of its mean.
        theta: θ_sim with fields of shape (n_box,).
        z: (n_box,) redshifts.
        box_size, mesh_shape: geometry (static, shared).
        names: sample names (static).
    """

    pos: Float[Array, "n_box n_ptcl 3"]
    n_e: Float[Array, "n_box nx ny nz"]
    T_keV: Float[Array, "n_box nx ny nz"]
    rho_dm: Float[Array, "n_box nx ny nz"]
    theta: ThetaSim
    z: Float[Array, " n_box"]
    box_size: tuple[float, float, float] = eqx.field(static=True)
    mesh_shape: tuple[int, int, int] = eqx.field(static=True)
    names: tuple[str, ...] = eqx.field(static=True)

    @property
    def n_box(self) -> int:
        return self.pos.shape[0]

    def take(self, idx) -> TrainingBoxes:
        idx = jnp.asarray(idx)
        return eqx.tree_at(
            lambda b: (b.pos, b.n_e, b.T_keV, b.rho_dm, b.theta, b.z),
            self,
            (self.pos[idx], self.n_e[idx], self.T_keV[idx], self.rho_dm[idx],
             jax.tree.map(lambda v: v[idx], self.theta), self.z[idx]),
        )


def mean_electron_density(cosmo: Cosmology | None = None) -> float:
    """Cosmic mean comoving n_e = Ω_b ρ_c0 h² / (μ_e m_p) [cm⁻³] (2.18×10⁻⁷ for CAMELS)."""
    cosmo = Cosmology(Omega_m=0.3, sigma_8=0.8) if cosmo is None else cosmo
    return float(cosmo.Omega_b * RHO_CRIT0_MSUN_H2_MPC3 * cosmo.h**2 * _RHO_TO_NE)


def _training_files(data_dir: str | os.PathLike, z: float, max_boxes: int | None) -> list[Path]:
    files = sorted(Path(data_dir).glob(f"*/z{z:.3f}.h5"), key=lambda p: (len(p.parent.name), p.parent.name))
    return files if max_boxes is None else files[:max_boxes]


def training_files_digest(data_dir: str | os.PathLike, redshifts: Iterable[float], max_boxes: int | None = None) -> str:
    """SHA-256 over the names and contents of the files `load_training_boxes` reads at these redshifts."""
    h = hashlib.sha256()
    for z in sorted(set(float(z) for z in redshifts)):
        for path in _training_files(data_dir, z, max_boxes):
            h.update(f"{path.parent.name}/{path.name}|".encode())
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    h.update(block)
    return h.hexdigest()


def load_training_boxes(data_dir: str | os.PathLike, z: float, max_boxes: int | None = None) -> TrainingBoxes:
    """Read every ``<data_dir>/<sample>/z<z:.3f>.h5`` into stacked float32 arrays.

    Raises:
        ValueError: no file at that redshift, or boxes of different geometry.
    """
    files = _training_files(data_dir, z, max_boxes)
    if not files:
        raise ValueError(f"no training files {data_dir}/*/z{z:.3f}.h5 (is z = {z} one of the set's redshifts?)")
    n_e_mean = mean_electron_density()
    cols = {k: [] for k in ("pos", "n_e", "T", "rho", "theta", "z")}
    geometry = None
    for path in files:
        run = load_run(path)
        for need in ("n_e_cm3", "T_keV", "rho_dm"):
            if need not in run.fields:
                raise ValueError(f"{path} has no field {need!r}")
        g = (run.config.box_size, tuple(np.shape(run.fields["n_e_cm3"])))
        if geometry is None:
            geometry = g
        elif g != geometry:
            raise ValueError(f"{path}: geometry {g} differs from the first file's {geometry}")
        rho = np.asarray(run.fields["rho_dm"], dtype=np.float32)
        cols["pos"].append(np.asarray(run.pos, dtype=np.float32))
        cols["n_e"].append(np.asarray(run.fields["n_e_cm3"], dtype=np.float32) / n_e_mean)
        cols["T"].append(np.asarray(run.fields["T_keV"], dtype=np.float32))
        cols["rho"].append(rho / rho.mean())
        cols["theta"].append(np.asarray(run.theta.to_array(), dtype=np.float64))
        cols["z"].append(run.z)
    theta = np.stack(cols["theta"])
    return TrainingBoxes(
        pos=jnp.asarray(np.stack(cols["pos"])), n_e=jnp.asarray(np.stack(cols["n_e"])),
        T_keV=jnp.asarray(np.stack(cols["T"])), rho_dm=jnp.asarray(np.stack(cols["rho"])),
        theta=ThetaSim(*(theta[:, i] for i in range(len(PARAM_NAMES)))),
        z=jnp.asarray(np.asarray(cols["z"], dtype=np.float32)),
        box_size=geometry[0], mesh_shape=geometry[1], names=tuple(p.parent.name for p in files),
    )


# ----------------------------------------------------------------- checkpoints


def _load(path: Path, like):
    """(header, tree) of a checkpoint, or (None, like) when there is none."""
    if not path.exists():
        return None, like
    try:
        return read_tree(path, like)
    except ValueError as err:
        raise ValueError(f"{err}: remove {path} to redo that stage") from None


def _box_loss(field: str, model: ExtendedLDL, boxes: TrainingBoxes, i, mask, n: float, z_fixed: float | None):
    pos, theta = boxes.pos[i], jax.tree.map(lambda v: v[i], boxes.theta)
    if field == "n_e":
        pred = model.n_e(pos, theta, boxes.box_size, boxes.mesh_shape)
        return n_e_loss(pred, boxes.n_e[i], boxes.T_keV[i], boxes.rho_dm[i], boxes.box_size, mask, n)
    z = boxes.z[i] if z_fixed is None else z_fixed
    pred = model.T_keV(pos, theta, z, boxes.box_size, boxes.mesh_shape)
    return T_loss(pred, boxes.n_e[i], boxes.T_keV[i], boxes.rho_dm[i], boxes.box_size, mask, n)


def _mean_loss(field, model, boxes, mask, n, z_fixed, idx=None):
    """Mean loss over boxes (sequential over boxes: memory of one box at a time)."""
    idx = jnp.arange(boxes.n_box) if idx is None else idx
    losses = jax.lax.map(lambda i: _box_loss(field, model, boxes, i, mask, n, z_fixed), idx)
    return jnp.mean(losses)


def _with_params(model, where, p):
    """`model` with the arrays of its sub-module `where(model)` replaced by `p`."""
    static = eqx.filter(where(model), eqx.is_inexact_array, inverse=True)
    return eqx.tree_at(where, model, eqx.combine(p, static))


# The compiled steps live at module level, with the model, data and masks as arguments
# (only `where`, `field` and the floats are static): a resumed run, a second stage of the
# same field or a test's repeated call reuses one compilation instead of re-tracing closures.


@eqx.filter_jit
def _val_loss(p, model, where, field, data, mask, n, z_fixed):
    return _mean_loss(field, _with_params(model, where, p), data, mask, n, z_fixed)


# Backtracking (Armijo) rather than optax's default zoom line search: the L1
# loss with ReLU outputs is not smooth, and the strong-Wolfe search stalls
# there for tens of evaluations per iteration.
_LBFGS = optax.lbfgs(linesearch=optax.scale_by_backtracking_linesearch(max_backtracking_steps=12, decrease_factor=0.5,
                                                                       store_grad=True))


@eqx.filter_jit
def _lbfgs_step(p, state, model, where, field, data, mask, n, z_fixed):
    def fn(q):  # optax keeps the line-search value in the default float
        return _mean_loss(field, _with_params(model, where, q), data, mask, n, z_fixed).astype(jnp.result_type(float))

    # optax's line search mixes int32 and int64 counters: allow it under strict promotion.
    with jax.numpy_dtype_promotion("standard"):
        value, grad = optax.value_and_grad_from_state(fn)(p, state=state)
        updates, state = _LBFGS.update(grad, state, p, value=value, grad=grad, value_fn=fn)
    return optax.apply_updates(p, updates), state, value


def _adam(learning_rate):
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(learning_rate))


@eqx.filter_jit
def _adam_step(p, state, model, where, field, data, idx, mask, n, z_fixed, learning_rate):
    loss, grad = jax.value_and_grad(lambda q: _mean_loss(field, _with_params(model, where, q), data, mask, n, z_fixed, idx))(p)
    with jax.numpy_dtype_promotion("standard"):  # optax's counters, as in _lbfgs_step
        updates, state = _adam(learning_rate).update(grad, state, p)
    return optax.apply_updates(p, updates), state, loss


def _fit_lbfgs(stage, model, where, field, boxes, config, ckpt_dir, progress) -> tuple[ExtendedLDL, dict]:
    """Full-batch L-BFGS on the sub-module `where(model)`; best validation iterate kept."""
    from tqdm.auto import tqdm

    train_mask = slab_mask(boxes.mesh_shape, config.validation_fraction)
    val_mask = slab_mask(boxes.mesh_shape, config.validation_fraction, validation=True)
    params = eqx.filter(where(model), eqx.is_inexact_array)
    sn, z = config.smoothing_n, config.base_redshift
    step = lambda p, state, data: _lbfgs_step(p, state, model, where, field, data, train_mask, sn, z)  # noqa: E731
    val_loss = lambda p, data: _val_loss(p, model, where, field, data, val_mask, sn, z)  # noqa: E731
    opt = _LBFGS

    carry = (params, opt.init(params), params, jnp.asarray(0), jnp.asarray(jnp.inf, dtype=jnp.float32))
    path = ckpt_dir / f"{stage}.eqx"
    header, carry = _load(path, carry)
    p, state, best, it, best_val = carry
    history = [] if header is None else header["history"]
    bar = tqdm(total=config.base_iterations, initial=int(it), desc=stage, disable=not progress)
    while int(it) < config.base_iterations:
        p, state, value = step(p, state, boxes)
        it = it + 1
        if int(it) % config.checkpoint_every == 0 or int(it) == config.base_iterations:
            v = val_loss(p, boxes).astype(jnp.float32)
            if v < best_val:
                best, best_val = p, v
            history.append({"iteration": int(it), "train": float(value), "validation": float(v)})
            write_tree(path, {"stage": stage, "history": history}, (p, state, best, it, best_val))
        bar.set_postfix(loss=f"{float(value):.4g}")
        bar.update(1)
    bar.close()
    return _with_params(model, where, best), {"best_validation": float(best_val), "history": history}


def _fit_adam(stage, model, where, field, boxes, config, ckpt_dir, progress, z_fixed) -> tuple[ExtendedLDL, dict]:
    """Minibatch Adam with early stopping on the validation slab; best epoch kept."""
    from tqdm.auto import tqdm

    train_mask = slab_mask(boxes.mesh_shape, config.validation_fraction)
    val_mask = slab_mask(boxes.mesh_shape, config.validation_fraction, validation=True)
    params = eqx.filter(where(model), eqx.is_inexact_array)
    sn, lr = config.smoothing_n, jnp.asarray(config.learning_rate)
    opt = _adam(config.learning_rate)
    step = lambda p, state, data, idx: _adam_step(p, state, model, where, field, data, idx, train_mask, sn, z_fixed, lr)  # noqa: E731
    val_loss = lambda p, data: _val_loss(p, model, where, field, data, val_mask, sn, z_fixed)  # noqa: E731
    rebuild = lambda p: _with_params(model, where, p)  # noqa: E731

    zero = jnp.asarray(0)
    carry = (params, opt.init(params), params, zero, jnp.asarray(jnp.inf, dtype=jnp.float32), zero)
    path = ckpt_dir / f"{stage}.eqx"
    header, carry = _load(path, carry)
    p, state, best, epoch, best_val, stale = carry
    history = [] if header is None else header["history"]
    if int(epoch) == 0 and not history:
        # The start is a candidate: an epoch that only makes things worse (e.g.
        # into the all-zero output of a dead ReLU) is never kept.
        best_val = val_loss(p, boxes).astype(jnp.float32)
        history.append({"epoch": 0, "train": None, "validation": float(best_val)})
    n, bs = boxes.n_box, min(config.batch_size, boxes.n_box)
    bar = tqdm(total=config.hyper_epochs, initial=int(epoch), desc=stage, disable=not progress)
    while int(epoch) < config.hyper_epochs and int(stale) < config.patience:
        order = jax.random.permutation(jax.random.fold_in(jax.random.key(config.seed), int(epoch)), n)
        losses = []
        for start in range(0, n - bs + 1, bs):  # whole batches only: one compiled shape
            p, state, loss = step(p, state, boxes, order[start:start + bs])
            losses.append(float(loss))
        v = val_loss(p, boxes).astype(jnp.float32)
        epoch = epoch + 1
        if v < best_val:
            best, best_val, stale = p, v, zero
        else:
            stale = stale + 1
        history.append({"epoch": int(epoch), "train": float(np.mean(losses)), "validation": float(v)})
        write_tree(path, {"stage": stage, "history": history}, (p, state, best, epoch, best_val, stale))
        bar.set_postfix(train=f"{np.mean(losses):.4g}", val=f"{float(v):.4g}")
        bar.update(1)
    bar.close()
    return rebuild(best), {"best_validation": float(best_val), "history": history}


def _stage(name, model, run: Callable, ckpt_dir: Path, metrics: dict):
    """Run a stage unless its final parameters are on disk (then load them); parameters and metrics are one file."""
    header, done = _load(ckpt_dir / f"{name}.done.eqx", model)
    if header is not None:
        metrics[name] = header["metrics"]
        return done
    model, m = run(model)
    write_tree(ckpt_dir / f"{name}.done.eqx", {"stage": name, "metrics": m}, model)
    metrics[name] = m
    return model


def warm_start(ldl: LDL, boxes: TrainingBoxes, field: str, validation_fraction: float = 0.2) -> LDL:
    r"""Start the base LDL as a thresholded power law of the dark-matter density, without displacement.

    The loss lives in a few hundred cluster-core voxels (97 % of the
    n_e² T^½ ρ_DM weight of a 50 h⁻¹ Mpc box in its 100 brightest voxels).
    The activation is `fit_activation` on the CIC density of the particles,
    and α = 0. From the near-identity start, or with a displacement already
    on, the first L-BFGS steps fell into the
    all-zero output (loss 3.06×10⁴ against 1.9×10⁴ for this start on the
    synthetic CV set), from which a ReLU cannot recover.
    """
    densities = (paint_one_plus_delta(boxes.pos[i], boxes.box_size, boxes.mesh_shape) for i in range(boxes.n_box))
    ldl = eqx.tree_at(lambda m: m.activation, ldl, fit_activation(densities, boxes, field, validation_fraction))
    zero = [jnp.zeros_like(d.alpha) for d in ldl.displacements]
    return eqx.tree_at(lambda m: [d.alpha for d in m.displacements], ldl, zero)


def fit_activation(
    densities: Iterable[Float[ArrayLike, "nx ny nz"]], boxes: TrainingBoxes, field: str, validation_fraction: float = 0.2
) -> ActivationLayer:
    """The activation ReLU(b₁ (1+δ)^μ − b₀) that best maps given densities to the true field, by least squares in log.

    A weighted least-squares line in log–log over the brightest 0.1 % of
    training voxels (1 % for T; weight n_e² T^½ ρ_DM) gives b₁ and μ; for
    n_e, b₀ puts the threshold at the 20th percentile of their density, so
    fainter voxels start at zero; for T, b₀ = 0.

    Args:
        densities: one (nx, ny, nz) 1 + δ per box of `boxes`, in order (any iterable; e.g. of displaced particles).
        boxes: the truth (n_e, T_keV, rho_dm) the densities belong to.
        field: "n_e" or "T".
        validation_fraction: voxels of the validation slab are left out (`slab_mask`).
    """
    train = np.asarray(slab_mask(boxes.mesh_shape, validation_fraction))
    x, y, w = [], [], []
    for i, density in enumerate(densities):
        opd = np.asarray(density, dtype=np.float64)
        n, T = np.asarray(boxes.n_e[i], np.float64), np.asarray(boxes.T_keV[i], np.float64)
        target = n if field == "n_e" else T
        ok = train & (opd > 0) & (target > 0)
        x.append(opd[ok])
        y.append(target[ok])
        w.append((n**2 * np.sqrt(np.maximum(T, 0)) * np.asarray(boxes.rho_dm[i], np.float64))[ok])
    x, y, w = (np.concatenate(v) for v in (x, y, w))
    bright = w >= np.quantile(w, 0.999 if field == "n_e" else 0.99)
    mu, log_b1 = np.polyfit(np.log(x[bright]), np.log(y[bright]), 1, w=np.sqrt(w[bright] / w[bright].sum()))
    b1 = float(np.exp(log_b1))
    b0 = b1 * float(np.quantile(x[bright], 0.2)) ** mu if field == "n_e" else 0.0
    return ActivationLayer(b0=b0, b1=b1, mu=float(mu))


@dataclasses.dataclass(frozen=True)
class _Where:
    """The sub-module a stage trains, e.g. ``_Where("T_nets.mlp", 2)`` for ``e.T_nets[2].mlp``.

    Equal by value (unlike a lambda), so the jitted steps, whose static
    argument it is, compile once per process: a resumed run or a second call
    reuses the compilation.
    """

    attrs: str
    index: int | None = None

    def __call__(self, e):
        first, *rest = self.attrs.split(".")
        e = getattr(e, first)
        if self.index is not None:
            e = e[self.index]
        for a in rest:
            e = getattr(e, a)
        return e


def train_eldl(
    cv_dir: str | os.PathLike,
    lh_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    model: ExtendedLDL,
    config: TrainingConfig = TrainingConfig(),
    *,
    progress: bool = True,
    max_cv_boxes: int | None = None,
    max_lh_boxes: int | None = None,
    settings: dict | None = None,
) -> tuple[ExtendedLDL, dict]:
    """Train an `ExtendedLDL` in the stages of seed 001 Fig. 1 (resumable).

    Args:
        cv_dir: CV-like set (fiducial θ) with files at `config.base_redshift`.
        lh_dir: LH-like set with files at every redshift of `model.T_redshifts`.
        out_dir: checkpoints and metrics go to ``out_dir/checkpoints``.
        model: the untrained (or partly trained) model, e.g. `ExtendedLDL.init(key)`.
        config: training settings.
        progress: tqdm bars.
        max_cv_boxes: use at most this many CV boxes.
        max_lh_boxes: use at most this many LH boxes per redshift.
        settings: more settings to record with the run (the CLI's model structure).

    Returns:
        (trained model, metrics per stage).

    Raises:
        ValueError: ``out_dir`` holds a training with other settings, another initial model or other
            training files (naming each difference), or a corrupt checkpoint (naming it); a training
            set that `jaxcluster data generate` has not finished.
    """
    out = Path(out_dir)
    ckpt = out / "checkpoints"
    zs_used = (config.base_redshift, *model.T_redshifts)
    for name, d in (("cv", cv_dir), ("lh", lh_dir)):
        check_complete(d, f"--{name}")
    mine = {**(settings or {}), **dataclasses.asdict(config), "max_cv_boxes": max_cv_boxes, "max_lh_boxes": max_lh_boxes,
            "initial_model_sha256": pytree_digest(model),
            "cv_sha256": training_files_digest(cv_dir, zs_used, max_cv_boxes),
            "lh_sha256": training_files_digest(lh_dir, zs_used, max_lh_boxes)}
    if ckpt.is_dir() and not (out / "settings.json").exists() and any(ckpt.iterdir()):
        raise ValueError(f"{out} holds checkpoints from a version that recorded no settings.json: they cannot be "
                         "checked against this run; remove the folder or use another output folder")
    out.mkdir(parents=True, exist_ok=True)
    record_settings(out / "settings.json", mine)
    ckpt.mkdir(exist_ok=True)
    metrics: dict = {}
    z0 = config.base_redshift
    cv = load_training_boxes(cv_dir, z0, max_cv_boxes)
    model = _stage("base_n_e", model, lambda m: _fit_lbfgs(
        "base_n_e", eqx.tree_at(lambda e: e.n_e_base, m, warm_start(m.n_e_base, cv, "n_e", config.validation_fraction)),
        _Where("n_e_base"), "n_e", cv, config, ckpt, progress), ckpt, metrics)
    model = _stage("base_T", model, lambda m: _fit_lbfgs(
        "base_T", eqx.tree_at(lambda e: e.T_base, m, warm_start(m.T_base, cv, "T", config.validation_fraction)),
        _Where("T_base"), "T", cv, config, ckpt, progress), ckpt, metrics)
    # The T heads' offsets start from the warm-start power law of T at z0 on these boxes.
    fid0 = ldl_params(warm_start(model.T_base, cv, "T", config.validation_fraction))
    del cv
    lh = load_training_boxes(lh_dir, z0, max_lh_boxes)
    # Hypernetworks: only their MLPs train (on the LH set); δΘ(θ_fid) stays at the offset.
    model = _stage("net_n_e", model, lambda m: _fit_adam("net_n_e", m, _Where("n_e_net.mlp"), "n_e", lh, config, ckpt,
                                                          progress, None), ckpt, metrics)
    # T heads: the z0 head first, then every other redshift starting from it. A head's
    # offset (its shift at θ_fid) is the change of the warm-start power law of T between
    # z0 and its redshift on the fiducial CV boxes: the fiducial redshift evolution comes
    # from the large boxes, the θ dependence from the LH set.
    zs = list(model.T_redshifts)
    k0 = int(np.argmin([abs(z - z0) for z in zs]))
    order = [k0] + [k for k in range(len(zs)) if k != k0]
    for k in order:
        name = f"net_T_z{zs[k]:.3f}"
        boxes = lh if k == k0 else load_training_boxes(lh_dir, zs[k], max_lh_boxes)
        if k != k0:  # start from the z0 head, shifted by the fiducial evolution
            fid_k = ldl_params(warm_start(model.T_base, load_training_boxes(cv_dir, zs[k], max_cv_boxes), "T",
                                          config.validation_fraction))
            head = eqx.tree_at(lambda h: h.offset, model.T_nets[k0], (fid_k - fid0).astype(model.T_nets[k0].offset.dtype))
            model = eqx.tree_at(lambda e: e.T_nets[k], model, head)
        model = _stage(name, model, lambda m, k=k, b=boxes: _fit_adam(name, m, _Where("T_nets.mlp", k), "T", b, config,
                                                                     ckpt, progress, float(zs[k])), ckpt, metrics)
    return model, metrics


# ------------------------------------------------------------------------ CLI


def _set_redshifts(lh_dir: Path) -> tuple[float, ...]:
    first = sorted(p for p in Path(lh_dir).iterdir() if p.is_dir())
    if not first:
        raise ValueError(f"--lh {lh_dir} holds no sample directories")
    zs = sorted(float(f.stem[1:]) for f in first[0].glob("z*.h5"))
    if not zs:
        raise ValueError(f"--lh {lh_dir}/{first[0].name} holds no z*.h5 files")
    return tuple(zs)


def main(argv: list[str] | None = None) -> int:
    """``jaxcluster eldl train --cv DIR --lh DIR --out DIR``: train an eLDL (resumable)."""
    import argparse
    import sys
    import time

    from ..clihelp import HelpFormatter

    parser = argparse.ArgumentParser(
        prog="jaxcluster eldl train", formatter_class=HelpFormatter,
        description="Train the extended LDL in seed 001's stages (base LDL on the CV set at z = 0.21 with L-BFGS, "
        "then θ_sim hypernetworks on the LH set, one T head per redshift). Data: directories of run files "
        "(`jaxcluster data generate`, or real CAMELS converted with jaxcluster.io). Rerun the same command "
        "to resume after an interruption.",
    )
    parser.add_argument("--cv", type=Path, required=True, help="CV-like set directory (`jaxcluster data generate cv`)")
    parser.add_argument("--lh", type=Path, required=True, help="LH-like set directory (`jaxcluster data generate lh`)")
    parser.add_argument("--out", type=Path, required=True, help="output directory: eldl.eqx, eldl.json, checkpoints/")
    parser.add_argument("--filter", choices=("bspline", "parametric"), default="bspline",
                        help="Fourier filter of the displacement layers")
    parser.add_argument("--gradient", choices=GRADIENTS, default="exact",
                        help="displacement gradient: exact (Fourier, seed 001) or fd4 (real-space stencil, one inverse FFT)")
    parser.add_argument("--source-stride", type=odd_positive, default=1,
                        help="paint each displacement layer's source from every N-th particle (odd N; 1: all)")
    parser.add_argument("--base-iterations", type=int, default=TrainingConfig.base_iterations,
                        help="L-BFGS iterations of the base LDL (CV set, z = 0.21)")
    parser.add_argument("--epochs", type=int, default=TrainingConfig.hyper_epochs, help="hypernetwork epochs (at most)")
    parser.add_argument("--batch-size", type=int, default=TrainingConfig.batch_size,
                        help="boxes per hypernetwork step")
    parser.add_argument("--learning-rate", type=float, default=TrainingConfig.learning_rate,
                        help="Adam learning rate of the hypernetworks")
    parser.add_argument("--patience", type=int, default=TrainingConfig.patience,
                        help="epochs without a better validation loss before a stage stops early")
    parser.add_argument("--max-cv-boxes", type=int, default=None, help="use at most this many CV boxes")
    parser.add_argument("--max-lh-boxes", type=int, default=None, help="use at most this many LH boxes per redshift")
    parser.add_argument("--seed", type=seed_type, default=0, help="seed of the initial weights and of the batch order")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        for name in ("source_stride", "max_cv_boxes", "max_lh_boxes"):
            if getattr(args, name) is not None and getattr(args, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} = {getattr(args, name)} must be >= 1")
        config = TrainingConfig(base_iterations=args.base_iterations, hyper_epochs=args.epochs,
                                batch_size=args.batch_size, learning_rate=args.learning_rate,
                                patience=args.patience, seed=args.seed)
        for name in ("cv", "lh"):
            if not getattr(args, name).is_dir():
                raise ValueError(f"--{name} {getattr(args, name)} is not a directory")
        redshifts = _set_redshifts(args.lh)
    except ValueError as err:
        print(f"jaxcluster: error: eldl train: {err}", file=sys.stderr)
        return 2
    jax.config.update("jax_enable_x64", True)  # float64 cosmology tables; fields stay float32
    from .weights import save_eldl

    structure = {"filter": args.filter, "redshifts": list(redshifts), "gradient": args.gradient,
                 "source_stride": args.source_stride}
    model = ExtendedLDL.init(jax.random.key(args.seed), filter=args.filter, redshifts=redshifts, gradient=args.gradient,
                             source_stride=args.source_stride)
    t0 = time.time()
    try:
        model, metrics = train_eldl(args.cv, args.lh, args.out, model, config, progress=not args.no_progress,
                                    max_cv_boxes=args.max_cv_boxes, max_lh_boxes=args.max_lh_boxes, settings=structure)
    except ValueError as err:
        print(f"jaxcluster: error: eldl train: {err}", file=sys.stderr)
        return 2
    summary = {k: v["best_validation"] for k, v in metrics.items()}
    meta = {"cv": str(args.cv), "lh": str(args.lh), "config": dataclasses.asdict(config),
            # the first N boxes of each set (sorted by name) were trained on; the rest are held out
            "config_max_boxes": {"cv": args.max_cv_boxes, "lh": args.max_lh_boxes},
            "best_validation_loss": summary, "train_seconds": time.time() - t0}
    for name in ("cv", "lh"):
        spec = getattr(args, name) / "spec.json"
        if spec.exists():
            meta[f"{name}_spec"] = json.loads(spec.read_text())
    from ..io.provenance import clean_json, provenance

    meta["provenance"] = provenance("eldl train", seed=args.seed, settings=dict(
        structure, cv=str(args.cv), lh=str(args.lh), **dataclasses.asdict(config)))
    save_eldl(args.out / "eldl.eqx", model, structure, clean_json(meta))
    print(f"jaxcluster eldl train: wrote {args.out / 'eldl.eqx'} ({len(metrics)} stages; best validation {summary})")
    return 0


def evaluate_eldl(model: ExtendedLDL, boxes: TrainingBoxes, validation_fraction: float = 0.2) -> dict[str, float]:
    """Validation-slab figures of a trained model on boxes of one redshift.

    Returns the two losses, the ratio of the summed X-ray emissivity proxy
    Σ n_e² T^½ (predicted / true), its voxel correlation coefficient in log
    over voxels with true 1 + δ_DM > 10, and the same for n_e alone.
    """
    mask = np.asarray(slab_mask(boxes.mesh_shape, validation_fraction, validation=True))
    out = {"n_e_loss": [], "T_loss": [], "emissivity_ratio": [], "emissivity_log_corr": [], "n_e_log_corr": []}
    run = eqx.filter_jit(lambda pos, th, z: model(pos, th, z, boxes.box_size, boxes.mesh_shape))
    for i in range(boxes.n_box):
        theta = jax.tree.map(lambda v: v[i], boxes.theta)
        n_pred, T_pred = (np.asarray(a, dtype=np.float64) for a in run(boxes.pos[i], theta, boxes.z[i]))
        n_true, T_true = np.asarray(boxes.n_e[i], dtype=np.float64), np.asarray(boxes.T_keV[i], dtype=np.float64)
        rho = np.asarray(boxes.rho_dm[i], dtype=np.float64)
        m = jnp.asarray(mask)
        out["n_e_loss"].append(float(n_e_loss(jnp.asarray(n_pred), jnp.asarray(n_true), jnp.asarray(T_true),
                                              jnp.asarray(rho), boxes.box_size, m)))
        out["T_loss"].append(float(T_loss(jnp.asarray(T_pred), jnp.asarray(n_true), jnp.asarray(T_true),
                                          jnp.asarray(rho), boxes.box_size, m)))
        e_pred, e_true = n_pred**2 * np.sqrt(T_pred), n_true**2 * np.sqrt(T_true)
        out["emissivity_ratio"].append(float(e_pred[mask].sum() / e_true[mask].sum()))
        sel = mask & (rho > 10)
        if sel.sum() > 2:
            tiny = 1e-30
            out["emissivity_log_corr"].append(float(np.corrcoef(np.log(e_pred[sel] + tiny), np.log(e_true[sel] + tiny))[0, 1]))
            out["n_e_log_corr"].append(float(np.corrcoef(np.log(n_pred[sel] + tiny), np.log(n_true[sel] + tiny))[0, 1]))
    return {k: float(np.mean(v)) for k, v in out.items() if v}
