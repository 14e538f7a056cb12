"""Published ICM profiles: the T = P/n chain against astropy units, and physical sanity."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from astropy import constants as const
from astropy import units as u

from jaxcluster.baryons import MU, MU_E, battaglia12_pressure, battaglia16_density, gnfw_temperature_keV


def test_mean_molecular_weights():
    X = 0.76
    # Fully ionised H + He: n = ρ/m_p (2X + 3Y/4), n_e = ρ/m_p (X + Y/2).
    assert MU == pytest.approx(1.0 / (2 * X + 0.75 * (1 - X)))
    assert MU_E == pytest.approx(1.0 / (X + 0.5 * (1 - X)))


@pytest.mark.parametrize("M, z", [(3e13, 0.1), (1e14, 0.3), (8e14, 0.5)])
def test_temperature_is_pressure_over_density(M, z):
    """k T from the fits equals P_200 P̃ / (n) computed with astropy, for one radius."""
    H0 = 67.11 * u.km / u.s / u.Mpc
    Om, Ob = 0.3, 0.049
    Ez2 = Om * (1 + z) ** 3 + 1 - Om
    rho_c = (3 * H0**2 * Ez2 / (8 * math.pi * const.G)).to(u.g / u.cm**3)
    R200 = ((3 * M * u.Msun / (4 * math.pi * 200 * rho_c)) ** (1 / 3)).to(u.Mpc)
    f_b = Ob / Om
    P200 = const.G * M * u.Msun * 200 * rho_c * f_b / (2 * R200)
    x = 0.4
    P = P200 * float(battaglia12_pressure(jnp.asarray(x), M, z))
    rho_gas = f_b * rho_c * float(battaglia16_density(jnp.asarray(x), M, z))
    kT = (P * MU * const.m_p / rho_gas).to(u.keV)
    ours = float(gnfw_temperature_keV(jnp.asarray(x), M, R200.value, z))
    assert ours == pytest.approx(kT.value, rel=1e-6)


def test_profiles_decrease_outward_and_temperature_is_virial():
    x = jnp.geomspace(0.05, 2.0, 50)
    M, z = 2e14, 0.2
    assert np.all(np.diff(np.asarray(battaglia16_density(x, M, z))) < 0)
    assert np.all(np.diff(np.asarray(battaglia12_pressure(x, M, z))) < 0)
    # T(0.5 R200) within a factor 2 of the virial temperature G M μ m_p / (2 R200).
    R200 = 1.0  # Mpc physical, roughly right for 2e14 M☉ at z = 0.2
    T_vir = (const.G * M * u.Msun * MU * const.m_p / (2 * R200 * u.Mpc)).to(u.keV).value
    T_half = float(gnfw_temperature_keV(jnp.asarray(0.5), M, R200, z))
    assert 0.5 < T_half / T_vir < 2.0
