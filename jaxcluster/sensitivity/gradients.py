r"""Sensitivities of the survey observables: ∂/∂θ_sim of the mean soft XOD, dN/dz, CR and HR distributions.

**What is differentiated.** For each realisation (PRNG key $k$) the survey
is simulated once at θ with the hard pipeline (detection included), which
fixes its segmentation $S_k(θ)$. The soft XOD of the sources measured in
that segmentation, $X_k(θ') = \mathrm{soft\_xod}(\mathrm{catalogue}(θ', k; S_k(θ)))$,
is a smooth function of θ' (count rates summed in fixed masks, box
redshifts, logistic bin weights: `jaxcluster.survey.xod`), and its
derivative at θ' = θ is taken by autodiff. The sensitivity is the mean over
K keys, with the Monte-Carlo standard error across keys
(`montecarlo.mc_estimate`):

$$ \widehat{∂λ/∂θ} = \frac1K\sum_k ∂X_k/∂θ, \qquad λ = \frac1K\sum_k X_k . $$

**Isophotes.** With hard masks the fixed segmentation leaves out how the
isophotes move: a brighter source's rim crosses the threshold and joins it
in the re-detected pipeline. With `SurveyConfig(isophote_softness=s)` the
catalogue the soft XOD uses is measured in soft isophotes
(`survey.detect.isophote_weights` over each source and its one-pixel rim),
whose derivative holds that rim term, so the mean of $∂X_k/∂θ$ estimates
the derivative of the mean re-detected measurement (the `jaxcluster
sensitivity` default, s = 0.05 dex).

The distributions are marginals of the soft XOD (`project`): dN/dz sums
over CR and HR, the CR distribution over HR and z, the HR distribution over
CR and z (soft histograms of the sources inside the diagram).

**Modes.** Six parameters and many bins call for forward mode, but
`jax.jvp`/`jacfwd` refuse the pipeline's `custom_vjp` functions (CIC
paint/read, the reversible PM adjoint). Their backward rules are linear JAX,
so `catalogue_tangents` transposes the pullback (`jax.linear_transpose`)
and pushes the six unit vectors to the catalogue (`method="jvp"`, the
default of `xod_sensitivity`): the Jacobian of the soft XOD then follows for
any binning and softness (`CatalogueTangents.soft_xod`). The reverse-mode
routes are `"jacrev"` (one pullback per output bin, vmapped) and, for one
scalar functional $\sum_i w_i λ_i$, `"grad"` (one pullback) in `mc_jacobians`.

**Finite differences** (`finite_difference_jacobians`) with common random
numbers (the same keys at θ ± h):

* `policy="fixed"`: the same segmentation $S_k(θ)$ at θ ± h and the same
  soft XOD: the same function autodiff differentiates, so the two agree per
  key to truncation and round-off (a check of the derivative itself).
* `policy="redetect"`: the hard pipeline, re-detected at θ ± h (the
  segmentation moves: isophotes grow, sources appear, merge, split), hard
  histogram (`soft=False`) or soft XOD. A source crossing a bin edge makes
  the hard XOD jump by one, so per-key FDs of single bins are
  $O(1/h)$-noisy; they are compared on bin sums (dN/dz, the CR and HR
  distributions, the total) and through their mean over keys, with the
  standard error of the per-key differences (`montecarlo.paired_sigma`).
  They measure the derivative of the *expected hard counts*, which differs
  from the fixed-segmentation soft derivative by what of the segmentation's
  own response the soft isophotes leave out (sources appearing, merging,
  splitting) and by the O(softness) smoothing: agreement is expected only
  within the Monte-Carlo error of K keys, not exactly. The hard FD's bins
  count edge crossings, rare events whose variance `paired_sigma(...,
  count_step=2h)` floors at its Poisson value
  (docs/validation/sensitivity.md says what agrees).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int, Key, PRNGKeyArray

from ..baryons.eldl import ExtendedLDL
from ..params import PARAM_NAMES, PRIOR_BOUNDS, ThetaSim
from ..survey.detect import Catalogue
from ..survey.pipeline import SurveyConfig, simulate_survey
from ..survey.xod import soft_xod
from ..xray.emissivity import EmissivityTable, default_emissivity_table
from .montecarlo import MCEstimate, mc_estimate

__all__ = [
    "OBSERVABLES",
    "METHODS",
    "project",
    "SurveySensitivity",
    "default_steps",
    "mc_jacobians",
    "reference_segmentations",
    "soft_xod_fixed",
    "CatalogueTangents",
    "catalogue_tangents",
    "segmentation_valid",
    "xod_sensitivity",
    "finite_difference_jacobians",
    "richardson",
]

OBSERVABLES: tuple[str, ...] = ("xod", "dndz", "cr", "hr", "total")
METHODS: tuple[str, ...] = ("jacrev", "grad")


def project(x: Float[ArrayLike, "*lead n_cr n_hr n_z"], observable: str) -> Float[Array, "*lead ..."]:
    """The observable from an XOD (or its Jacobian) with any leading axes.

    Args:
        x: (*lead, n_cr, n_hr, n_z) XODs (counts) or derivatives of them.
        observable: "xod" (unchanged), "dndz" (sum over CR, HR → n_z),
            "cr" (over HR, z → n_cr), "hr" (over CR, z → n_hr), "total" (all → scalar).

    Returns:
        (*lead, ...) the marginal.
    """
    x = jnp.asarray(x)
    axes = {"xod": (), "dndz": (-3, -2), "cr": (-2, -1), "hr": (-3, -1), "total": (-3, -2, -1)}
    if observable not in axes:
        raise ValueError(f"observable = {observable!r} is not one of the allowed {OBSERVABLES}")
    return jnp.sum(x, axis=axes[observable]) if axes[observable] else x


def default_steps(fraction: float = 0.02, theta: ThetaSim | None = None) -> Float[Array, " 6"]:
    """Finite-difference steps: `fraction` of each parameter's prior width (seed 001 Table 1).

    Args:
        fraction: (0, 0.25].
        theta: if given, the steps are shrunk so that θ ± h stays inside the prior.

    Returns:
        (6,) absolute steps in PARAM_NAMES order.
    """
    if not 0 < fraction <= 0.25:
        raise ValueError(f"fraction = {fraction} is outside its allowed range (0, 0.25]")
    h = np.array([fraction * (PRIOR_BOUNDS[n][1] - PRIOR_BOUNDS[n][0]) for n in PARAM_NAMES])
    if theta is not None:
        t = np.asarray(theta.to_array(), dtype=np.float64)
        room = np.array([min(t[i] - PRIOR_BOUNDS[n][0], PRIOR_BOUNDS[n][1] - t[i]) for i, n in enumerate(PARAM_NAMES)])
        h = np.minimum(h, 0.999 * room)
    return jnp.asarray(h)


class SurveySensitivity(eqx.Module):
    """Per-realisation soft XODs at θ and their Jacobians; means and MC errors on demand.

    Attributes:
        theta: (6,) θ_sim in PARAM_NAMES order.
        xod: (K, n_cr, n_hr, n_z) soft XOD of each key (segmentation fixed at θ).
        jacobian: (K, 6, n_cr, n_hr, n_z) ∂XOD/∂θ_a of each key.
    """

    theta: Float[Array, " 6"]
    xod: Float[Array, "n_key n_cr n_hr n_z"]
    jacobian: Float[Array, "n_key 6 n_cr n_hr n_z"]

    @property
    def n_keys(self) -> int:
        return self.xod.shape[0]

    def value(self, observable: str = "xod") -> MCEstimate:
        """Mean of the observable over keys, with its standard error."""
        return mc_estimate(project(self.xod, observable))

    def derivative(self, observable: str = "xod") -> MCEstimate:
        """Mean ∂(observable)/∂θ over keys, (6, ...), with its standard error."""
        return mc_estimate(project(self.jacobian, observable))


def mc_jacobians(
    fn: Callable[[Float[Array, " p"], PRNGKeyArray], Float[Array, "*out"]],
    theta: Float[ArrayLike, " p"],
    keys: Key[Array, " n_key"],
    method: str = "jacrev",
    weights: Float[ArrayLike, "*out"] | None = None,
) -> tuple[Float[Array, "n_key *out"], Float[Array, "n_key p *out"] | Float[Array, "n_key p"]]:
    """Values and derivatives of fn(θ, key) for each key (one key after another, `lax.map`).

    Args:
        fn: a differentiable function of (θ, key).
        theta: (p,) point.
        keys: (K,) PRNG keys (with whatever else fn closes over per key folded in by the caller).
        method: "jacrev" (full Jacobian, one pullback per output, vmapped) or
            "grad" (gradient of Σ weights · fn, one pullback).
        weights: the functional's weights for "grad" (default all 1).

    Returns:
        (values (K, *out), derivatives): (K, p, *out) for "jacrev", (K, p) for "grad".
    """
    if method not in METHODS:
        raise ValueError(f"method = {method!r} is not one of the allowed {METHODS}")
    theta = jnp.asarray(theta)

    def one(key):
        if method == "jacrev":
            val, pull = jax.vjp(lambda t: fn(t, key), theta)
            n_out = val.size
            eye = jnp.eye(n_out, dtype=val.dtype).reshape(n_out, *val.shape)
            (jac,) = jax.vmap(pull)(eye)  # (n_out, p)
            return val, jnp.moveaxis(jac.reshape(*val.shape, theta.shape[0]), -1, 0)
        w = 1.0 if weights is None else jnp.asarray(weights)
        val, pull = jax.vjp(lambda t: fn(t, key), theta)
        (g,) = pull(jnp.broadcast_to(jnp.asarray(w, val.dtype), val.shape))
        return val, g

    return jax.lax.map(one, keys)


def _resolve(eldl, table):
    if eldl is None:
        from ..baryons import default_eldl

        eldl = default_eldl()
    return eldl, (default_emissivity_table() if table is None else table)


def reference_segmentations(
    theta: ThetaSim,
    keys: Key[Array, " n_key"],
    config: SurveyConfig,
    *,
    eldl: ExtendedLDL | None = None,
    table: EmissivityTable | None = None,
) -> Int[Array, "n_key n_lc n_box n_pix n_pix"]:
    """The segmentation of each key's survey at θ (the hard pipeline's detection), one key at a time."""
    eldl, table = _resolve(eldl, table)
    run = jax.jit(lambda k: simulate_survey(theta, k, config, eldl=eldl, table=table).segmentation)
    return jnp.stack([run(k) for k in keys])


def soft_xod_fixed(
    theta: Float[Array, " 6"],
    key: PRNGKeyArray,
    segmentation: Int[Array, "n_lc n_box n_pix n_pix"],
    config: SurveyConfig,
    *,
    eldl: ExtendedLDL,
    table: EmissivityTable,
) -> Float[Array, "n_cr n_hr n_z"]:
    """Soft XOD of one key's survey at θ (array, PARAM_NAMES order), sources measured in a fixed segmentation."""
    res = simulate_survey(ThetaSim.from_array(theta), key, config, eldl=eldl, table=table, segmentation=segmentation)
    return res.xod_soft


class CatalogueTangents(eqx.Module):
    """One survey's catalogue at θ (segmentation fixed) and its derivatives along the 6 θ_sim axes.

    Attributes:
        count_rate: (n_lc, n_box, S, n_band) count rates [counts s⁻¹].
        z: (n_lc, n_box, S) redshifts.
        valid: (n_lc, n_box, S) slots holding sources.
        d_count_rate: (6, n_lc, n_box, S, n_band) ∂count_rate/∂θ_a.
        d_z: (6, n_lc, n_box, S) ∂z/∂θ_a (the box redshifts move with Ω_m).
    """

    count_rate: Float[Array, "n_lc n_box s n_band"]
    z: Float[Array, "n_lc n_box s"]
    valid: Bool[Array, "n_lc n_box s"]
    d_count_rate: Float[Array, "6 n_lc n_box s n_band"]
    d_z: Float[Array, "6 n_lc n_box s"]

    def soft_xod(self, config: SurveyConfig, softness: float | None = None, softness_z: float | None = None
                 ) -> tuple[Float[Array, "n_cr n_hr n_z"], Float[Array, "6 n_cr n_hr n_z"]]:
        """(soft XOD, its 6 directional derivatives) for any softness (default the configuration's)."""
        s = config.softness if softness is None else float(softness)
        sz = config.softness_z if softness_z is None else float(softness_z)

        def xod(cr_bands, z):
            cat = Catalogue(count_rate=cr_bands, xi=jnp.zeros((*z.shape, 2), z.dtype), area=jnp.ones(z.shape, z.dtype),
                            z=z, valid=self.valid)
            return soft_xod(cat.count_rate_total.reshape(-1), cat.hardness_ratio.reshape(-1), z.reshape(-1),
                            self.valid.reshape(-1), config.binning, config.cr_min, s, sz)

        val = xod(self.count_rate, self.z)
        jac = jax.vmap(lambda dc, dz: jax.jvp(xod, (self.count_rate, self.z), (dc, dz))[1])(self.d_count_rate, self.d_z)
        return val, jac


def catalogue_tangents(
    theta: Float[Array, " 6"],
    key: PRNGKeyArray,
    segmentation: Int[Array, "n_lc n_box n_pix n_pix"],
    config: SurveyConfig,
    *,
    eldl: ExtendedLDL,
    table: EmissivityTable,
) -> CatalogueTangents:
    r"""Forward-mode derivatives of one survey's catalogue along the 6 θ_sim axes, by transposing its pullback.

    `jax.jvp` cannot enter the pipeline's `custom_vjp` functions, but their
    backward rules are plain linear JAX, so the pullback v ↦ Jᵀv can be
    transposed (`jax.linear_transpose`) into u ↦ J u: six of those give the
    whole catalogue Jacobian, whatever the number of sources and bins, for
    about six pullbacks' cost (the forward pass is shared).

    Args:
        theta: (6,) θ_sim, PARAM_NAMES order.
        key: the survey's key.
        segmentation: (n_lc, n_box, n_pix, n_pix) labels held fixed.
        config: `SurveyConfig`.
        eldl: baryon painter.
        table: count-rate table.

    Returns:
        `CatalogueTangents`.
    """

    def cat(t):
        c = simulate_survey(ThetaSim.from_array(t), key, config, eldl=eldl, table=table, segmentation=segmentation).catalogue
        c = c.soft_measured  # what the soft XOD sees (soft isophotes if the configuration asks for them)
        return c.count_rate, c.z

    primal, pull = jax.vjp(cat, theta)
    push = jax.linear_transpose(lambda ct: pull(ct)[0], primal)
    eye = jnp.eye(theta.shape[0], dtype=theta.dtype)
    d_cr, d_z = jax.vmap(lambda u: push(u)[0])(eye)
    valid = segmentation_valid(segmentation, config)
    return CatalogueTangents(count_rate=primal[0], z=primal[1], valid=valid, d_count_rate=d_cr, d_z=d_z)


def segmentation_valid(segmentation: Int[Array, "n_lc n_box n_pix n_pix"], config: SurveyConfig) -> Bool[Array, "n_lc n_box s"]:
    """Which catalogue slots a segmentation fills (label s + 1 present)."""
    s = config.detection.max_sources
    labels = jnp.arange(1, s + 1, dtype=segmentation.dtype)
    flat = segmentation.reshape(*segmentation.shape[:2], -1)
    return jax.vmap(jax.vmap(lambda m: jnp.isin(labels, m)))(flat)


def xod_sensitivity(
    theta: ThetaSim,
    keys: Key[Array, " n_key"],
    config: SurveyConfig,
    *,
    eldl: ExtendedLDL | None = None,
    table: EmissivityTable | None = None,
    segmentations: Int[Array, "n_key n_lc n_box n_pix n_pix"] | None = None,
    method: str = "jvp",
) -> tuple[SurveySensitivity, list[CatalogueTangents] | None]:
    """Soft XODs and their full Jacobians ∂XOD/∂θ_sim for K keys (module docstring).

    Args:
        theta: one θ_sim.
        keys: (K,) survey keys, K ≥ 2 for error estimates.
        config: `SurveyConfig` (its binning and softness define the soft XOD).
        eldl: baryon painter; default the shipped (SYNTHETIC-trained) weights.
        table: count-rate table; default EPIC-pn.
        segmentations: (K, n_lc, n_box, n_pix, n_pix) segmentations to hold fixed;
            default each key's own detection at θ (`reference_segmentations`).
        method: "jvp" (six forward-mode directions through the catalogue,
            `catalogue_tangents`; also returns the catalogues, so other
            softnesses cost nothing) or "jacrev" (one pullback per XOD bin).

    Returns:
        (`SurveySensitivity`, the K `CatalogueTangents` or None for "jacrev").
    """
    if method not in ("jvp", "jacrev"):
        raise ValueError(f"method = {method!r} is not one of the allowed ('jvp', 'jacrev')")
    eldl, table = _resolve(eldl, table)
    segs = reference_segmentations(theta, keys, config, eldl=eldl, table=table) if segmentations is None else segmentations
    th = theta.to_array()
    if method == "jvp":
        run = jax.jit(lambda k, s: catalogue_tangents(th, k, s, config, eldl=eldl, table=table))
        cats = [run(k, s) for k, s in zip(keys, segs)]
        out = [c.soft_xod(config) for c in cats]
        return SurveySensitivity(theta=th, xod=jnp.stack([o[0] for o in out]),
                                 jacobian=jnp.stack([o[1] for o in out])), cats

    @jax.jit
    def one(key, seg):
        fn = lambda t, k: soft_xod_fixed(t, k, seg, config, eldl=eldl, table=table)  # noqa: E731
        val, jac = mc_jacobians(fn, th, key[None], "jacrev")
        return val[0], jac[0]

    out = [one(k, s) for k, s in zip(keys, segs)]  # one compilation, one key at a time
    return SurveySensitivity(theta=th, xod=jnp.stack([o[0] for o in out]), jacobian=jnp.stack([o[1] for o in out])), None


def finite_difference_jacobians(
    theta: ThetaSim,
    keys: Key[Array, " n_key"],
    config: SurveyConfig,
    steps: Float[ArrayLike, " 6"],
    *,
    policy: str = "redetect",
    soft: bool = False,
    both: bool = False,
    params: Sequence[int] = tuple(range(6)),
    eldl: ExtendedLDL | None = None,
    table: EmissivityTable | None = None,
    segmentations: Int[Array, "n_key n_lc n_box n_pix n_pix"] | None = None,
) -> Float[Array, "n_key n_param n_cr n_hr n_z"]:
    """Central differences (X(θ + h e_a) − X(θ − h e_a)) / 2h per key, common random numbers.

    Args:
        theta: one θ_sim; θ ± h must lie in the prior and, for Ω_m, in the
            configuration's [omega_m_min, omega_m_max].
        keys: (K,) survey keys (the same at θ + h and θ − h).
        config: `SurveyConfig`.
        steps: (6,) absolute steps h_a (`default_steps`).
        policy: "fixed" (segmentation of θ held, as autodiff) or "redetect"
            (the hard pipeline, detection at θ ± h).
        soft: difference the soft XOD (True) or the hard histogram (False).
        both: return (hard, soft) differences from the same runs (`soft` ignored).
        params: indices of the parameters to difference (PARAM_NAMES order).
        eldl: baryon painter (default shipped weights).
        table: count-rate table (default EPIC-pn).
        segmentations: for policy "fixed": the segmentations at θ (default: detected).

    Returns:
        (K, len(params), n_cr, n_hr, n_z) finite-difference derivatives (a pair if `both`).
    """
    if policy not in ("fixed", "redetect"):
        raise ValueError(f"policy = {policy!r} is not one of the allowed ('fixed', 'redetect')")
    eldl, table = _resolve(eldl, table)
    h = np.asarray(steps, dtype=np.float64)
    if h.shape != (6,) or not np.all(h > 0):
        raise ValueError(f"steps must be 6 positive values, got {h}")
    th = np.asarray(theta.to_array(), dtype=np.float64)
    if policy == "fixed" and segmentations is None:
        segmentations = reference_segmentations(theta, keys, config, eldl=eldl, table=table)

    @jax.jit
    def xod(t, key, seg):
        r = simulate_survey(ThetaSim.from_array(t), key, config, eldl=eldl, table=table, segmentation=seg)
        return jnp.stack([r.xod, r.xod_soft])

    out = []
    for i, key in enumerate(keys):
        seg = None if policy == "redetect" else segmentations[i]
        rows = []
        for a in params:
            e = np.zeros(6)
            e[a] = h[a]
            plus = xod(jnp.asarray(th + e), key, seg)
            minus = xod(jnp.asarray(th - e), key, seg)
            rows.append((plus - minus) / (2.0 * h[a]))
        out.append(jnp.stack(rows, axis=1))  # (2, n_param, ...)
    res = jnp.stack(out, axis=1)  # (2, K, n_param, ...)
    return (res[0], res[1]) if both else res[1 if soft else 0]


def richardson(d_h: Float[ArrayLike, "..."], d_half: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
    """(4 D(h/2) − D(h)) / 3: central differences at steps h and h/2 combined, free of their O(h²) truncation."""
    return (4.0 * jnp.asarray(d_half) - jnp.asarray(d_h)) / 3.0
