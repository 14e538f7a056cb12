r"""Neural posterior estimation: a mixture density network and a spline flow, trained as sbi trains them.

**Estimator.** A conditional density $q_φ(θ | x)$ is fitted to pairs
$(θ_i, x_i)$ with θ from the prior and x from the simulator by maximising
$\sum_i \ln q_φ(θ_i | x_i)$ (Papamakarios & Murray 2016; seed 001 §3.3).
Two families, both distrax distributions built by Equinox modules:

* `MixtureDensityNetwork`: an MLP (2 hidden layers of 50, ReLU) gives the
  logits, means and lower-triangular scale factors of a 10-component
  full-covariance Gaussian mixture (``distrax.MixtureSameFamily`` of
  ``distrax.MultivariateNormalTri``), as sbi's ``posterior_nn("mdn")``;
* `SplineFlow`: rational-quadratic spline couplings (Durkan et al. 2019;
  ``distrax.RationalQuadraticSpline`` inside ``distrax.MaskedCoupling``, alternating
  masks) on a standard normal, each coupling's conditioner an MLP of the
  unmasked coordinates and the summary.

**Parameter space.** Both live in $u$, the standardised logit of θ in its
prior box, $u = (\mathrm{logit}((θ − lo)/(hi − lo)) − μ)/s$ (identity in place
of the logit for a parameter with an unbounded prior, e.g. a Gaussian
nuisance), so the posterior in θ has no mass outside the prior:
$\ln q(θ|x) = \ln q_u(u(θ)|x) + \ln|∂u/∂θ|$, and $−∞$ outside the box.
The summaries x are z-scored with the training set's mean and standard
deviation (sbi's ``z_score_x``).

**Training** (sbi 0.27 defaults): Adam (5·10⁻⁴), batches of 200, 10 % of the
pairs held out for validation, gradient-norm clipping at 5 (an optax chain),
early stopping after 20 epochs without a better validation loss, best
parameters restored. An epoch (shuffle, `lax.scan` over the batches,
validation loss) is one compiled call. Ensembles train ``n_members``
independently initialised estimators at once (`eqx.filter_vmap` over the
members) and combine them as an equal-weight mixture.

References:
    Papamakarios & Murray 2016, arXiv:1605.06376 (NPE, MDN);
    Durkan et al. 2019, arXiv:1906.04032 (neural spline flows);
    Tejero-Cantero et al. 2020, JOSS 5, 2505 (sbi).
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import distrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..io.atomic import atomic_path, read_tree, write_json, write_tree

__all__ = [
    "ParameterSpace",
    "MixtureDensityNetwork",
    "SplineFlow",
    "NeuralPosterior",
    "TrainConfig",
    "build_posterior",
    "train_posterior",
    "save_posterior",
    "load_posterior",
]

_F32 = jnp.float32
# keep the logit finite for θ on the prior wall (float32 resolution of the unit interval)
_EDGE = 1e-6


def _standard(fn):
    """Run `fn` under standard dtype/rank promotion (distrax and tfp broadcast scalars freely)."""

    def wrapped(*args, **kwargs):
        with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
            return fn(*args, **kwargs)

    wrapped.__name__, wrapped.__doc__ = fn.__name__, fn.__doc__
    return wrapped


class ParameterSpace(eqx.Module):
    """The bijection θ ↔ u between the parameters and the estimator's unconstrained, standardised space.

    $y_j = \\mathrm{logit}((θ_j − lo_j)/(hi_j − lo_j))$ for a bounded parameter
    ($y_j = θ_j$ if the bounds are ±∞), then $u = (y − μ)/s$.

    Attributes:
        lo, hi: (d,) prior box (±inf: unbounded parameter, no logit).
        shift, scale: (d,) mean and standard deviation of y over the training θ.
        bounded: per parameter, whether it has a finite box (static).
    """

    lo: Float[Array, " d"]
    hi: Float[Array, " d"]
    shift: Float[Array, " d"]
    scale: Float[Array, " d"]
    bounded: tuple[bool, ...] = eqx.field(static=True)

    def __init__(self, lo: ArrayLike, hi: ArrayLike, shift: ArrayLike | None = None, scale: ArrayLike | None = None):
        lo_np, hi_np = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
        if lo_np.ndim != 1 or lo_np.shape != hi_np.shape or lo_np.size < 1:
            raise ValueError(f"lo and hi must be 1-D of equal length >= 1, got shapes {lo_np.shape}, {hi_np.shape}")
        fin = np.isfinite(lo_np) & np.isfinite(hi_np)
        if np.any(np.isfinite(lo_np) != np.isfinite(hi_np)):
            raise ValueError("each parameter must have both bounds finite (flat prior box) or both infinite")
        if np.any(fin & ~(hi_np > lo_np)):
            raise ValueError(f"hi must be > lo for bounded parameters, got lo={lo_np}, hi={hi_np}")
        self.bounded = tuple(bool(b) for b in fin)
        self.lo = jnp.asarray(np.where(fin, lo_np, -np.inf), _F32)
        self.hi = jnp.asarray(np.where(fin, hi_np, np.inf), _F32)
        d = lo_np.size
        self.shift = jnp.zeros(d, _F32) if shift is None else jnp.asarray(shift, _F32)
        self.scale = jnp.ones(d, _F32) if scale is None else jnp.asarray(scale, _F32)

    @property
    def dim(self) -> int:
        return len(self.bounded)

    def _mask(self) -> Array:
        return jnp.asarray(self.bounded)

    def _width(self) -> Array:
        return jnp.where(self._mask(), self.hi - self.lo, 1.0)

    def _low(self) -> Array:
        return jnp.where(self._mask(), self.lo, 0.0)

    def to_y(self, theta: Float[ArrayLike, " d"]) -> Float[Array, " d"]:
        """Unstandardised logit y(θ) (θ on a wall is moved in by 10⁻⁶ of the box)."""
        theta = jnp.asarray(theta, _F32)
        frac = jnp.clip((theta - self._low()) / self._width(), _EDGE, 1.0 - _EDGE)
        return jnp.where(self._mask(), jnp.log(frac) - jnp.log1p(-frac), theta)

    def to_u(self, theta: Float[ArrayLike, " d"]) -> Float[Array, " d"]:
        """u(θ) for one θ (d,)."""
        return (self.to_y(theta) - self.shift) / self.scale

    def from_u(self, u: Float[ArrayLike, " d"]) -> Float[Array, " d"]:
        """θ(u) for one u (d,)."""
        y = jnp.asarray(u, _F32) * self.scale + self.shift
        return jnp.where(self._mask(), self._low() + self._width() * jax.nn.sigmoid(y), y)

    def log_abs_det_du_dtheta(self, theta: Float[ArrayLike, " d"]) -> Float[Array, ""]:
        """$\\ln|∂u/∂θ|$ at θ: $\\sum_j −\\ln s_j − [\\ln w_j + \\ln σ(y_j) + \\ln σ(−y_j)]_{bounded}$."""
        y = self.to_y(theta)
        logit_term = jnp.log(self._width()) + jax.nn.log_sigmoid(y) + jax.nn.log_sigmoid(-y)
        return -jnp.sum(jnp.log(self.scale)) - jnp.sum(jnp.where(self._mask(), logit_term, 0.0))

    def inside(self, theta: Float[ArrayLike, " d"]) -> Array:
        """Whether θ lies strictly inside the prior box (always True along unbounded axes)."""
        theta = jnp.asarray(theta, _F32)
        return jnp.all((theta > self.lo) & (theta < self.hi))


def _mlp(n_in: int, n_out: int, width: int, depth: int, key: PRNGKeyArray) -> eqx.nn.MLP:
    return eqx.nn.MLP(n_in, n_out, width, depth, activation=jax.nn.relu, dtype=_F32, key=key)


class MixtureDensityNetwork(eqx.Module):
    """Gaussian-mixture conditional density $q(u | s) = \\sum_k π_k(s)\\, N(u; m_k(s), L_k(s) L_k(s)^T)$.

    Attributes:
        trunk: MLP s → hidden features (``n_hidden`` layers of ``width``, ReLU).
        head: linear map hidden → (K logits, K·d means, K·d(d+1)/2 scale-factor entries).
        dim, n_summary, n_components: sizes (static).
    """

    trunk: eqx.nn.MLP
    head: eqx.nn.Linear
    dim: int = eqx.field(static=True)
    n_summary: int = eqx.field(static=True)
    n_components: int = eqx.field(static=True)

    def __init__(self, dim: int, n_summary: int, *, n_components: int = 10, width: int = 50, n_hidden: int = 2,
                 key: PRNGKeyArray):
        k1, k2 = jax.random.split(key)
        self.dim, self.n_summary, self.n_components = dim, n_summary, n_components
        # the trunk ends on an activated hidden layer (final_activation): head reads features
        self.trunk = eqx.nn.MLP(n_summary, width, width, n_hidden - 1, activation=jax.nn.relu,
                                final_activation=jax.nn.relu, dtype=_F32, key=k1)
        n_tri = dim * (dim + 1) // 2
        head = eqx.nn.Linear(width, n_components * (1 + dim + n_tri), dtype=_F32, key=k2)
        # start near a broad, equal-weight mixture: small head weights
        self.head = eqx.tree_at(lambda h: h.weight, head, head.weight * 0.1)

    def distribution(self, s: Float[Array, " n_summary"]) -> distrax.MixtureSameFamily:
        """The mixture over u for one standardised summary s."""
        K, d = self.n_components, self.dim
        out = self.head(self.trunk(s))
        logits, rest = out[:K], out[K:]
        means = rest[: K * d].reshape(K, d)
        tri = rest[K * d:].reshape(K, -1)
        rows, cols = np.tril_indices(d)
        L = jnp.zeros((K, d, d), out.dtype).at[:, rows, cols].set(tri)
        # positive diagonal: softplus of the raw entry (offset so a zero entry gives 1), floored
        diag = jax.nn.softplus(jnp.diagonal(L, axis1=1, axis2=2) + 0.5413) + 1e-3
        L = L * (1.0 - jnp.eye(d, dtype=out.dtype)) + jax.vmap(jnp.diag)(diag)
        return distrax.MixtureSameFamily(
            mixture_distribution=distrax.Categorical(logits=logits),
            components_distribution=distrax.MultivariateNormalTri(loc=means, scale_tri=L),
        )


class SplineFlow(eqx.Module):
    """Conditional normalising flow of rational-quadratic spline couplings on a standard normal.

    Coupling l leaves the coordinates with ``(j + l) % 2 == 0`` unchanged and
    moves the others by monotone splines on [−B, B] (identity outside) whose
    bins, heights and knot slopes an MLP computes from the unchanged
    coordinates and the summary. For d = 1 the spline depends on s only.

    Attributes:
        conditioners: one MLP per coupling, (d + n_summary) → d (3 n_bins + 1).
        dim, n_summary, n_bins, bound: sizes and the spline range B (static).
    """

    conditioners: tuple[eqx.nn.MLP, ...]
    dim: int = eqx.field(static=True)
    n_summary: int = eqx.field(static=True)
    n_bins: int = eqx.field(static=True)
    bound: float = eqx.field(static=True)

    def __init__(self, dim: int, n_summary: int, *, n_layers: int = 5, n_bins: int = 8, width: int = 50,
                 n_hidden: int = 2, bound: float = 6.0, key: PRNGKeyArray):
        self.dim, self.n_summary, self.n_bins, self.bound = dim, n_summary, n_bins, float(bound)
        conds = []
        for k in jax.random.split(key, n_layers):
            m = _mlp(dim + n_summary, dim * (3 * n_bins + 1), width, n_hidden, k)
            # near-identity splines at initialisation
            m = eqx.tree_at(lambda t: t.layers[-1].weight, m, m.layers[-1].weight * 0.01)
            conds.append(m)
        self.conditioners = tuple(conds)

    def _masks(self) -> list[np.ndarray]:
        j = np.arange(self.dim)
        if self.dim == 1:
            return [np.zeros(1, bool)] * len(self.conditioners)
        return [(j + i) % 2 == 0 for i in range(len(self.conditioners))]

    def distribution(self, s: Float[Array, " n_summary"]) -> distrax.Transformed:
        """The flow over u for one standardised summary s."""
        layers = []
        for mask, cond in zip(self._masks(), self.conditioners):

            def conditioner(x_masked, cond=cond):
                return cond(jnp.concatenate([x_masked, s])).reshape(self.dim, 3 * self.n_bins + 1)

            def spline(params):
                return distrax.RationalQuadraticSpline(params, range_min=-self.bound, range_max=self.bound)

            layers.append(distrax.MaskedCoupling(mask=jnp.asarray(mask), conditioner=conditioner, bijector=spline))
        base = distrax.MultivariateNormalDiag(jnp.zeros(self.dim, _F32), jnp.ones(self.dim, _F32))
        return distrax.Transformed(base, distrax.Chain(layers[::-1]))  # Chain applies its last element first


Estimator = MixtureDensityNetwork | SplineFlow


class NeuralPosterior(eqx.Module):
    """q(θ | x): an ensemble of conditional densities in u space, the θ ↔ u map and the summary scaling.

    `estimator`'s array leaves carry a leading member axis (``n_members`` ≥ 1,
    built with `eqx.filter_vmap`); the posterior is the equal-weight mixture
    of the members.

    Attributes:
        estimator: stacked `MixtureDensityNetwork` or `SplineFlow`.
        space: `ParameterSpace` (θ ↔ u).
        x_shift, x_scale: (n_summary,) z-scoring of the summaries.
        names: parameter names (static, for plots and files).
    """

    estimator: Estimator
    space: ParameterSpace
    x_shift: Float[Array, " n_summary"]
    x_scale: Float[Array, " n_summary"]
    names: tuple[str, ...] = eqx.field(static=True)

    @property
    def n_members(self) -> int:
        return int(jax.tree_util.tree_leaves(eqx.filter(self.estimator, eqx.is_array))[0].shape[0])

    @property
    def dim(self) -> int:
        return self.space.dim

    def _summary(self, x: Float[ArrayLike, "..."]) -> Array:
        x = jnp.asarray(x, _F32).reshape(-1)
        if x.shape != self.x_shift.shape:
            raise ValueError(f"x must have {self.x_shift.size} entries (the training summary size), got {x.size}")
        return (x - self.x_shift) / self.x_scale

    @_standard
    def log_prob_u(self, u: Float[ArrayLike, " d"], x: Float[ArrayLike, "..."]) -> Float[Array, ""]:
        """ln q(u | x) of one u (d,) given one summary (any shape, n_summary entries)."""
        s = self._summary(x)
        u = jnp.asarray(u, _F32)
        lp = eqx.filter_vmap(lambda e: e.distribution(s).log_prob(u))(self.estimator)
        return jax.nn.logsumexp(lp) - math.log(lp.shape[0])

    def log_prob(self, theta: Float[ArrayLike, " d"], x: Float[ArrayLike, "..."]) -> Float[Array, ""]:
        """ln q(θ | x) of one θ (d,) (density in θ; −inf outside the prior box). Compiled; vmap for batches."""
        theta = jnp.asarray(theta, _F32)
        if theta.shape != (self.dim,):
            raise ValueError(f"theta must have shape ({self.dim},), got {theta.shape}")
        return _log_prob(self, theta, jnp.asarray(x, _F32))

    @_standard
    def sample_u(self, key: PRNGKeyArray, x: Float[ArrayLike, "..."], n: int) -> Float[Array, "n d"]:
        """n draws of u | x (each from a uniformly chosen member)."""
        s = self._summary(x)
        k_member, k_draw = jax.random.split(key)
        m = self.n_members
        keys = jax.random.split(k_draw, m)
        draws = eqx.filter_vmap(lambda e, k: e.distribution(s).sample(seed=k, sample_shape=(n,)))(self.estimator, keys)
        if m == 1:
            return draws[0]
        pick = jax.random.randint(k_member, (n,), 0, m)
        return draws[pick, jnp.arange(n)]

    def sample(self, key: PRNGKeyArray, x: Float[ArrayLike, "..."], n: int) -> Float[Array, "n d"]:
        """n posterior draws of θ given one summary x (all strictly inside the prior box)."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n = {n!r} is outside its allowed range: an integer >= 1")
        return _sample(self, key, jnp.asarray(x, _F32), n)

    def marginal_intervals(self, key: PRNGKeyArray, x: Float[ArrayLike, "..."], *, n: int = 4000,
                           level: float = 0.68) -> dict[str, Array]:
        """Per-parameter posterior median and central ``level`` interval from n draws.

        Returns:
            dict with ``median``, ``lower``, ``upper``, ``mean``, ``std``, each (d,).
        """
        if not 0.0 < level < 1.0:
            raise ValueError(f"level = {level} is outside its allowed range (0, 1)")
        th = self.sample(key, x, n)
        q = jnp.quantile(th, jnp.array([0.5 - level / 2, 0.5, 0.5 + level / 2], th.dtype), axis=0)
        return dict(median=q[1], lower=q[0], upper=q[2], mean=jnp.mean(th, axis=0), std=jnp.std(th, axis=0))


# Compiled entry points: distrax/tfp run hundreds of small ops, slow op by op.
@eqx.filter_jit
@_standard
def _log_prob(post: NeuralPosterior, theta: Array, x: Array) -> Array:
    lp = post.log_prob_u(post.space.to_u(theta), x) + post.space.log_abs_det_du_dtheta(theta)
    return jnp.where(post.space.inside(theta), lp, -jnp.inf)


@eqx.filter_jit
def _sample(post: NeuralPosterior, key: PRNGKeyArray, x: Array, n: int) -> Array:
    return jax.vmap(post.space.from_u)(post.sample_u(key, x, n))


class TrainConfig(eqx.Module):
    """Architecture and training settings (defaults: sbi 0.27's NPE with an MDN).

    Attributes:
        estimator: ``"mdn"`` or ``"flow"``.
        n_components: mixture components (MDN).
        width, n_hidden: hidden width and number of hidden layers of each MLP.
        n_layers, n_bins, bound: spline couplings, bins per spline, spline range (flow).
        learning_rate: Adam step size.
        batch_size: pairs per step (the last incomplete batch of an epoch is dropped).
        validation_fraction: share of the pairs held out for early stopping.
        patience: epochs without a better validation loss before stopping.
        max_epochs: hard limit on epochs.
        clip_norm: global gradient-norm clip.
        n_members: ensemble size.
    """

    estimator: str = "mdn"  # "mdn" | "flow" (checked in __check_init__)
    n_components: int = 10
    width: int = 50
    n_hidden: int = 2
    n_layers: int = 5
    n_bins: int = 8
    bound: float = 6.0
    learning_rate: float = 5e-4
    batch_size: int = 200
    validation_fraction: float = 0.1
    patience: int = 20
    max_epochs: int = 1000
    clip_norm: float = 5.0
    n_members: int = 1

    def __check_init__(self):
        if self.estimator not in ("mdn", "flow"):
            raise ValueError(f"estimator = {self.estimator!r} is not allowed; choose 'mdn' or 'flow'")
        for name in ("n_components", "width", "n_hidden", "n_layers", "n_bins", "batch_size", "patience",
                     "max_epochs", "n_members"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} = {v!r} is outside its allowed range: an integer >= 1")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction = {self.validation_fraction} is outside its allowed range (0, 1)")
        for name in ("learning_rate", "clip_norm", "bound"):
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f"{name} = {getattr(self, name)} is outside its allowed range (0, inf)")

    def to_dict(self) -> dict:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


def _make_estimator(config: TrainConfig, dim: int, n_summary: int, key: PRNGKeyArray) -> Estimator:
    if config.estimator == "mdn":
        return MixtureDensityNetwork(dim, n_summary, n_components=config.n_components, width=config.width,
                                     n_hidden=config.n_hidden, key=key)
    return SplineFlow(dim, n_summary, n_layers=config.n_layers, n_bins=config.n_bins, width=config.width,
                      n_hidden=config.n_hidden, bound=config.bound, key=key)


def build_posterior(config: TrainConfig, space: ParameterSpace, x_shift: ArrayLike, x_scale: ArrayLike,
                    names: Sequence[str] | None = None, *, key: PRNGKeyArray) -> NeuralPosterior:
    """An untrained `NeuralPosterior` (``config.n_members`` independently initialised members)."""
    x_shift = jnp.asarray(x_shift, _F32).reshape(-1)
    x_scale = jnp.asarray(x_scale, _F32).reshape(-1)
    if x_shift.shape != x_scale.shape:
        raise ValueError(f"x_shift {x_shift.shape} and x_scale {x_scale.shape} must have equal shapes")
    names = tuple(names) if names is not None else tuple(f"theta_{j}" for j in range(space.dim))
    if len(names) != space.dim:
        raise ValueError(f"names has {len(names)} entries, the parameter space {space.dim}")
    keys = jax.random.split(key, config.n_members)
    est = eqx.filter_vmap(lambda k: _make_estimator(config, space.dim, x_shift.size, k))(keys)
    return NeuralPosterior(est, space, x_shift, x_scale, names)


def _member_loss(est: Estimator, u: Array, s: Array) -> Array:
    """Mean −ln q(u | s) of one member over a batch."""
    return -jnp.mean(jax.vmap(lambda ui, si: est.distribution(si).log_prob(ui))(u, s))


@eqx.filter_jit
def _epoch(params, static, opt_state, key, u_tr, s_tr, u_va, s_va, optimiser, batch_size):
    """One epoch for every member: shuffle, scan over batches, validation loss. Leading axis = member."""
    n_batches = u_tr.shape[0] // batch_size

    def one_member(p, o, k):
        perm = jax.random.permutation(k, u_tr.shape[0])[: n_batches * batch_size].reshape(n_batches, batch_size)

        def step(carry, idx):
            p, o = carry
            loss, g = jax.value_and_grad(lambda q: _member_loss(eqx.combine(q, static), u_tr[idx], s_tr[idx]))(p)
            upd, o = optimiser.update(g, o, p)
            return (optax.apply_updates(p, upd), o), loss

        (p, o), losses = jax.lax.scan(step, (p, o), perm)
        val = _member_loss(eqx.combine(p, static), u_va, s_va)
        return p, o, jnp.mean(losses), val

    with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        return jax.vmap(one_member)(params, opt_state, jax.random.split(key, jax.tree_util.tree_leaves(params)[0].shape[0]))


@functools.lru_cache(maxsize=32)
def _optimiser(clip_norm: float, learning_rate: float) -> optax.GradientTransformation:
    """Adam after global-norm clipping; one object per setting, so `_epoch`'s compiled code is reused across trainings."""
    return optax.chain(optax.clip_by_global_norm(clip_norm), optax.adam(learning_rate))


def train_posterior(
    theta: Float[ArrayLike, "n d"],
    x: Float[ArrayLike, "n *summary"],
    lo: Float[ArrayLike, " d"],
    hi: Float[ArrayLike, " d"],
    config: TrainConfig = TrainConfig(),
    *,
    key: PRNGKeyArray,
    names: Sequence[str] | None = None,
    progress: bool = False,
    init: NeuralPosterior | None = None,
    checkpoint: str | os.PathLike | None = None,
) -> tuple[NeuralPosterior, dict]:
    """Fit q(θ | x) to simulated pairs (module docstring: sbi's recipe).

    Args:
        theta: (n, d) parameters drawn from the prior.
        x: (n, ...) summaries (flattened per pair), e.g. a scaled XOD or a compressor output.
        lo: (d,) lower end of each parameter's prior box; −inf for one with an unbounded prior.
        hi: (d,) upper end; +inf for an unbounded parameter.
        config: `TrainConfig` (architecture, optimiser, early stopping, ensemble size).
        key: PRNG key for the split, initialisation and shuffling (keyword-only).
        names: parameter names (stored with the posterior).
        progress: show a tqdm bar over epochs.
        init: continue from this posterior (a sequential round, e.g. on pairs drawn from a
            truncated prior): its weights, parameter map and summary scaling are kept, so the
            new pairs refine it rather than restart it. Must match `config`'s estimator,
            width and ensemble size, and `lo`, `hi` and the summary size.
        checkpoint: file written (atomically) after every epoch: weights, optimiser state,
            best weights and the history. If it exists, training resumes from it, and the
            result is the same, bit for bit, as an uninterrupted training (the epoch keys
            depend on the epoch number only). A checkpoint made with other settings, pairs
            or key is refused.

    Returns:
        (posterior, history): the best-validation `NeuralPosterior` and a dict with
        per-epoch ``train_loss`` and ``val_loss`` (n_epochs, n_members) lists, ``best_val_loss``
        (n_members,), ``epochs`` and ``epoch_seconds`` (median wall time of an epoch after the first).
    """
    import time

    theta = np.asarray(theta, np.float64)
    x = np.asarray(x, np.float64)
    if theta.ndim != 2 or x.ndim < 2 or x.shape[0] != theta.shape[0]:
        raise ValueError(f"theta must be (n, d) and x (n, ...), with equal n; got {theta.shape} and {x.shape}")
    x = x.reshape(x.shape[0], -1)
    n = theta.shape[0]
    n_val = max(1, int(round(config.validation_fraction * n)))
    if n - n_val < config.batch_size:
        raise ValueError(f"{n - n_val} training pairs are fewer than batch_size = {config.batch_size}")
    if not (np.all(np.isfinite(theta)) and np.all(np.isfinite(x))):
        raise ValueError("theta and x must be finite")
    space0 = ParameterSpace(lo, hi)
    if theta.shape[1] != space0.dim:
        raise ValueError(f"theta has {theta.shape[1]} parameters, lo/hi {space0.dim}")
    inside = np.all((theta >= np.asarray(lo)) & (theta <= np.asarray(hi)))
    if not inside:
        raise ValueError("every theta must lie inside its prior box [lo, hi]")

    k_split, k_init, k_train = jax.random.split(key, 3)
    order = np.asarray(jax.random.permutation(k_split, n))
    tr, va = order[n_val:], order[:n_val]
    if init is None:  # standardise θ (in y space) and x with the training split's statistics
        y = np.asarray(jax.vmap(space0.to_y)(jnp.asarray(theta, _F32)), np.float64)
        shift, scale = y[tr].mean(0), y[tr].std(0) + 1e-8
        x_shift, x_scale = x[tr].mean(0), x[tr].std(0)
        x_scale = np.where(x_scale > 1e-8, x_scale, 1.0)  # a constant summary entry (e.g. an empty bin) stays 0
        space = ParameterSpace(lo, hi, shift, scale)
        post = build_posterior(config, space, x_shift, x_scale, names, key=k_init)
    else:  # a sequential round keeps the first round's standardisation
        _check_init(init, config, lo, hi, x.shape[1], k_init)
        post, space, x_shift, x_scale = init, init.space, np.asarray(init.x_shift), np.asarray(init.x_scale)

    u = jax.vmap(space.to_u)(jnp.asarray(theta, _F32))
    s = jnp.asarray((x - x_shift) / x_scale, _F32)
    u_tr, s_tr, u_va, s_va = u[tr], s[tr], u[va], s[va]

    optimiser = _optimiser(float(config.clip_norm), float(config.learning_rate))
    params, static = eqx.partition(post.estimator, eqx.is_inexact_array)
    opt_state = jax.vmap(optimiser.init)(params)
    best, best_val = params, np.full(config.n_members, np.inf)
    since = np.zeros(config.n_members, int)
    hist_tr, hist_va, times = [], [], []
    start = 0
    ckpt = None if checkpoint is None else Path(checkpoint)
    if ckpt is not None:
        from ..io.chunks import array_digest

        # what the checkpoint must have been made with: settings, the pairs, the key
        ident = dict(config=config.to_dict(), data=array_digest({"theta": theta, "x": x}),
                     key=np.asarray(jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
                                       else key).tolist(), init=init is not None)
        if ckpt.exists():
            try:
                header, (params, opt_state, best) = read_tree(ckpt, (params, opt_state, best))
            except ValueError as err:
                raise ValueError(f"checkpoint {err}: remove it to start again") from None
            if header["ident"] != ident:
                diff = sorted(k for k in ident if header["ident"].get(k) != ident[k])
                raise ValueError(f"checkpoint {ckpt} was made with other {', '.join(diff)}: remove it to start again")
            st = header["state"]
            start, hist_tr, hist_va, times = st["epoch"], st["train_loss"], st["val_loss"], st["times"]
            best_val = np.array([np.inf if v is None else v for v in st["best_val"]])
            since = np.array(st["since"], int)
    epochs = range(start, config.max_epochs)
    if progress:
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc="NPE epochs", initial=start, total=config.max_epochs)
    for epoch in epochs:
        if start and np.all(since >= config.patience):  # a checkpoint of a training that had already stopped
            break
        t0 = time.perf_counter()
        params, opt_state, tl, vl = _epoch(params, static, opt_state, jax.random.fold_in(k_train, epoch),
                                           u_tr, s_tr, u_va, s_va, optimiser, config.batch_size)
        vl = np.asarray(vl, np.float64)
        times.append(time.perf_counter() - t0)
        hist_tr.append(np.asarray(tl).tolist())
        hist_va.append(vl.tolist())
        better = vl < best_val
        mask = jnp.asarray(better)
        best = jax.tree.map(lambda b, p: jnp.where(mask.reshape((-1,) + (1,) * (p.ndim - 1)), p, b), best, params)
        best_val = np.where(better, vl, best_val)
        since = np.where(better, 0, since + 1)
        if ckpt is not None:
            state = dict(epoch=epoch + 1, train_loss=hist_tr, val_loss=hist_va, times=times,
                         best_val=[float(v) if np.isfinite(v) else None for v in best_val], since=since.tolist())
            write_tree(ckpt, dict(ident=ident, state=state), (params, opt_state, best))
        if np.all(since >= config.patience):
            break
    post = eqx.tree_at(lambda p: p.estimator, post, eqx.combine(best, static))
    history = dict(train_loss=hist_tr, val_loss=hist_va, best_val_loss=best_val.tolist(), epochs=len(hist_va),
                   epoch_seconds=float(np.median(times[1:])) if len(times) > 1 else float(times[0]),
                   first_epoch_seconds=float(times[0]))
    return post, history


def _check_init(init: NeuralPosterior, config: TrainConfig, lo, hi, n_summary: int, key) -> None:
    """`init` must be what `config` would build, on the same prior box and summary size."""
    like = build_posterior(config, init.space, np.zeros(n_summary), np.ones(n_summary), init.names, key=key)
    like, mine = eqx.filter(like, eqx.is_array), eqx.filter(init, eqx.is_array)
    same = jax.tree.structure(like) == jax.tree.structure(mine) and all(
        a.shape == b.shape for a, b in zip(jax.tree.leaves(like), jax.tree.leaves(mine)))
    if not same:
        raise ValueError("init must be a posterior of config's estimator, width, depth and n_members, "
                         f"trained on summaries of {n_summary} entries")
    box = ParameterSpace(lo, hi)
    if not (np.array_equal(np.asarray(init.space.lo), np.asarray(box.lo))
            and np.array_equal(np.asarray(init.space.hi), np.asarray(box.hi))):
        raise ValueError(f"init's prior box [{np.asarray(init.space.lo)}, {np.asarray(init.space.hi)}] differs from "
                         f"lo, hi = [{np.asarray(lo)}, {np.asarray(hi)}]")


def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
    p = Path(path)
    return p.with_suffix(".eqx"), p.with_suffix(".json")


def save_posterior(path: str | os.PathLike, posterior: NeuralPosterior, config: TrainConfig) -> None:
    """Write the posterior's arrays (``<path>.eqx``, Equinox serialisation) and ``<path>.json`` (hyperparameters).

    Any suffix of ``path`` is replaced by ``.eqx`` and ``.json``.
    """
    eqx_path, json_path = _paths(path)
    meta = dict(config=config.to_dict(), dim=posterior.dim, n_summary=int(posterior.x_shift.size),
                lo=np.asarray(posterior.space.lo, np.float64).tolist(),
                hi=np.asarray(posterior.space.hi, np.float64).tolist(), names=list(posterior.names))
    # JSON has no infinity: unbounded parameters are written as null
    meta["lo"] = [v if math.isfinite(v) else None for v in meta["lo"]]
    meta["hi"] = [v if math.isfinite(v) else None for v in meta["hi"]]
    # weights first, then their description, each atomically: a kill never pairs new weights with old metadata
    # for long (the loader checks the two agree through the array shapes)
    with atomic_path(eqx_path) as tmp:
        eqx.tree_serialise_leaves(tmp, posterior)
    write_json(json_path, meta)


def load_posterior(path: str | os.PathLike) -> tuple[NeuralPosterior, TrainConfig]:
    """Read what `save_posterior` wrote: (posterior, config)."""
    eqx_path, json_path = _paths(path)
    if not eqx_path.exists() or not json_path.exists():
        raise ValueError(f"path = {os.fspath(path)!r}: no saved posterior (needs {eqx_path} and {json_path})")
    with open(json_path) as f:
        meta = json.load(f)
    config = TrainConfig(**meta["config"])
    lo = np.array([-np.inf if v is None else v for v in meta["lo"]])
    hi = np.array([np.inf if v is None else v for v in meta["hi"]])
    n_s = meta["n_summary"]
    like = build_posterior(config, ParameterSpace(lo, hi), np.zeros(n_s), np.ones(n_s), meta["names"],
                           key=jax.random.key(0))
    return eqx.tree_deserialise_leaves(eqx_path, like), config
