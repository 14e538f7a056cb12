"""The spherical-overdensity finder on injected NFW halos, invariances, errors, and a PM mass function."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcluster.cosmology import Cosmology
from jaxcluster.halos import SOFinder, find_halos, particle_mass

from ._mock import nfw_box

COSMO = Cosmology(Omega_m=0.3, sigma_8=0.8)
BOX = 50.0
HALOS = [
    (3e14, (20.0, 35.0, 25.0), (300.0, -150.0, 40.0)),
    (1.5e14, (5.0, 30.0, 30.0), (0.0, 0.0, 0.0)),
    (1e14, (30.0, 12.0, 49.0), (-500.0, 20.0, 100.0)),  # straddles the periodic boundary
    (6e13, (40.0, 40.0, 8.0), (0.0, 200.0, 0.0)),
    (3e13, (10.0, 10.0, 10.0), (0.0, 0.0, 0.0)),
]


@pytest.fixture(scope="module")
def mock():
    return nfw_box(jax.random.key(1), BOX, 64, HALOS, COSMO)


def _match(cat, truth):
    """Index of the catalogue halo nearest to each true centre (periodic)."""
    pos = np.asarray(cat.pos)[np.asarray(cat.valid)]
    out = []
    for t in truth:
        d = pos - np.asarray(t["centre"])[None, :]
        d -= BOX * np.round(d / BOX)
        out.append(int(np.argmin(np.linalg.norm(d, axis=-1))))
    return out


def test_injected_nfw_halos_recovered_within_10_percent(mock):
    pos, vel, mass, truth = mock
    cat = find_halos(pos, None, 1.0, COSMO, SOFinder(BOX, 64, max_halos=32), mass=mass)
    assert int(cat.valid.sum()) == len(HALOS)  # no spurious halo from the random background
    for i, t in zip(_match(cat, truth), truth):
        d = np.asarray(cat.pos[i]) - np.asarray(t["centre"])
        d -= BOX * np.round(d / BOX)
        assert np.linalg.norm(d) < 0.05 * t["R200c"]
        for name in ("M200c", "M500c", "R200c", "R500c"):
            assert float(getattr(cat, name)[i]) == pytest.approx(t[name], rel=0.10), name
    # Sorted by mass, padding zeroed.
    m = np.asarray(cat.M200c)
    assert np.all(np.diff(m[np.asarray(cat.valid)]) <= 0) and np.all(m[~np.asarray(cat.valid)] == 0)


def test_bulk_velocity_from_momenta(mock):
    pos, vel, mass, truth = mock
    a = 1.0
    p = a * vel / 100.0  # p = a u / H0 with H0 = 100 km/s per h⁻¹ Mpc
    cat = find_halos(pos, p, a, COSMO, SOFinder(BOX, 64, max_halos=32), mass=mass)
    for i, t in zip(_match(cat, truth), truth):
        # Background particles inside R200c (a fraction Ω_m/200·…) are at rest.
        assert np.allclose(np.asarray(cat.vel[i]), t["vel"], rtol=0.02, atol=2.0)


def test_subhalo_inside_a_bigger_halo_is_excluded(getkey):
    big = (3e14, (25.0, 25.0, 25.0), (0.0, 0.0, 0.0))
    small = (2e13, (25.5, 25.0, 25.0), (0.0, 0.0, 0.0))  # 0.5 h⁻¹ Mpc off, inside R200c ≈ 1.09
    pos, _, mass, _ = nfw_box(getkey(), BOX, 48, [big, small], COSMO)
    cat = find_halos(pos, None, 1.0, COSMO, SOFinder(BOX, 64, max_halos=16), mass=mass)
    assert int(cat.valid.sum()) == 1
    assert float(cat.M200c[0]) == pytest.approx(3.2e14, rel=0.1)


@settings(max_examples=5, deadline=None)
@given(cells=st.tuples(*[st.integers(0, 63)] * 3))
def test_translation_invariance(mock, cells):
    # Whole mesh cells: the CIC density (and so the peak list) then moves exactly
    # with the particles. A fractional shift re-smooths the density, and a halo
    # near the detection threshold can appear or vanish (seen: 5 vs 4 halos).
    shift = tuple(c * BOX / 64 for c in cells)
    pos, _, mass, _ = mock
    finder = SOFinder(BOX, 64, max_halos=16, capacity=16384)
    cat0 = find_halos(pos, None, 1.0, COSMO, finder, mass=mass)
    moved = jnp.mod(pos + jnp.asarray(shift, dtype=pos.dtype)[None, :], BOX)
    cat1 = find_halos(moved, None, 1.0, COSMO, finder, mass=mass)
    v0, v1 = np.asarray(cat0.valid), np.asarray(cat1.valid)
    assert v0.sum() == v1.sum()
    # Peak cells move with the shift only up to the mesh, so centres and masses
    # agree to the shrinking sphere's and the bisection's precision.
    assert np.allclose(np.asarray(cat1.M200c)[v1], np.asarray(cat0.M200c)[v0], rtol=0.02)
    d = np.asarray(cat1.pos)[v1] - np.mod(np.asarray(cat0.pos)[v0] + np.asarray(shift), BOX)
    d -= BOX * np.round(d / BOX)
    assert np.all(np.linalg.norm(d, axis=-1) < 0.03 * np.asarray(cat0.R200c)[v0])


def test_jit_matches_eager_and_capacity_overflow_raises(mock):
    pos, _, mass, _ = mock
    finder = SOFinder(BOX, 64, max_halos=16, capacity=16384)
    eager = find_halos(pos, None, 1.0, COSMO, finder, mass=mass)
    jitted = jax.jit(lambda x: find_halos(x, None, 1.0, COSMO, finder, mass=mass))(pos)
    assert np.array_equal(np.asarray(eager.valid), np.asarray(jitted.valid))
    assert np.allclose(np.asarray(eager.M500c), np.asarray(jitted.M500c), rtol=1e-5)
    with pytest.raises(Exception, match="capacity"):
        small = SOFinder(BOX, 64, max_halos=16, capacity=256)
        jax.block_until_ready(jax.jit(lambda x: find_halos(x, None, 1.0, COSMO, small, mass=mass).M200c)(pos))
    with pytest.raises(ValueError, match="capacity must be set"):
        jax.jit(lambda x: find_halos(x, None, 1.0, COSMO, SOFinder(BOX, 64), mass=mass).M200c)(pos)


def test_vmap_over_snapshots(mock):
    pos, _, mass, _ = mock
    finder = SOFinder(BOX, 64, max_halos=8, capacity=16384)
    both = jnp.stack([pos, jnp.mod(pos + 10.0, BOX)])
    cats = jax.vmap(lambda x: find_halos(x, None, 1.0, COSMO, finder, mass=mass))(both)
    assert cats.M200c.shape == (2, 8)
    assert np.allclose(np.asarray(cats.M200c[0]), np.asarray(cats.M200c[1]), rtol=0.02)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(r_max=20.0), "r_max"),
        (dict(max_halos=0), "max_halos"),
        (dict(capacity=0), "capacity"),
        (dict(peak_overdensity=0.5), "peak_overdensity"),
        (dict(min_particles=0), "min_particles"),
        (dict(mesh_shape=2), "mesh_shape"),
    ],
)
def test_settings_are_validated(kwargs, match):
    args = dict(box_size=BOX, mesh_shape=64) | kwargs
    with pytest.raises(ValueError, match=match):
        SOFinder(**args)


def test_particle_mass_fills_the_box():
    m = particle_mass(COSMO, (50.0, 50.0, 50.0), 64**3)
    assert float(m) * 64**3 == pytest.approx(0.3 * 2.77536627e11 * 50.0**3)


@pytest.mark.slow
def test_pm_mass_function_matches_tinker08():
    """Four 64 h⁻¹ Mpc PM boxes (64³ particles, 192³ mesh, 20 steps from a = 0.05) at z = 0.

    M_200m against Tinker et al. 2008 at Δ_m = 200 over the resolved range,
    ≥ 300 particles (R_200m ≳ 2 force cells): the softened PM cores bias
    smaller halos low, and the box holds few above 10¹⁴.
    """
    from jaxcluster.analytic.hmf import mass_function
    from jaxcluster.nbody import PMConfig, step_grid, white_noise
    from jaxcluster.nbody.sharding import simulate_batch

    n_box, L = 4, 64.0
    config = PMConfig(L, 64, 192)
    keys = jax.random.split(jax.random.key(2026), n_box)
    noise = jax.vmap(lambda k: white_noise(k, config.particle_shape, dtype=jnp.float32))(keys)
    cosmos = jax.vmap(lambda _: Cosmology(Omega_m=0.3, sigma_8=0.8))(jnp.arange(n_box))
    res = simulate_batch(noise, cosmos, config, step_grid(0.05, 1.0, 20))
    finder = SOFinder(L, 192, max_halos=1024)
    masses = []
    for i in range(n_box):
        cat = find_halos(res.pos[i, -1], res.p[i, -1], 1.0, COSMO, finder)
        masses.append(np.asarray(cat.M200m)[np.asarray(cat.valid)])
    masses = np.concatenate(masses)
    m_min = 300 * float(particle_mass(COSMO, config.box_size, config.n_particles))
    grid = np.logspace(np.log10(m_min), 15.5, 200)
    dn = np.asarray(mass_function(COSMO, jnp.asarray(grid), 0.0, mdef="200m")).ravel()
    volume = n_box * L**3
    for lo, hi in [(m_min, 3 * m_min), (m_min, np.inf)]:
        sel = (grid >= lo) & (grid < hi)
        expected = np.trapezoid(dn[sel], np.log(grid[sel])) * volume
        found = np.sum((masses >= lo) & (masses < hi))
        assert found == pytest.approx(expected, rel=0.2), (lo, hi, found, expected)
