"""Sensitivity studies (seed 001 §5.1, §5.3, Fig. 13, App. B): gradients of survey observables, a simulation-based Fisher matrix, CR–M relations as functions of θ_sim.

* `montecarlo`: means over realisations and their standard errors.
* `gradients`: ∂/∂θ_sim of the mean soft XOD, dN/dz, CR and HR distributions; finite differences with common random numbers.
* `fisher`: F = Jᵀ diag(1/λ) J from the mean soft XOD, with its Monte-Carlo noise term.
* `clusters`: clusters of emulated boxes detected on projected ρ_m/ρ_c (threshold 200).
* `scaling_fit`: maximum-likelihood CR–M fit with intrinsic scatter, Hessian and bootstrap errors.
* `scaling_study`: the CR–M relation over a θ grid and its autodiff gradients.
"""

from .clusters import SEED001_CELL, BoxClusters, ScalingBoxConfig, box_clusters
from .fisher import poisson_fisher, simulation_fisher
from .gradients import (
    METHODS,
    OBSERVABLES,
    CatalogueTangents,
    SurveySensitivity,
    catalogue_tangents,
    default_steps,
    finite_difference_jacobians,
    mc_jacobians,
    project,
    reference_segmentations,
    richardson,
    soft_xod_fixed,
    xod_sensitivity,
)
from .montecarlo import MCEstimate, mc_estimate, paired_sigma
from .scaling_fit import ScalingFit, bootstrap_fit, fit_scaling_relation

__all__ = [
    "MCEstimate", "mc_estimate", "paired_sigma",
    "OBSERVABLES", "METHODS", "project", "SurveySensitivity", "default_steps", "mc_jacobians",
    "CatalogueTangents", "catalogue_tangents", "reference_segmentations", "soft_xod_fixed", "xod_sensitivity", "finite_difference_jacobians", "richardson",
    "poisson_fisher", "simulation_fisher",
    "SEED001_CELL", "ScalingBoxConfig", "BoxClusters", "box_clusters",
    "ScalingFit", "fit_scaling_relation", "bootstrap_fit",
]
