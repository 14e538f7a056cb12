r"""Synthetic CAMELS-like training sets: PM dark matter + halos + synthetic gas at the Table 1 redshifts.

Two kinds, after seed 001 Table 1 (always labelled *synthetic*):

* **CV-like** (`cv_spec`): the fiducial θ_sim, independent seeds, 50 h⁻¹ Mpc,
  128³ particles and voxels (0.39 h⁻¹ Mpc).
* **LH-like** (`lh_spec`): θ_sim on a Latin hypercube over the Table 1
  priors (log-uniform for the A's), 25 h⁻¹ Mpc, 64³.

Each sample is a 2LPT + FastPM run from z = 6 (as seed 001 restarts CAMELS
with JaxPM) saved at the eight Table 1 redshifts; at each one the
spherical-overdensity halos are found and `synthetic_gas` paints n_e and T.
`simulate_sample` does one sample as a single jit-able function;
`generate_training_set` writes a whole set to disk:

    out/params.txt            CAMELS-format table (name, Ω_m, σ_8, A_SN1, A_AGN1, A_SN2, A_AGN2, seed)
    out/spec.json             the generating spec (a resumed run must match it)
    out/LH_0/z0.100.h5 …      one `save_run` file per redshift: particles, fields
                              rho_dm, n_e_cm3, T_keV, and the halo catalogue (halo_*)

Files are written to a temporary name, fsynced and renamed
(`jaxcluster.io.atomic`), so a killed run leaves no partial file under a
final name; a restart skips the samples whose files all exist and redoes the
others (nothing lost, nothing duplicated), and reproduces the same bits. A
restart with another spec or gas model is refused, naming the difference;
`check_complete` tells readers (``eldl train``) whether a set is finished.
Samples are spread over the available devices, one share per device.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from jaxtyping import Array, Float, PRNGKeyArray

from ..cosmology import RHO_CRIT0_MSUN_H2_MPC3, Cosmology, growth_table
from ..halos.so import HaloCatalogue, SOFinder, find_halos
from ..io.atomic import atomic_path
from ..io.camels import write_camels_params
from ..io.runs import save_run
from ..nbody import PMConfig, linear_field, lpt, nbody, paint_cic, step_grid, white_noise
from ..nbody.sharding import device_mesh
from ..params import PARAM_NAMES, ThetaSim
from .synthetic import SyntheticGasModel, synthetic_gas

__all__ = [
    "TABLE1_REDSHIFTS",
    "stored_halos",
    "TrainingSetSpec",
    "cv_spec",
    "lh_spec",
    "latin_hypercube",
    "training_set_parameters",
    "SampleFields",
    "simulate_sample",
    "generate_training_set",
    "stored_spec",
]

TABLE1_REDSHIFTS: tuple[float, ...] = (0.1, 0.15, 0.21, 0.27, 0.33, 0.40, 0.47, 0.54)
_ONE_LEVEL_CORE_SUBSAMPLE = 2  # the gas sampling of sets made before `gas_core_subsample` existed
_HALO_FIELDS = ("pos", "vel", "M200c", "R200c", "M500c", "R500c", "M200m", "R200m", "n200c", "offset", "infall", "valid")


@dataclasses.dataclass(frozen=True)
class TrainingSetSpec:
    """What to generate (all static).

    Attributes:
        kind: "cv" (fiducial θ, seeds vary) or "lh" (Latin hypercube in θ).
        n_samples: number of simulations.
        box_size: comoving box side [h⁻¹ Mpc].
        n_side: particles per side, also voxels per side of the output fields.
        redshifts: output redshifts, increasing or not (stored as given).
        z_init: redshift of the 2LPT initial conditions.
        n_steps: FastPM steps from z_init to the lowest output redshift
            (the outputs are inserted as extra step boundaries).
        seed: master seed; sample i uses IC seed ``seed · 100003 + i`` (mod 2³¹).
        max_halos: halo-catalogue length per snapshot.
        capacity: particles gathered around a peak by the halo finder (see `SOFinder`);
            the defaults hold 2–3× the most found in 64³ and 128³ boxes at the
            prior's edge (Ω_m = 0.5, σ_8 = 1).
        max_neighbours: most particles within r_max of a peak (see `SOFinder`).
        gas_core_subsample: profile samples per cell and axis in the 3³ cells
            around each halo centre (`synthetic_gas`'s `core_subsample`). Sets
            made before it existed used 2 (one level); at 2 their `spec.json`
            stamp leaves it out, so they still resume.
    """

    kind: str
    n_samples: int
    box_size: float
    n_side: int
    redshifts: tuple[float, ...] = TABLE1_REDSHIFTS
    z_init: float = 6.0
    n_steps: int = 20
    seed: int = 0
    max_halos: int = 64
    capacity: int = 131072
    max_neighbours: int = 65536
    gas_core_subsample: int = 8

    def __post_init__(self):
        if self.kind not in ("cv", "lh"):
            raise ValueError(f"kind must be 'cv' or 'lh', got {self.kind!r}")
        if self.n_samples < 1:
            raise ValueError(f"n_samples = {self.n_samples} must be >= 1")
        if not (self.box_size > 0 and self.n_side >= 8):
            raise ValueError(f"box_size = {self.box_size} must be > 0 and n_side = {self.n_side} >= 8")
        if not self.redshifts or min(self.redshifts) < 0 or max(self.redshifts) >= self.z_init:
            raise ValueError(f"redshifts {self.redshifts} must be non-empty and lie in [0, z_init = {self.z_init})")
        if self.n_steps < 1:
            raise ValueError(f"n_steps = {self.n_steps} must be >= 1")
        if self.gas_core_subsample < 1:
            raise ValueError(f"gas_core_subsample = {self.gas_core_subsample} must be >= 1")

    @property
    def config(self) -> PMConfig:
        return PMConfig(self.box_size, self.n_side)

    @property
    def finder(self) -> SOFinder:
        return SOFinder(self.box_size, self.n_side, max_halos=self.max_halos, capacity=self.capacity,
                        r_max=min(2.5, self.box_size / 3), max_neighbours=self.max_neighbours)

    @property
    def a_steps(self) -> np.ndarray:
        snaps = 1.0 / (1.0 + np.asarray(self.redshifts))
        return step_grid(1.0 / (1.0 + self.z_init), float(snaps.max()), self.n_steps, snaps)

    def sample_name(self, i: int) -> str:
        return f"{self.kind.upper()}_{i}"

    def ic_seed(self, i: int) -> int:
        return (self.seed * 100003 + i) % 2**31


def cv_spec(n_samples: int = 8, **kwargs) -> TrainingSetSpec:
    """CV-like set: fiducial θ, 50 h⁻¹ Mpc, 128³ (0.39 h⁻¹ Mpc voxels), eight Table 1 redshifts."""
    kwargs = dict(box_size=50.0, n_side=128, max_halos=256, capacity=262144, max_neighbours=131072) | kwargs
    return TrainingSetSpec(kind="cv", n_samples=n_samples, **kwargs)


def lh_spec(n_samples: int = 1000, **kwargs) -> TrainingSetSpec:
    """LH-like set: Latin hypercube over the priors, 25 h⁻¹ Mpc, 64³, eight Table 1 redshifts."""
    kwargs = dict(box_size=25.0, n_side=64) | kwargs
    return TrainingSetSpec(kind="lh", n_samples=n_samples, **kwargs)


def latin_hypercube(key: PRNGKeyArray, n: int) -> ThetaSim:
    """n points of a Latin hypercube over the Table 1 priors (one point per stratum in each parameter)."""
    k_perm, k_jit = jax.random.split(key)
    strata = jnp.stack([jax.random.permutation(k, n) for k in jax.random.split(k_perm, 6)], axis=-1)
    u = (strata.astype(jnp.result_type(float)) + jax.random.uniform(k_jit, (n, 6))) / n
    return ThetaSim.from_unit(u)


def training_set_parameters(spec: TrainingSetSpec) -> tuple[ThetaSim, np.ndarray]:
    """θ_sim batch (fields of shape (n_samples,)) and IC seeds of a spec (deterministic in `spec.seed`)."""
    seeds = np.asarray([spec.ic_seed(i) for i in range(spec.n_samples)], dtype=np.int64)
    if spec.kind == "cv":
        theta = ThetaSim(*(np.full(spec.n_samples, float(getattr(ThetaSim.fiducial(), n))) for n in PARAM_NAMES))
    else:
        theta = latin_hypercube(jax.random.key(spec.seed), spec.n_samples)
    return theta, seeds


class SampleFields(eqx.Module):
    """One sample at every output redshift (leading axis n_z).

    Attributes:
        pos, p: (n_z, n_ptcl, 3) particles [h⁻¹ Mpc] (momenta p = a³E dx/da).
        rho_dm: (n_z, n, n, n) CIC dark-matter density [h² M☉ Mpc⁻³, comoving].
        n_e: (n_z, n, n, n) comoving electron density [cm⁻³].
        T_keV: (n_z, n, n, n) mass-weighted temperature [keV].
        halos: `HaloCatalogue` with a leading n_z axis.
    """

    pos: Float[Array, "n_z n_ptcl 3"]
    p: Float[Array, "n_z n_ptcl 3"]
    rho_dm: Float[Array, "n_z n n n"]
    n_e: Float[Array, "n_z n n n"]
    T_keV: Float[Array, "n_z n n n"]
    halos: HaloCatalogue


def simulate_sample(
    theta: ThetaSim, key: PRNGKeyArray, spec: TrainingSetSpec, model: SyntheticGasModel = SyntheticGasModel()
) -> SampleFields:
    """One synthetic simulation: 2LPT + FastPM from z_init, then halos and gas at each output redshift.

    Pure and jit-able (spec static); `key` seeds the initial conditions and
    the per-halo gas scatter.
    """
    config, finder = spec.config, spec.finder
    cosmo = Cosmology.from_theta(theta)
    growth = growth_table(cosmo)
    k_ic, k_gas = jax.random.split(key)
    noise = white_noise(k_ic, config.particle_shape, dtype=jnp.float32)
    a_steps = spec.a_steps
    pos, p = lpt(linear_field(noise, cosmo, config), cosmo, growth, config, float(a_steps[0]), order=2)
    snaps = 1.0 / (1.0 + np.asarray(spec.redshifts))
    run = nbody(pos, p, cosmo, config, a_steps, snaps, growth=growth)
    shape = config.mesh_shape
    cell = config.cell_size
    rho_mean = (cosmo.Omega_m * RHO_CRIT0_MSUN_H2_MPC3).astype(jnp.float32)

    def at_snapshot(args):
        x, mom, a, z, k = args
        wrapped = jnp.mod(x, jnp.float32(spec.box_size))
        halos = find_halos(wrapped, mom, a, cosmo, finder)
        counts = paint_cic(wrapped / cell, jnp.ones(x.shape[0], dtype=x.dtype), shape)
        rho_dm = counts * (math.prod(shape) / x.shape[0]) * rho_mean
        gas = synthetic_gas(wrapped, halos, theta, z, k, config.box_size, shape, model, cosmo=cosmo,
                            core_subsample=spec.gas_core_subsample)
        return wrapped, rho_dm, gas.n_e, gas.T_keV, halos

    zs = jnp.asarray(spec.redshifts, dtype=jnp.float32)
    keys = jax.random.split(k_gas, len(spec.redshifts))
    a_snap = jnp.asarray(snaps)
    wrapped, rho_dm, n_e, T, halos = jax.lax.map(at_snapshot, (run.pos, run.p, a_snap, zs, keys))
    return SampleFields(pos=wrapped, p=run.p, rho_dm=rho_dm, n_e=n_e, T_keV=T, halos=halos)


@eqx.filter_jit
def _simulate_share(theta_arr, seeds, spec, model, mesh):
    name = mesh.axis_names[0]

    def local(th, sd):  # this device's samples, one after another
        def one(args):
            t, s = args
            return simulate_sample(ThetaSim(*(t[i] for i in range(6))), jax.random.key(s), spec, model)

        return jax.lax.map(one, (th, sd))

    spec_p = PartitionSpec(name)
    return jax.shard_map(local, mesh=mesh, in_specs=(spec_p, spec_p), out_specs=spec_p, check_vma=False)(theta_arr, seeds)


def _sample_paths(out: Path, spec: TrainingSetSpec, i: int) -> list[Path]:
    return [out / spec.sample_name(i) / f"z{z:.3f}.h5" for z in spec.redshifts]


def _spec_json(spec: TrainingSetSpec, model: SyntheticGasModel) -> str:
    fields = dataclasses.asdict(spec)
    if fields["gas_core_subsample"] == _ONE_LEVEL_CORE_SUBSAMPLE:  # their stamps did not have it
        del fields["gas_core_subsample"]
    return json.dumps({"spec": fields, "model": {k: float(v) for k, v in vars(model).items()}}, sort_keys=True)


def stored_spec(out_dir: str | os.PathLike) -> tuple[TrainingSetSpec, SyntheticGasModel]:
    """The spec and gas model a training set on disk was generated with (its `spec.json`)."""
    stored = json.loads((Path(out_dir) / "spec.json").read_text())
    fields = {"gas_core_subsample": _ONE_LEVEL_CORE_SUBSAMPLE, **stored["spec"]}
    fields["redshifts"] = tuple(fields["redshifts"])
    return TrainingSetSpec(**fields), SyntheticGasModel(**stored["model"])


def _write_sample(out: Path, spec: TrainingSetSpec, i: int, theta: ThetaSim, fields: SampleFields, meta: dict):
    config = spec.config
    for j, (z, path) in enumerate(zip(spec.redshifts, _sample_paths(out, spec, i))):
        path.parent.mkdir(parents=True, exist_ok=True)
        halo = {f"halo_{n}": np.asarray(getattr(fields.halos, n)[j]) for n in _HALO_FIELDS}
        save_run(  # atomic: a final name only ever holds a whole file
            path, pos=fields.pos[j], p=fields.p[j], theta=theta, z=z, config=config,
            fields={"rho_dm": fields.rho_dm[j], "n_e_cm3": fields.n_e[j], "T_keV": fields.T_keV[j], **halo},
            field_units={"rho_dm": "h^2 Msun Mpc^-3 (comoving)", "n_e_cm3": "cm^-3 (comoving)", "T_keV": "keV",
                         "halo_M200c": "h^-1 Msun", "halo_R200c": "h^-1 Mpc (comoving)"},
            metadata=meta | {"sample": spec.sample_name(i), "ic_seed": spec.ic_seed(i)},
        )


def check_complete(out_dir: str | os.PathLike, label: str = "training set") -> None:
    """Refuse a set that `generate_training_set` has not finished (one with a ``spec.json``, some sample files missing).

    Sets without a ``spec.json`` (e.g. converted CAMELS snapshots) are not checked.

    Raises:
        ValueError: naming the folder, how many samples are missing, and how to finish it.
    """
    out = Path(out_dir)
    if not (out / "spec.json").exists():
        return
    try:
        spec, _ = stored_spec(out)
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(f"{label} {out}: its spec.json cannot be read ({err})") from None
    missing = [spec.sample_name(i) for i in range(spec.n_samples) if not all(p.exists() for p in _sample_paths(out, spec, i))]
    if missing:
        raise ValueError(f"{label} {out} is unfinished: {len(missing)} of its {spec.n_samples} samples "
                         f"({', '.join(missing[:3])}{', …' if len(missing) > 3 else ''}) are missing; rerun "
                         "`jaxcluster data generate` with the same options to finish it")


def _spec_difference(stored: str, stamp: str) -> str:
    """The keys in which two spec.json texts differ (stored → requested), for the refusal message."""
    try:
        old = json.loads(stored)
    except json.JSONDecodeError:
        return "its spec.json is corrupt"
    new = json.loads(stamp)
    diff = []
    for part in ("spec", "model"):
        a, b = old.get(part) if isinstance(old, dict) else None, new[part]
        a = a if isinstance(a, dict) else {}
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                diff.append(f"{part}.{k}: {a.get(k)!r} there, {b.get(k)!r} requested")
    return "; ".join(diff) or "its spec.json is written differently"


def stored_halos(fields: dict) -> HaloCatalogue:
    """The halo catalogue of a training-set file, from its `load_run(...).fields` (the inverse of the writer)."""
    missing = [f"halo_{n}" for n in _HALO_FIELDS if f"halo_{n}" not in fields]
    if missing:
        raise ValueError(f"no stored halo catalogue: fields {missing} are missing")
    return HaloCatalogue(**{n: jnp.asarray(fields[f"halo_{n}"]) for n in _HALO_FIELDS}, n_peaks=jnp.asarray(0))


def generate_training_set(
    out_dir: str | os.PathLike,
    spec: TrainingSetSpec,
    model: SyntheticGasModel = SyntheticGasModel(),
    *,
    progress: bool = True,
    devices: list | None = None,
) -> list[str]:
    """Generate (or resume) a synthetic training set on disk.

    Args:
        out_dir: output directory (created).
        spec: what to generate (`cv_spec`, `lh_spec`).
        model: synthetic gas model.
        progress: show a tqdm progress bar.
        devices: devices to spread samples over (default all).

    Returns:
        Names of the samples written by this call (not those already on disk).

    Raises:
        ValueError: `out_dir` holds a set generated with a different spec or model.
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stamp = _spec_json(spec, model)
    spec_file = out / "spec.json"
    if spec_file.exists():
        stored = spec_file.read_text()
        if stored != stamp:
            raise ValueError(f"{out} holds a training set made with another spec or model "
                             f"({_spec_difference(stored, stamp)}); use a new out_dir")
    else:
        with atomic_path(spec_file) as tmp:  # the first write: kept byte for byte, compared on every resume
            tmp.write_text(stamp)
    theta, seeds = training_set_parameters(spec)
    names = [spec.sample_name(i) for i in range(spec.n_samples)]
    write_camels_params(out / "params.txt", theta, seeds, names)
    for stale in out.glob("*/*.h5.tmp"):  # a killed run's half-written files
        stale.unlink()
    todo = [i for i in range(spec.n_samples) if not all(p.exists() for p in _sample_paths(out, spec, i))]
    mesh = device_mesh("samples", devices)
    n_dev = mesh.devices.size
    sharding = NamedSharding(mesh, PartitionSpec("samples"))
    theta_np = np.asarray(theta.to_array(), dtype=np.float64)
    meta = {"synthetic": True, "generator": "jaxcluster.baryons.training_sets", "spec": json.loads(stamp)}
    written = []
    # The simulation reads neither the kind, the number of samples nor the master seed (the seeds are
    # arguments): compile it for the spec without them, so that a CV and an LH set of the same
    # resolution share one program instead of compiling it twice (spec is static under jit).
    sim_spec = dataclasses.replace(spec, kind="cv", n_samples=1, seed=0)
    bar = tqdm(total=spec.n_samples, initial=spec.n_samples - len(todo), disable=not progress,
               desc=f"synthetic {spec.kind.upper()}", unit="sample")
    for start in range(0, len(todo), n_dev):
        chunk = todo[start:start + n_dev]
        idx = chunk + [chunk[-1]] * (n_dev - len(chunk))  # pad the last share (results dropped)
        th = jax.device_put(jnp.asarray(theta_np[idx]), sharding)
        sd = jax.device_put(jnp.asarray(seeds[idx], dtype=jnp.uint32), sharding)
        fields = jax.device_get(_simulate_share(th, sd, sim_spec, model, mesh))
        for slot, i in enumerate(chunk):
            one = jax.tree.map(lambda leaf: leaf[slot], fields)
            _write_sample(out, spec, i, ThetaSim(*(theta_np[i, j] for j in range(6))), one, meta)
            written.append(names[i])
            bar.update(1)
    bar.close()
    return written
