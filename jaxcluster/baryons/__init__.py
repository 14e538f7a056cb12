"""Baryons: the synthetic hydrodynamics model (training data) and published ICM profiles."""

from .cluster_observables import arnaud05_temperature, cluster_observables, vikhlinin09_luminosity, vikhlinin09_temperature
from .icm import MU, MU_E, battaglia12_pressure, battaglia16_density, gnfw_temperature_keV
from .synthetic import HaloDeviates, SyntheticGas, SyntheticGasModel, halo_deviates, halo_gas_profile, synthetic_gas

__all__ = [
    "SyntheticGasModel", "SyntheticGas", "HaloDeviates", "synthetic_gas", "halo_deviates", "halo_gas_profile",
    "MU", "MU_E", "battaglia16_density", "battaglia12_pressure", "gnfw_temperature_keV",
    "cluster_observables", "vikhlinin09_luminosity", "vikhlinin09_temperature", "arnaud05_temperature",
]
