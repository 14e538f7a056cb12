import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcluster.cosmology import Cosmology, growth_table, linear_power
from jaxcluster.nbody import PMConfig, linear_field, lpt, lpt_displacements, white_noise
from jaxcluster.nbody.mesh import rfft_wavevectors

COSMO = Cosmology(0.3, 0.8)


def test_linear_field_has_the_linear_power(getkey):
    cfg = PMConfig((200.0, 200.0, 400.0), (32, 32, 64))  # rectangular box, isotropic cells
    delta = linear_field(white_noise(getkey(), cfg.particle_shape), COSMO, cfg)
    dk = jnp.fft.rfftn(delta)
    kx, ky, kz = rfft_wavevectors(cfg.particle_shape)
    k = jnp.sqrt(kx**2 + ky**2 + kz**2) / cfg.particle_spacing
    n = np.prod(cfg.particle_shape)
    ratio = (np.asarray(jnp.abs(dk)) ** 2 * cfg.volume / n**2 / np.asarray(jnp.where(k > 0, linear_power(COSMO, k), 1.0)))[np.asarray(k) > 0]
    # ⟨|w_k|²⟩ = 1 mode by mode (exponential distribution): mean 1 ± 1/√N.
    assert ratio.mean() == pytest.approx(1.0, abs=4 / np.sqrt(ratio.size))


def test_zeldovich_divergence_and_plane_wave_2lpt():
    cfg = PMConfig(100.0, (16, 16, 16))
    x = np.arange(16) * cfg.particle_spacing
    k = 2 * np.pi / 100.0 * 2
    delta = 0.1 * np.cos(k * x)[:, None, None] * np.ones((16, 16, 16))
    psi1, psi2 = lpt_displacements(jnp.asarray(delta), cfg, order=2)
    # Zel'dovich: Ψ₁ = −∇∇⁻²δ = −(0.1/k) sin(k q) x̂, so ∇·Ψ₁ = −δ.
    np.testing.assert_allclose(psi1.reshape(16, 16, 16, 3)[..., 0], -0.1 / k * np.sin(k * x)[:, None, None] * np.ones((16, 16, 16)), atol=1e-12)
    # A single plane wave has no second-order displacement (1-D motion is exactly Zel'dovich).
    np.testing.assert_allclose(psi2, 0.0, atol=1e-14)


def test_2lpt_source_for_two_crossed_waves():
    # δ = A cos(k x) + B cos(k y): φ_xx = −A cos(kx), φ_yy = −B cos(ky), φ_xy = 0 ⇒ δ⁽²⁾ = A B cos(kx) cos(ky);
    # Ψ₂ = +∇∇⁻²δ⁽²⁾ ⇒ Ψ₂,x = A B sin(kx) cos(ky) / (2k).
    n, L = 16, 64.0
    cfg = PMConfig(L, (n, n, n))
    q = np.arange(n) * cfg.particle_spacing
    k = 2 * np.pi / L
    A, B = 0.2, 0.1
    X, Y = np.meshgrid(q, q, indexing="ij")
    delta = (A * np.cos(k * X) + B * np.cos(k * Y))[..., None] * np.ones(n)
    _, psi2 = lpt_displacements(jnp.asarray(delta), cfg, order=2)
    expected = (A * B * np.sin(k * X) * np.cos(k * Y) / (2 * k))[..., None] * np.ones(n)
    np.testing.assert_allclose(psi2.reshape(n, n, n, 3)[..., 0], expected, atol=1e-12)


def test_momenta_are_a3E_dxda(getkey):
    cfg = PMConfig(64.0, (8, 8, 8))
    g = growth_table(COSMO)
    delta = linear_field(white_noise(getkey(), cfg.particle_shape), COSMO, cfg)
    a, h = 0.2, 1e-5
    x_hi, _ = lpt(delta, COSMO, g, cfg, a + h)
    x_lo, _ = lpt(delta, COSMO, g, cfg, a - h)
    _, p = lpt(delta, COSMO, g, cfg, a)
    from jaxcluster.cosmology import E

    np.testing.assert_allclose(p, a**3 * E(COSMO, a) * (x_hi - x_lo) / (2 * h), rtol=1e-6, atol=1e-10)


def test_bad_order_and_shape():
    cfg = PMConfig(64.0, (8, 8, 8))
    with pytest.raises(ValueError, match="order"):
        lpt_displacements(jnp.zeros((8, 8, 8)), cfg, order=3)
    with pytest.raises(ValueError, match="particle_shape"):
        lpt_displacements(jnp.zeros((8, 8, 4)), cfg)
    with pytest.raises(ValueError, match="noise shape"):
        linear_field(jnp.zeros((4, 4, 4)), COSMO, cfg)


def test_linear_velocity_and_gadget_roundtrip():
    # Linear theory: u = a H f D₁ Ψ₁ [km/s] (Ψ in h⁻¹ Mpc, H in km s⁻¹ (h⁻¹ Mpc)⁻¹).
    from jaxcluster.cosmology import E
    from jaxcluster.nbody import momentum_from_velocity, velocity_from_momentum

    cfg = PMConfig(64.0, (8, 8, 8))
    g = growth_table(COSMO)
    a = 0.25
    delta = linear_field(white_noise(jax.random.key(5), cfg.particle_shape), COSMO, cfg)
    _, p = lpt(delta, COSMO, g, cfg, a, order=1)
    psi1, _ = lpt_displacements(delta, cfg, order=1)
    u = velocity_from_momentum(p, a)
    H = 100.0 * E(COSMO, a)
    np.testing.assert_allclose(u, a * H * g.f1(a) * g.D1(a) * psi1, rtol=1e-10, atol=1e-12)
    gadget = u / np.sqrt(a)
    np.testing.assert_allclose(momentum_from_velocity(jnp.asarray(gadget), a, gadget=True), p, rtol=1e-12)
