r"""NUTS sampling of the analytic Poisson XOD posterior with blackjax.

**Posterior.** $\ln p(θ | n) = \ln\mathcal L(n | λ(θ)) + \ln π(θ)$ with the
Poisson likelihood of `counts.poisson_log_likelihood` and priors:

* Ω_m ~ U(0.1, 0.5), σ_8 ~ U(0.6, 1.0) (seed 001 Table 1, `params.PRIOR_BOUNDS`);
* scaling-relation parameters: Gaussian around the fiducial `ScalingRelations()`
  with the widths `NUISANCE_PRIOR_SIGMA` (about the published 1σ calibration
  uncertainties of Lieu et al. 2016 and Giles et al. 2016, rounded up, so
  that the priors inform without dominating); the scatters, if freed,
  are given the same treatment.

**Sampling space.** Flat-prior parameters are sampled in
$u = \mathrm{logit}((θ − lo)/(hi − lo))$ (log-Jacobian added) so the sampler
never meets the prior walls; Gaussian-prior ones are sampled as they are.
Returned samples are in θ.

**Curved posteriors.** Cluster counts bend the Ω_m–σ_8–M0 degeneracy (a
banana even in u); a dense metric cannot follow the curve, so NUTS needs long
trajectories and mixes slowly. `ShearMap` (fitted to pilot draws, e.g. an
NPE's, by `fit_shear_map`) straightens it: a triangular map with quadratic
shear terms and unit-diagonal shear, so its Jacobian is the constant
whitening scale and the reparametrised density is exact; `run_nuts` samples
in its output z when given one.

**Algorithm** (ARCHITECTURE §3): `blackjax.window_adaptation(blackjax.nuts, logdensity)`
(step size and diagonal mass matrix, Stan's windows) per chain, then a
`lax.scan` over `nuts.step`; chains are independent and `vmap`ped. R̂ and ESS
from `blackjax.diagnostics`.
"""

from __future__ import annotations

import itertools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, PRNGKeyArray

from ..params import PRIOR_BOUNDS
from .counts import poisson_log_likelihood
from .fisher import AnalyticModel

__all__ = [
    "NUISANCE_PRIOR_SIGMA",
    "log_prior",
    "log_posterior",
    "is_physical",
    "initial_points",
    "to_unconstrained",
    "from_unconstrained",
    "run_nuts",
    "unconstrained_covariance",
    "nuts_diagnostics",
    "ShearMap",
    "fit_shear_map",
]

# Gaussian prior widths of the scaling-relation parameters (module docstring).
NUISANCE_PRIOR_SIGMA: dict[str, float] = {
    "log10_M0": 0.15,
    "alpha_MT": 0.3,
    "gamma_MT": 0.5,
    "log10_L0": 0.1,
    "alpha_LT": 0.3,
    "gamma_LT": 0.5,
    "sigma_lnT": 0.05,
    "sigma_lnL": 0.1,
}


def _flat(name: str) -> bool:
    return name in ("Omega_m", "sigma_8")


def log_prior(model: AnalyticModel, theta: Float[ArrayLike, " n_param"]) -> Float[Array, ""]:
    """ln π(θ): flat (Table 1) for Ω_m, σ_8 (−inf outside), Gaussian for the nuisance."""
    theta = jnp.asarray(theta)
    base = model.theta0()
    total = jnp.zeros((), theta.dtype)
    for i, n in enumerate(model.names):
        if _flat(n):
            lo, hi = PRIOR_BOUNDS[n]
            inside = (theta[i] >= lo) & (theta[i] <= hi)
            total = total + jnp.where(inside, -math.log(hi - lo), -jnp.inf)
        elif n in NUISANCE_PRIOR_SIGMA:
            s = NUISANCE_PRIOR_SIGMA[n]
            total = total - 0.5 * ((theta[i] - base[i]) / s) ** 2 - math.log(s * math.sqrt(2 * math.pi))
        else:
            raise ValueError(f"no prior defined for parameter {n!r}")
    return total


def is_physical(model: AnalyticModel, theta: Float[ArrayLike, " n_param"]) -> Bool[Array, ""]:
    """Whether θ is finite and every free slope and scatter (``scaling._POSITIVE``) is > 0.

    A sampler's excursion outside this region has zero posterior density;
    the model itself refuses such θ (`ScalingRelations.check` raises).
    """
    from .scaling import _POSITIVE

    theta = jnp.asarray(theta)
    ok = jnp.all(jnp.isfinite(theta))
    for i, n in enumerate(model.names):
        if n in _POSITIVE:
            ok = ok & (theta[i] > 0)
    return ok


def _log_likelihood(model: AnalyticModel, theta: Array, counts: Array) -> Array:
    """ln L(counts | λ(θ)), −inf (not an error) where θ is unphysical: the model sees θ₀ there instead."""
    ok = is_physical(model, theta)
    safe = jnp.where(ok, theta, model.theta0().astype(theta.dtype))
    ll = poisson_log_likelihood(counts, model(safe))
    return jnp.where(ok & jnp.isfinite(ll), ll, -jnp.inf)


def log_posterior(
    model: AnalyticModel, theta: Float[ArrayLike, " n_param"], counts: Float[ArrayLike, "n_cr n_hr n_z"]
) -> Float[Array, ""]:
    """ln L(counts | λ(θ)) + ln π(θ): −inf outside the flat priors and for unphysical θ (`is_physical`)."""
    theta = jnp.asarray(theta)
    total = log_prior(model, theta) + _log_likelihood(model, theta, jnp.asarray(counts))
    return jnp.where(is_physical(model, theta), total, -jnp.inf)  # a NaN θ too: not NaN + (−inf)


def initial_points(
    model: AnalyticModel,
    key: PRNGKeyArray,
    n_chains: int,
    cov: Float[ArrayLike, "n_param n_param"],
    *,
    scale: float = 0.5,
    theta: Float[ArrayLike, " n_param"] | None = None,
) -> Float[Array, "n_chains n_param"]:
    """Chain starting points around θ (default θ₀), always strictly inside the priors and physical.

    Drawn in the sampling space u (logit of the flat-prior parameters) from
    N(u(θ), scale² · J C Jᵀ), C the θ-space covariance (e.g. Fisher's), so
    a flat-prior parameter can never start on or beyond its wall; a draw
    with a non-positive slope or scatter is replaced by θ.

    Args:
        model: the `AnalyticModel`.
        key: PRNG key.
        n_chains: number of chains, ≥ 1.
        cov: (n_param, n_param) covariance in θ.
        scale: spread in units of that covariance, ≥ 0.
        theta: centre (default `model.theta0()`), inside the priors.
    """
    if not (isinstance(n_chains, int) and n_chains >= 1):
        raise ValueError(f"n_chains = {n_chains!r} is outside its allowed range: an integer >= 1")
    if not scale >= 0:
        raise ValueError(f"scale = {scale} is outside its allowed range [0, inf)")
    theta = model.theta0() if theta is None else jnp.asarray(theta)
    cov_u = unconstrained_covariance(model, cov, theta)
    chol = jnp.linalg.cholesky(cov_u + 1e-12 * jnp.eye(model.n_param, dtype=cov_u.dtype))
    z = jax.random.normal(key, (n_chains, model.n_param), cov_u.dtype)
    u = to_unconstrained(model, theta)[None, :] + scale * z @ chol.T
    points = jax.vmap(lambda v: from_unconstrained(model, v)[0])(u)
    ok = jax.vmap(lambda t: is_physical(model, t))(points)
    return jnp.where(ok[:, None], points, theta[None, :])


def from_unconstrained(
    model: AnalyticModel, u: Float[ArrayLike, " n_param"]
) -> tuple[Float[Array, " n_param"], Float[Array, ""]]:
    """θ(u) and ln|dθ/du| (logit for flat-prior parameters, identity otherwise)."""
    u = jnp.asarray(u)
    out, logdet = [], jnp.zeros((), u.dtype)
    for i, n in enumerate(model.names):
        if _flat(n):
            lo, hi = PRIOR_BOUNDS[n]
            out.append(lo + (hi - lo) * jax.nn.sigmoid(u[i]))
            logdet = logdet + math.log(hi - lo) + jax.nn.log_sigmoid(u[i]) + jax.nn.log_sigmoid(-u[i])
        else:
            out.append(u[i])
    return jnp.stack(out), logdet


def to_unconstrained(model: AnalyticModel, theta: Float[ArrayLike, " n_param"]) -> Float[Array, " n_param"]:
    """Inverse of `from_unconstrained` (θ strictly inside the flat priors)."""
    theta = jnp.asarray(theta)
    out = []
    for i, n in enumerate(model.names):
        if _flat(n):
            lo, hi = PRIOR_BOUNDS[n]
            x = (theta[i] - lo) / (hi - lo)
            x = eqx.error_if(x, ~((x > 0) & (x < 1)), f"{n} must be strictly inside its prior ({lo}, {hi})")
            out.append(jnp.log(x) - jnp.log1p(-x))
        else:
            out.append(theta[i])
    return jnp.stack(out)


def _quadratic_features(prev, xp=jnp):
    """[1, u_i, u_i u_k (i ≤ k)] of the preceding coordinates (..., k) → (..., 1 + k + k(k+1)/2); xp: jnp or np."""
    rows, cols = np.triu_indices(prev.shape[-1])
    one = xp.ones(prev.shape[:-1] + (1,), prev.dtype)
    return xp.concatenate([one, prev, prev[..., rows] * prev[..., cols]], axis=-1)


class ShearMap(eqx.Module):
    r"""A triangular map z ↔ u, unit-diagonal shear and a scale, that straightens curved posteriors.

    In the order ``order`` (a permutation of the coordinates), coordinate
    $j = \mathrm{order}_k$ is $u_j = c_k · φ(u_{\mathrm{order}_{<k}}) + s_k z_k$,
    φ the constant, linear and quadratic monomials of the coordinates before it.
    The Jacobian ∂u/∂z is triangular with diagonal s, so
    $\ln|∂u/∂z| = \sum_k \ln s_k$ for every z, and the map is a bijection of ℝᵈ.

    Attributes:
        coefficients: per position k, (1 + k + k(k+1)/2,) regression coefficients c_k.
        scales: (d,) s_k, the residual standard deviations (same units as u).
        order: the coordinate order (static).
    """

    coefficients: tuple[Array, ...]
    scales: Float[Array, " d"]
    order: tuple[int, ...] = eqx.field(static=True)

    def forward(self, z: Float[ArrayLike, " d"]) -> Float[Array, " d"]:
        """u(z) for one z (d,)."""
        z = jnp.asarray(z)
        vals = []
        for k, c in enumerate(self.coefficients):
            prev = jnp.stack(vals) if vals else jnp.zeros(0, z.dtype)
            vals.append(_quadratic_features(prev) @ c + self.scales[k] * z[k])
        return jnp.zeros_like(z).at[jnp.asarray(self.order)].set(jnp.stack(vals))

    def inverse(self, u: Float[ArrayLike, " d"]) -> Float[Array, " d"]:
        """z(u) for one u (d,)."""
        u = jnp.asarray(u)
        uo = u[jnp.asarray(self.order)]
        return jnp.stack([(uo[k] - _quadratic_features(uo[:k]) @ c) / self.scales[k]
                          for k, c in enumerate(self.coefficients)])

    def log_abs_det_du_dz(self) -> Float[Array, ""]:
        """ln|∂u/∂z| (a constant)."""
        return jnp.sum(jnp.log(self.scales))


def fit_shear_map(u: Float[ArrayLike, "n d"], order: tuple[int, ...] | None = None) -> ShearMap:
    r"""Least-squares `ShearMap` that takes pilot draws u (n, d) to roughly independent unit-variance z.

    Each coordinate is regressed on the quadratic monomials of those before
    it; the residual standard deviation is its scale. Without ``order``, every
    order is tried (d ≤ 5) and the one with the smallest $\sum_k \ln s_k$ (the
    most structure absorbed) kept.

    Args:
        u: (n, d) pilot draws in the sampling space, n > 1 + d + d(d+1)/2.
        order: coordinate order; None: the best one.
    """
    u = np.asarray(u, np.float64)
    if u.ndim != 2:
        raise ValueError(f"u must be (n, d) pilot draws, got shape {u.shape}")
    n, d = u.shape
    if n <= 1 + d + d * (d + 1) // 2:
        raise ValueError(f"u has {n} draws; need more than {1 + d + d * (d + 1) // 2} for a quadratic fit in d = {d}")
    if order is None and d > 5:
        order = tuple(range(d))
    candidates = [tuple(order)] if order is not None else list(itertools.permutations(range(d)))
    if any(sorted(o) != list(range(d)) for o in candidates):
        raise ValueError(f"order = {order} must be a permutation of 0..{d - 1}")
    best = None
    for o in candidates:
        uo = u[:, list(o)]
        coefs, scales = [], []
        for k in range(d):
            phi = _quadratic_features(uo[:, :k], np)
            c, *_ = np.linalg.lstsq(phi, uo[:, k], rcond=None)
            coefs.append(c)
            scales.append(np.std(uo[:, k] - phi @ c))
        score = float(np.sum(np.log(scales)))
        if best is None or score < best[0]:
            best = (score, o, coefs, scales)
    _, o, coefs, scales = best
    return ShearMap(tuple(jnp.asarray(c) for c in coefs), jnp.asarray(scales), tuple(int(i) for i in o))


def run_nuts(
    model: AnalyticModel,
    counts: Float[ArrayLike, "n_cr n_hr n_z"],
    theta_init: Float[ArrayLike, "n_chains n_param"],
    *,
    key: PRNGKeyArray,
    n_warmup: int = 500,
    n_samples: int = 1000,
    target_acceptance_rate: float = 0.8,
    inverse_mass_matrix: Float[ArrayLike, "n_param n_param"] | None = None,
    dense_mass_matrix: bool = True,
    mass_matrix_pseudo_count: float = 0.0,
    reparametrisation: ShearMap | None = None,
    progress: bool = False,
) -> dict[str, Array]:
    """Several NUTS chains (vmapped) on the XOD posterior.

    Args:
        model: `AnalyticModel` (free parameters = `model.names`).
        counts: (n_cr, n_hr, n_z) observed counts (integers, or λ for an Asimov set).
        theta_init: (n_chains, n_param) starting points inside the priors.
        key: PRNG key (keyword-only).
        n_warmup: window-adaptation steps (step size + diagonal mass matrix).
        n_samples: samples kept per chain.
        target_acceptance_rate: NUTS adaptation target.
        inverse_mass_matrix: initial (n_param, n_param) inverse mass matrix in
            the sampling space u, e.g. `unconstrained_covariance(model, Fisher
            covariance)`; the window adaptation starts from it. Cluster counts
            make Ω_m and σ_8 strongly degenerate: a starting metric from the
            Fisher matrix (and a dense one) keeps NUTS trajectories short.
        dense_mass_matrix: adapt a dense (True) or diagonal mass matrix.
        mass_matrix_pseudo_count: shrink each adapted mass matrix toward the
            previous one (starting with `inverse_mass_matrix`) with this Bayesian
            pseudo-count (blackjax ``imm_shrinkage_to_previous``); with a good
            Fisher metric and a short warm-up, ~100 keeps it from being replaced
            by a noisy estimate.
        reparametrisation: a `ShearMap` from u to sample in instead (its z,
            roughly standard normal: `inverse_mass_matrix` is then in z, and
            None means identity); the returned samples are still in θ.
        progress: a tqdm bar over the samples of all chains, fed from inside the compiled
            program (`jax.debug.callback`); it starts when the warm-up ends.

    Returns:
        dict with ``samples`` (n_chains, n_samples, n_param) in θ,
        ``is_divergent`` (n_chains, n_samples), ``acceptance_rate`` (n_chains, n_samples),
        ``num_integration_steps`` (n_chains, n_samples), ``step_size`` (n_chains,).
    """
    for name, v, lo in (("n_warmup", n_warmup, 1), ("n_samples", n_samples, 2)):
        if not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} = {v!r} is outside its allowed range: an integer >= {lo}")
    theta_init = jnp.asarray(theta_init)
    if theta_init.ndim != 2 or theta_init.shape[1] != model.n_param:
        raise ValueError(f"theta_init must have shape (n_chains, {model.n_param}), got {theta_init.shape}")
    counts = jnp.asarray(counts)

    shear = reparametrisation
    if shear is not None and len(shear.order) != model.n_param:
        raise ValueError(f"reparametrisation has {len(shear.order)} coordinates, the model {model.n_param}")

    def to_u(q):
        return q if shear is None else shear.forward(q)

    def logdensity(q):
        theta, logdet = from_unconstrained(model, to_u(q))
        # the shear's Jacobian is a constant: it does not change the sampled density's shape; an
        # unphysical θ (a slope or scatter <= 0) has zero density, a rejected step, not an error
        total = _log_likelihood(model, theta, counts) + log_prior(model, theta) + logdet
        return jnp.where(is_physical(model, theta), total, -jnp.inf)

    u_init = jax.vmap(lambda t: to_unconstrained(model, t))(theta_init)
    if shear is not None:
        u_init = jax.vmap(shear.inverse)(u_init)
    imm = None
    if inverse_mass_matrix is not None:
        imm = jnp.asarray(inverse_mass_matrix, dtype=u_init.dtype)
        if imm.shape != (model.n_param, model.n_param):
            raise ValueError(f"inverse_mass_matrix must be ({model.n_param}, {model.n_param}), got {imm.shape}")
        if not dense_mass_matrix:
            imm = jnp.diag(imm)

    import blackjax  # here, not at import: importing blackjax starts the XLA backend, which must wait for jax.distributed

    def one_chain(k, u0):
        k_warm, k_run = jax.random.split(k)
        warmup = blackjax.window_adaptation(
            blackjax.nuts, logdensity, target_acceptance_rate=target_acceptance_rate,
            is_mass_matrix_diagonal=not dense_mass_matrix, initial_inverse_mass_matrix=imm,
            imm_shrinkage_to_previous=float(mass_matrix_pseudo_count),
            adaptation_info_fn=blackjax.adaptation.base.get_filter_adapt_info_fn(),
        )
        (state, params), _ = warmup.run(k_warm, u0, num_steps=n_warmup)
        step = blackjax.nuts(logdensity, **params).step

        def body(s, kk):
            s, info = step(kk, s)
            if bar is not None:
                jax.debug.callback(lambda a: bar.update(int(np.size(a))), info.acceptance_rate)
            return s, (s.position, info.is_divergent, info.acceptance_rate, info.num_integration_steps)

        _, (pos, div, acc, nsteps) = jax.lax.scan(body, state, jax.random.split(k_run, n_samples))
        theta = jax.vmap(lambda q: from_unconstrained(model, to_u(q))[0])(pos)
        return theta, div, acc, nsteps, params["step_size"]

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=theta_init.shape[0] * n_samples, unit="sample", desc="NUTS (after warm-up)")
    keys = jax.random.split(key, theta_init.shape[0])
    # blackjax builds its adaptation schedule from mixed bool/int Python lists
    # and broadcasts scalars against arrays: allow both locally (tests and
    # users may run with strict dtype promotion and rank_promotion="raise").
    with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        theta, div, acc, nsteps, eps = jax.vmap(one_chain)(keys, u_init)
    return dict(samples=theta, is_divergent=div, acceptance_rate=acc, num_integration_steps=nsteps, step_size=eps)


def unconstrained_covariance(
    model: AnalyticModel, cov: Float[ArrayLike, "n_param n_param"], theta: Float[ArrayLike, " n_param"] | None = None
) -> Float[Array, "n_param n_param"]:
    """A θ-space covariance (e.g. the Fisher one) mapped to the sampling space u: J C Jᵀ, J = du/dθ."""
    theta = model.theta0() if theta is None else jnp.asarray(theta)
    jac = jax.jacfwd(lambda t: to_unconstrained(model, t))(theta)
    return jac @ jnp.asarray(cov) @ jac.T


def nuts_diagnostics(samples: Float[ArrayLike, "n_chains n_samples n_param"]) -> dict[str, Array]:
    """R̂ (potential scale reduction) and ESS of each parameter, plus posterior mean and std.

    Returns:
        dict with ``rhat``, ``ess``, ``mean``, ``std``, each (n_param,).
        R̂ needs ≥ 2 chains (NaN otherwise).
    """
    import blackjax.diagnostics

    s = jnp.asarray(samples)
    if s.ndim != 3:
        raise ValueError(f"samples must be (n_chains, n_samples, n_param), got shape {s.shape}")
    with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        rhat = (blackjax.diagnostics.potential_scale_reduction(s, chain_axis=0, sample_axis=1)
                if s.shape[0] > 1 else jnp.full(s.shape[-1:], jnp.nan, s.dtype))
        ess = blackjax.diagnostics.effective_sample_size(s, chain_axis=0, sample_axis=1)
    flat = s.reshape(-1, s.shape[-1])
    return dict(rhat=rhat, ess=ess, mean=jnp.mean(flat, axis=0), std=jnp.std(flat, axis=0, ddof=1))
