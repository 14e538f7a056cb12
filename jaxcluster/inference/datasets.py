r"""(θ, XOD) training sets for simulation-based inference, from any simulator, resumable after a kill.

**Simulators.** A simulator is any callable `simulator(theta, key) -> xod`
taking one parameter vector θ (d,) and a PRNG key and returning one
(n_cr, n_hr, n_z) XOD; `AnalyticSimulator` (the analytic expected XOD with
Poisson noise, `jaxcluster.analytic`) and `SurveySimulator` (the survey
pipeline, `jaxcluster.survey.simulate_xod`) are provided. Equinox modules are
passed to the compiled function as arguments (their arrays are not baked in
as constants).

**Parameters from the prior.** `BoxPrior` holds independent uniform or
log-uniform priors (seed 001 Table 1 for θ_sim: `BoxPrior.theta_sim()`; the
analytic model's box: `BoxPrior.analytic(model)`). θ is drawn in the unit
cube $u ∈ [0, 1)^d$ and mapped to the box. Two designs:

* ``"random"``: $u_i \sim U[0,1)^d$ from the key `fold_in(k_θ, i)`;
* ``"latin_hypercube"``: $u_{ij} = (π_j(i) + v_{ij}) / n$ with $π_j$ a random
  permutation of 0…n−1 per dimension and $v_i \sim U[0,1)^d$ from `fold_in(k_v, i)`,
  so every one of the n strata of every parameter holds exactly one point.

**Determinism.** Every random number of sample i comes from keys derived
from (seed, i) alone (the simulator key is `fold_in(fold_in(key(seed), 1), i)`),
and chunk boundaries are fixed by `chunk_size`, so a run that was killed and
resumed writes the same bits as an uninterrupted one.

**Devices and processes.** A chunk of `chunk_size` samples is computed as
micro-batches of `batch_size` samples, one `vmap` each (``batch_mode="map"``:
one sample at a time, for simulators too large to batch, such as the survey
pipeline), spread over a 1-D device mesh (`jax.shard_map`, no
communication). The last, short chunk is padded with repeats (dropped
afterwards) so that one compiled program serves every chunk. A chunk's bits
depend on (seed, chunk index) and the settings only, never on the device
count or the process that computed it.

**Files and workers.** The set is a `jaxcluster.io.Campaign`: while it is
made, every chunk is its own HDF5 file in ``OUT.parts/`` (whole or absent,
with a checksum), next to ``meta.json`` holding the settings; a kill loses
at most the chunk in flight, and a restart with the same settings (a
different one is refused, naming the difference) computes only what is
missing. Any number of processes may work on one output at once (SLURM
array tasks, Dask workers: `jaxcluster.engines`); they claim chunks, never
write one twice, and the last one merges the chunks into the single file
``OUT`` (`jaxcluster.io.chunks`).

**Layout of the merged file:** datasets ``theta`` (n, d) float64 and ``xod``
(n, n_cr, n_hr, n_z) float32; attributes ``param_names``, ``prior_low``,
``prior_high``, ``prior_log``, ``n``, ``seed``, ``design``, ``chunk_size``, ``batch_size``,
``dtype`` (the simulator's float dtype), ``metadata`` (a JSON string from the
caller, e.g. the simulator's settings) and ``jaxcluster_version``.
`load_dataset` reads it back.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec
from jaxtyping import Array, ArrayLike, Float, Key, PRNGKeyArray

from ..io.campaign import (
    DEFAULT_LEASE_S,
    DEFAULT_MAX_ATTEMPTS,
    STORE_KEYS,
    Campaign,
    merge_campaign,
    run_worker,
    write_chunked,
)
from ..io.checks import LoadError, check_array, check_finite_blocks, open_hdf5
from ..io.chunks import parts_dir, pytree_digest, read_attr

__all__ = [
    "DESIGNS",
    "BoxPrior",
    "AnalyticSimulator",
    "SurveySimulator",
    "unit_design",
    "sample_parameters",
    "simulation_keys",
    "dataset_campaign",
    "generate_dataset",
    "merge_dataset",
    "write_chunked",
    "pytree_digest",
    "Dataset",
    "check_dataset",
    "survey_bin_coverage",
    "load_dataset",
]

DESIGNS = ("random", "latin_hypercube")
_FORMAT_VERSION = 1


class BoxPrior(eqx.Module):
    """Independent uniform (or log-uniform) priors on a box: the prior of a training set.

    A log-uniform parameter is uniform in ln θ between ln low and ln high
    (seed 001 Table 1's feedback amplitudes).

    Attributes:
        names: parameter names, in θ's order.
        low: lower bounds, one per parameter (of θ itself, not of its log).
        high: upper bounds, > low.
        log: True where the prior is log-uniform (then low > 0).
    """

    names: tuple[str, ...] = eqx.field(static=True)
    low: tuple[float, ...] = eqx.field(static=True)
    high: tuple[float, ...] = eqx.field(static=True)
    log: tuple[bool, ...] = eqx.field(static=True)

    def __init__(self, names: Sequence[str], low: Sequence[float], high: Sequence[float],
                 log: Sequence[bool] | None = None):
        names = tuple(str(n) for n in names)
        log = (False,) * len(names) if log is None else tuple(bool(v) for v in log)
        low, high = tuple(float(v) for v in low), tuple(float(v) for v in high)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"names must be non-empty and unique, got {names}")
        if not len(low) == len(high) == len(log) == len(names):
            raise ValueError(f"low, high and log must have one entry per name ({len(names)}), got "
                             f"{len(low)}, {len(high)}, {len(log)}")
        for n, lo, hi, lg in zip(names, low, high, log):
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"prior of {n}: low = {lo}, high = {hi} must be finite with low < high")
            if lg and not lo > 0:
                raise ValueError(f"prior of {n}: a log-uniform prior needs low > 0, got {lo}")
        self.names, self.low, self.high, self.log = names, low, high, log

    @classmethod
    def theta_sim(cls, **bounds: tuple[float, float]) -> BoxPrior:
        """Seed 001 Table 1 on θ_sim (`params.PRIOR_BOUNDS`; A's log-uniform); `bounds` narrows some.

        Args:
            **bounds: name=(low, high) replacing a parameter's range (e.g. a narrow Ω_m
                for a small survey whose boxes must hold every Ω_m).
        """
        from ..params import _LOG_UNIFORM, PARAM_NAMES, PRIOR_BOUNDS

        unknown = set(bounds) - set(PARAM_NAMES)
        if unknown:
            raise ValueError(f"unknown θ_sim parameters {sorted(unknown)}; allowed: {PARAM_NAMES}")
        b = {n: bounds.get(n, PRIOR_BOUNDS[n]) for n in PARAM_NAMES}
        for n in bounds:
            lo, hi = PRIOR_BOUNDS[n]
            if not lo <= b[n][0] < b[n][1] <= hi:
                raise ValueError(f"bounds of {n} = {b[n]} must lie inside its prior range [{lo}, {hi}]")
        return cls(PARAM_NAMES, [b[n][0] for n in PARAM_NAMES], [b[n][1] for n in PARAM_NAMES], _LOG_UNIFORM)

    @classmethod
    def analytic(cls, names: Sequence[str] | None = None, n_sigma: float = 2.0) -> BoxPrior:
        """A box for the analytic model's parameters.

        Ω_m and σ_8 (and any other `PRIOR_BOUNDS` name) take seed 001 Table 1;
        a scaling-relation parameter p takes p_fid ± n_sigma × its Gaussian prior
        width (`analytic.NUISANCE_PRIOR_SIGMA`; p_fid from `ScalingRelations()`).
        This uniform box is the prior of the training set: an exact (NUTS)
        posterior to compare an NPE posterior with must use the same box
        (`log_prob`), not the Gaussian nuisance prior of `analytic.log_prior`.

        Args:
            names: free parameters (default `analytic.ANALYTIC_PARAM_NAMES`).
            n_sigma: half-width of the nuisance boxes in prior σ, > 0.
        """
        from ..analytic import ANALYTIC_PARAM_NAMES, NUISANCE_PRIOR_SIGMA, ScalingRelations
        from ..params import PRIOR_BOUNDS

        if not n_sigma > 0:
            raise ValueError(f"n_sigma = {n_sigma} is outside its allowed range (0, inf)")
        names = ANALYTIC_PARAM_NAMES if names is None else tuple(names)
        base = ScalingRelations()
        low, high = [], []
        for n in names:
            if n in PRIOR_BOUNDS:
                lo, hi = PRIOR_BOUNDS[n]
            elif n in NUISANCE_PRIOR_SIGMA:
                c, s = float(getattr(base, n)), NUISANCE_PRIOR_SIGMA[n]
                lo, hi = c - n_sigma * s, c + n_sigma * s
            else:
                raise ValueError(f"no prior box for parameter {n!r}; choose from "
                                 f"{tuple(PRIOR_BOUNDS) + tuple(NUISANCE_PRIOR_SIGMA)}")
            if n.startswith("sigma_ln"):
                lo = max(lo, 1e-3)  # scatters stay positive
            low.append(lo)
            high.append(hi)
        return cls(names, low, high)

    @property
    def dim(self) -> int:
        """Number of parameters d."""
        return len(self.names)

    def _ends(self, xp):
        lo = xp.asarray([math.log(v) if g else v for v, g in zip(self.low, self.log)])
        hi = xp.asarray([math.log(v) if g else v for v, g in zip(self.high, self.log)])
        return lo, hi, np.asarray(self.log)

    def from_unit(self, u: Float[ArrayLike, "*batch d"]) -> Float[ArrayLike, "*batch d"]:
        """Map unit-cube points u ∈ [0, 1]^d to θ (numpy in → numpy out, float64).

        Args:
            u: (..., d) points of the unit cube.

        Returns:
            (..., d) parameter values.
        """
        xp = np if isinstance(u, np.ndarray) else jnp
        u = xp.asarray(u)
        if u.shape[-1:] != (self.dim,):
            raise ValueError(f"u must have a last axis of size {self.dim} ({self.names}), got shape {u.shape}")
        lo, hi, lg = (_lead(a, u.ndim) for a in self._ends(xp))
        lo, hi = lo.astype(u.dtype), hi.astype(u.dtype)
        v = lo + u * (hi - lo)
        return xp.where(lg, xp.exp(v), v)

    def to_unit(self, theta: Float[ArrayLike, "*batch d"]) -> Float[ArrayLike, "*batch d"]:
        """Inverse of `from_unit`: θ to the unit cube (numpy in → numpy out).

        Args:
            theta: (..., d) parameter values inside the box.

        Returns:
            (..., d) unit-cube coordinates.
        """
        xp = np if isinstance(theta, np.ndarray) else jnp
        theta = xp.asarray(theta)
        if theta.shape[-1:] != (self.dim,):
            raise ValueError(f"theta must have a last axis of size {self.dim} ({self.names}), got shape {theta.shape}")
        lo, hi, lg = (_lead(a, theta.ndim) for a in self._ends(xp))
        lo, hi = lo.astype(theta.dtype), hi.astype(theta.dtype)
        v = xp.where(lg, xp.log(xp.where(lg, theta, xp.ones_like(theta))), theta)
        return (v - lo) / (hi - lo)

    def log_prob(self, theta: Float[ArrayLike, "*batch d"]) -> Float[Array, "*batch"]:
        """Log prior density of θ in θ's own coordinates (−inf outside the box).

        Uniform: −ln(high − low); log-uniform: −ln θ − ln ln(high/low).

        Args:
            theta: (..., d) parameter values.

        Returns:
            (...,) log density.
        """
        theta = jnp.asarray(theta)
        if theta.shape[-1:] != (self.dim,):
            raise ValueError(f"theta must have a last axis of size {self.dim} ({self.names}), got shape {theta.shape}")
        lo = _lead(jnp.asarray(self.low, theta.dtype), theta.ndim)
        hi = _lead(jnp.asarray(self.high, theta.dtype), theta.ndim)
        lg = _lead(np.asarray(self.log), theta.ndim)
        const = np.where(self.log, -np.log(np.log(np.asarray(self.high) / np.asarray(self.low))),
                         -np.log(np.asarray(self.high) - np.asarray(self.low)))
        safe = jnp.where(lg & (theta > 0), theta, jnp.ones_like(theta))
        dens = _lead(jnp.asarray(const, theta.dtype), theta.ndim) - jnp.where(lg, jnp.log(safe), jnp.zeros_like(theta))
        inside = jnp.all((theta >= lo) & (theta <= hi), axis=-1)
        return jnp.where(inside, jnp.sum(dens, axis=-1), -jnp.inf)


def _lead(a, ndim: int):
    """(d,) → (1, …, 1, d) with ndim axes, for strict rank promotion."""
    return a.reshape((1,) * (ndim - 1) + a.shape)


class AnalyticSimulator(eqx.Module):
    """The analytic XOD with Poisson noise: `poisson_mock(key, model(θ))`.

    Attributes:
        model: `analytic.AnalyticModel`; θ is ordered as `model.names`.
    """

    model: Any  # analytic.AnalyticModel (imported lazily: the analytic stack is heavy)

    def __call__(self, theta: Float[Array, " d"], key: PRNGKeyArray) -> Float[Array, "n_cr n_hr n_z"]:
        """One Poisson mock XOD at θ (counts as floats in the model's dtype)."""
        from ..analytic import poisson_mock

        return poisson_mock(key, self.model(theta))

    @property
    def binning(self):
        """The XOD bin edges (`analytic.XODBinning`)."""
        return self.model.binning

    @property
    def area_deg2(self) -> float:
        """The survey area of the XODs [deg²]."""
        return float(self.model.survey.area_deg2)


class SurveySimulator(eqx.Module):
    """The survey pipeline's XOD (`survey.simulate_xod`) for θ = θ_sim (6,).

    Attributes:
        config: `survey.SurveyConfig`.
        eldl: baryon painter (default `baryons.default_eldl()`).
        table: count-rate table (default EPIC-pn).
        soft: the soft (differentiable) XOD instead of the histogram.
    """

    config: Any
    eldl: Any
    table: Any
    soft: bool = eqx.field(static=True)

    def __init__(self, config: Any, eldl: Any = None, table: Any = None, soft: bool = False):
        if eldl is None:
            from ..baryons import default_eldl

            eldl = default_eldl()
        if table is None:
            from ..xray.emissivity import default_emissivity_table

            table = default_emissivity_table()
        self.config, self.eldl, self.table, self.soft = config, eldl, table, bool(soft)

    def __call__(self, theta: Float[Array, " 6"], key: PRNGKeyArray) -> Float[Array, "n_cr n_hr n_z"]:
        """One survey XOD at θ_sim (ordered as `params.PARAM_NAMES`)."""
        from ..params import ThetaSim
        from ..survey import simulate_xod

        return simulate_xod(ThetaSim.from_array(theta), key, self.config, soft=self.soft, eldl=self.eldl,
                            table=self.table)

    @property
    def binning(self):
        """The XOD bin edges (`analytic.XODBinning`)."""
        return self.config.binning

    @property
    def area_deg2(self) -> float:
        """The survey area of the XODs (all lightcones) [deg²]."""
        return float(self.config.area_deg2)


def survey_bin_coverage(config: Any, theta: Float[ArrayLike, " 6"], key: PRNGKeyArray, *, eldl: Any = None,
                        table: Any = None) -> dict[str, Any]:
    """Where the detected sources of one survey simulation fall relative to the XOD bins (a cheap check).

    A binning that leaves most sources outside (e.g. coarse cells, whose
    sources' hardness ratios lie below the lowest default HR edge) gives
    all-zero XODs; `jaxcluster dataset generate --simulator survey` runs this
    once before a new dataset and warns.

    Args:
        config: `survey.SurveyConfig`.
        theta: θ_sim (6,), e.g. the prior's centre.
        key: PRNG key of the simulation.
        eldl: baryon painter, as `SurveySimulator`.
        table: count-rate table, as `SurveySimulator`.

    Returns:
        dict with ``selected`` (sources above ``cr_min``), ``binned`` (those inside every bin
        range), ``fraction_outside``, and per axis the counts ``below`` / ``above`` the edges
        (``cr``, ``hr``, ``z``) with the observed (min, max) of each quantity.
    """
    from ..params import ThetaSim
    from ..survey import simulate_survey

    sim = SurveySimulator(config, eldl, table)

    @eqx.filter_jit
    def catalogue(s, th, k):
        return simulate_survey(ThetaSim.from_array(th), k, s.config, eldl=s.eldl, table=s.table).catalogue

    cat = catalogue(sim, jnp.asarray(theta, jnp.result_type(float)), key)
    valid = np.asarray(cat.valid).reshape(-1)
    cr = np.asarray(cat.count_rate_total, np.float64).reshape(-1)
    sel = valid & (cr > config.cr_min)
    values = {"cr": cr[sel], "hr": np.asarray(cat.hardness_ratio, np.float64).reshape(-1)[sel],
              "z": np.asarray(cat.z, np.float64).reshape(-1)[sel]}
    inside = np.ones(int(sel.sum()), bool)
    out: dict[str, Any] = {"selected": int(sel.sum())}
    for k, v in values.items():
        e = getattr(config.binning, f"{k}_edges")
        below, above = v < e[0], v >= e[-1]
        inside &= ~below & ~above
        out[k] = dict(below=int(below.sum()), above=int(above.sum()), edges=(e[0], e[-1]),
                      range=(float(v.min()), float(v.max())) if v.size else None)
    out["binned"] = int(inside.sum())
    out["fraction_outside"] = 1.0 - out["binned"] / out["selected"] if out["selected"] else 0.0
    return out


def _check_design(design: str) -> None:
    if design not in DESIGNS:
        raise ValueError(f"design = {design!r} is not allowed; choose from {DESIGNS}")


def unit_design(key: PRNGKeyArray, n: int, dim: int, design: str = "random") -> np.ndarray:
    """n points of the unit cube [0, 1)^dim, random or Latin hypercube (module docstring).

    Point i depends only on (key, i) for ``"random"`` and on (key, i, n) for
    ``"latin_hypercube"`` (the strata permutations depend on n).

    Args:
        key: PRNG key.
        n: number of points, ≥ 1.
        dim: dimension, ≥ 1.
        design: ``"random"`` or ``"latin_hypercube"``.

    Returns:
        (n, dim) float64 numpy array.
    """
    _check_design(design)
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ValueError(f"n = {n!r} is outside its allowed range: an integer >= 1")
    if not (isinstance(dim, (int, np.integer)) and dim >= 1):
        raise ValueError(f"dim = {dim!r} is outside its allowed range: an integer >= 1")
    k_u, k_perm = jax.random.split(key)
    v = np.stack([_uniforms(k_u, j, n) for j in range(dim)], axis=-1)
    if design == "random":
        return v
    # strata permutations: the ranks of n further uniforms per dimension
    perms = np.stack([np.argsort(_uniforms(k_perm, j, n), kind="stable") for j in range(dim)], axis=-1)
    return (perms + v) / n


_BLOCK = 4096


def _uniforms(key: PRNGKeyArray, j: int, n: int) -> np.ndarray:
    """U[0, 1) numbers i = 0…n−1 of stream j, each from `fold_in(fold_in(key, j), i)` (float64)."""
    kj = jax.random.fold_in(key, j)
    blocks = [_uniform_block(kj, jnp.uint32(s)) for s in range(0, n, _BLOCK)]
    return np.concatenate([np.asarray(b, dtype=np.float64) for b in blocks])[:n]


@jax.jit
def _uniform_block(key, start):
    """A fixed-size block (one compilation for any n) of per-index uniforms."""
    idx = start + jnp.arange(_BLOCK, dtype=jnp.uint32)
    return jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i)))(idx)


def _theta_key(seed: int) -> PRNGKeyArray:
    return jax.random.fold_in(jax.random.key(seed), 0)


def _sim_key(seed: int) -> PRNGKeyArray:
    return jax.random.fold_in(jax.random.key(seed), 1)


def sample_parameters(prior: BoxPrior, n: int, seed: int, design: str = "random") -> np.ndarray:
    """The θ of a training set: `prior.from_unit(unit_design(...))` with the dataset's key.

    Args:
        prior: `BoxPrior`.
        n: number of samples.
        seed: dataset seed (the same as `generate_dataset`'s).
        design: ``"random"`` or ``"latin_hypercube"``.

    Returns:
        (n, d) float64 numpy array.
    """
    return prior.from_unit(unit_design(_theta_key(seed), n, prior.dim, design))


def simulation_keys(seed: int, start: int, stop: int) -> Key[Array, " n"]:
    """Simulator keys of samples start…stop−1: `fold_in(fold_in(key(seed), 1), i)`."""
    return _fold_range(_sim_key(seed), jnp.arange(start, stop, dtype=jnp.uint32))


@jax.jit
def _fold_range(key, idx):
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(idx)


def _chunk_runner(mesh: Mesh):
    """Jitted (micro-batches (m, b, …) sharded over the mesh) → XODs; each device `lax.map`s its micro-batches.

    A micro-batch of b samples is one `vmap` of width b whatever the device
    count, so a sample's bits do not depend on how many devices (or which
    process) computed its chunk; more devices only shorten each one's map.
    """
    (name,) = mesh.axis_names
    spec = PartitionSpec(name)

    @eqx.filter_jit
    def run(dynamic, static, theta, key_data):
        def local(dyn, th, kd):
            sim = eqx.combine(dyn, static)

            def micro(args):
                t, k = args
                return jax.vmap(sim)(t, jax.random.wrap_key_data(k))

            return jax.lax.map(micro, (th, kd))

        return jax.shard_map(local, mesh=mesh, in_specs=(PartitionSpec(), spec, spec), out_specs=spec,
                             check_vma=False)(dynamic, theta, key_data)

    return run


def dataset_campaign(
    simulator: Callable[[Float[Array, " d"], PRNGKeyArray], Float[Array, "n_cr n_hr n_z"]],
    prior: BoxPrior,
    n: int,
    out: str | os.PathLike,
    *,
    seed: int = 0,
    design: str = "random",
    chunk_size: int = 256,
    batch_mode: str = "vmap",
    batch_size: int | None = None,
    mesh: Mesh | None = None,
    metadata: dict | None = None,
) -> Campaign:
    """The (θ, XOD) training set as a `jaxcluster.io.Campaign`: settings, chunks and their computation.

    Chunk c holds samples ``c·chunk_size … (c+1)·chunk_size − 1``; it is
    computed as micro-batches of `batch_size` samples (one `vmap` each), the
    micro-batches spread over the devices of `mesh`. Its bits depend on
    (seed, c) and the settings only, not on the process or the number of
    devices that computes it, so any number of workers can share the
    campaign (`jaxcluster.io.run_worker`, `jaxcluster.engines`).

    Args: as `generate_dataset`.

    Raises:
        ValueError: a bad argument (named, with its allowed range).
    """
    from .. import __version__
    from ..nbody.sharding import device_mesh

    _check_design(design)
    if batch_mode not in ("vmap", "map"):
        raise ValueError(f"batch_mode = {batch_mode!r} is not allowed; choose from ('vmap', 'map')")
    if not (isinstance(n, (int, np.integer)) and 1 <= n < 2**31):
        raise ValueError(f"n = {n!r} is outside its allowed range: an integer in [1, 2**31)")
    if not (isinstance(seed, (int, np.integer)) and 0 <= seed < 2**32):
        raise ValueError(f"seed = {seed!r} is outside its allowed range: an integer in [0, 2**32)")
    if not (isinstance(chunk_size, (int, np.integer)) and chunk_size >= 1):
        raise ValueError(f"chunk_size = {chunk_size!r} is outside its allowed range: an integer >= 1")
    if batch_size is None:  # the widest vmap of at most 32 samples that divides the chunk
        batch_size = 1 if batch_mode == "map" else max(b for b in range(1, 33) if chunk_size % b == 0)
    if not (isinstance(batch_size, (int, np.integer)) and batch_size >= 1 and chunk_size % batch_size == 0):
        raise ValueError(f"batch_size = {batch_size!r} is outside its allowed range: a positive divisor of "
                         f"chunk_size = {chunk_size}")
    if batch_mode == "map" and batch_size != 1:
        raise ValueError(f"batch_size = {batch_size} is outside its allowed range for batch_mode='map': 1")
    mesh = device_mesh("batch") if mesh is None else mesh
    if len(mesh.axis_names) != 1:
        raise ValueError(f"mesh must be 1-D, got axes {mesh.axis_names}")
    n_dev = int(mesh.devices.size)
    metadata = {} if metadata is None else dict(metadata)
    json.dumps(metadata)  # fails early (TypeError) if not serialisable

    theta_all = sample_parameters(prior, int(n), int(seed), design)
    dtype = jnp.result_type(float)
    runner = _chunk_runner(mesh)
    dynamic, static = eqx.partition(simulator, eqx.is_array)
    # one evaluation shape-checks the simulator and fixes the XOD shape (no simulation)
    shape = jax.eval_shape(simulator, jnp.asarray(theta_all[0], dtype), jax.random.key(0)).shape
    if len(shape) != 3:
        raise ValueError(f"the simulator must return an (n_cr, n_hr, n_z) XOD, got shape {shape}")
    settings = dict(
        param_names=list(prior.names), prior_low=list(prior.low), prior_high=list(prior.high),
        prior_log=[bool(v) for v in prior.log], n=int(n), seed=int(seed), design=design,
        chunk_size=int(chunk_size), batch_size=int(batch_size), dtype=str(np.dtype(dtype)), xod_shape=list(shape),
        metadata=metadata, simulator_digest=pytree_digest(simulator), jaxcluster_version=__version__,
    )
    binning = getattr(simulator, "binning", None)
    if binning is not None:  # so that an observed XOD can be checked against the training set's bins
        settings["xod_edges"] = {k: [float(v) for v in getattr(binning, f"{k}_edges")] for k in ("cr", "hr", "z")}
    if getattr(simulator, "area_deg2", None) is not None:  # counts scale with it: an observed XOD must match
        settings["area_deg2"] = float(simulator.area_deg2)
    n_micro = int(chunk_size) // int(batch_size)
    n_micro_padded = -(-n_micro // n_dev) * n_dev  # whole repeated micro-batches fill idle devices

    def make_chunk(c: int) -> dict[str, np.ndarray]:
        start, stop = c * chunk_size, min((c + 1) * chunk_size, n)
        # padded rows repeat the last sample, padded micro-batches the last micro-batch: dropped below
        rows = np.concatenate([np.arange(start, stop), np.full(start + chunk_size - stop, stop - 1)])
        rows = rows.reshape(n_micro, batch_size)
        rows = np.concatenate([rows, np.repeat(rows[-1:], n_micro_padded - n_micro, axis=0)])
        theta = jnp.asarray(theta_all[rows], dtype)
        key_data = jax.random.key_data(simulation_keys(int(seed), start, start + chunk_size))
        key_data = key_data[jnp.asarray(np.minimum(rows, stop - 1) - start)]
        xod = np.asarray(runner(dynamic, static, theta, key_data), dtype=np.float32)
        return {"theta": theta_all[start:stop], "xod": xod.reshape(-1, *shape)[: stop - start]}

    return _campaign(Path(out), settings, make_chunk)


def _finalize(f) -> None:
    f.attrs["format_version"] = _FORMAT_VERSION


def _campaign(out: Path, settings: dict, make_chunk) -> Campaign:
    n, chunk_size = int(settings["n"]), int(settings["chunk_size"])
    n_chunks = -(-n // chunk_size)
    return Campaign(out, settings, n_chunks, make_chunk, finalize=_finalize, merge_chunk_rows=chunk_size,
                    chunk_rows=tuple(min(chunk_size, n - c * chunk_size) for c in range(n_chunks)), unit="XOD")


def merge_dataset(out: str | os.PathLike) -> Path:
    """Merge a dataset whose chunks are all present (made by any workers), verifying their checksums.

    The settings come from the chunk folder's ``meta.json``; the merged file
    is the one an uninterrupted single-process run writes.

    Raises:
        ValueError: no partial dataset at `out`.
        FileNotFoundError: chunks are missing (counted in the message).
        CorruptChunks: chunk files failed their checksum (moved aside; run generate again).
    """
    out = Path(out)
    if out.exists():
        return out
    parts = parts_dir(out)
    if not (parts / "meta.json").exists():
        raise ValueError(f"no partial dataset at {out} ({parts}/meta.json does not exist)")
    meta = json.loads((parts / "meta.json").read_text())
    settings = {k: v for k, v in meta.items() if k not in STORE_KEYS}

    def no_compute(c):
        raise RuntimeError("merge_dataset computes nothing")

    return merge_campaign(_campaign(out, settings, no_compute))


def generate_dataset(
    simulator: Callable[[Float[Array, " d"], PRNGKeyArray], Float[Array, "n_cr n_hr n_z"]],
    prior: BoxPrior,
    n: int,
    out: str | os.PathLike,
    *,
    seed: int = 0,
    design: str = "random",
    chunk_size: int = 256,
    batch_mode: str = "vmap",
    batch_size: int | None = None,
    mesh: Mesh | None = None,
    metadata: dict | None = None,
    progress: bool = True,
    order: Sequence[int] | None = None,
    task: str = "",
    lease_s: float = DEFAULT_LEASE_S,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    wait: bool = True,
) -> Path | None:
    """Simulate n (θ, XOD) pairs into the HDF5 file `out`, resuming an interrupted run, beside any other workers.

    See the module docstring for the design, keys and file layout. Calling
    it again with the same settings after a kill continues where the run
    stopped; calling it on a finished file returns at once. Several
    processes (SLURM array tasks, Dask workers, a second call by mistake)
    may work on the same `out` at once: they share the chunks through
    claims and never write one twice (`jaxcluster.io.campaign`).

    Args:
        simulator: `(theta (d,), key) -> xod (n_cr, n_hr, n_z)`, jit- and vmap-able
            (an Equinox module or a plain function).
        prior: the `BoxPrior` θ is drawn from (d = `prior.dim`).
        n: number of samples, ≥ 1.
        out: output HDF5 path; ``out.parts/`` holds the chunks while the run is in progress.
        seed: dataset seed (θ and simulator keys derive from it and the sample index).
        design: ``"random"`` or ``"latin_hypercube"``.
        chunk_size: samples per chunk (a kill loses at most one chunk), ≥ 1.
        batch_mode: ``"vmap"`` (micro-batches of `batch_size` samples) or ``"map"``
            (one sample at a time: simulators too large to batch, such as the survey).
        batch_size: samples per `vmap`, a divisor of `chunk_size` (default: its largest
            divisor ≤ 32; 1 for ``"map"``).
        mesh: 1-D device mesh the micro-batches are spread over (default: all devices).
        metadata: JSON-serialisable description of the simulator, stored in the file
            and compared on resume.
        progress: show a tqdm progress bar.
        order: chunks this process visits first (its SLURM array share,
            `jaxcluster.engines.ArrayTask.order`); then the rest.
        task: this worker's label, recorded in claims and chunk files.
        lease_s: seconds without a heartbeat after which a chunk's claim is taken over.
        max_attempts: failures of a chunk after which it is given up, ≥ 1.
        wait: stay until the file is merged (False: leave when nothing is left to claim).

    Returns:
        The path of the merged file, or None if this worker left before the merge (``wait=False``).

    Raises:
        ValueError: a bad argument, or an existing (partial) dataset at `out` made with
            other settings.
        RuntimeError: chunks failed `max_attempts` times (see ``jaxcluster dataset status``).
    """
    campaign = dataset_campaign(simulator, prior, n, out, seed=seed, design=design, chunk_size=chunk_size,
                                batch_mode=batch_mode, batch_size=batch_size, mesh=mesh, metadata=metadata)
    report = run_worker(campaign, order=order, task=task, lease_s=lease_s, max_attempts=max_attempts, wait=wait,
                        progress=progress)
    if report.failed:
        raise RuntimeError(f"{out}: chunks {report.failed[:10]} failed {max_attempts} times; their tracebacks are "
                           f"in {parts_dir(out)}/failed/ (`jaxcluster dataset status {out}`)")
    return report.out


def _attr(v, key: str):
    return json.loads(v) if key == "metadata" else read_attr(v)


class Dataset(NamedTuple):
    """A training set read back by `load_dataset`.

    Attributes:
        theta: (n, d) float64 parameters, ordered as ``metadata["param_names"]``.
        xod: (n, n_cr, n_hr, n_z) float32 XODs (counts).
        metadata: the file's attributes (prior, seed, design, simulator metadata, ...).
    """

    theta: np.ndarray
    xod: np.ndarray
    metadata: dict

    @property
    def prior(self) -> BoxPrior:
        """The `BoxPrior` the θ were drawn from."""
        m = self.metadata
        return BoxPrior(m["param_names"], m["prior_low"], m["prior_high"], m["prior_log"])


_REQUIRED_ATTRS = ("param_names", "prior_low", "prior_high", "prior_log", "n", "seed")


def _read_metadata(f, path: Path) -> dict:
    meta = {}
    for k in f.attrs:
        try:
            meta[k] = _attr(f.attrs[k], k)
        except (ValueError, TypeError) as err:
            raise LoadError(f"{path}: attribute {k!r} cannot be read ({err})") from None
    return meta


def check_dataset(path: str | os.PathLike, *, scan: bool = True) -> dict:
    """Check that `path` is a complete, consistent dataset; return its metadata.

    Structure (datasets ``theta`` and ``xod``), dtypes (floating point), ranks
    ((n, d) and (n, n_cr, n_hr, n_z)), lengths (the same n, the ``n``
    attribute), the metadata (prior attributes one per parameter, a valid
    `BoxPrior`; ``xod_shape`` and ``xod_edges`` consistent with the XODs)
    and, with `scan`, the values (finite θ; finite, non-negative XOD counts),
    read in blocks.

    Raises:
        ValueError (`io.checks.LoadError`): naming the file and the problem.
    """
    path = Path(path)
    if not path.exists() and parts_dir(path).exists():
        raise LoadError(f"dataset {path} does not exist (the run is unfinished: run the same generate command "
                        "again to resume)")
    with open_hdf5(path, "dataset") as f:
        return _check_open(f, path, scan)


def _check_open(f, path: Path, scan: bool) -> dict:
    import h5py

    for name in ("theta", "xod"):
        if name not in f or not isinstance(f[name], h5py.Dataset):
            raise LoadError(f"{path} is not a jaxcluster dataset (no {name!r} dataset)")
    theta, xod = f["theta"], f["xod"]
    check_array(path, "theta", theta, ndim=2)
    check_array(path, "xod", xod, ndim=4)
    if theta.shape[0] != xod.shape[0]:
        raise LoadError(f"{path}: 'theta' has {theta.shape[0]} rows but 'xod' {xod.shape[0]}; the file is "
                        "inconsistent")
    meta = _read_metadata(f, path)
    missing = [k for k in _REQUIRED_ATTRS if k not in meta]
    if missing:
        raise LoadError(f"{path}: attribute(s) {missing} missing: not a dataset written by `jaxcluster dataset "
                        "generate` (or a damaged one)")
    n, d = theta.shape
    if meta["n"] != n:
        raise LoadError(f"{path}: attribute n = {meta['n']!r} but the file holds {n} rows")
    for k in ("param_names", "prior_low", "prior_high", "prior_log"):
        v = meta[k]
        if not isinstance(v, list) or len(v) != d:
            raise LoadError(f"{path}: attribute {k!r} = {v!r} must list one entry per parameter (theta has {d})")
    try:
        BoxPrior(meta["param_names"], meta["prior_low"], meta["prior_high"], meta["prior_log"])
    except (ValueError, TypeError) as err:
        raise LoadError(f"{path}: the prior attributes are invalid ({err})") from None
    if "xod_shape" in meta and list(meta["xod_shape"]) != list(xod.shape[1:]):
        raise LoadError(f"{path}: attribute xod_shape = {meta['xod_shape']} but 'xod' has shape {xod.shape[1:]} "
                        "per sample")
    edges = meta.get("xod_edges")
    if edges is not None:
        if not isinstance(edges, dict) or set(edges) != {"cr", "hr", "z"}:
            raise LoadError(f"{path}: attribute xod_edges = {edges!r} must map 'cr', 'hr', 'z' to bin edges")
        got = tuple(len(edges[k]) - 1 for k in ("cr", "hr", "z"))
        if got != tuple(xod.shape[1:]):
            raise LoadError(f"{path}: attribute xod_edges has {got} bins (cr, hr, z) but 'xod' has shape "
                            f"{xod.shape[1:]} per sample")
    if scan:
        check_finite_blocks(path, "theta", theta)
        check_finite_blocks(path, "xod", xod, nonnegative=True)
    return meta


def load_dataset(path: str | os.PathLike, start: int = 0, stop: int | None = None, *,
                 memory_check: bool = True) -> Dataset:
    """Read a dataset written by `generate_dataset` (samples start…stop−1; default all), checked.

    The file is checked as by `check_dataset` (structure, dtypes, shapes,
    metadata) and the rows read for finite θ and finite, non-negative
    counts; a file that fails is refused, naming it and the problem.

    Args:
        path: the merged HDF5 file.
        start: first sample.
        stop: one past the last sample (default n).
        memory_check: refuse at once when the rows read would not fit in the memory available
            (`engines.memory.check_memory`; also off with ``JAXCLUSTER_NO_MEMORY_CHECK=1``).

    Returns:
        `Dataset(theta, xod, metadata)`.

    Raises:
        ValueError: the file is absent (an unfinished run says so), not a dataset, or
            inconsistent (`io.checks.LoadError`); or too large (`engines.memory.MemoryEstimateError`).
    """
    from ..engines.memory import check_memory

    path = Path(path)
    if not path.exists():
        unfinished = parts_dir(path).exists()
        hint = " (the run is unfinished: run the same generate command again to resume)" if unfinished else ""
        raise LoadError(f"dataset {path} does not exist{hint}")
    with open_hdf5(path, "dataset") as f:
        meta = _check_open(f, path, scan=False)
        theta_ds, xod_ds = f["theta"], f["xod"]
        rows = len(range(*slice(start, stop).indices(theta_ds.shape[0])))
        row_bytes = theta_ds.dtype.itemsize * theta_ds.shape[1] + xod_ds.dtype.itemsize * math.prod(xod_ds.shape[1:])
        check_memory(rows * row_bytes, f"reading {rows} samples of {path}", enabled=memory_check)
        theta, xod = theta_ds[start:stop], xod_ds[start:stop]
    check_array(path, "theta", theta, ndim=2)
    check_array(path, "xod", xod, ndim=4, nonnegative=True)
    return Dataset(theta, xod, meta)
