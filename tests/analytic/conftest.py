"""Shared (module-compiled) analytic models: compilation dominates these tests' runtime."""

import numpy as np
import pytest

from jaxcluster.analytic import AnalyticModel, SurveySpec, XODBinning, XrayTables


@pytest.fixture(scope="session")
def tables():
    return XrayTables.default()


@pytest.fixture(scope="session")
def small_model(tables):
    """A coarse but converged-enough XOD (fewer nodes and bins) for gradient/NUTS tests, 10⁴ deg²."""
    return AnalyticModel(
        ("Omega_m", "sigma_8", "log10_M0"),
        tables=tables,
        survey=SurveySpec(area_deg2=1e4, n_mass=24, n_z_per_bin=3, n_gh=3, n_sigma_knots=8),
        binning=XODBinning(np.geomspace(0.02, 3.0, 5), np.geomspace(0.1, 2.0, 4), np.linspace(0.1, 0.5, 3)),
    )
