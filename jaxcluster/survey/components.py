r"""JAX-native detection: threshold + 8-connected components by label propagation (runs on a GPU).

Every pixel above the threshold starts with its own flat index as label;
each iteration replaces a label by the maximum over the pixel's 3×3
neighbourhood (restricted to pixels above the threshold) and then jumps
pointers twice ($ℓ ← ℓ[ℓ]$: a label is the index of a pixel of the same
component, whose own label is at least as large). Labels only grow and stay
inside their component, so the loop (`lax.while_loop`, until nothing
changes) ends with every component labelled by its largest flat index; the
pointer jumps cut the number of iterations below the component diameter
that plain propagation needs.

**Deblending** (`deblend_cont`, default 0.005 as sep's): each component is
cut into the basins of its local maxima by steepest ascent (every pixel
points to its brightest 3×3 neighbour; pointer doubling finds the peak it
climbs to — a watershed of the noiseless map). As in SExtractor's
multi-threshold tree, a basin is judged by its pixels above the saddle at
which it meets its neighbour: it is a source of its own when they hold at
least `deblend_cont` of the component's count rate and number at least
`min_area`; otherwise it merges across that saddle. sep shares out the
pixels below the saddles by its own rule, so blended sources can differ
in how their count rate is divided (docs/pipeline/survey.md gives the
match rates).

Sources smaller than `min_area` are dropped; the rest are ranked by
their summed map value and the brightest `max_sources` numbered 1..max
(`lax.top_k`), exactly as the sep wrapper ranks its sources
(`detect.relabel_by_flux`), so both produce the same kind of segmentation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

__all__ = ["label_components", "segment_components", "match_catalogues"]


def _neighbour_max(labels: Int[Array, "n m"]) -> Int[Array, "n m"]:
    n, m = labels.shape
    p = jnp.pad(labels, 1, constant_values=-1)
    out = labels
    for dx in (0, 1, 2):
        for dy in (0, 1, 2):
            out = jnp.maximum(out, p[dx:dx + n, dy:dy + m])
    return out


def label_components(mask: Bool[Array, "n m"]) -> Int[Array, "n m"]:
    """8-connected components of `mask`: each pixel gets the largest flat index of its component, −1 off the mask.

    Args:
        mask: (n, m) pixels to group.

    Returns:
        (n, m) int32 labels (a flat index into the map, or −1).
    """
    n, m = mask.shape
    start = jnp.where(mask, jnp.arange(n * m, dtype=jnp.int32).reshape(n, m), -1)

    def step(labels):
        lab = jnp.where(mask, _neighbour_max(labels), -1).reshape(-1)
        for _ in range(2):  # pointer jumping
            lab = jnp.where(lab >= 0, jnp.maximum(lab, lab[jnp.maximum(lab, 0)]), -1)
        return lab.reshape(n, m)

    def body(state):
        labels, _ = state
        new = step(labels)
        return new, jnp.any(new != labels)

    labels, _ = jax.lax.while_loop(lambda s: s[1], body, (start, jnp.array(True)))
    return labels


def _steepest_ascent(image, mask):
    """Each masked pixel's flat index of the neighbour (3×3, in the mask, itself included) of highest value."""
    n, m = image.shape
    idx = jnp.arange(n * m, dtype=jnp.int32).reshape(n, m)
    val = jnp.where(mask, image, -jnp.inf)
    pv = jnp.pad(val, 1, constant_values=-jnp.inf)
    pi = jnp.pad(idx, 1, constant_values=-1)
    best_v, best_i = val, idx
    for dx in (0, 1, 2):
        for dy in (0, 1, 2):
            v, i = pv[dx:dx + n, dy:dy + m], pi[dx:dx + n, dy:dy + m]
            better = (v > best_v) | ((v == best_v) & (i > best_i))  # ties: larger index, so no cycles
            best_v, best_i = jnp.where(better, v, best_v), jnp.where(better, i, best_i)
    return jnp.where(mask, best_i, -1).reshape(-1)


def _peaks(pointer, n_jumps):
    """Follow the steepest-ascent pointers to their fixed points (pointer doubling)."""
    safe = jnp.maximum(pointer, 0)
    for _ in range(n_jumps):
        safe = safe[safe]
    return jnp.where(pointer >= 0, safe, -1)


def _saddles(basin: Int[Array, "n m"], values: Float[Array, "n m"], size: int):
    """Per basin: its highest saddle (the level at which it meets another basin) and the basin across it.

    A saddle between 8-neighbours p, q of different basins is min(v_p, v_q).
    Returns (saddle (size + 1,), −inf for a basin that meets none; neighbour (size + 1,), `size` for none).
    """
    n, m = basin.shape
    P = jnp.pad(basin, 1, constant_values=size)
    V = jnp.pad(values, 1, constant_values=-jnp.inf)
    s_all, a_all, b_all = [], [], []
    for dx, dy in ((0, 1), (1, 0), (1, 1), (1, -1)):  # each 8-neighbour pair once
        pa, va = P[1:-1, 1:-1], V[1:-1, 1:-1]
        pb, vb = P[1 + dx:n + 1 + dx, 1 + dy:m + 1 + dy], V[1 + dx:n + 1 + dx, 1 + dy:m + 1 + dy]
        s = jnp.where((pa != pb) & (pa < size) & (pb < size), jnp.minimum(va, vb), -jnp.inf).reshape(-1)
        s_all += [s, s]
        a_all += [pa.reshape(-1), pb.reshape(-1)]
        b_all += [pb.reshape(-1), pa.reshape(-1)]
    s, a, b = jnp.concatenate(s_all), jnp.concatenate(a_all), jnp.concatenate(b_all)
    saddle = jax.ops.segment_max(s, a, num_segments=size + 1)
    top = jnp.isfinite(s) & (s == saddle[a])
    across = jnp.full((size + 1,), size, jnp.int32).at[a].min(jnp.where(top, b, size).astype(jnp.int32))
    return saddle, across


def segment_components(
    image: Float[Array, "n m"], pixel_threshold: float, min_area: int, max_sources: int, deblend_cont: float | None = 0.005
) -> Int[Array, "n m"]:
    """Segmentation of one map: pixels > threshold, 8-connected, deblended at peaks, ranked by flux.

    With `deblend_cont` set, each component is cut into the basins of its
    local maxima (steepest ascent: a watershed of the noiseless map). As in
    SExtractor's multi-threshold deblending, a basin counts as a branch by
    what lies *above the saddle* where it meets its neighbour: it is a
    source of its own when those pixels hold at least `deblend_cont` of the
    component's count rate and number at least `min_area`; otherwise it
    joins the basin across its highest saddle (if that one peaks higher,
    else the component's brightest basin), and so on until a kept one.
    `None` keeps whole components.

    Args:
        image: (n, m) count rate per pixel [counts s⁻¹].
        pixel_threshold: absolute threshold per pixel [counts s⁻¹].
        min_area: minimum source size [pixels].
        max_sources: labels kept (the brightest).
        deblend_cont: minimum flux fraction of a deblended branch, or None.

    Returns:
        (n, m) int32 labels 0..max_sources (0: background), 1 the brightest.
    """
    n, m = image.shape
    size = n * m
    n_jumps = max(1, int(np.ceil(np.log2(size))) + 1)
    mask = image > pixel_threshold
    comp = label_components(mask).reshape(-1)
    ids = jnp.where(comp >= 0, comp, size)  # `size` collects the background
    flat = image.reshape(-1)
    ones = jnp.ones((size,), jnp.int32)
    if deblend_cont is not None:
        idx = jnp.arange(size, dtype=jnp.int32)
        peak = _peaks(_steepest_ascent(image, mask), n_jumps)
        pid = jnp.where(peak >= 0, peak, size)
        saddle, across = _saddles(pid.reshape(n, m), jnp.where(mask, image, -jnp.inf), size)
        above = flat > saddle[pid]
        branch_flux = jax.ops.segment_sum(jnp.where(above, flat, 0.0), pid, num_segments=size + 1)[:size]
        branch_area = jax.ops.segment_sum(above.astype(jnp.int32), pid, num_segments=size + 1)[:size]
        basin_area = jax.ops.segment_sum(ones, pid, num_segments=size + 1)[:size]
        comp_flux = jax.ops.segment_sum(flat, ids, num_segments=size + 1)[:size]
        is_peak = basin_area > 0
        comp_of_basin = jnp.where(is_peak, comp, size)
        peak_value = jnp.where(is_peak, flat, -jnp.inf)
        best = jax.ops.segment_max(peak_value, comp_of_basin, num_segments=size + 1)
        is_main = is_peak & (peak_value >= best[comp_of_basin])
        main = jnp.full((size + 1,), size, jnp.int32).at[comp_of_basin].min(jnp.where(is_main, idx, size))
        keep = is_main | ((branch_area >= min_area)
                          & (branch_flux >= deblend_cont * comp_flux[jnp.minimum(comp_of_basin, size - 1)]))
        nb = across[:size]
        higher = (nb < size) & (peak_value[jnp.minimum(nb, size - 1)] > peak_value)  # strictly up: no cycles
        owner = jnp.where(keep | ~is_peak, idx, jnp.where(higher, nb, main[comp_of_basin]))
        for _ in range(n_jumps):
            owner = owner[owner]
        ids = jnp.where(peak >= 0, owner[jnp.maximum(peak, 0)], size)
    area = jax.ops.segment_sum(ones, ids, num_segments=size + 1)[:size]
    flux = jax.ops.segment_sum(flat, ids, num_segments=size + 1)[:size]
    score = jnp.where(area >= min_area, flux, -jnp.inf)
    k = min(max_sources, size)
    top, roots = jax.lax.top_k(score, k)
    rank = jnp.where(jnp.isfinite(top), jnp.arange(1, k + 1, dtype=jnp.int32), 0)
    table = jnp.zeros((size + 1,), jnp.int32).at[roots].set(rank)
    return table[ids].reshape(n, m)


def match_catalogues(
    xi_a: np.ndarray, cr_a: np.ndarray, xi_b: np.ndarray, cr_b: np.ndarray, max_offset: float, cr_rtol: float
) -> np.ndarray:
    """For each source of catalogue a, whether b has one within `max_offset` whose CR agrees to `cr_rtol`.

    Args:
        xi_a: (n_a, 2) positions (any unit, same as `max_offset`).
        cr_a: (n_a,) count rates.
        xi_b: (n_b, 2) positions.
        cr_b: (n_b,) count rates.
        max_offset: largest centroid separation of a match.
        cr_rtol: largest |CR_b / CR_a − 1| of a match.

    Returns:
        (n_a,) bool.
    """
    xi_a, xi_b = np.asarray(xi_a, float).reshape(-1, 2), np.asarray(xi_b, float).reshape(-1, 2)
    cr_a, cr_b = np.asarray(cr_a, float).ravel(), np.asarray(cr_b, float).ravel()
    if xi_b.shape[0] == 0:
        return np.zeros(xi_a.shape[0], bool)
    d = np.hypot(*(xi_a[:, None, :] - xi_b[None, :, :]).transpose(2, 0, 1))
    close = d <= max_offset
    agree = np.abs(cr_b[None, :] / np.where(cr_a > 0, cr_a, np.inf)[:, None] - 1.0) <= cr_rtol
    return np.any(close & agree, axis=1)
