"""jaxcluster: differentiable forward modelling of X-ray galaxy-cluster surveys.

The pipeline, one subpackage per stage (see the docs' Pipeline pages):

* `jaxcluster.params`: θ_sim = (Ω_m, σ_8, A_SN1, A_SN2, A_AGN1, A_AGN2), priors, fiducials.
* `jaxcluster.cosmology`: distances, growth, linear P(k) (functional, differentiable).
* `jaxcluster.nbody`: initial conditions, 2LPT, CIC mesh ops, FastPM particle mesh (diffrax),
  power spectra, sharding over devices.
* `jaxcluster.xray`: XMM-Newton response, pyatomdb emissivity tables, count rates.
* `jaxcluster.analytic`: Tinker08 mass function, XXL scaling relations, expected XOD,
  Poisson likelihood, Fisher matrix, NUTS (the scaling-relation baseline).
* `jaxcluster.halos`: spherical-overdensity halo finder (M200c, M500c, R500c, velocities), NFW.
* `jaxcluster.baryons`: the eLDL baryon painter (LDL layers, θ_sim hypernetworks, losses,
  staged training, shipped weights) and the synthetic hydrodynamics model that stands in
  for CAMELS (published ICM profiles, feedback, scatter, training-set generators).
* `jaxcluster.io`: Gadget/AREPO snapshots (n_e, T voxelisation, PM restarts), CAMELS tables, run files,
  and chunked campaign outputs (chunk files with checksums, claims, merge) shared by many workers.
* `jaxcluster.engines`: campaigns on existing engines: SLURM job arrays and Dask (dask-jobqueue).
* `jaxcluster.survey`: lightcones, mock X-ray / Compton-y / mass maps, detection (sep and a JAX
  detector), the hard and soft XOD; `simulate_xod`, `simulate_survey`.
* `jaxcluster.inference`: (θ, XOD) datasets that survive a kill, the ResNet compressor, neural
  posteriors (mixture density network, spline flow) and calibration diagnostics (SBC, coverage, TARP).
* `jaxcluster.sensitivity`: ∂/∂θ_sim of the survey observables with Monte-Carlo errors, the
  simulation-based Fisher matrix, CR–M scaling relations as functions of θ_sim.
* `jaxcluster.fields`: cluster cutouts (Compton-y, X-ray, gas and dark-matter mass), GNFW / NFW
  profiles, the DeepSets pressure model, the multi-view U-Net and score-based diffusion mass maps.
"""

from . import analytic, baryons, cosmology, engines, fields, halos, io, nbody, observation, params, sensitivity, survey, xray
from .baryons import ExtendedLDL, SyntheticGasModel, default_eldl, synthetic_gas
from .cosmology import (
    Cosmology,
    GrowthTable,
    angular_diameter_distance,
    comoving_distance,
    growth_table,
    linear_power,
    luminosity_distance,
    sigma_R,
)
from .nbody import NBodyResult, PMConfig, linear_field, lpt, nbody as run_nbody, step_grid, white_noise
from .halos import HaloCatalogue, SOFinder, find_halos
from .params import FIDUCIAL, PARAM_NAMES, PRIOR_BOUNDS, ThetaSim
from .survey import SurveyConfig, simulate_survey, simulate_xod

__version__ = "0.1.0"


def __getattr__(name):
    # `inference` is imported on first use: it brings distrax and tfp-nightly (seconds of
    # import time and a DeprecationWarning) that the forward model does not need.
    if name == "inference":
        import importlib

        return importlib.import_module(".inference", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "analytic", "baryons", "cosmology", "engines", "fields", "halos", "inference", "io", "nbody", "params",
    "sensitivity", "survey", "xray",
    "ThetaSim", "PARAM_NAMES", "PRIOR_BOUNDS", "FIDUCIAL",
    "Cosmology", "GrowthTable", "growth_table", "linear_power", "sigma_R",
    "comoving_distance", "angular_diameter_distance", "luminosity_distance",
    "PMConfig", "white_noise", "linear_field", "lpt", "run_nbody", "step_grid", "NBodyResult",
    "SOFinder", "HaloCatalogue", "find_halos", "SyntheticGasModel", "synthetic_gas",
    "ExtendedLDL", "default_eldl",
    "SurveyConfig", "simulate_survey", "simulate_xod",
]
