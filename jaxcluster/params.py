"""Simulation parameters θ_sim, their priors and CAMELS fiducials.

θ_sim = (Ω_m, σ_8, A_SN1, A_SN2, A_AGN1, A_AGN2), in that order everywhere
(arrays, plots, posteriors). Priors are seed 001 Table 1 (CAMELS LH set):
Ω_m ~ U(0.1, 0.5), σ_8 ~ U(0.6, 1.0); the four feedback amplitudes are
log-uniform, ln A_SN1, ln A_AGN1 ~ U(ln 0.25, ln 4) and
ln A_SN2, ln A_AGN2 ~ U(ln 0.5, ln 2). Fiducials: (0.3, 0.8, 1, 1, 1, 1).
"""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

__all__ = ["PARAM_NAMES", "PRIOR_BOUNDS", "FIDUCIAL", "ThetaSim"]

PARAM_NAMES: tuple[str, ...] = ("Omega_m", "sigma_8", "A_SN1", "A_SN2", "A_AGN1", "A_AGN2")

# (low, high) of each parameter itself, not of its log.
PRIOR_BOUNDS: dict[str, tuple[float, float]] = {
    "Omega_m": (0.1, 0.5),
    "sigma_8": (0.6, 1.0),
    "A_SN1": (0.25, 4.0),
    "A_SN2": (0.5, 2.0),
    "A_AGN1": (0.25, 4.0),
    "A_AGN2": (0.5, 2.0),
}
FIDUCIAL: dict[str, float] = {
    "Omega_m": 0.3, "sigma_8": 0.8, "A_SN1": 1.0, "A_SN2": 1.0, "A_AGN1": 1.0, "A_AGN2": 1.0,
}
# Feedback amplitudes have log-uniform priors (Table 1 gives them in ln A).
_LOG_UNIFORM = (False, False, True, True, True, True)


def _check_range(name: str, value, low: float, high: float) -> None:
    """Raise a ValueError naming `name` if a concrete `value` is outside [low, high]."""
    if isinstance(value, jax.core.Tracer):
        return  # checked with eqx.error_if by ThetaSim.check_prior under jit
    v = np.asarray(value)
    if not np.all(np.isfinite(v)) or np.any(v < low) or np.any(v > high):
        raise ValueError(f"{name} = {value!r} is outside its allowed range [{low}, {high}]")


def check_scalar(name: str, value, low, high, *, integer: bool = False, low_open: bool = False) -> float | int:
    """A static configuration scalar, validated: float (int if `integer`) in [low, high] ((low, high] if `low_open`).

    Raises a ValueError naming `name` and its allowed range otherwise.
    """
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        v = math.nan  # not a number: refused below, naming the parameter
    bad = not math.isfinite(v) or v > high or (v <= low if low_open else v < low) or (integer and int(v) != v)
    if bad:
        raise ValueError(f"{name} = {value!r} is outside its allowed range {'(' if low_open else '['}{low}, {high}]"
                         + (" (integer)" if integer else ""))
    return int(v) if integer else v


def check_triple(name: str, value, low, high=math.inf, *, integer: bool = False, low_open: bool = False) -> tuple:
    """One number or three (x, y, z), each validated as `check_scalar` does; returns a 3-tuple.

    Raises a ValueError naming `name` and its allowed range otherwise.
    """
    try:
        a = np.broadcast_to(np.asarray(value, dtype=float), (3,))
    except (TypeError, ValueError):
        raise ValueError(f"{name} = {value!r} is outside its allowed range: one number or three") from None
    try:
        return tuple(check_scalar(name, v, low, high, integer=integer, low_open=low_open) for v in a)
    except ValueError:
        raise ValueError(f"{name} = {value!r} is outside its allowed range {'(' if low_open else '['}{low}, {high}] "
                         f"on every axis" + (" (integers)" if integer else "")) from None


class ThetaSim(eqx.Module):
    """The six simulation parameters, one scalar (or one batch) each.

    Fields are arrays, so a `ThetaSim` is a pytree that `jit`, `vmap` and
    `grad` see through; a batch is a `ThetaSim` whose fields have a leading
    axis (as `sample_prior` returns).

    Concrete values outside the prior raise `ValueError` at construction;
    under `jit` call `check_prior` and use its result.
    """

    Omega_m: Float[Array, "*batch"]
    sigma_8: Float[Array, "*batch"]
    A_SN1: Float[Array, "*batch"]
    A_SN2: Float[Array, "*batch"]
    A_AGN1: Float[Array, "*batch"]
    A_AGN2: Float[Array, "*batch"]

    names: ClassVar[tuple[str, ...]] = PARAM_NAMES

    def __init__(
        self,
        Omega_m: ArrayLike = FIDUCIAL["Omega_m"],
        sigma_8: ArrayLike = FIDUCIAL["sigma_8"],
        A_SN1: ArrayLike = FIDUCIAL["A_SN1"],
        A_SN2: ArrayLike = FIDUCIAL["A_SN2"],
        A_AGN1: ArrayLike = FIDUCIAL["A_AGN1"],
        A_AGN2: ArrayLike = FIDUCIAL["A_AGN2"],
    ):
        values = dict(Omega_m=Omega_m, sigma_8=sigma_8, A_SN1=A_SN1, A_SN2=A_SN2,
                      A_AGN1=A_AGN1, A_AGN2=A_AGN2)
        for name, v in values.items():
            _check_range(name, v, *PRIOR_BOUNDS[name])
            setattr(self, name, jnp.asarray(v, dtype=jnp.result_type(float)))

    @classmethod
    def fiducial(cls) -> ThetaSim:
        """CAMELS/IllustrisTNG fiducial values (0.3, 0.8, 1, 1, 1, 1)."""
        return cls()

    @classmethod
    def from_array(cls, x: Float[ArrayLike, "*batch n_param"]) -> ThetaSim:
        """Build from an array whose last axis is ordered as `PARAM_NAMES`."""
        x = jnp.asarray(x)
        if x.shape[-1:] != (6,):
            raise ValueError(f"x must have a last axis of size 6 (θ_sim), got shape {x.shape}")
        return cls(*(x[..., i] for i in range(6)))

    def to_array(self) -> Float[Array, "*batch 6"]:
        """Stack into an array whose last axis is ordered as `PARAM_NAMES`."""
        return jnp.stack([getattr(self, n) for n in PARAM_NAMES], axis=-1)

    def to_unit(self) -> Float[Array, "*batch 6"]:
        """Map to the unit cube under the prior (uniform or log-uniform per parameter)."""
        out = []
        for name, is_log in zip(PARAM_NAMES, _LOG_UNIFORM):
            lo, hi = PRIOR_BOUNDS[name]
            v = getattr(self, name)
            if is_log:
                v, lo, hi = jnp.log(v), math.log(lo), math.log(hi)
            out.append((v - lo) / (hi - lo))
        return jnp.stack(out, axis=-1)

    @classmethod
    def from_unit(cls, u: Float[ArrayLike, "*batch n_param"]) -> ThetaSim:
        """Inverse of `to_unit`: a point of the unit cube to parameter values."""
        u = jnp.asarray(u)
        vals = []
        for i, (name, is_log) in enumerate(zip(PARAM_NAMES, _LOG_UNIFORM)):
            lo, hi = PRIOR_BOUNDS[name]
            if is_log:
                vals.append(jnp.exp(math.log(lo) + u[..., i] * (math.log(hi) - math.log(lo))))
            else:
                vals.append(lo + u[..., i] * (hi - lo))
        return cls(*vals)

    @classmethod
    def sample_prior(cls, key: PRNGKeyArray, shape: tuple[int, ...] = ()) -> ThetaSim:
        """Draw from the seed 001 Table 1 prior; fields get shape `shape`."""
        u = jax.random.uniform(key, (*shape, 6))
        return cls.from_unit(u)

    def log_prior(self) -> Float[Array, "*batch"]:
        """Log prior density in the parameters' own coordinates (−inf outside).

        For a log-uniform A on [lo, hi], p(A) = 1 / (A ln(hi/lo)).
        """
        total = 0.0
        inside = True
        for name, is_log in zip(PARAM_NAMES, _LOG_UNIFORM):
            lo, hi = PRIOR_BOUNDS[name]
            v = getattr(self, name)
            inside = inside & (v >= lo) & (v <= hi)
            if is_log:
                total = total - jnp.log(v) - math.log(math.log(hi / lo))
            else:
                total = total - math.log(hi - lo)
        return jnp.where(inside, total, -jnp.inf)

    def check_prior(self) -> ThetaSim:
        """Return `self`, raising (also under `jit`) if any value is outside the prior."""
        out = {}
        for name in PARAM_NAMES:
            lo, hi = PRIOR_BOUNDS[name]
            v = getattr(self, name)
            out[name] = eqx.error_if(
                v, ~((v >= lo) & (v <= hi)), f"{name} is outside its allowed range [{lo}, {hi}]"
            )
        return eqx.tree_at(lambda t: [getattr(t, n) for n in PARAM_NAMES], self,
                           [out[n] for n in PARAM_NAMES])
