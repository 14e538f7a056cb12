"""Files: Gadget/AREPO snapshots, CAMELS parameter tables, our run files, chunked campaign outputs, and the
atomic writes and provenance records every product uses.

The chunked-output layer (`chunks`, `claims`, `campaign`) is general storage:
the (θ, XOD) sets of `jaxcluster.inference` and the cutout sets of
`jaxcluster.fields` both write through it.
"""

from .atomic import atomic_path, read_tree, write_json, write_tree
from .campaign import (
    Campaign,
    CampaignStatus,
    WorkerReport,
    campaign_status,
    merge_campaign,
    run_chunk,
    run_worker,
    write_chunked,
)
from .chunks import ChunkStore, CorruptChunks, array_digest, merge_chunks, parts_dir, pytree_digest
from .camels import CAMELS_COLUMNS, CamelsTable, read_camels_params, write_camels_params
from .provenance import clean_json, fits_cards, provenance
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
    "Campaign", "CampaignStatus", "WorkerReport", "campaign_status", "merge_campaign", "run_chunk", "run_worker",
    "write_chunked", "atomic_path", "write_json", "write_tree", "read_tree", "provenance", "fits_cards", "clean_json",
    "ChunkStore", "CorruptChunks", "array_digest", "merge_chunks", "parts_dir", "pytree_digest",
]
