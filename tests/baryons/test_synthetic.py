"""The synthetic gas model on the mesh: units, painting, feedback directions, scatter, jit/vmap/grad."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from astropy import constants as const
from astropy import units as u

from jaxcluster.baryons import SyntheticGasModel, halo_deviates, halo_gas_profile, synthetic_gas
from jaxcluster.baryons.synthetic import _depletion, _environment_score
from jaxcluster.cosmology import Cosmology
from jaxcluster.halos import HaloCatalogue, SOFinder, find_halos
from jaxcluster.params import ThetaSim

from ..halos._mock import nfw_box

COSMO = Cosmology(Omega_m=0.3, sigma_8=0.8)
BOX, N = 25.0, 64
FID = ThetaSim.fiducial()


@pytest.fixture(scope="module")
def box():
    halos = [(1e14, (12.0, 12.0, 12.0), (0.0, 0.0, 0.0)), (2e13, (4.0, 20.0, 5.0), (0.0, 0.0, 0.0))]
    pos, _, mass, truth = nfw_box(jax.random.key(3), BOX, N, halos, COSMO)
    cat = find_halos(pos, None, 1.0, COSMO, SOFinder(BOX, N, max_halos=8), mass=mass)
    return pos, cat, truth


def _empty(n=4):
    z = jnp.zeros(n, dtype=jnp.float32)
    return HaloCatalogue(pos=jnp.zeros((n, 3), jnp.float32), vel=jnp.zeros((n, 3), jnp.float32), M200c=z, R200c=z,
                         M500c=z, R500c=z, M200m=z, R200m=z, n200c=jnp.zeros(n, jnp.int32), offset=z, infall=z,
                         valid=jnp.zeros(n, bool), n_peaks=jnp.asarray(0, jnp.int32))


def test_mean_electron_density_of_diffuse_gas(getkey):
    """Without halos the mean comoving n_e is Ω_b ρ_c0 / (μ_e m_p), computed here with astropy."""
    pos = jax.random.uniform(getkey(), (N**3, 3), dtype=jnp.float32) * BOX
    gas = eqx.filter_jit(synthetic_gas)(pos, _empty(), FID, 0.2, getkey(), (BOX,) * 3, (N,) * 3, cosmo=COSMO)
    H0 = 67.11 * u.km / u.s / u.Mpc
    rho_c0 = 3 * H0**2 / (8 * math.pi * const.G)
    n_e = (0.049 * rho_c0 * (1 + 0.76) / 2 / const.m_p).to(u.cm**-3).value
    assert float(jnp.mean(gas.n_e)) == pytest.approx(n_e, rel=2e-3)
    assert float(jnp.max(gas.halo_weight)) == 0.0
    # Photo-ionised gas near mean density: 10³–10⁵ K.
    T_K = np.asarray(gas.T_keV) / 8.617333262e-8
    assert 1e3 < np.median(T_K) < 1e5


def test_painted_halo_conserves_the_profile_mass(box):
    pos, cat, truth = box
    model = SyntheticGasModel(sigma_core_env=0.0, sigma_core_random=0.0, sigma_fgas=0.0, sigma_T=0.0)
    gas = eqx.filter_jit(synthetic_gas)(pos, cat, FID, 0.0, jax.random.key(0), (BOX,) * 3, (N,) * 3, model, cosmo=COSMO,
                                        subsample=3)
    i = int(np.argmax(np.asarray(cat.M200c)))
    centre, R = np.asarray(cat.pos[i]), float(cat.R200c[i])
    cell = BOX / N
    grid = np.stack(np.meshgrid(*[np.arange(N) * cell] * 3, indexing="ij"), -1)
    d = grid - centre
    d -= BOX * np.round(d / BOX)
    inside = np.linalg.norm(d, axis=-1) < R
    mesh_sum = float(np.sum(np.asarray(gas.n_e)[inside])) * cell**3
    # The same sphere from the continuous profile: ∫ n_e 4π r² dr.
    r = np.linspace(1e-4, R, 4000)
    n_e, _ = halo_gas_profile(model, jnp.asarray(r / R), cat.M200c[i], R, COSMO, FID, 0.0)
    exact = float(np.trapezoid(np.asarray(n_e) * 4 * math.pi * r**2, r))
    assert mesh_sum == pytest.approx(exact, rel=0.05)  # voxel-edge effects at R ≈ 2 cells
    assert np.all(np.asarray(gas.n_e) > 0) and np.all(np.asarray(gas.T_keV) > 0)
    assert 0.0 <= float(gas.halo_weight.min()) and float(gas.halo_weight.max()) <= 1.0
    # The cluster is hot: its hottest voxel holds keV gas; the diffuse gas stays below 0.1 keV far away.
    assert 1.0 < float(gas.T_keV.max()) < 6.0


@pytest.mark.parametrize("shift", [0.0, 0.45])
def test_core_cells_are_sampled_finely(box, shift):
    """The emission measure Σ n_e² of a cuspy halo: two-level sampling equals 8³ points everywhere.

    With 2³ points per cell throughout (the single level of earlier sets) the
    central cell's average depends on where the centre falls between the
    sample points: here it is 68 % too high with the centre on a node.
    """
    pos, cat, _ = box
    model = SyntheticGasModel(sigma_core_env=0.0, sigma_core_random=0.0, sigma_fgas=0.0, sigma_T=0.0, beta_trace=0.0)
    d = jnp.asarray([shift, 0.37 * shift, 0.0], jnp.float32) * (BOX / N)  # a sub-cell shift of everything
    cat = eqx.tree_at(lambda c: c.pos, cat, cat.pos + d[None, :])
    paint = eqx.filter_jit(synthetic_gas)

    def emission(subsample, core_subsample):
        gas = paint(pos + d[None, :], cat, FID, 0.0, jax.random.key(0), (BOX,) * 3, (N,) * 3, model, cosmo=COSMO,
                    subsample=subsample, core_subsample=core_subsample)
        return float(jnp.sum(gas.n_e**2))

    fine = emission(8, 8)
    assert emission(2, 8) == pytest.approx(fine, rel=0.01)
    assert abs(emission(2, 2) / fine - 1) > 0.1


def test_feedback_directions_and_strengths():
    model = SyntheticGasModel()
    M = jnp.asarray(10**13.5)
    lnA = lambda **kw: {k: jnp.log(jnp.asarray(kw.get(k, 1.0))) for k in ("A_SN1", "A_SN2", "A_AGN1", "A_AGN2")}
    assert float(_depletion(model, M, lnA())) == pytest.approx(1.0)
    sn1 = float(_depletion(model, M, lnA(A_SN1=4.0)))
    agn1 = float(_depletion(model, M, lnA(A_AGN1=4.0)))
    sn2 = float(_depletion(model, M, lnA(A_SN2=2.0)))
    agn2 = float(_depletion(model, M, lnA(A_AGN2=2.0)))
    assert sn1 < agn1 < 1.0 and agn2 < 1.0  # more energy removes more gas; SN more than AGN
    assert sn2 > 1.0  # faster winds load less mass
    assert abs(math.log(sn1)) > 2 * abs(math.log(agn1))
    assert abs(math.log(sn2)) > 2 * abs(math.log(agn2))
    # Massive clusters feel it less than groups.
    big = float(_depletion(model, jnp.asarray(1e15), lnA(A_SN1=4.0)))
    assert sn1 < big < 1.0


def test_scatter_mixes_environment_and_noise(getkey):
    n = 4000
    k1, k2, k3 = jax.random.split(getkey(), 3)
    cat = _empty(n)
    cat = HaloCatalogue(**{**{f: getattr(cat, f) for f in cat.__dataclass_fields__}, "valid": jnp.ones(n, bool),
                           "M200c": jnp.full(n, 1e14, jnp.float32),
                           "offset": jnp.exp(jnp.log(0.06) + 0.5 * jax.random.normal(k1, (n,))).astype(jnp.float32),
                           "infall": (0.7 + 0.3 * jax.random.normal(k2, (n,))).astype(jnp.float32)})
    model = SyntheticGasModel()
    dev = halo_deviates(model, cat, k3)
    score = np.asarray(_environment_score(cat, jnp.float32))
    core = np.asarray(dev.core)
    total = math.hypot(model.sigma_core_env * score.std(), model.sigma_core_random)
    assert core.std() == pytest.approx(total, rel=0.05)
    assert np.corrcoef(core, score)[0, 1] == pytest.approx(model.sigma_core_env * score.std() / total, abs=0.04)
    assert np.asarray(dev.T).std() == pytest.approx(model.sigma_T, rel=0.05)


def test_jit_vmap_and_grad_in_theta(box):
    pos, cat, _ = box
    key = jax.random.key(5)

    def core_ne(a_sn1):
        th = ThetaSim(0.3, 0.8, a_sn1, 1.0, 1.0, 1.0)
        gas = synthetic_gas(pos, cat, th, 0.2, key, (BOX,) * 3, (N,) * 3, cosmo=COSMO)
        return jnp.log(jnp.max(gas.n_e))

    f = jax.jit(core_ne)
    g = float(jax.grad(f)(jnp.asarray(1.5)))
    h = 1e-3
    fd = (float(f(jnp.asarray(1.5 + h))) - float(f(jnp.asarray(1.5 - h)))) / (2 * h)
    assert g < 0 and g == pytest.approx(fd, rel=0.05)
    many = jax.vmap(f)(jnp.asarray([0.5, 1.0, 2.0]))
    assert np.all(np.diff(np.asarray(many)) < 0)


def test_bad_arguments(box):
    pos, cat, _ = box
    with pytest.raises(ValueError, match="r_paint"):
        synthetic_gas(pos, cat, FID, 0.2, jax.random.key(0), (BOX,) * 3, (N,) * 3, r_paint=20.0)
    with pytest.raises(ValueError, match="subsample"):
        synthetic_gas(pos, cat, FID, 0.2, jax.random.key(0), (BOX,) * 3, (N,) * 3, subsample=0)
    with pytest.raises(ValueError, match="core_subsample"):
        synthetic_gas(pos, cat, FID, 0.2, jax.random.key(0), (BOX,) * 3, (N,) * 3, core_subsample=0)
    with pytest.raises(Exception, match="pos"):  # jaxtyping's check (under the test hook) or ours
        synthetic_gas(pos[:, :2], cat, FID, 0.2, jax.random.key(0), (BOX,) * 3, (N,) * 3)
