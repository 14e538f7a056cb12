"""Emissivity tables: pyatomdb set-up, continuum physics, interpolation accuracy, I/O."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import k0e

from jaxcluster.xray import (
    AG89_ABUNDANCE,
    EmissivityTable,
    abundances,
    band_emissivity,
    band_energy_emissivity,
    band_response,
    build_emissivity_table,
    build_energy_table,
    default_band_response,
    default_emissivity_table,
    default_energy_table,
    electron_to_hydrogen_ratio,
    load_emissivity_tables,
    read_response,
    rest_frame_spectrum,
    save_emissivity_tables,
)

from ._ogip import write_pair

KBOLTZ_KEV_K = 8.617333262e-8
ERG_PER_KEV = 1.602176634e-9
H_PLANCK_ERG_S = 6.62607015e-27
RYDBERG_KEV = 0.013605693122990
T_JUMP_H = 1e3 * RYDBERG_KEV  # Kellogg fit: hydrogen switches to the Born branch here
_N_PAD = 64


@jax.jit
def _eval_jit(table, T, z):
    return table(T, z)


def _ev(table, T, z):
    """table(T, z) through one compiled function: pad to a fixed size (compiles once)."""
    T = np.atleast_1d(np.asarray(T, dtype=np.float64))
    z = np.broadcast_to(np.asarray(z, dtype=np.float64), T.shape)
    assert T.size <= _N_PAD
    Tp = np.concatenate([T, np.ones(_N_PAD - T.size)])
    zp = np.concatenate([z, np.zeros(_N_PAD - T.size)])
    return np.asarray(_eval_jit(table, jnp.asarray(Tp), jnp.asarray(zp)))[: T.size]


# ---------------------------------------------------------------- no prompt


def _run(code, env):
    return subprocess.run(
        [sys.executable, "-c", code], stdin=subprocess.DEVNULL, env=env,
        capture_output=True, text=True, timeout=120,
    )


def _clean_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("ATOMDB", "JAXCLUSTER_ATOMDB_DIR")}
    env["HOME"] = str(tmp_path / "home")
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    return env


def test_bare_pyatomdb_import_would_prompt(tmp_path):
    """Control: without our set-up, importing pyatomdb reads stdin and dies."""
    r = _run("import pyatomdb", _clean_env(tmp_path))
    assert r.returncode != 0
    assert "EOF" in r.stderr


def test_no_prompt_when_atomdb_unset(tmp_path):
    env = _clean_env(tmp_path)
    code = (
        "from jaxcluster.xray import rest_frame_spectrum\n"
        "import os\n"
        "s = rest_frame_spectrum(2.0, [0.5, 1.0, 2.0], method='auto')\n"
        "print(os.environ['ATOMDB']); print(s.sum() > 0)\n"
    )
    r = _run(code, env)
    assert r.returncode == 0, r.stderr
    out = r.stdout.strip().splitlines()
    assert out[-1] == "True"
    assert out[-2] == str(tmp_path / "cache" / "jaxcluster" / "atomdb")
    assert (tmp_path / "cache" / "jaxcluster" / "atomdb" / "userdata").is_file()
    assert "Set up AtomDB" not in r.stdout + r.stderr


def test_atomdb_dir_order(monkeypatch, tmp_path):
    from jaxcluster.xray._atomdb import atomdb_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("JAXCLUSTER_ATOMDB_DIR", raising=False)
    monkeypatch.delenv("ATOMDB", raising=False)
    assert atomdb_dir() == tmp_path / "xdg" / "jaxcluster" / "atomdb"
    monkeypatch.setenv("JAXCLUSTER_ATOMDB_DIR", str(tmp_path / "env"))
    assert atomdb_dir() == tmp_path / "env"
    assert atomdb_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.setenv("ATOMDB", str(tmp_path / "real"))
    assert atomdb_dir(tmp_path / "arg") == tmp_path / "real"


def test_method_validation():
    with pytest.raises(ValueError, match="must be one of"):
        rest_frame_spectrum(1.0, [0.5, 1.0], method="mekal")
    from jaxcluster.xray._atomdb import apec_data_files

    if apec_data_files() is None:
        with pytest.raises(ValueError, match="apec_line.fits"):
            rest_frame_spectrum(1.0, [0.5, 1.0], method="apec")
    with pytest.raises(ValueError, match="T_keV"):
        rest_frame_spectrum(0.0, [0.5, 1.0], method="brems")
    with pytest.raises(ValueError, match="metallicity"):
        abundances(-1.0)


# ---------------------------------------------------------------- continuum physics


def test_abundances_and_electron_ratio():
    ab = abundances(0.3)
    assert ab[1] == 1.0 and ab[2] == AG89_ABUNDANCE[2]
    assert ab[26] == pytest.approx(0.3 * 4.68e-5)
    # fully ionised: n_e/n_H = 1 + 2 n_He/n_H + Σ Z n_Z/n_H ≈ 1.2 (the count-rate default)
    assert electron_to_hydrogen_ratio(0.3) == pytest.approx(1.199, abs=2e-3)
    assert electron_to_hydrogen_ratio(0.0) == pytest.approx(1 + 2 * 0.0977)


@pytest.mark.parametrize("kT", [15.0, 20.0])
def test_brems_against_born_formula(kT):
    r"""Hot plasma: Σ_Z A_Z Z² × 6.8e-38 T^-1/2 e^{-E/kT} g_B(E/kT) per photon energy.

    g_B = (√3/π) e^{u/2} K₀(u/2) is the non-relativistic Born Gaunt factor; the
    Kellogg (1975) fit pyatomdb uses adds semi-relativistic corrections, and
    He and metals are not yet in the Born regime: they agree to < 7 % for
    E ≤ 3 kT (measured 0.8–6 %). A wrong Z², abundance weighting, T unit or
    1/E would be off by factors.
    """
    edges = np.geomspace(0.3, 3 * kT, 300)
    E, dE = np.sqrt(edges[1:] * edges[:-1]), np.diff(edges)
    s = rest_frame_spectrum(kT, edges, metallicity=0.3, method="brems")
    u = E / kT
    g_born = np.sqrt(3.0) / np.pi * k0e(u / 2)
    z2 = sum(Z**2 * a for Z, a in abundances(0.3).items())
    # j_ν = 6.8e-38 Z² n_e n_i T^-1/2 e^{-hν/kT} g  [erg s⁻¹ cm⁻³ Hz⁻¹] → photons keV⁻¹
    hand = 6.8e-38 * z2 * np.exp(-u) * g_born / np.sqrt(kT / KBOLTZ_KEV_K)
    hand *= (ERG_PER_KEV / H_PLANCK_ERG_S) / (E * ERG_PER_KEV) * dE
    ratio = s / hand
    assert np.all((ratio > 1.0) & (ratio < 1.07)), (ratio.min(), ratio.max())


def test_brems_exponential_slope():
    """d ln(S/dE)/dE = −1/kT − 1/E + d ln g/dE; for E ≫ kT the Gaunt factor tends to
    the Born asymptote g ∝ (E/kT)^(−1/2), so ln(S/dE · E^1.5) falls as −E/kT: within 3 %
    over E = 4–10 kT (measured 1–2 %; the rest is the Gaunt factor's slow curvature)."""
    for kT in (0.5, 1.0, 3.0, 8.0):
        edges = np.linspace(4 * kT, 10 * kT, 201)
        E, dE = 0.5 * (edges[1:] + edges[:-1]), np.diff(edges)
        s = rest_frame_spectrum(kT, edges, method="brems")
        slope = np.polyfit(E, np.log(s / dE * E**1.5), 1)[0]
        assert slope == pytest.approx(-1.0 / kT, rel=0.03)


def test_brems_temperature_ratio():
    """S(E,T1)/S(E,T2) = √(T2/T1) e^{−E/kT1 + E/kT2} × g(E,T1)/g(E,T2).

    The Gaunt ratio lies between √(T1/T2) (the E ≫ kT Born limit, g ∝ (E/kT)^−½)
    and 1, and varies slowly with E (measured 0.85 → 0.80 over 0.5–8 keV)."""
    edges = np.linspace(0.5, 8.0, 76)
    E = 0.5 * (edges[1:] + edges[:-1])
    T1, T2 = 4.0, 8.0
    ratio = rest_frame_spectrum(T1, edges, method="brems") / rest_frame_spectrum(T2, edges, method="brems")
    g_ratio = ratio / (np.sqrt(T2 / T1) * np.exp(-E / T1 + E / T2))
    assert np.all((g_ratio > np.sqrt(T1 / T2)) & (g_ratio < 1.0))
    assert np.ptp(g_ratio) < 0.08


# ---------------------------------------------------------------- the shipped table


def test_default_table_metadata():
    t = default_emissivity_table()
    assert t.quantity == "photon" and t.units == "photons cm^5 s^-1"
    assert t.method in ("apec", "brems")
    if t.method == "brems":
        assert t.atomdb_version == "continuum only"
    assert t.bands_keV == ((0.5, 1.0), (1.0, 2.0))
    assert t.responses == ("pn-thin-5-ao20.arf", "pn-thin-5-ao20.rmf")
    assert "AG89" in t.abundance and "0.3" in t.abundance
    assert 10 ** float(t.log10_T_keV[0]) == pytest.approx(0.1)
    assert 10 ** float(t.log10_T_keV[-1]) == pytest.approx(20.0)
    e = default_energy_table()
    assert e.quantity == "energy" and e.bands_keV == ((0.5, 2.0),)


def _off_grid_points(t, n, seed):
    rng = np.random.default_rng(seed)
    lt = np.asarray(t.log10_T_keV)
    zz = np.asarray(t.z)
    T = 10 ** rng.uniform(lt[0], lt[-1], n)
    z = rng.uniform(zz[0], zz[-1], n)
    return T, z


def test_table_within_half_percent_of_direct_pyatomdb():
    """Off-grid (T, z): cubic table vs pyatomdb through the same pn response."""
    t = default_emissivity_table()
    resp = default_band_response()
    T, z = _off_grid_points(t, 25, seed=3)
    T = np.concatenate([T, [0.1031, 0.137, 0.55, 13.5, 13.7, 19.9]])  # cold corner, near steps
    z = np.concatenate([z, [1.97, 0.4, 0.8, 0.2, 0.2, 1.5]])
    direct = np.stack([band_emissivity(a, b, resp, None, method=t.method) for a, b in zip(T, z)])
    got = _ev(t, T, z)
    np.testing.assert_allclose(got, direct, rtol=5e-3)


def test_energy_table_within_half_percent_of_direct():
    t = default_energy_table()
    T, z = _off_grid_points(t, 10, seed=4)
    direct = np.stack([band_energy_emissivity(a, b, t.bands_keV, method=t.method) for a, b in zip(T, z)])
    np.testing.assert_allclose(_ev(t, T, z), direct, rtol=5e-3)


def test_table_steps_follow_pyatomdb():
    """Across kT = 10³ Ry the Kellogg fit steps by ~1 %; the table steps with it."""
    t = default_emissivity_table()
    resp = default_band_response()
    for z in (0.1, 1.2):
        lo = band_emissivity(T_JUMP_H * (1 - 1e-6), z, resp, None, method="brems")
        hi = band_emissivity(T_JUMP_H * (1 + 1e-6), z, resp, None, method="brems")
        tab = _ev(t, [T_JUMP_H * (1 - 1e-6), T_JUMP_H * (1 + 1e-6)], z)
        assert abs(hi[1] / lo[1] - 1) > 3e-3  # a real step in the model
        np.testing.assert_allclose(tab[1] / tab[0], hi / lo, rtol=1e-4)


@settings(max_examples=30, deadline=None)
@given(
    lt=st.tuples(st.floats(-1.0, np.log10(13.5)), st.floats(-1.0, np.log10(13.5))),
    z=st.floats(0.0, 2.0),
)
def test_hardness_ratio_increases_with_T(lt, z):
    """HR = ε[1–2]/ε[0.5–1] rises with T at fixed z (below pyatomdb's 13.6 keV step,
    where the hard band drops by 0.5 % more than the soft one)."""
    lo, hi = sorted(lt)
    if hi - lo < 1e-3:
        return
    t = default_emissivity_table()
    e = _ev(t, [10**lo, 10**hi], z)
    hr = e[:, 1] / e[:, 0]
    assert hr[1] > hr[0]


def test_hardness_ratio_grid_above_step():
    t = default_emissivity_table()
    T = np.geomspace(13.7, 20.0, 50)
    for z in (0.1, 0.5, 1.5):
        e = _ev(t, T, z)
        assert np.all(np.diff(e[:, 1] / e[:, 0]) > 0)


def test_clipping_outside_grid():
    t = default_emissivity_table()
    e_edge = _ev(t, [0.1, 20.0], 0.0)
    e_out = _ev(t, [0.05, 40.0], [-0.5, -0.5])
    np.testing.assert_allclose(e_out, e_edge, rtol=1e-12)
    # zero derivative beyond the knots, in T and in z (the jacobian of the padded call)
    g = jax.jit(jax.grad(lambda T, z: jnp.sum(t(T, z)), argnums=(0, 1)))(
        jnp.asarray([50.0, 0.05, 5.0]), jnp.asarray([3.0, 2.5, 1.0])
    )
    assert np.all(np.asarray(g[0])[:2] == 0.0) and np.asarray(g[0])[2] != 0.0
    assert np.all(np.asarray(g[1])[:2] == 0.0) and np.asarray(g[1])[2] != 0.0


def test_table_value_checks_under_jit():
    t = default_emissivity_table()
    with pytest.raises(Exception, match="T_keV must be > 0"):
        _ev(t, [1.0, -2.0], 0.3)
    with pytest.raises(Exception, match="T_keV must be > 0"):
        _ev(t, [np.nan], 0.3)
    with pytest.raises(Exception, match="z must be > -1"):
        _ev(t, [1.0], -1.5)


def test_table_shapes_dtypes_vmap_grad():
    t = default_emissivity_table()
    T = jnp.asarray([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    out32 = _eval_jit(t, T.astype(jnp.float32), jnp.float32(0.25))
    assert out32.shape == (2, 3, 2) and out32.dtype == jnp.float32
    # float32: log10 ε ≈ −12 carries ~1e-6 round-off, × ln 10 and the spline sums
    np.testing.assert_allclose(np.asarray(out32).reshape(6, 2), _ev(t, np.ravel(T), 0.25), rtol=5e-5)
    # d ln ε / d ln T and d ln ε / dz against central differences (float64)
    jac = jax.jit(jax.jacfwd(lambda lT, z: jnp.log(t(jnp.exp(lT), z)), argnums=(0, 1)))
    h = 1e-5
    for T0, z0 in ((0.7, 0.3), (3.0, 0.9), (9.0, 1.4)):
        gT, gz = jac(jnp.log(T0), jnp.asarray(z0))
        Ts = T0 * np.exp([h, -h, 0.0, 0.0])
        zs = z0 + np.asarray([0.0, 0.0, h, -h])
        le = np.log(_ev(t, Ts, zs))  # one padded, compiled call
        fdT, fdz = (le[0] - le[1]) / (2 * h), (le[2] - le[3]) / (2 * h)
        # central differences: O(h²) truncation ~1e-10, round-off ~1e-16/h ~ 1e-11
        np.testing.assert_allclose(np.asarray(gT), fdT, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(np.asarray(gz), fdz, rtol=1e-6, atol=1e-9)
        assert np.all(np.asarray(gT) != 0) and np.all(np.asarray(gz) != 0)


def test_table_check_init():
    t = default_emissivity_table()
    with pytest.raises(ValueError, match="log10_eps shape"):
        EmissivityTable(
            log10_T_keV=t.log10_T_keV, z=t.z, log10_eps=t.log10_eps,
            log10_T_break=t.log10_T_break, log10_jump=t.log10_jump,
            bands_keV=t.bands_keV + ((2.0, 7.0),),
        )
    with pytest.raises(ValueError, match="method"):
        EmissivityTable(
            log10_T_keV=t.log10_T_keV, z=t.z, log10_eps=t.log10_eps,
            log10_T_break=t.log10_T_break, log10_jump=t.log10_jump,
            bands_keV=t.bands_keV, method="xspec",
        )


# ---------------------------------------------------------------- building tiny tables


def test_build_tiny_table_matches_direct_and_roundtrips(tmp_path):
    arf, rmf, *_ = write_pair(tmp_path)
    r = read_response(arf, rmf)
    T = np.geomspace(0.5, 8.0, 6)
    z = np.linspace(0.0, 1.0, 5)
    bands = ((0.5, 1.0), (1.0, 2.0))
    t = build_emissivity_table(r, T_keV=T, z=z, bands_keV=bands, method="brems")
    assert t.method == "brems" and t.atomdb_version == "continuum only"
    assert t.responses == ("inst.arf", "inst.rmf")
    # at the knots the table reproduces the direct evaluation (up to round-off)
    got = _ev(t, np.repeat(T, z.size), np.tile(z, T.size))
    direct = np.stack([band_emissivity(a, b, r, bands, method="brems") for a in T for b in z])
    np.testing.assert_allclose(got, direct, rtol=1e-9)
    # additivity: two identical instruments give twice the emissivity
    t2 = build_emissivity_table([r, band_response(r, bands)], T_keV=T, z=z, bands_keV=bands, method="brems")
    np.testing.assert_allclose(np.asarray(t2.log10_eps), np.asarray(t.log10_eps) + np.log10(2.0), atol=1e-12)
    # round trip through the file format
    e = build_energy_table(T_keV=T, z=z, method="brems")
    path = tmp_path / "tables.npz"
    save_emissivity_tables(path, {"count_rate": t, "energy_flux": e}, metallicity=0.3)
    back = load_emissivity_tables(path)
    assert set(back) == {"count_rate", "energy_flux"}
    for a, b in ((t, back["count_rate"]), (e, back["energy_flux"])):
        assert a.bands_keV == b.bands_keV and a.method == b.method and a.responses == b.responses
        np.testing.assert_array_equal(np.asarray(a.log10_eps), np.asarray(b.log10_eps))
    with np.load(path) as d:
        assert str(d["count_rate/atomdb_version"]) == "continuum only"
        assert d["ag89_abundance"].size == 30
    with pytest.raises(ValueError, match="not a"):
        load_emissivity_tables(arf)


def test_build_validation(tmp_path):
    arf, rmf, *_ = write_pair(tmp_path)
    r = read_response(arf, rmf)
    with pytest.raises(ValueError, match="T_keV"):
        build_emissivity_table(r, T_keV=[1.0, 0.5, 2.0, 3.0], method="brems")
    with pytest.raises(ValueError, match="z must be"):
        build_emissivity_table(r, T_keV=[1, 2, 3, 4], z=[0.0, 0.1], method="brems")
    with pytest.raises(ValueError, match="differ from bands_keV"):
        build_emissivity_table(band_response(r, [(0.5, 2.0)]), bands_keV=[(0.5, 1.0)], method="brems")


def test_single_redshift_path_equals_2d_path():
    """A scalar z uses the z-then-T 1-D route: the same tensor-product spline."""
    t = default_emissivity_table()
    T = np.geomspace(0.1, 20.0, 40)
    for z in (0.0, 0.37, 1.91):
        one = np.asarray(_eval_jit(t, jnp.asarray(T), jnp.asarray(z)))
        two = _ev(t, T, np.full(T.size, z))
        np.testing.assert_allclose(one, two, rtol=1e-10)


def test_build_tables_cli(tmp_path, capsys):
    from jaxcluster.xray.build_tables import main

    arf, rmf, *_ = write_pair(tmp_path)
    out = tmp_path / "cli.npz"
    argv = ["--arf", str(arf), "--rmf", str(rmf), "-o", str(out), "--n-T", "4", "--n-z", "4",
            "--T-min", "0.5", "--T-max", "8", "--z-max", "1", "--method", "brems", "--bands", "0.5-1,1-2,2-5"]
    assert main(argv) == 0
    assert "method brems" in capsys.readouterr().out
    tables = load_emissivity_tables(out)
    assert tables["count_rate"].bands_keV == ((0.5, 1.0), (1.0, 2.0), (2.0, 5.0))
    assert tables["count_rate"].log10_eps.shape == (4, 4, 3)
    assert tables["energy_flux"].quantity == "energy"
    with np.load(out) as d:
        assert "response:instrument/area_cm2" in d.files
    assert main(["--arf", str(arf), "-o", str(out), "--rmf", str(rmf), "--rmf", str(rmf)]) == 2
    assert main(["--arf", str(arf), "--rmf", str(tmp_path / "missing.rmf"), "-o", str(out)]) == 1
    capsys.readouterr()


class _FakeCIESession:
    """Stands in for pyatomdb.spectrum.CIESession (AtomDB data cannot be installed here).

    Records how the builder drives it; its spectrum is a simple exponential
    continuum, photons cm³ s⁻¹ per bin, so values can be checked."""

    instances: list = []

    def __init__(self, linefile, cocofile, abundset="AG89"):
        self.files = (linefile, cocofile)
        self.abundset = abundset
        self.abund = {}
        self.responses = 0
        self.edges = None
        _FakeCIESession.instances.append(self)

    def set_abund(self, elements, abund):
        for Z in elements:
            self.abund[Z] = abund

    def set_response(self, edges, raw=False):
        assert raw
        self.responses += 1
        self.edges = np.asarray(edges)

    def return_spectrum(self, te, teunit="keV"):
        assert teunit == "keV"
        e = self.edges
        return 1e-15 * (np.exp(-e[:-1] / te) - np.exp(-e[1:] / te)) * te / np.sqrt(te)


def test_apec_path_with_a_stand_in_session(tmp_path, monkeypatch):
    from jaxcluster.xray._atomdb import import_pyatomdb

    pyatomdb = import_pyatomdb()  # never a bare `import pyatomdb` (it would prompt)
    root = tmp_path / "atomdb"
    root.mkdir()
    for name in ("apec_line.fits", "apec_coco.fits", "userdata"):
        (root / name).write_text("")
    (root / "VERSION").write_text("3.1.0\n")
    monkeypatch.setenv("ATOMDB", str(root))
    _FakeCIESession.instances.clear()
    monkeypatch.setattr(pyatomdb.spectrum, "CIESession", _FakeCIESession)
    arf, rmf, *_ = write_pair(tmp_path)
    r = read_response(arf, rmf)
    T, z = np.geomspace(0.5, 8.0, 5), np.linspace(0.0, 1.0, 4)
    t = build_emissivity_table(r, T_keV=T, z=z, method="auto", metallicity=0.4)
    assert t.method == "apec" and t.atomdb_version == "AtomDB 3.1.0"
    assert t.log10_T_break.shape == (0,)  # no Gaunt-factor steps for APEC
    s = _FakeCIESession.instances[-1]
    assert s.files == (str(root / "apec_line.fits"), str(root / "apec_coco.fits"))
    assert s.abundset == "AG89" and s.abund[26] == 0.4 and 1 not in s.abund and 2 not in s.abund
    assert s.responses == z.size  # the energy grid is re-set once per redshift
    direct = band_emissivity(T[2], z[1], r, method="apec")
    np.testing.assert_allclose(_ev(t, [T[2]], z[1])[0], direct, rtol=1e-9)


def test_response_with_gaps_between_bins(tmp_path):
    """Input bins that do not touch: each is integrated over its own [lo, hi]."""
    from jaxcluster.xray import BandResponse

    arf, rmf, *_ = write_pair(tmp_path)
    full = band_response(read_response(arf, rmf), ((0.5, 1.0), (1.0, 2.0)))
    keep = slice(None, None, 2)
    gappy = BandResponse(
        energ_lo_keV=full.energ_lo_keV[keep], energ_hi_keV=full.energ_hi_keV[keep],
        area_cm2=full.area_cm2[keep], bands_keV=full.bands_keV,
    )
    T, z = 2.5, 0.4
    got = band_emissivity(T, z, gappy, None, method="brems")
    lo, hi = np.asarray(gappy.energ_lo_keV), np.asarray(gappy.energ_hi_keV)
    per_bin = np.array([rest_frame_spectrum(T, [a * (1 + z), b * (1 + z)], method="brems")[0] for a, b in zip(lo, hi)])
    np.testing.assert_allclose(got, (1 + z) * per_bin @ np.asarray(gappy.area_cm2), rtol=1e-12)


def test_default_table_loads_and_evaluates_in_float32():
    # Users run without x64: the shipped table must load and evaluate in float32.
    from jaxcluster.xray import default_emissivity_table

    with jax.enable_x64(False):
        table = default_emissivity_table()
        eps = table(jnp.asarray([2.0, 5.0], dtype=jnp.float32), jnp.asarray(0.2, dtype=jnp.float32))
        assert eps.dtype == jnp.float32
        assert bool(jnp.all(jnp.isfinite(eps)) & jnp.all(eps > 0))


def test_build_tables_writes_atomically_and_never_over_the_shipped_table(tmp_path, monkeypatch, capsys):
    """No -o: the table goes to the current directory; a kill at the write leaves the old file; corrupt files are named."""
    from jaxcluster.xray.build_tables import main
    from jaxcluster.xray.emissivity import _default_file
    from tests.faults import KilledAtWrite, kill_at_write

    arf, rmf, *_ = write_pair(tmp_path)
    shipped = _default_file().read_bytes()
    monkeypatch.chdir(tmp_path)
    argv = ["--arf", str(arf), "--rmf", str(rmf), "--n-T", "4", "--n-z", "4", "--T-min", "0.5", "--T-max", "8",
            "--z-max", "1", "--method", "brems", "--no-progress"]
    assert main(argv) == 0
    out = tmp_path / "emissivity_pn_default.npz"
    first = out.read_bytes()
    assert load_emissivity_tables(out)["count_rate"].log10_eps.shape == (4, 4, 2)
    assert _default_file().read_bytes() == shipped
    with kill_at_write(monkeypatch, 1), pytest.raises(KilledAtWrite):
        main([*argv, "--n-T", "5"])
    assert out.read_bytes() == first and sorted(p.name for p in tmp_path.glob(".*tmp")) == []
    assert main(argv) == 0 and out.read_bytes() == first  # the same bits again
    capsys.readouterr()
    for broken in (first[: len(first) // 2], first[:-30], first[:200] + bytes(64) + first[264:]):
        bad = tmp_path / "bad.npz"
        bad.write_bytes(broken)
        with pytest.raises(ValueError, match="bad.npz: not a readable emissivity table file"):
            load_emissivity_tables(bad)
