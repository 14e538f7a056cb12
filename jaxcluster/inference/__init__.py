"""Simulation-based inference (seed 001 §3): (θ, XOD) datasets, the ResNet compressor, neural posteriors.

Stages: `datasets` (θ from the prior → XODs from any simulator, chunked HDF5
that survives a kill), `compressor` (ResNet CNN XOD → summary, with an MSE or
a Gaussian negative-log-likelihood head), `npe` (mixture density network and
normalising-flow posteriors), `diagnostics` (calibration checks).
"""

__all__: list[str] = []

# --- part A: datasets, compressor (imports added as the modules land) ---

# --- part B: npe, diagnostics (add `from .npe import ...`, `from .diagnostics import ...` and extend __all__ here) ---
