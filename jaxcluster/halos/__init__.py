"""Halos: a spherical-overdensity finder on particles and the NFW profile."""

from .nfw import concentration_duffy08, nfw_enclosed_fraction, nfw_mu, nfw_radius_ratio, sample_nfw_positions
from .so import HaloCatalogue, SOFinder, critical_density_comoving, find_halos, particle_mass

__all__ = [
    "SOFinder", "HaloCatalogue", "find_halos", "particle_mass", "critical_density_comoving",
    "nfw_mu", "nfw_enclosed_fraction", "nfw_radius_ratio", "concentration_duffy08", "sample_nfw_positions",
]
