r"""Score-based diffusion for projected mass maps conditioned on SZ / X-ray maps (seed 002).

The pieces, after Song et al. (2021, "Score-based generative modeling through
stochastic differential equations"), as seed 002 §3 uses them:

* `VESDE`: the variance-exploding SDE $dx = g(t)\,dw$,
  $σ(t) = σ_{\min}(σ_{\max}/σ_{\min})^t$, $g(t) = σ(t)\sqrt{2\ln(σ_{\max}/σ_{\min})}$,
  $t ∈ [0, 1]$; the perturbation kernel is $x_t \mid x_0 \sim N(x_0, σ(t)^2 - σ_{\min}^2)$.
* `NCSNpp`: a small NCSN++-style U-Net in Equinox (Gaussian Fourier embedding of
  $\ln σ$, residual blocks with GroupNorm and a time projection, skip rescaling
  by $1/\sqrt2$, a couple of resolutions); the condition (SZ, X-ray maps) enters
  by channel concatenation. `ScoreModel` divides its output by $σ(t)$
  (NCSN++'s output scaling for VE SDEs), so the network learns $σ\,\nabla\log p_t$.
* `dsm_loss`: denoising score matching (seed 002 eq. 10) with weight $λ(t) = σ_t^2$:
  $\mathbb E\,\lVert σ_t s_θ(x_0 + σ_t z, t \mid y) + z\rVert^2$, averaged over pixels.
* Samplers, each for one sample (batch with `jax.vmap` over keys, or
  `posterior_samples`):
  `euler_maruyama` and `predictor_corrector` (reverse-diffusion predictor +
  Langevin corrector) are `lax.scan` loops; `probability_flow` integrates the
  probability-flow ODE $dx/dt = -\tfrac12 g^2 \nabla\log p_t$ with diffrax
  (adaptive Tsit5); `diffrax_sde` integrates the same reverse SDE as
  `euler_maruyama` with diffrax (`Euler` on a `VirtualBrownianTree`), kept for
  the benchmark comparison (diffrax issue #517 reports diffrax's SDE path as
  slow for diffusion sampling; `benchmarks/fields.py` measures both: on a shared
  CPU the two were within a factor 2, diffrax not the slower).
* `posterior_samples` / `posterior_mean`: seed 002 averages 50 samples.

`GaussianScore` is the exact score of a Gaussian data distribution under the
VE SDE, $\nabla\log p_t(x) = -(x - μ)/(s^2 + σ(t)^2 - σ_{\min}^2)$: the
samplers' reference test.

Divergences from seed 002: the seed used the NCSN++ of the ``score_models``
package (PyTorch; 2 residual blocks per resolution, attention); ours is a
smaller default (1 block per resolution, no attention) sized for CPUs and
synthetic 32–64 pixel cutouts. Everything is float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax
from jaxtyping import Array, Float, PRNGKeyArray

__all__ = [
    "VESDE", "GaussianFourierEmbedding", "ResBlock", "NCSNpp", "ScoreModel", "ConditionedScore", "GaussianScore",
    "dsm_loss", "euler_maruyama", "predictor_corrector", "probability_flow", "diffrax_sde", "posterior_samples",
    "posterior_mean",
]

ScoreFn = Callable[[Float[Array, "*shape"], Float[Array, ""]], Float[Array, "*shape"]]


# ----------------------------------------------------------------- the SDE


class VESDE(eqx.Module):
    r"""Variance-exploding SDE $dx = g(t)\,dw$ on $t ∈ [0, 1]$ (Song et al. 2021, appendix B).

    Attributes:
        sigma_min: noise level at t = 0 (in the map's normalised unit; seed 002: 0.001).
        sigma_max: noise level at t = 1 (seed 002: 1, the largest normalised intensity;
            Song et al. recommend the largest distance between training maps).
    """

    sigma_min: float = 1e-3
    sigma_max: float = 1.0

    def __check_init__(self):
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")

    def sigma(self, t: Float[Array, "*t"]) -> Float[Array, "*t"]:
        """Noise scale σ(t) = σ_min (σ_max/σ_min)^t."""
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def diffusion(self, t: Float[Array, "*t"]) -> Float[Array, "*t"]:
        """g(t) = σ(t) √(2 ln(σ_max/σ_min)), so that d(σ²)/dt = g²."""
        return self.sigma(t) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))

    def marginal_std(self, t: Float[Array, "*t"]) -> Float[Array, "*t"]:
        """Standard deviation of x_t | x_0: √(σ(t)² − σ_min²) (zero at t = 0)."""
        return jnp.sqrt(jnp.maximum(self.sigma(t) ** 2 - self.sigma_min**2, 0.0))

    def prior_sample(self, shape: tuple[int, ...], *, key: PRNGKeyArray) -> Float[Array, "*shape"]:
        """A draw of the prior N(0, σ_max²) (float32): the start of every reverse-time sampler."""
        return self.sigma_max * jax.random.normal(key, shape, dtype=jnp.float32)


# ----------------------------------------------------------------- the network


class GaussianFourierEmbedding(eqx.Module):
    """Random Fourier features of a scalar, [sin 2πWx, cos 2πWx] with fixed W ~ N(0, scale²)."""

    weight: Float[Array, " half"]

    def __init__(self, dim: int, scale: float = 16.0, *, key: PRNGKeyArray):
        if dim < 2 or dim % 2:
            raise ValueError(f"dim = {dim} must be an even integer >= 2")
        self.weight = scale * jax.random.normal(key, (dim // 2,), dtype=jnp.float32)

    def __call__(self, x: Float[Array, ""]) -> Float[Array, " dim"]:
        w = jax.lax.stop_gradient(self.weight)  # fixed features: never trained
        proj = 2 * jnp.pi * w * x
        return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)])


def _group_norm(channels: int) -> eqx.nn.GroupNorm:
    return eqx.nn.GroupNorm(min(4, channels), channels, dtype=jnp.float32)


class ResBlock(eqx.Module):
    """Residual block: GN → SiLU → conv, + time projection, GN → SiLU → conv; skip 1×1; sum / √2."""

    norm1: eqx.nn.GroupNorm
    conv1: eqx.nn.Conv2d
    time_proj: eqx.nn.Linear
    norm2: eqx.nn.GroupNorm
    conv2: eqx.nn.Conv2d
    skip: eqx.nn.Conv2d | None

    def __init__(self, c_in: int, c_out: int, t_dim: int, *, key: PRNGKeyArray):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        self.norm1 = _group_norm(c_in)
        self.conv1 = eqx.nn.Conv2d(c_in, c_out, 3, padding=1, dtype=jnp.float32, key=k1)
        self.time_proj = eqx.nn.Linear(t_dim, c_out, dtype=jnp.float32, key=k2)
        self.norm2 = _group_norm(c_out)
        conv2 = eqx.nn.Conv2d(c_out, c_out, 3, padding=1, dtype=jnp.float32, key=k3)
        # small last convolution: each block starts close to the identity (NCSN++ zero-inits it)
        self.conv2 = eqx.tree_at(lambda c: c.weight, conv2, conv2.weight * 0.1)
        self.skip = None if c_in == c_out else eqx.nn.Conv2d(c_in, c_out, 1, dtype=jnp.float32, key=k4)

    def __call__(self, x: Float[Array, "c_in h w"], temb: Float[Array, " t_dim"]) -> Float[Array, "c_out h w"]:
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        h = h + self.time_proj(jax.nn.silu(temb))[:, None, None]
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        skip = x if self.skip is None else self.skip(x)
        return (skip + h) / math.sqrt(2.0)


class NCSNpp(eqx.Module):
    r"""A small NCSN++-style U-Net: (noisy map ⊕ condition, ln σ) → σ × score.

    ``channel_mult`` sets the resolutions: level i has ``base_channels ×
    channel_mult[i]`` channels and ``n_res_blocks`` residual blocks; between
    levels the map is halved (2×2 average pooling) and doubled back (nearest
    neighbour + 3×3 conv) on the way up, with skip connections from every
    block of the way down (DDPM / NCSN++ layout).

    Attributes:
        x_channels, cond_channels: channels of the generated map and of the condition (static).
        n_levels: number of resolutions (static); images need sides divisible by 2^(n_levels − 1).
    """

    embed: GaussianFourierEmbedding
    t_mlp: eqx.nn.MLP
    conv_in: eqx.nn.Conv2d
    down: list
    mid: list
    up: list
    upsample: list
    norm_out: eqx.nn.GroupNorm
    conv_out: eqx.nn.Conv2d
    x_channels: int = eqx.field(static=True)
    cond_channels: int = eqx.field(static=True)
    n_levels: int = eqx.field(static=True)
    n_res_blocks: int = eqx.field(static=True)

    def __init__(
        self, x_channels: int = 1, cond_channels: int = 2, base_channels: int = 16,
        channel_mult: tuple[int, ...] = (1, 2), n_res_blocks: int = 1, *, key: PRNGKeyArray,
    ):
        if x_channels < 1 or cond_channels < 0:
            raise ValueError(f"x_channels = {x_channels} must be >= 1 and cond_channels = {cond_channels} >= 0")
        if base_channels < 4 or base_channels % 4:
            raise ValueError(f"base_channels = {base_channels} must be a multiple of 4 (GroupNorm of 4 groups)")
        if not channel_mult or n_res_blocks < 1:
            raise ValueError("channel_mult must be non-empty and n_res_blocks >= 1")
        keys = iter(jax.random.split(key, 64 + 8 * len(channel_mult) * (n_res_blocks + 2)))
        t_dim = 4 * base_channels
        self.x_channels, self.cond_channels = x_channels, cond_channels
        self.n_levels, self.n_res_blocks = len(channel_mult), n_res_blocks
        self.embed = GaussianFourierEmbedding(base_channels, key=next(keys))
        self.t_mlp = eqx.nn.MLP(base_channels, t_dim, t_dim, 1, activation=jax.nn.silu, dtype=jnp.float32, key=next(keys))
        self.conv_in = eqx.nn.Conv2d(x_channels + cond_channels, base_channels, 3, padding=1, dtype=jnp.float32, key=next(keys))
        chans = [base_channels * m for m in channel_mult]
        skips = [base_channels]
        c = base_channels
        self.down = []
        for level, c_out in enumerate(chans):
            for _ in range(n_res_blocks):
                self.down.append(ResBlock(c, c_out, t_dim, key=next(keys)))
                c = c_out
                skips.append(c)
            if level < len(chans) - 1:
                skips.append(c)  # the pooled map is a skip too
        self.mid = [ResBlock(c, c, t_dim, key=next(keys)), ResBlock(c, c, t_dim, key=next(keys))]
        self.up, self.upsample = [], []
        for level in reversed(range(len(chans))):
            for _ in range(n_res_blocks + 1):
                self.up.append(ResBlock(c + skips.pop(), chans[level], t_dim, key=next(keys)))
                c = chans[level]
            if level > 0:
                self.upsample.append(eqx.nn.Conv2d(c, c, 3, padding=1, dtype=jnp.float32, key=next(keys)))
        self.norm_out = _group_norm(c)
        conv_out = eqx.nn.Conv2d(c, x_channels, 3, padding=1, dtype=jnp.float32, key=next(keys))
        self.conv_out = eqx.tree_at(lambda m: m.weight, conv_out, conv_out.weight * 0.1)

    def __call__(
        self, x: Float[Array, "cx h w"], log_sigma: Float[Array, ""], cond: Float[Array, "cy h w"],
    ) -> Float[Array, "cx h w"]:
        """σ × score of the noisy map ``x`` at noise level exp(``log_sigma``) given ``cond``."""
        size = 2 ** (self.n_levels - 1)
        if x.shape[0] != self.x_channels or cond.shape[0] != self.cond_channels or x.shape[1:] != cond.shape[1:]:
            raise ValueError(f"x {x.shape} / cond {cond.shape}: expected ({self.x_channels}, h, w) / "
                             f"({self.cond_channels}, h, w)")
        if x.shape[1] % size or x.shape[2] % size:
            raise ValueError(f"image sides {x.shape[1:]} must be divisible by {size} (2^(levels − 1))")
        temb = self.t_mlp(self.embed(log_sigma))
        h = self.conv_in(jnp.concatenate([x, cond.astype(x.dtype)]))
        hs = [h]
        blocks = iter(self.down)
        for level in range(self.n_levels):
            for _ in range(self.n_res_blocks):
                h = next(blocks)(h, temb)
                hs.append(h)
            if level < self.n_levels - 1:
                c, hh, ww = h.shape
                h = h.reshape(c, hh // 2, 2, ww // 2, 2).mean(axis=(2, 4))  # 2×2 average pooling
                hs.append(h)
        for block in self.mid:
            h = block(h, temb)
        blocks, ups = iter(self.up), iter(self.upsample)
        for level in reversed(range(self.n_levels)):
            for _ in range(self.n_res_blocks + 1):
                h = next(blocks)(jnp.concatenate([h, hs.pop()]), temb)
            if level > 0:
                h = next(ups)(jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2))
        return self.conv_out(jax.nn.silu(self.norm_out(h)))


class ScoreModel(eqx.Module):
    r"""Conditional score $s_θ(x, t \mid y) = \mathrm{net}(x ⊕ y, \ln σ(t)) / σ(t)$.

    Attributes:
        net: the U-Net (`NCSNpp`).
        sde: the VE SDE whose σ(t) scales the output.
    """

    net: NCSNpp
    sde: VESDE

    def __call__(
        self, x: Float[Array, "cx h w"], t: Float[Array, ""], cond: Float[Array, "cy h w"],
    ) -> Float[Array, "cx h w"]:
        sigma = self.sde.sigma(t)
        return self.net(x, jnp.log(sigma), cond) / sigma


class ConditionedScore(eqx.Module):
    """A `ScoreModel` with its condition fixed: the ``score(x, t)`` the samplers take."""

    model: ScoreModel
    cond: Float[Array, "cy h w"]

    def __call__(self, x: Float[Array, "cx h w"], t: Float[Array, ""]) -> Float[Array, "cx h w"]:
        return self.model(x, t, self.cond)


class GaussianScore(eqx.Module):
    r"""Exact score of data $x_0 \sim N(μ, s^2)$ (independent pixels) under a VE SDE.

    $\nabla\log p_t(x) = -(x - μ)/(s^2 + σ(t)^2 - σ_{\min}^2)$.

    Attributes:
        mean: μ, the shape of one sample.
        var: s², broadcastable to it (scalar or same shape).
        sde: the SDE.
    """

    mean: Float[Array, "..."]
    var: Float[Array, "..."]
    sde: VESDE

    def __call__(self, x: Float[Array, "..."], t: Float[Array, ""]) -> Float[Array, "..."]:
        return -(x - self.mean) / (self.var + self.sde.marginal_std(t) ** 2)


# ----------------------------------------------------------------- training loss


def dsm_loss(
    model: ScoreModel, x0: Float[Array, "b cx h w"], cond: Float[Array, "b cy h w"], *, key: PRNGKeyArray,
    t_eps: float = 1e-5,
) -> Float[Array, ""]:
    r"""Denoising score matching (seed 002 eq. 10), $λ(t) = σ_t^2$, mean over batch and pixels.

    $$L = \mathbb E_{t, x_0, z}\,\overline{\lVert σ_t\,s_θ(x_0 + σ_t z, t \mid y) + z \rVert^2},
    \quad t \sim U(t_ε, 1),\ z \sim N(0, 1),\ σ_t = \text{marginal\_std}(t).$$

    Args:
        model: the score model.
        x0: (b, cx, h, w) clean maps (normalised).
        cond: (b, cy, h, w) conditions.
        key: PRNG key (noise levels and noise).
        t_eps: smallest t drawn (σ_t → 0 at t = 0).

    Returns:
        The loss (float32 scalar); 1 for a model that outputs zero.
    """
    k_t, k_z = jax.random.split(key)
    b = x0.shape[0]
    t = jax.random.uniform(k_t, (b,), dtype=jnp.float32, minval=t_eps, maxval=1.0)
    z = jax.random.normal(k_z, x0.shape, dtype=jnp.float32)
    std = model.sde.marginal_std(t)[:, None, None, None]
    score = jax.vmap(model)(x0 + std * z, t, cond)
    return jnp.mean((std * score + z) ** 2)


# ----------------------------------------------------------------- samplers


def _time_grid(n_steps: int, t_min: float) -> Float[Array, " n"]:
    if n_steps < 1:
        raise ValueError(f"n_steps = {n_steps} must be >= 1")
    if not 0 < t_min < 1:
        raise ValueError(f"t_min = {t_min} must lie in (0, 1)")
    return jnp.linspace(1.0, t_min, n_steps + 1, dtype=jnp.float32)


def _start(sde, shape, key, x_init):
    k0, key = jax.random.split(key)
    x = sde.prior_sample(shape, key=k0) if x_init is None else jnp.asarray(x_init, jnp.float32)
    return x, key


def euler_maruyama(
    score: ScoreFn, sde: VESDE, shape: tuple[int, ...], *, key: PRNGKeyArray, n_steps: int = 500,
    t_min: float = 1e-5, denoise: bool = True, x_init: Float[Array, "*shape"] | None = None,
) -> Float[Array, "*shape"]:
    r"""One sample of the reverse-time SDE by Euler–Maruyama in a `lax.scan`.

    From $x(1) \sim N(0, σ_{\max}^2)$, over the uniform grid $1 = t_0 > … > t_N = t_{\min}$,
    $Δ = t_i - t_{i+1}$: $x ← x + g(t_i)^2 s(x, t_i) Δ + g(t_i)\sqrt{Δ}\,z$.

    Args:
        score: ``score(x, t)`` (a `ConditionedScore`, `GaussianScore`, ...).
        sde: the VE SDE.
        shape: shape of one sample, e.g. (1, h, w).
        key: PRNG key.
        n_steps: number of steps N.
        t_min: end time (σ(t_min) ≈ σ_min).
        denoise: drop the noise of the last step (return its mean), as Song et al. do.
        x_init: start from this x(1) instead of a prior draw.

    Returns:
        The sample (float32, ``shape``).
    """
    ts = _time_grid(n_steps, t_min)
    x, key = _start(sde, shape, key, x_init)

    def body(carry, inp):
        x, _ = carry
        t, t_next, k = inp
        dt = t - t_next
        g = sde.diffusion(t)
        x_mean = x + g**2 * score(x, t) * dt
        x = x_mean + g * jnp.sqrt(dt) * jax.random.normal(k, x.shape, dtype=x.dtype)
        return (x, x_mean), None

    (x, x_mean), _ = jax.lax.scan(body, (x, x), (ts[:-1], ts[1:], jax.random.split(key, n_steps)))
    return x_mean if denoise else x


def predictor_corrector(
    score: ScoreFn, sde: VESDE, shape: tuple[int, ...], *, key: PRNGKeyArray, n_steps: int = 500,
    t_min: float = 1e-5, snr: float = 0.16, n_corrector: int = 1, denoise: bool = True,
    x_init: Float[Array, "*shape"] | None = None,
) -> Float[Array, "*shape"]:
    r"""One sample by predictor–corrector (Song et al. 2021, Alg. 2) in a `lax.scan`.

    At each $t_i$: ``n_corrector`` Langevin steps $x ← x + ε s + \sqrt{2ε}\,z$ with
    $ε = 2(\mathrm{snr}\,\lVert z\rVert/\lVert s\rVert)^2$, then the reverse-diffusion
    predictor $x ← x + (σ_i^2 - σ_{i+1}^2) s + \sqrt{σ_i^2 - σ_{i+1}^2}\,z$.

    Args:
        score: ``score(x, t)`` (a `ConditionedScore`, `GaussianScore`, ...).
        sde: the VE SDE.
        shape: shape of one sample, e.g. (1, h, w).
        key: PRNG key.
        n_steps: number of steps N.
        t_min: end time (σ(t_min) ≈ σ_min).
        denoise: drop the noise of the last step (return its mean).
        x_init: start from this x(1) instead of a prior draw.
        snr: signal-to-noise ratio of the Langevin corrector (0.16 is Song et al.'s for VE).
        n_corrector: corrector steps per noise level.

    Returns:
        The sample (float32, ``shape``).
    """
    ts = _time_grid(n_steps, t_min)
    x, key = _start(sde, shape, key, x_init)

    def langevin(x, inp):
        t, k = inp
        s = score(x, t)
        z = jax.random.normal(k, x.shape, dtype=x.dtype)
        eps = 2 * (snr * jnp.linalg.norm(z) / jnp.linalg.norm(s)) ** 2
        return x + eps * s + jnp.sqrt(2 * eps) * z, None

    def body(carry, inp):
        x, _ = carry
        t, t_next, k = inp
        k_c, k_p = jax.random.split(k)
        x, _ = jax.lax.scan(langevin, x, (jnp.broadcast_to(t, (n_corrector,)), jax.random.split(k_c, n_corrector)))
        dvar = sde.sigma(t) ** 2 - sde.sigma(t_next) ** 2
        x_mean = x + dvar * score(x, t)
        x = x_mean + jnp.sqrt(dvar) * jax.random.normal(k_p, x.shape, dtype=x.dtype)
        return (x, x_mean), None

    (x, x_mean), _ = jax.lax.scan(body, (x, x), (ts[:-1], ts[1:], jax.random.split(key, n_steps)))
    return x_mean if denoise else x


def probability_flow(
    score: ScoreFn, sde: VESDE, shape: tuple[int, ...], *, key: PRNGKeyArray, t_min: float = 1e-5,
    rtol: float = 1e-4, atol: float = 1e-4, max_steps: int = 4096, x_init: Float[Array, "*shape"] | None = None,
) -> Float[Array, "*shape"]:
    r"""One sample by integrating the probability-flow ODE with diffrax (Tsit5, adaptive steps).

    $dx/dt = -\tfrac12 g(t)^2\, s(x, t)$ from $t = 1$ down to ``t_min``; deterministic
    given $x(1)$ (the key only draws $x(1)$ from the prior).

    Args:
        score: ``score(x, t)`` (a `ConditionedScore`, `GaussianScore`, ...).
        sde: the VE SDE.
        shape: shape of one sample, e.g. (1, h, w).
        key: PRNG key.
        t_min: end time (σ(t_min) ≈ σ_min).
        x_init: start from this x(1) instead of a prior draw.
        rtol: relative tolerance of the step-size controller.
        atol: absolute tolerance of the step-size controller.
        max_steps: most solver steps.

    Returns:
        The sample (float32, ``shape``).
    """
    if not 0 < t_min < 1:
        raise ValueError(f"t_min = {t_min} must lie in (0, 1)")
    x, _ = _start(sde, shape, key, x_init)

    def vf(t, x, args):
        return -0.5 * sde.diffusion(t) ** 2 * score(x, t)

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vf), diffrax.Tsit5(), t0=jnp.float32(1.0), t1=jnp.float32(t_min), dt0=jnp.float32(-0.01),
        y0=x, stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol), max_steps=max_steps,
        saveat=diffrax.SaveAt(t1=True),
    )
    return sol.ys[0]


def diffrax_sde(
    score: ScoreFn, sde: VESDE, shape: tuple[int, ...], *, key: PRNGKeyArray, n_steps: int = 500,
    t_min: float = 1e-5, x_init: Float[Array, "*shape"] | None = None,
) -> Float[Array, "*shape"]:
    r"""One sample of the reverse SDE with diffrax: Euler (= Euler–Maruyama) on a `VirtualBrownianTree`.

    The reverse SDE in $u = 1 - t$ runs forward: $dx = g^2 s\,du + g\,dW_u$; same
    constant step count as `euler_maruyama`, no final denoising. For comparison
    (benchmarks) with the `lax.scan` samplers, which are the ones to use.

    Args:
        score: ``score(x, t)`` (a `ConditionedScore`, `GaussianScore`, ...).
        sde: the VE SDE.
        shape: shape of one sample, e.g. (1, h, w).
        key: PRNG key.
        n_steps: number of steps N.
        t_min: end time (σ(t_min) ≈ σ_min).
        x_init: start from this x(1) instead of a prior draw.

    Returns:
        The sample (float32, ``shape``).
    """
    if n_steps < 1 or not 0 < t_min < 1:
        raise ValueError(f"need n_steps >= 1 and 0 < t_min < 1, got {n_steps}, {t_min}")
    x, key = _start(sde, shape, key, x_init)
    u1 = jnp.float32(1.0 - t_min)
    dt0 = u1 / n_steps
    n = x.size
    bm = diffrax.VirtualBrownianTree(jnp.float32(0.0), u1, tol=dt0 / 4, shape=jax.ShapeDtypeStruct((n,), jnp.float32), key=key)

    def drift(u, y, args):
        t = 1.0 - u
        return sde.diffusion(t) ** 2 * score(y.reshape(shape), t).reshape(n)

    def noise(u, y, args):
        return lineax.DiagonalLinearOperator(jnp.full((n,), sde.diffusion(1.0 - u), dtype=y.dtype))

    terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(noise, bm))
    sol = diffrax.diffeqsolve(
        terms, diffrax.Euler(), t0=jnp.float32(0.0), t1=u1, dt0=dt0, y0=x.reshape(n),
        saveat=diffrax.SaveAt(t1=True), max_steps=n_steps + 1,
    )
    return sol.ys[0].reshape(shape)


def posterior_samples(
    model: ScoreModel, cond: Float[Array, "cy h w"], *, key: PRNGKeyArray, n_samples: int = 50,
    sampler: Callable = predictor_corrector, **sampler_kwargs: object,
) -> Float[Array, "n_samples cx h w"]:
    """``n_samples`` maps drawn from p(x | cond) with one of the samplers (vmapped over keys).

    Args:
        model: the trained score model.
        cond: (cy, h, w) condition (normalised SZ / X-ray maps).
        key: PRNG key.
        n_samples: number of samples (seed 002: 50).
        sampler: `euler_maruyama`, `predictor_corrector`, `probability_flow` or `diffrax_sde`.
        **sampler_kwargs: passed on (``n_steps``, ``snr``, ...).

    Returns:
        (n_samples, cx, h, w) samples.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples = {n_samples} must be >= 1")
    score = ConditionedScore(model, cond)
    shape = (model.net.x_channels, *cond.shape[1:])
    keys = jax.random.split(key, n_samples)
    return jax.vmap(lambda k: sampler(score, model.sde, shape, key=k, **sampler_kwargs))(keys)


def posterior_mean(
    model: ScoreModel, cond: Float[Array, "cy h w"], *, key: PRNGKeyArray, n_samples: int = 50,
    sampler: Callable = predictor_corrector, **sampler_kwargs: object,
) -> tuple[Float[Array, "cx h w"], Float[Array, "cx h w"]]:
    """Posterior mean and standard deviation of ``n_samples`` samples (seed 002 §4.1 uses 50).

    Returns:
        (mean, std) maps, each (cx, h, w).
    """
    s = posterior_samples(model, cond, key=key, n_samples=n_samples, sampler=sampler, **sampler_kwargs)
    return jnp.mean(s, axis=0), jnp.std(s, axis=0)
