"""Analytic baseline (seed 001 §4.1, §5.1): Tinker08 HMF → XXL scaling relations → expected XOD → Fisher, NUTS."""

from .counts import (
    DEG2_TO_SR,
    SELECTIONS,
    SurveySpec,
    XODBinning,
    comoving_volume_element,
    expected_xod,
    halo_counts,
    poisson_log_likelihood,
    poisson_mock,
)
from .fisher import (
    ANALYTIC_PARAM_NAMES,
    COSMO_NAMES,
    AnalyticModel,
    figure_of_merit,
    fisher_covariance,
    fisher_matrix,
    marginal_errors,
    plot_fisher_corner,
)
from .hmc import (
    NUISANCE_PRIOR_SIGMA,
    ShearMap,
    fit_shear_map,
    from_unconstrained,
    log_posterior,
    log_prior,
    nuts_diagnostics,
    run_nuts,
    to_unconstrained,
    unconstrained_covariance,
)
from .hmf import (
    TINKER08_DELTA,
    TINKER08_TABLE,
    delta_mean,
    lagrangian_radius,
    mass_function,
    mass_function_from_sigma,
    mean_matter_density,
    sigma_and_slope,
    sigma_and_slope_interpolated,
    sigma_M,
    tinker08_f,
    tinker08_parameters,
)
from .scaling import (
    NUISANCE_NAMES,
    SCALING_NAMES,
    ScalingRelations,
    XrayTables,
    count_rates,
    log_count_rate_per_luminosity,
)

__all__ = [
    "DEG2_TO_SR", "SELECTIONS", "SurveySpec", "XODBinning", "comoving_volume_element", "expected_xod", "halo_counts",
    "poisson_log_likelihood", "poisson_mock",
    "ANALYTIC_PARAM_NAMES", "COSMO_NAMES", "AnalyticModel", "figure_of_merit", "fisher_covariance",
    "fisher_matrix", "marginal_errors", "plot_fisher_corner",
    "NUISANCE_PRIOR_SIGMA", "from_unconstrained", "log_posterior", "log_prior", "nuts_diagnostics", "run_nuts",
    "to_unconstrained", "unconstrained_covariance", "ShearMap", "fit_shear_map",
    "TINKER08_DELTA", "TINKER08_TABLE", "delta_mean", "lagrangian_radius", "mass_function",
    "mass_function_from_sigma", "mean_matter_density", "sigma_and_slope", "sigma_and_slope_interpolated",
    "sigma_M", "tinker08_f", "tinker08_parameters",
    "NUISANCE_NAMES", "SCALING_NAMES", "ScalingRelations", "XrayTables", "count_rates",
    "log_count_rate_per_luminosity",
]
