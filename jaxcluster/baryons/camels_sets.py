r"""Training sets from real CAMELS / IllustrisTNG snapshots, in the layout the eLDL trainer reads.

For each simulation directory (e.g. ``IllustrisTNG/LH_0`` holding
``snap_000.hdf5`` … ``snap_033.hdf5``), as seed 001 §2.1 does:

* the gas of the snapshots at the requested redshifts is voxelised into
  comoving n_e [cm⁻³] and mass-weighted T [keV] (`jaxcluster.io.voxelise_gas`);
* the dark matter is **re-simulated with our PM** from the highest-redshift
  snapshot (CAMELS: z = 6), restarted from its particles
  (`jaxcluster.io.pm_initial_state`), so the eLDL learns to paint PM dark
  matter, which is what it will see in the survey pipeline;
* everything is written with `save_run` as ``<out>/<name>/z<z:.3f>.h5``
  (fields ``n_e_cm3``, ``T_keV``, ``rho_dm``), with θ_sim from the CAMELS
  parameter table and ``params.txt`` in the CAMELS layout — the layout
  `jaxcluster.baryons.train` reads, exactly like the synthetic sets.

Snapshots are matched to redshifts by their headers (within 0.005), so no
snapshot numbering is assumed. Conversion resumes like the synthetic
generator: finished simulations are skipped, files are renamed into place.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from ..cosmology import RHO_CRIT0_MSUN_H2_MPC3, Cosmology, growth_table
from ..io.camels import CamelsTable, write_camels_params
from ..io.runs import save_run
from ..io.snapshots import pm_initial_state, read_header, voxelise_gas
from ..nbody import PMConfig, nbody, paint_cic, step_grid
from ..params import PARAM_NAMES, ThetaSim
from .training_sets import TABLE1_REDSHIFTS

__all__ = ["convert_camels"]


def _snapshots_by_redshift(sim_dir: Path) -> dict[float, Path]:
    out = {}
    for path in sorted(sim_dir.glob("snap_*.hdf5")):
        if path.stem.count(".") or path.name.endswith(".tmp"):
            continue
        out[read_header(path).redshift] = path
    return out


def convert_camels(
    sim_dirs: Sequence[str | os.PathLike],
    table: CamelsTable,
    out_dir: str | os.PathLike,
    *,
    redshifts: Sequence[float] = TABLE1_REDSHIFTS,
    n_steps: int = 20,
    mesh_shape: int | None = None,
    progress: bool = True,
) -> list[str]:
    """Convert CAMELS simulations into an eLDL training set (resumable).

    Args:
        sim_dirs: one directory per simulation, named as in the table (e.g. ``LH_0``);
            when the table has no names, row i belongs to ``sim_dirs[i]``.
        table: the CAMELS parameter table (`jaxcluster.io.read_camels_params`).
        out_dir: output directory.
        redshifts: the snapshot redshifts to keep (default seed 001 Table 1).
        n_steps: PM steps from the initial snapshot to the lowest redshift.
        mesh_shape: voxels per side of the fields (default: box / 0.39 h⁻¹ Mpc, rounded).
        progress: tqdm bar over simulations.

    Returns:
        Names of the simulations converted by this call.

    Raises:
        ValueError: a simulation missing from the table, a requested redshift
            with no snapshot, or fewer than two snapshots.
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dirs = [Path(d) for d in sim_dirs]
    theta_rows = np.asarray(table.theta.to_array())
    names = table.names or tuple(d.name for d in dirs)
    rows = []
    for i, d in enumerate(dirs):
        if table.names is None:
            if i >= len(theta_rows):
                raise ValueError(f"the parameter table has {len(theta_rows)} rows, fewer than the {len(dirs)} simulations")
            rows.append(i)
        elif d.name in table.names:
            rows.append(table.names.index(d.name))
        else:
            raise ValueError(f"simulation {d.name} is not in the parameter table")
    write_camels_params(out / "params.txt", ThetaSim(*(theta_rows[rows, j] for j in range(len(PARAM_NAMES)))),
                        np.asarray(table.seeds)[rows], [names[r] if table.names else dirs[k].name for k, r in enumerate(rows)])
    written = []
    for d, r in tqdm(list(zip(dirs, rows)), desc="CAMELS → training set", disable=not progress):
        name = d.name
        targets = [out / name / f"z{z:.3f}.h5" for z in redshifts]
        if all(t.exists() for t in targets):
            continue
        snaps = _snapshots_by_redshift(d)
        if len(snaps) < 2:
            raise ValueError(f"{d} holds fewer than two snapshots")
        chosen = []
        for z in redshifts:
            z_snap = min(snaps, key=lambda s: abs(s - z))
            if abs(z_snap - z) > 0.005:
                raise ValueError(f"{d} has no snapshot at z = {z} (nearest {z_snap:.4f})")
            chosen.append(snaps[z_snap])
        ic = snaps[max(snaps)]
        header = read_header(ic)
        theta = ThetaSim(*(theta_rows[r, j] for j in range(len(PARAM_NAMES))))
        _convert_one(out / name, ic, header, chosen, redshifts, theta, n_steps, mesh_shape, {"camels_sim": str(d)})
        written.append(name)
    return written


def _convert_one(dest, ic, header, snaps, redshifts, theta, n_steps, mesh_shape, meta):
    from ..io.snapshots import read_dark_matter

    box = header.box_size_Mpc_h()
    n_ptcl = len(read_dark_matter(ic).ids)
    n_side = round(n_ptcl ** (1.0 / 3.0))
    if n_side**3 != n_ptcl:
        raise ValueError(f"{ic}: {n_ptcl} dark-matter particles are not a cubic lattice")
    config = PMConfig(box, n_side)
    n_vox = mesh_shape or max(2, round(box / 0.39))
    cosmo = Cosmology.from_theta(theta)
    pos, p = pm_initial_state(ic, config, dtype=jnp.float32)
    a_snap = np.asarray([1.0 / (1.0 + z) for z in redshifts])
    run = nbody(pos, p, cosmo, config, step_grid(header.scale_factor, float(a_snap.max()), n_steps, a_snap),
                a_snap, growth=growth_table(cosmo))
    dest.mkdir(parents=True, exist_ok=True)
    shape = (n_vox,) * 3
    rho_mean = float(cosmo.Omega_m) * RHO_CRIT0_MSUN_H2_MPC3
    for j, (z, snap) in enumerate(zip(redshifts, snaps)):
        gas = voxelise_gas(snap, mesh_shape=n_vox)
        x = jnp.mod(run.pos[j], box)
        counts = paint_cic(x / (box / n_vox), jnp.ones(x.shape[0], dtype=x.dtype), shape)
        rho_dm = counts * (math.prod(shape) / x.shape[0]) * rho_mean
        path = dest / f"z{z:.3f}.h5"
        save_run(path, pos=x, p=run.p[j], theta=theta, z=z, config=config,
                 fields={"n_e_cm3": gas.n_e_cm3, "T_keV": gas.T_keV, "rho_dm": rho_dm},
                 field_units={"n_e_cm3": "cm^-3 (comoving)", "T_keV": "keV", "rho_dm": "h^2 Msun Mpc^-3 (comoving)"},
                 metadata=meta | {"synthetic": False, "gas_snapshot": str(snap), "pm_restart": str(ic)})  # atomic
