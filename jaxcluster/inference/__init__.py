"""Simulation-based inference (seed 001 §3): (θ, XOD) datasets, the ResNet compressor, neural posteriors.

Stages: `datasets` (θ from the prior → XODs from any simulator, chunked HDF5
that survives a kill), `compressor` (ResNet CNN XOD → summary, with an MSE or
a Gaussian negative-log-likelihood head), `npe` (mixture density network and
normalising-flow posteriors), `diagnostics` (calibration checks). Around
them: `npe_run` (a dataset → compressor → posterior → calibration in one
resumable folder, what ``jaxcluster npe`` runs), `observed` (an XOD read
from any file the package writes, with its bins checked) and
`posterior_files` (samples, summary table and corner plot of a posterior).
"""

__all__: list[str] = []

# datasets and the compressor
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

from .compressor import (
    HEADS,
    Compressor,
    Normaliser,
    ResNetBlock,
    ResNetCompressor,
    TrainResult,
    compressor_loss,
    load_compressor,
    save_compressor,
    train_compressor,
)

__all__ += [
    "DESIGNS", "AnalyticSimulator", "BoxPrior", "Dataset", "SurveySimulator", "generate_dataset", "load_dataset",
    "sample_parameters", "simulation_keys", "unit_design",
    "HEADS", "Compressor", "Normaliser", "ResNetBlock", "ResNetCompressor", "TrainResult", "compressor_loss",
    "load_compressor", "save_compressor", "train_compressor",
]

# posteriors and their diagnostics
from .diagnostics import (
    corner_plot,
    credible_intervals,
    expected_coverage,
    figure_of_merit,
    hpd_credibility,
    marginal_coverage,
    plot_coverage,
    plot_rank_histograms,
    rank_histogram,
    sbc_ranks,
    table3_summary,
    tarp,
)
from .npe import (
    MixtureDensityNetwork,
    NeuralPosterior,
    ParameterSpace,
    SplineFlow,
    TrainConfig,
    build_posterior,
    load_posterior,
    save_posterior,
    train_posterior,
)

__all__ += [
    "corner_plot", "credible_intervals", "expected_coverage", "figure_of_merit", "hpd_credibility",
    "marginal_coverage", "plot_coverage", "plot_rank_histograms", "rank_histogram", "sbc_ranks", "table3_summary",
    "tarp",
    "MixtureDensityNetwork", "NeuralPosterior", "ParameterSpace", "SplineFlow", "TrainConfig", "build_posterior",
    "load_posterior", "save_posterior", "train_posterior",
]

# from a dataset to a posterior of an observed XOD
from .npe_run import NPESettings, TrainedNPE, calibration, load_npe, train_npe, write_calibration
from .observed import ObservedXOD, check_binning, read_xod
from .posterior_files import posterior_table, read_posterior, write_posterior

__all__ += [
    "NPESettings", "TrainedNPE", "calibration", "load_npe", "train_npe", "write_calibration",
    "ObservedXOD", "check_binning", "read_xod", "posterior_table", "read_posterior", "write_posterior",
]
