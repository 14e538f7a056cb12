r"""Cross-check of the FastPM engine against jaxpm 0.1.6 on identical initial conditions.

Unit mapping (established here, asserted by `test_unit_mapping`): jaxpm works
in mesh-cell units with one particle per cell. With Δ = `config.cell_size`
[h⁻¹ Mpc] and mesh_factor 1,

* positions: ``pos_jaxpm = pos / Δ`` (absolute positions, `paint_absolute_pos=True`);
* momenta: ``vel_jaxpm = p / Δ``: both are $a^3 E\, dx/da$ (jaxpm's ODE is
  $dx/da = v/(a^3E)$, $dv/da = \frac32 Ω_m F/(a^2E)$, exactly ours), so the
  only difference is the length unit;
* forces: ``jaxpm.pm.pm_forces(pos / Δ) == pm_force(pos, config) / Δ`` to
  round-off (same fd4 gradient and exact $-1/k^2$ kernels);
* ``jaxpm.pm.lpt(cosmo_jc, δ_L, particles=q / Δ, a)`` takes OUR δ_L at a = 1
  (it multiplies by its own D_1(a)) and returns the displacement
  ``dx = (pos - q) / Δ`` (positions are ``q / Δ + dx``) and ``p / Δ``. It is
  not identical to our `lpt`: jaxpm differentiates with the fd4 kernel where
  we use the exact i k (10 % rms difference in Ψ₁ on a 4 h⁻¹ Mpc lattice,
  concentrated near the Nyquist frequency), and its second-order growth
  ``-3/7 growth_factor_second`` is 0.8 % below our D₂. Its D₁ matches ours
  to 1.5e-6 at a = 0.1 (1.3e-4 at a = 0.5, jax_cosmo's ODE tolerance).
  Hence both runs below start from the SAME particle positions and momenta
  (our 2LPT at a = 0.1, converted), identical by construction.

Time integration. jaxpm's vector field integrated with diffrax's
`LeapfrogMidpoint` (one force per step, the cheapest same-step-count choice;
`SemiImplicitEuler` on the split terms is first order and far worse) on the
same `StepTo` grid, linear in a from 0.1 to 1. Measured on this set-up
(32³ particles, 128 h⁻¹ Mpc, float64; max |P/P_ref − 1| for k ≤ k_Nyq/2
against a 100-step FastPM run):

    steps          5       10      20      40      100
    FastPM KDK   2.9 %   1.0 %   0.29 %  0.07 %  (ref)
    jaxpm LFM    8.4 %  17.6 %   6.2 %   1.8 %   0.29 %
    jaxpm SIE    281 %   135 %    58 %    26 %   9.9 %

and jaxpm with Tsit5, 100 steps (600 forces), agrees with the 100-step FastPM
run to 1e-4 in P and 6e-9 in 1 − r. So at 10 equal steps the two differ by
~17 % in P purely because leapfrog in a is inaccurate at few steps (FastPM's
growth-factor kicks/drifts are exact for linear motion); the same-step-count
test therefore uses 60 steps, where jaxpm's leapfrog has converged to < 1 %,
and a second test checks our 10-step run against jaxpm's converged solution.
With the test's seed: 60 steps each, max |P ratio − 1| = 0.84 %, min r =
0.999992; 10 steps each, 21 % and 0.9955 (so the 2 % bound fails at equal
few steps: the test can fail); our 10 steps vs jaxpm Tsit5-100: 1.07 %,
min r = 0.99996. The whole module takes ~55 s on 2 shared CPU cores.
"""

import contextlib

import diffrax
import jax
import jax.numpy as jnp
import jax_cosmo as jc
import numpy as np
import pytest

import jaxpm.pm as jpm
from jaxcluster.cosmology import Cosmology, growth_table
from jaxcluster.nbody import PMConfig, linear_field, lpt, nbody, paint_cic, pm_force, step_grid, white_noise
from jaxcluster.nbody.lpt import lpt_displacements
from jaxcluster.nbody.mesh import force_from_density
from jaxcluster.nbody.power import correlation_coefficient, power_spectrum

N = 32  # particles per side = mesh cells per side (jaxpm: one particle per cell)
BOX = 128.0  # h⁻¹ Mpc
A_INIT = 0.1
OMEGA_M, OMEGA_B = 0.3, 0.049


def _jaxpm_cosmology():
    # A jax_cosmo object of its own: sharing one with other jax_cosmo calls raises KeyError 'h'.
    return jc.Cosmology(Omega_c=OMEGA_M - OMEGA_B, Omega_b=OMEGA_B, h=0.6711, n_s=0.9624, sigma8=0.8,
                        Omega_k=0.0, w0=-1.0, wa=0.0)


@contextlib.contextmanager
def _jaxpm_promotion():
    """jaxpm 0.1.6 is not clean under tests/conftest.py's strict settings (it takes
    int32 indices mod an int64 shape and broadcasts (1,) against (n, 3)): relax
    dtype and rank promotion around its calls only."""
    with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        yield


@pytest.fixture(scope="module")
def setup():
    return _make_setup(PMConfig(BOX, N))


def _make_setup(config):
    cosmo = Cosmology(Omega_m=OMEGA_M, sigma_8=0.8)
    growth = growth_table(cosmo)
    delta_lin = linear_field(white_noise(jax.random.key(1), config.particle_shape), cosmo, config)
    pos, p = lpt(delta_lin, cosmo, growth, config, A_INIT, order=2)
    return config, cosmo, growth, delta_lin, pos, p


def _jaxpm_run(pos, p, config, n_steps, solver):
    """jaxpm's ODE from our (pos, p), converted to cell units; final positions [h⁻¹ Mpc]."""
    cell = config.cell_size
    y0 = jnp.stack([pos / cell, p / cell])
    with _jaxpm_promotion():
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(jpm.make_diffrax_ode(config.mesh_shape)), solver,
            t0=A_INIT, t1=1.0, dt0=None, y0=y0, args=_jaxpm_cosmology(),
            stepsize_controller=diffrax.StepTo(ts=jnp.asarray(step_grid(A_INIT, 1.0, n_steps))),
            max_steps=n_steps, saveat=diffrax.SaveAt(t1=True),
        )
    return sol.ys[0, 0] * cell


def _density(pos, config):
    mesh = paint_cic(pos / config.cell_size, jnp.ones(pos.shape[:1], pos.dtype), config.mesh_shape)
    return mesh / jnp.mean(mesh) - 1.0


def _compare(pos_a, pos_b, config):
    """(max |P_a/P_b − 1|, min r) over shells with k ≤ k_Nyq/2."""
    da, db = _density(pos_a, config), _density(pos_b, config)
    k, pa, _ = power_spectrum(da, config.box_size)
    _, pb, _ = power_spectrum(db, config.box_size)
    _, r, _ = correlation_coefficient(da, db, config.box_size)
    sel = np.asarray(k) <= 0.5 * np.pi / config.cell_size
    assert sel.sum() >= 5
    ratio, r = np.asarray(pa / pb)[sel], np.asarray(r)[sel]
    assert np.all(np.isfinite(ratio)) and np.all(np.isfinite(r))
    return float(np.max(np.abs(ratio - 1.0))), float(np.min(r))


def test_unit_mapping(setup):
    """Forces agree to round-off; jaxpm's 1LPT is ours with the fd4 kernel, in cells."""
    config, cosmo, growth, delta_lin, pos, p = setup
    cell = config.cell_size
    with _jaxpm_promotion():
        # jitted: eagerly, every jaxpm primitive would compile on its own (~300 compiles)
        f_jaxpm = jax.jit(lambda x: jpm.pm_forces(x, mesh_shape=config.mesh_shape))(pos / cell).reshape(-1, 3)
        q_cell = (config.lattice() / cell).reshape(*config.particle_shape, 3)
        dx, vel, _ = jax.jit(lambda d, q: jpm.lpt(_jaxpm_cosmology(), d, particles=q, a=A_INIT, order=1))(delta_lin, q_cell)
    f_ours = pm_force(pos, config) / cell
    np.testing.assert_allclose(f_jaxpm, f_ours, rtol=0, atol=1e-10 * float(jnp.max(jnp.abs(f_ours))))

    psi_fd4 = force_from_density(jnp.fft.rfftn(delta_lin), config.particle_shape, "fd4").reshape(-1, 3) * cell
    d1, g1 = growth.D1(A_INIT), growth.G1(cosmo, A_INIT)
    scale = float(jnp.max(jnp.abs(d1 * psi_fd4)))
    np.testing.assert_allclose(dx.reshape(-1, 3) * cell, d1 * psi_fd4, rtol=0, atol=1e-4 * scale)
    np.testing.assert_allclose(vel.reshape(-1, 3) * cell, g1 * psi_fd4, rtol=0, atol=1e-4 * float(jnp.max(jnp.abs(g1 * psi_fd4))))
    # ... and NOT our exact-kernel 1LPT (the kernels really differ): guards the comparison above.
    psi1, _ = lpt_displacements(delta_lin, config, order=1)
    assert float(jnp.max(jnp.abs(dx.reshape(-1, 3) * cell - d1 * psi1))) > 1e-2 * scale


def test_same_step_count_vs_jaxpm(setup):
    """The issue's test: same ICs, same 60-step grid: r(k) ≥ 0.99, |P ratio − 1| ≤ 2 % for k ≤ k_Nyq/2."""
    config, cosmo, growth, _, pos, p = setup
    n_steps = 60  # jaxpm's leapfrog is ~20 % off at 10 steps, 1.8 % at 40 (module docstring)
    ours = nbody(pos, p, cosmo, config, step_grid(A_INIT, 1.0, n_steps), growth=growth).pos[-1]
    theirs = _jaxpm_run(pos, p, config, n_steps, diffrax.LeapfrogMidpoint())
    # The runs must have gone nonlinear for the comparison to mean anything.
    assert float(jnp.std(_density(ours, config))) > 1.0
    dp, r_min = _compare(ours, theirs, config)
    assert r_min >= 0.99, r_min
    assert dp <= 0.02, dp


def test_fastpm_10_steps_vs_jaxpm_converged(setup):
    """Our 10-step FastPM run against jaxpm's ODE solved to convergence (Tsit5, 100 steps)."""
    config, cosmo, growth, _, pos, p = setup
    ours = nbody(pos, p, cosmo, config, step_grid(A_INIT, 1.0, 10), growth=growth).pos[-1]
    theirs = _jaxpm_run(pos, p, config, 100, diffrax.Tsit5())
    dp, r_min = _compare(ours, theirs, config)
    assert r_min >= 0.999, r_min
    assert dp <= 0.02, dp  # measured 1.07 %
