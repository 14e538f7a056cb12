"""File formats: Gadget/AREPO snapshots, CAMELS parameter tables, and our own run files."""

from .camels import CAMELS_COLUMNS, CamelsTable, read_camels_params, write_camels_params
from .runs import RunData, load_run, save_run
from .snapshots import (
    X_H,
    DarkMatter,
    GasFields,
    SnapshotHeader,
    mean_molecular_weight,
    pm_initial_state,
    read_dark_matter,
    read_header,
    temperature_keV,
    voxelise_gas,
)

__all__ = [
    "X_H", "SnapshotHeader", "DarkMatter", "GasFields", "read_header", "read_dark_matter",
    "mean_molecular_weight", "temperature_keV", "voxelise_gas", "pm_initial_state",
    "RunData", "save_run", "load_run",
    "CAMELS_COLUMNS", "CamelsTable", "read_camels_params", "write_camels_params",
]
