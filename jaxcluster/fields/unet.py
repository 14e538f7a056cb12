r"""Multi-view U-Net: any subset of (SZ, X-ray) cluster maps → projected mass map (seed 004).

Seed 004 (de Andrés et al.) maps Compton-y, X-ray and stellar maps to the
projected total-mass map with a pix2pix-style U-Net trained on the L1 loss, one
network per choice of input views. Here one network takes every view and a
``view_mask`` saying which are observed:

* each view has its own stem (3×3 conv, GroupNorm, SiLU), so a view's
  features never depend on another view's units;
* the stems' features are averaged over the *observed* views only (missing
  views enter as zeros and are masked, NaN-safe), and the mask itself is
  appended as constant channels, so the decoder knows what it was given;
* an encoder–decoder with skip connections (two 3×3 convs per level, 2×2
  average pooling down, transposed 2×2 convs up) predicts the map.

Training (`unet_loss`) draws a random non-empty subset of views per sample
("view dropout"), so one trained network serves SZ-only, X-ray-only and
multi-view inputs — the divergence from seed 004, which trains four networks.
Everything is float32; inputs are the globally normalised maps of
`jaxcluster.fields.cutouts` (seed 002 §3.1).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

__all__ = ["ConvBlock", "MultiViewUNet", "random_view_mask", "unet_loss"]


def _group_norm(channels: int) -> eqx.nn.GroupNorm:
    return eqx.nn.GroupNorm(min(4, channels), channels, dtype=jnp.float32)


class ConvBlock(eqx.Module):
    """Two (3×3 conv → GroupNorm → SiLU) layers."""

    conv1: eqx.nn.Conv2d
    norm1: eqx.nn.GroupNorm
    conv2: eqx.nn.Conv2d
    norm2: eqx.nn.GroupNorm

    def __init__(self, c_in: int, c_out: int, *, key: PRNGKeyArray):
        k1, k2 = jax.random.split(key)
        self.conv1 = eqx.nn.Conv2d(c_in, c_out, 3, padding=1, dtype=jnp.float32, key=k1)
        self.norm1 = _group_norm(c_out)
        self.conv2 = eqx.nn.Conv2d(c_out, c_out, 3, padding=1, dtype=jnp.float32, key=k2)
        self.norm2 = _group_norm(c_out)

    def __call__(self, x: Float[Array, "c_in h w"]) -> Float[Array, "c_out h w"]:
        x = jax.nn.silu(self.norm1(self.conv1(x)))
        return jax.nn.silu(self.norm2(self.conv2(x)))


class MultiViewUNet(eqx.Module):
    r"""U-Net from a subset of observed views (SZ, X-ray, ...) to a projected mass map.

    Attributes:
        stems: one (conv, norm) stem per view.
        encoder: `ConvBlock` per level (the last is the bottleneck).
        ups: transposed 2×2 convolutions, coarse to fine.
        decoder: `ConvBlock` per level after each upsampling.
        head: 1×1 conv to the output channels.
        n_views: number of input views (static).
        out_channels: output channels (static; 1: the projected mass map).
        depth: number of poolings (static); image sides must be divisible by 2^depth.
    """

    stems: list
    encoder: list
    ups: list
    decoder: list
    head: eqx.nn.Conv2d
    n_views: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)

    def __init__(
        self, n_views: int = 2, out_channels: int = 1, base_channels: int = 16, depth: int = 3, *, key: PRNGKeyArray,
    ):
        """Args:
            n_views: number of input views (seed 004: SZ, X-ray, stars; ours: SZ, X-ray).
            out_channels: output maps (1: projected DM or total mass).
            base_channels: channels of the first level, doubled at each pooling (multiple of 4).
            depth: number of 2× poolings (≥ 1).
            key: PRNG key for the initial weights.
        """
        if n_views < 1 or out_channels < 1:
            raise ValueError(f"n_views = {n_views} and out_channels = {out_channels} must be >= 1")
        if base_channels < 4 or base_channels % 4:
            raise ValueError(f"base_channels = {base_channels} must be a positive multiple of 4")
        if depth < 1:
            raise ValueError(f"depth = {depth} must be >= 1")
        keys = iter(jax.random.split(key, n_views + 3 * (depth + 1) + 2))
        self.n_views, self.out_channels, self.depth = n_views, out_channels, depth
        c = base_channels
        self.stems = [(eqx.nn.Conv2d(1, c, 3, padding=1, dtype=jnp.float32, key=next(keys)), _group_norm(c)) for _ in range(n_views)]
        chans = [base_channels * 2**i for i in range(depth + 1)]
        self.encoder = []
        c_in = c + n_views  # averaged stem features + the view mask
        for c_out in chans:
            self.encoder.append(ConvBlock(c_in, c_out, key=next(keys)))
            c_in = c_out
        self.ups, self.decoder = [], []
        for level in reversed(range(depth)):
            self.ups.append(eqx.nn.ConvTranspose2d(chans[level + 1], chans[level], 2, stride=2, dtype=jnp.float32, key=next(keys)))
            self.decoder.append(ConvBlock(2 * chans[level], chans[level], key=next(keys)))
        self.head = eqx.nn.Conv2d(chans[0], out_channels, 1, dtype=jnp.float32, key=next(keys))

    def __call__(
        self, views: Float[Array, "n_views h w"], view_mask: Bool[Array, " n_views"] | None = None,
    ) -> Float[Array, "out_channels h w"]:
        """Predict the mass map of one cluster.

        Args:
            views: (n_views, h, w) normalised input maps; a missing view's values are ignored
                (any finite or NaN placeholder).
            view_mask: (n_views,) which views are observed (≥ 1 True); default all.

        Returns:
            (out_channels, h, w) predicted (normalised) map.
        """
        n, h, w = views.shape
        if n != self.n_views:
            raise ValueError(f"views has {n} maps, the network takes n_views = {self.n_views}")
        if h % 2**self.depth or w % 2**self.depth:
            raise ValueError(f"image sides ({h}, {w}) must be divisible by 2^depth = {2**self.depth}")
        mask = jnp.ones((n,), bool) if view_mask is None else jnp.asarray(view_mask, bool)
        weight = mask.astype(jnp.float32)
        weight = eqx.error_if(weight, jnp.sum(weight) < 1, "view_mask must mark at least one view as observed")
        feats = []
        for i, (conv, norm) in enumerate(self.stems):
            v = jnp.where(mask[i], views[i], 0.0).astype(jnp.float32)[None]
            feats.append(jnp.where(mask[i], jax.nn.silu(norm(conv(v))), 0.0))
        x = sum(feats) / jnp.sum(weight)
        x = jnp.concatenate([x, jnp.broadcast_to(weight[:, None, None], (n, h, w))])
        skips = []
        for level, block in enumerate(self.encoder):
            x = block(x)
            if level < self.depth:
                skips.append(x)
                c, hh, ww = x.shape
                x = x.reshape(c, hh // 2, 2, ww // 2, 2).mean(axis=(2, 4))
        for up, block in zip(self.ups, self.decoder):
            x = block(jnp.concatenate([up(x), skips.pop()]))
        return self.head(x)


def random_view_mask(n_views: int, *, key: PRNGKeyArray, p_keep: float = 0.5) -> Bool[Array, " n_views"]:
    """A random non-empty subset of views: each kept with probability ``p_keep``, one forced if none is.

    Args:
        n_views: number of views.
        key: PRNG key.
        p_keep: keep probability of each view (0 < p_keep ≤ 1).

    Returns:
        (n_views,) boolean mask with at least one True.
    """
    if not 0 < p_keep <= 1:
        raise ValueError(f"p_keep = {p_keep} must lie in (0, 1]")
    k1, k2 = jax.random.split(key)
    keep = jax.random.bernoulli(k1, p_keep, (n_views,))
    forced = jax.nn.one_hot(jax.random.randint(k2, (), 0, n_views), n_views, dtype=jnp.float32) > 0
    return jnp.where(jnp.any(keep), keep, forced)


def unet_loss(
    model: MultiViewUNet, views: Float[Array, "b n_views h w"], target: Float[Array, "b c h w"], *,
    key: PRNGKeyArray | None = None, p_keep: float = 0.5,
) -> Float[Array, ""]:
    """Mean absolute (L1) error of the predicted maps (seed 004), with random view dropout.

    Args:
        model: the U-Net.
        views: (b, n_views, h, w) normalised inputs.
        target: (b, out_channels, h, w) normalised mass maps.
        key: draws each sample's observed views (`random_view_mask`); None: all views.
        p_keep: keep probability per view when ``key`` is given.

    Returns:
        L1 loss (float32 scalar).
    """
    b = views.shape[0]
    if key is None:
        pred = jax.vmap(model)(views)
    else:
        masks = jax.vmap(lambda k: random_view_mask(model.n_views, key=k, p_keep=p_keep))(jax.random.split(key, b))
        pred = jax.vmap(model)(views, masks)
    return jnp.mean(jnp.abs(pred - target))
