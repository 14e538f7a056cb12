r"""Reverse-time (reversible) adjoint of the FastPM kick-drift-kick integration.

Step $i$ from $a_i$ to $a_{i+1}$ (midpoint $a_c = (a_i + a_{i+1})/2$) is, with
$F$ the PM force [h⁻¹ Mpc] and the three scalar factors of `kdk_factors`,

$$p_h = p_i + k^{(1)}_i F(x_i),\quad x_{i+1} = x_i + d_i\, p_h,\quad
p_{i+1} = p_h + k^{(2)}_i F(x_{i+1}),$$

$k^{(1)}_i = [G_1(a_c) - G_1(a_i)]/D_1(a_i)$,
$d_i = [D_1(a_{i+1}) - D_1(a_i)]/G_1(a_c)$,
$k^{(2)}_i = [G_1(a_{i+1}) - G_1(a_c)]/D_1(a_{i+1})$ — the same arithmetic as
`FastPMKDK`. Each sub-step is a shear (it changes one of x, p by a function of
the other), so the step is exactly invertible:

$$p_h = p_{i+1} - k^{(2)}_i F(x_{i+1}),\quad x_i = x_{i+1} - d_i\, p_h,\quad
p_i = p_h - k^{(1)}_i F(x_i).$$

The backward pass therefore walks the steps in reverse, rebuilding each
earlier state from the later one instead of storing it, and back-propagates
the cotangents through the same step as it goes. Memory is O(1) states
whatever the number of steps; per step it costs one force evaluation (to
rebuild $F(x_i)$, which is also the linearisation point of the force) and one
force VJP. The rebuilt states equal the forward ones only up to round-off
(the shears are exact in real arithmetic, not in floating point); the
benchmarks measure how far they drift.

Cosmology enters the integration only through the factor array, which is
computed outside the `custom_vjp` by `kdk_factors` and passed in as a
differentiable input: its cotangent, returned by the backward pass, is chained
into the `Cosmology` (through the growth table) by ordinary autodiff.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ..cosmology import Cosmology, GrowthTable

__all__ = ["kdk_factors", "kdk_reversible", "kdk_reverse"]

ForceFn = Callable[[Float[Array, "n_ptcl 3"]], Float[Array, "n_ptcl 3"]]


def kdk_factors(
    cosmo: Cosmology, growth: GrowthTable, a_steps: Float[Array, " n_step_plus_1"]
) -> Float[Array, "n_step 3"]:
    r"""Per-step FastPM factors $(k^{(1)}_i, d_i, k^{(2)}_i)$, dimensionless.

    $k^{(1)}_i = ΔG_1(a_i → a_c)/D_1(a_i)$ (first half kick, force at $a_i$),
    $d_i = ΔD_1(a_i → a_{i+1})/G_1(a_c)$ (drift with p at the midpoint),
    $k^{(2)}_i = ΔG_1(a_c → a_{i+1})/D_1(a_{i+1})$ (second half kick), with
    $a_c$ the arithmetic midpoint. Differentiable in `cosmo` (through
    $G_1 ∝ E$ and the growth ODE solution in `growth`).

    Args:
        cosmo: cosmology.
        growth: `growth_table(cosmo)`.
        a_steps: (n_step + 1,) strictly increasing step boundaries in a.

    Returns:
        (n_step, 3) factors in the growth table's float dtype (cast to the
        particle dtype before use).
    """
    # Evaluate the growth in its own (default float) dtype: diffrax's time
    # grid and the table are in that dtype, and float32 times would lose
    # digits in ΔD₁, ΔG₁ for closely spaced steps.
    a = a_steps.astype(jnp.result_type(float))
    a0, a1 = a[:-1], a[1:]
    ac = 0.5 * (a0 + a1)
    d0, d1 = growth.D1(a0), growth.D1(a1)
    g0, gc, g1 = growth.G1(cosmo, a0), growth.G1(cosmo, ac), growth.G1(cosmo, a1)
    k1 = (gc - g0) / d0
    drift = (d1 - d0) / gc
    k2 = (g1 - gc) / d1
    return jnp.stack([k1, drift, k2], axis=-1)


# ------------------------------------------------------- the sub-steps and their adjoints
# Each forward sub-step has an inverse (for reconstruction) and an adjoint
# (cotangent propagation). Cotangent of a factor = ⟨primal direction, cotangent⟩.


def _kick(p, force, fac):
    """p ← p + fac · F."""
    return p + fac * force


def _kick_inv(p, force, fac):
    """Undo `_kick` given the same F."""
    return p - fac * force


def _kick_adj(p_cot, force, fac):
    """Adjoint of `_kick`: p̄ passes through; returns (F̄, fac̄)."""
    return fac * p_cot, jnp.sum(force * p_cot)


def _drift(x, p, fac):
    """x ← x + fac · p."""
    return x + fac * p


def _drift_inv(x, p, fac):
    """Undo `_drift` given the same p."""
    return x - fac * p


def _drift_adj(x_cot, p, fac):
    """Adjoint of `_drift`: x̄ passes through; returns (p̄ increment, fac̄)."""
    return fac * x_cot, jnp.sum(p * x_cot)


# ------------------------------------------------------------------ forward


def _snapshot_mask(snap_idx, j):
    """(n_snap, 1, 1) bool: which snapshots sit at step boundary j."""
    return (snap_idx == j)[:, None, None]


def _forward(force_fn, factors, pos, p, snap_idx):
    """Integrate all steps; return final (x, p, F) and the snapshot buffers."""
    n_snap = snap_idx.shape[0]
    force = force_fn(pos)
    zeros = jnp.zeros((n_snap, *pos.shape), dtype=pos.dtype)
    mask0 = _snapshot_mask(snap_idx, 0)
    buf_x = jnp.where(mask0, pos[None], zeros)
    buf_p = jnp.where(mask0, p[None], zeros)

    def body(carry, xs):
        x, p, force, buf_x, buf_p = carry
        j, fac = xs  # j = index of the boundary this step ends on
        k1, dr, k2 = fac[0], fac[1], fac[2]
        p = _kick(p, force, k1)
        x = _drift(x, p, dr)
        force = force_fn(x)
        p = _kick(p, force, k2)
        # Overwriting the (few) snapshot slots in place is cheaper than saving every step.
        mask = _snapshot_mask(snap_idx, j)
        buf_x = jnp.where(mask, x[None], buf_x)
        buf_p = jnp.where(mask, p[None], buf_p)
        return (x, p, force, buf_x, buf_p), None

    n_step = factors.shape[0]
    steps = jnp.arange(1, n_step + 1, dtype=snap_idx.dtype)
    (x, p, force, buf_x, buf_p), _ = jax.lax.scan(body, (pos, p, force, buf_x, buf_p), (steps, factors))
    return x, p, force, buf_x, buf_p


def _kdk_raw(force_fn, factors, pos, p, snap_idx):
    """Plain-autodiff version (stores every step in reverse mode); kept for tests."""
    _, _, _, buf_x, buf_p = _forward(force_fn, factors.astype(pos.dtype), pos, p, snap_idx)
    return buf_x, buf_p


# ------------------------------------------------------------- the custom VJP


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def _kdk(force_fn, factors, pos, p, snap_idx):
    _, _, _, buf_x, buf_p = _forward(force_fn, factors, pos, p, snap_idx)
    return buf_x, buf_p


def _kdk_fwd(force_fn, factors, pos, p, snap_idx):
    x, p_fin, _, buf_x, buf_p = _forward(force_fn, factors, pos, p, snap_idx)
    # Residuals: the final state only (plus the tiny factor and index arrays).
    return (buf_x, buf_p), (factors, x, p_fin, snap_idx)


def _snapshot_cot(cot, snap_idx, j):
    """Sum of the snapshot cotangents (n_snap, n, 3) that belong to boundary j."""
    w = (snap_idx == j).astype(cot.dtype)
    return jnp.tensordot(w, cot, axes=1)


def _kdk_bwd(force_fn, res, cots):
    factors, x_end, p_end, snap_idx = res
    cot_x, cot_p = cots
    n_step = factors.shape[0]
    dtype = x_end.dtype

    # Boundary n_step: snapshot cotangents, and the force there is kicked by
    # the last step's second half kick with k2 · p̄.
    x_cot = _snapshot_cot(cot_x, snap_idx, n_step)
    p_cot = _snapshot_cot(cot_p, snap_idx, n_step)
    force_end, force_vjp = jax.vjp(force_fn, x_end)
    force_cot, _ = _kick_adj(p_cot, force_end, factors[n_step - 1, 2])
    x_cot = x_cot + force_vjp(force_cot)[0]

    # k2 of the step *before* each step (zero before the first): the
    # second-half-kick weight of the force at that step's starting boundary.
    k2_prev = jnp.concatenate([jnp.zeros((1,), dtype), factors[:-1, 2]])

    def body(carry, xs):
        # carry: state at boundary j+1 and its complete cotangents (incl. the force VJP there).
        x1, p1, force1, x1_cot, p1_cot = carry
        j, fac, k2_before = xs
        k1, dr, k2 = fac[0], fac[1], fac[2]
        # Reconstruct boundary j: undo kick, drift, kick. The force at x_j is
        # evaluated with its VJP, which is needed below at the same point.
        p_half = _kick_inv(p1, force1, k2)
        x0 = _drift_inv(x1, p_half, dr)
        force0, vjp0 = jax.vjp(force_fn, x0)
        p0 = _kick_inv(p_half, force0, k1)
        # Back-propagate through step j.
        _, k2_cot = _kick_adj(p1_cot, force1, k2)  # F̄(x_{j+1}) already applied last iteration
        dp, dr_cot = _drift_adj(x1_cot, p_half, dr)
        p_half_cot = p1_cot + dp
        f0_cot_step, k1_cot = _kick_adj(p_half_cot, force0, k1)
        x0_cot = x1_cot + _snapshot_cot(cot_x, snap_idx, j)
        p0_cot = p_half_cot + _snapshot_cot(cot_p, snap_idx, j)
        # One force VJP per boundary: F(x_j) feeds step j's first half kick
        # and step j−1's second half kick (whose cotangent is k2_{j−1} p̄_j).
        f0_cot = f0_cot_step + k2_before * p0_cot
        x0_cot = x0_cot + vjp0(f0_cot)[0]
        fac_cot = jnp.stack([k1_cot, dr_cot, k2_cot])
        return (x0, p0, force0, x0_cot, p0_cot), fac_cot

    steps = jnp.arange(n_step, dtype=snap_idx.dtype)
    init = (x_end, p_end, force_end, x_cot, p_cot)
    (_, _, _, x_cot, p_cot), fac_cot = jax.lax.scan(body, init, (steps, factors, k2_prev), reverse=True)
    return fac_cot, x_cot, p_cot, None


_kdk.defvjp(_kdk_fwd, _kdk_bwd)


def kdk_reversible(
    force_fn: ForceFn,
    factors: Float[Array, "n_step 3"],
    pos: Float[Array, "n_ptcl 3"],
    p: Float[Array, "n_ptcl 3"],
    snap_idx: Int[Array, " n_snap"],
) -> tuple[Float[Array, "n_snap n_ptcl 3"], Float[Array, "n_snap n_ptcl 3"]]:
    r"""KDK over all steps, differentiated by reverse-time reconstruction.

    Forward: `n_step` kick-drift-kick steps with `n_step + 1` force
    evaluations, saving the states at the step boundaries `snap_idx`.
    Reverse mode: the states are rebuilt backwards from the final one (see
    the module docstring), so the residual memory is one state (x, p) plus
    the snapshots, independent of `n_step`; the backward pass costs
    `n_step + 1` force evaluations and `n_step + 1` force VJPs.

    Args:
        force_fn: x [h⁻¹ Mpc] ↦ F(x) [h⁻¹ Mpc] (per unit ³⁄₂Ω_m), e.g.
            `partial(pm_force, config=config)`; must not close over traced
            values (it is not differentiated with respect to anything but x).
        factors: (n_step, 3) `kdk_factors`; differentiable.
        pos: (n_ptcl, 3) initial positions [h⁻¹ Mpc]; differentiable.
        p: (n_ptcl, 3) initial momenta $a^3E\,dx/da$ [h⁻¹ Mpc]; differentiable.
        snap_idx: (n_snap,) step-boundary indices in [0, n_step] to save
            (0 = the initial state); repeats allowed.

    Returns:
        Positions and momenta at the snapshots, each (n_snap, n_ptcl, 3).
    """
    if pos.shape != p.shape or pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"pos and p must both have shape (n_ptcl, 3), got {pos.shape} and {p.shape}")
    if factors.ndim != 2 or factors.shape[1] != 3 or factors.shape[0] < 1:
        raise ValueError(f"factors must have shape (n_step >= 1, 3), got {factors.shape}")
    if p.dtype != pos.dtype:
        raise ValueError(f"pos and p must share a dtype, got {pos.dtype} and {p.dtype}")
    return _kdk(force_fn, factors.astype(pos.dtype), pos, p, snap_idx.astype(jnp.int32))


def kdk_reverse(
    force_fn: ForceFn,
    factors: Float[Array, "n_step 3"],
    pos: Float[Array, "n_ptcl 3"],
    p: Float[Array, "n_ptcl 3"],
) -> tuple[Float[Array, "n_ptcl 3"], Float[Array, "n_ptcl 3"]]:
    """Undo all the KDK steps: the state at boundary 0 rebuilt from the one at `n_step`.

    The same reconstruction the backward pass of `kdk_reversible` performs;
    exposed to measure its round-off drift (compare with the true initial
    state). Units and shapes as in `kdk_reversible`.
    """
    factors = factors.astype(pos.dtype)

    def body(carry, fac):
        x1, p1, force1 = carry
        p_half = _kick_inv(p1, force1, fac[2])
        x0 = _drift_inv(x1, p_half, fac[1])
        force0 = force_fn(x0)
        return (x0, _kick_inv(p_half, force0, fac[0]), force0), None

    (x0, p0, _), _ = jax.lax.scan(body, (pos, p, force_fn(pos)), factors, reverse=True)
    return x0, p0
