"""Write small snapshots in the Gadget/AREPO HDF5 layout (as CAMELS/IllustrisTNG do), for the tests."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np


def write_snapshot(
    path: Path,
    *,
    box_kpc_h: float,
    redshift: float,
    h: float = 0.6711,
    omega0: float = 0.3,
    gas: dict[str, np.ndarray] | None = None,
    dm: dict[str, np.ndarray] | None = None,
    dm_mass: float = 0.0,
    num_files: int = 1,
    num_total: tuple[int, ...] | None = None,
    skip_header_attrs: tuple[str, ...] = (),
) -> None:
    """One file of a snapshot: Header + PartType0 (gas) + PartType1 (DM), float32 like AREPO."""
    n_gas = 0 if gas is None else len(gas["Coordinates"])
    n_dm = 0 if dm is None else len(dm["Coordinates"])
    this_file = np.array([n_gas, n_dm, 0, 0, 0, 0], dtype=np.int32)
    total = np.asarray(num_total if num_total is not None else this_file, dtype=np.uint32)
    with h5py.File(path, "w") as f:
        hdr = f.create_group("Header")
        attrs = {
            "BoxSize": np.float64(box_kpc_h),
            "Redshift": np.float64(redshift),
            "Time": np.float64(1.0 / (1.0 + redshift)),
            "HubbleParam": np.float64(h),
            "Omega0": np.float64(omega0),
            "OmegaLambda": np.float64(1.0 - omega0),
            "OmegaBaryon": np.float64(0.049),
            "MassTable": np.array([0.0, dm_mass, 0.0, 0.0, 0.0, 0.0]),
            "NumPart_ThisFile": this_file,
            "NumPart_Total": total,
            "NumPart_Total_HighWord": np.zeros(6, dtype=np.uint32),
            "NumFilesPerSnapshot": np.int32(num_files),
            "Flag_DoublePrecision": np.int32(0),
        }
        for k, v in attrs.items():
            if k not in skip_header_attrs:
                hdr.attrs[k] = v
        if gas is not None:
            g = f.create_group("PartType0")
            for k, v in gas.items():
                g.create_dataset(k, data=v)
        if dm is not None:
            g = f.create_group("PartType1")
            for k, v in dm.items():
                g.create_dataset(k, data=v)
