"""Baryons: the eLDL painter (LDL layers, hypernetworks, losses, training) and the synthetic
hydrodynamics model that stands in for CAMELS (published ICM profiles, training sets)."""

from .camels_sets import convert_camels
from .cluster_observables import arnaud05_temperature, cluster_observables, vikhlinin09_luminosity, vikhlinin09_temperature
from .eldl import (
    CAMELS_REDSHIFTS,
    PARAM_SCALES,
    ExtendedLDL,
    Hypernetwork,
    ldl_param_scales,
    ldl_params,
    n_ldl_params,
    shift_ldl_params,
)
from .icm import MU, MU_E, battaglia12_pressure, battaglia16_density, gnfw_temperature_keV
from .ldl import (
    DEFAULT_K_MAX,
    DENSITY_FLOOR,
    LDL,
    AbstractRadialFilter,
    ActivationLayer,
    BSplineFilter,
    DisplacementLayer,
    ParametricFilter,
    bspline_basis,
    clamped_knots,
    paint_one_plus_delta,
)
from .loss import T_loss, n_e_loss, slab_mask, smooth
from .train import TrainingConfig, evaluate_eldl, load_training_boxes, train_eldl
from .weights import default_eldl, load_eldl, save_eldl
from .validation import PowerLawDeviations, cluster_count_rates, cluster_deviations, power_law_deviations, voxel_deviations
from .synthetic import HaloDeviates, SyntheticGas, SyntheticGasModel, halo_deviates, halo_gas_profile, synthetic_gas

__all__ = [
    "LDL", "DisplacementLayer", "ActivationLayer", "AbstractRadialFilter", "BSplineFilter", "ParametricFilter",
    "bspline_basis", "clamped_knots", "paint_one_plus_delta", "DENSITY_FLOOR", "DEFAULT_K_MAX",
    "ExtendedLDL", "Hypernetwork", "CAMELS_REDSHIFTS", "PARAM_SCALES", "ldl_params", "ldl_param_scales", "n_ldl_params",
    "shift_ldl_params",
    "PowerLawDeviations", "power_law_deviations", "voxel_deviations", "cluster_count_rates", "cluster_deviations",
    "n_e_loss", "T_loss", "slab_mask", "smooth",
    "convert_camels", "TrainingConfig", "train_eldl", "evaluate_eldl", "load_training_boxes", "save_eldl", "load_eldl", "default_eldl",
    "SyntheticGasModel", "SyntheticGas", "HaloDeviates", "synthetic_gas", "halo_deviates", "halo_gas_profile",
    "MU", "MU_E", "battaglia16_density", "battaglia12_pressure", "gnfw_temperature_keV",
    "cluster_observables", "vikhlinin09_luminosity", "vikhlinin09_temperature", "arnaud05_temperature",
]
