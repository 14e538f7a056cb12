"""Simulation-based inference (seed 001 §3): (θ, XOD) datasets, the ResNet compressor, neural posteriors.

Stages: `datasets` (θ from the prior → XODs from any simulator, chunked HDF5
that survives a kill), `compressor` (ResNet CNN XOD → summary, with an MSE or
a Gaussian negative-log-likelihood head), `npe` (mixture density network and
normalising-flow posteriors), `diagnostics` (calibration checks).
"""

__all__: list[str] = []

# --- part A: datasets, compressor ---
from .datasets import (
    DESIGNS,
    AnalyticSimulator,
    BoxPrior,
    Dataset,
    SurveySimulator,
    generate_dataset,
    load_dataset,
    sample_parameters,
    simulation_keys,
    unit_design,
)

__all__ += [
    "DESIGNS", "AnalyticSimulator", "BoxPrior", "Dataset", "SurveySimulator", "generate_dataset", "load_dataset",
    "sample_parameters", "simulation_keys", "unit_design",
]

# --- part B: npe, diagnostics (add `from .npe import ...`, `from .diagnostics import ...` and extend __all__ here) ---
