"""Cutouts: geometry (a point mass lands where it is), analytic slab values, splits by cluster, HDF5 roundtrip."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcluster.baryons.train import mean_electron_density
from jaxcluster.cosmology import RHO_CRIT0_MSUN_H2_MPC3, Cosmology
from jaxcluster.fields import (
    CHANNELS,
    CutoutConfig,
    bremsstrahlung_emissivity,
    denormalise,
    fit_normalisation,
    halo_cutouts,
    load_cutouts,
    make_cutout_dataset,
    normalise,
    save_cutouts,
    split_by_cluster,
)
from jaxcluster.io.snapshots import MPC_CM
from jaxcluster.survey.maps import ME_C2_KEV, SIGMA_T_CM2

N, BOX = 16, 16.0  # cell 1 h⁻¹ Mpc
COSMO = Cosmology(Omega_m=0.3, sigma_8=0.8)
RHO_MEAN = 0.3 * RHO_CRIT0_MSUN_H2_MPC3


def _centroid(img, pixel):
    n = img.shape[0]
    c = (np.arange(n) - n / 2 + 0.5) * pixel  # pixel centres relative to the cutout centre
    tot = img.sum()
    return np.array([(img.sum(1) * c).sum() / tot, (img.sum(0) * c).sum() / tot])


def test_point_mass_is_centred_and_conserved():
    """A single dense cell: each projection's centroid is the cell's offset from the centre, its flux the cell's mass."""
    rho = np.zeros((N, N, N), np.float32)
    cell_idx = np.array([0, 5, 15])  # at the box edge and corner: the cube wraps
    rho[tuple(cell_idx)] = RHO_MEAN * 1000.0
    ones = np.ones((N, N, N), np.float32)
    offset = np.array([0.3, -0.2, 0.1])
    centres = np.stack([cell_idx + offset, cell_idx + offset + BOX])  # two periodic images of one centre
    config = CutoutConfig(n_pix=8, pixel_size=0.5, depth=4.0)
    cut = np.asarray(halo_cutouts(centres, jnp.asarray(rho), ones * 1e-4, ones, BOX, 0.1, COSMO, config))
    assert cut.shape == (2, 3, len(CHANNELS), 8, 8) and cut.dtype == np.float32
    np.testing.assert_allclose(cut[0], cut[1], rtol=1e-5, atol=1e-12)
    dm = cut[0, :, CHANNELS.index("dm")]  # the background ρ is 0
    for ax in range(3):
        u, v = [a for a in range(3) if a != ax]
        # Cell centre minus halo centre, in the map's (u, v) axes; round-off of float32 pixel sums.
        np.testing.assert_allclose(_centroid(dm[ax], 0.5), -offset[[u, v]], atol=1e-5)
        # Σ pixels × pixel area = cell mass / (ρ̄ × depth): the cell is wholly inside the slab.
        np.testing.assert_allclose(dm[ax].sum() * 0.25, 1000.0 * 1.0 / 4.0, rtol=1e-5)


def test_uniform_slab_values():
    """Uniform gas: y, X-ray SB and S_gas equal their closed forms for a slab of the given depth."""
    n_e, T, z = 2e-4, 3.0, 0.2
    ones = np.ones((N, N, N), np.float32)
    config = CutoutConfig(n_pix=6, pixel_size=0.7, depth=5.3)  # depth cuts cells: fractional weights
    cut = np.asarray(halo_cutouts(np.array([[3.3, 8.1, 12.7]]), ones * RHO_MEAN, ones * n_e, ones * T,
                                  BOX, z, COSMO, config, axes=(2,)))[0, 0]
    h = float(COSMO.h)
    dl_cm = 5.3 / h / (1 + z) * MPC_CM  # physical path
    n_phys = n_e * (1 + z) ** 3
    y = SIGMA_T_CM2 / ME_C2_KEV * n_phys * T * dl_cm
    np.testing.assert_allclose(cut[0], y, rtol=1e-5)
    np.testing.assert_allclose(cut[1], float(bremsstrahlung_emissivity(n_phys, T)) * dl_cm, rtol=1e-5)
    np.testing.assert_allclose(cut[2], n_e / mean_electron_density(COSMO), rtol=1e-5)
    np.testing.assert_allclose(cut[3], 1.0, rtol=1e-5)


def test_bremsstrahlung_hand_value():
    """l = 1.4e-27 g_ff √T_K n_e Σ Z² n_i with Σ Z² n_i = n_H + 4 n_He for X_H = 0.76 (n_e = n_H + 2 n_He)."""
    n_e, T_keV = 1e-3, 5.0
    n_H = n_e / (1 + 2 * 0.24 / (4 * 0.76))
    n_He = n_H * 0.24 / (4 * 0.76)
    T_K = T_keV / 8.617333262e-8
    expected = 1.4e-27 * 1.2 * math.sqrt(T_K) * n_e * (n_H + 4 * n_He)
    np.testing.assert_allclose(float(bremsstrahlung_emissivity(jnp.float64(n_e), 5.0)), expected, rtol=1e-12)


def test_bad_geometry_raises():
    ones = jnp.ones((N, N, N), jnp.float32)
    with pytest.raises(ValueError, match="n_pix"):
        CutoutConfig(n_pix=2)
    with pytest.raises(ValueError, match="box_size"):
        halo_cutouts(np.zeros((1, 3)), ones, ones, ones, BOX, 0.1, COSMO, CutoutConfig(n_pix=40, pixel_size=0.5))
    with pytest.raises(ValueError, match="axes"):
        halo_cutouts(np.zeros((1, 3)), ones, ones, ones, BOX, 0.1, COSMO, CutoutConfig(8, 0.5), axes=(3,))


@settings(max_examples=30, deadline=None)
@given(ids=st.lists(st.integers(0, 40), min_size=1, max_size=120), seed=st.integers(0, 2**31 - 1))
def test_split_never_separates_a_cluster(ids, seed):
    ids = np.asarray(ids)
    split = split_by_cluster(ids, seed=seed)
    for i in np.unique(ids):
        assert np.unique(split[ids == i]).size == 1
    # Deterministic in (ids, seed), independent of the order of the cutouts.
    perm = np.random.default_rng(0).permutation(ids.size)
    np.testing.assert_array_equal(split_by_cluster(ids[perm], seed=seed), split[perm])


def test_split_fractions():
    ids = np.repeat(np.arange(200), 3)
    counts = np.bincount(split_by_cluster(ids, (0.7, 0.2, 0.1), seed=3), minlength=3)
    np.testing.assert_array_equal(counts, [420, 120, 60])
    with pytest.raises(ValueError, match="fractions"):
        split_by_cluster(ids, (0.7, 0.2, 0.2))


def test_normalisation_and_hdf5_roundtrip(tmp_path):
    maps = np.exp(5 * np.random.default_rng(0).normal(size=(12, 4, 8, 8))).astype(np.float32)
    maps[0, 1, 0, 0] = 0.0  # a zero in a log channel is clipped to the floor
    ids = np.repeat(np.arange(4), 3)
    split = split_by_cluster(ids, (0.5, 0.25, 0.25), seed=1)
    norm = fit_normalisation(maps[split == 0], log=(True, True, False, True))
    t = np.asarray(normalise(maps[split == 0], norm))
    assert t.min() == pytest.approx(0.0, abs=1e-6) and t.max() == pytest.approx(1.0, abs=1e-6)
    back = np.asarray(denormalise(normalise(maps, norm), norm))
    keep = maps >= np.asarray(norm.floor)[None, :, None, None]
    np.testing.assert_allclose(back[keep], maps[keep], rtol=2e-4)
    path = tmp_path / "c.h5"
    save_cutouts(path, maps, cluster_id=ids, axis=np.tile([0, 1, 2], 4), split=split,
                 halo={"M200c": np.full(12, 1e14)}, normalisation=norm, pixel_size=0.5, depth=4.0,
                 metadata={"synthetic": True})
    s = load_cutouts(path)
    np.testing.assert_array_equal(s.maps, maps)
    np.testing.assert_array_equal(s.split, split)
    assert s.channels == CHANNELS and s.metadata["synthetic"] and s.normalisation.log == (True, True, False, True)
    np.testing.assert_allclose(s.normalised("train"), t, rtol=1e-6)
    assert not (tmp_path / "c.h5.tmp").exists()


def test_make_cutout_dataset_from_stored_boxes(tmp_path):
    """Two tiny stored boxes → one set: every halo above the cut, 3 projections each, one split per cluster."""
    from jaxcluster.io.runs import save_run
    from jaxcluster.nbody.config import PMConfig
    from jaxcluster.params import ThetaSim

    n, box = 8, 8.0
    rng = np.random.default_rng(0)
    for b in range(2):
        M = np.array([5e13, 2e13, 5e12, 0.0])
        halo = {"pos": rng.uniform(0, box, (4, 3)), "vel": np.zeros((4, 3)), "M200c": M, "R200c": M ** (1 / 3) / 4e4,
                "M500c": 0.7 * M, "R500c": M ** (1 / 3) / 6e4, "M200m": 1.2 * M, "R200m": M ** (1 / 3) / 3e4,
                "n200c": np.full(4, 100), "offset": np.zeros(4), "infall": np.zeros(4),
                "valid": np.array([True, True, True, False])}
        fields = {"rho_dm": rng.uniform(0.5, 2.0, (n, n, n)).astype(np.float32) * RHO_MEAN,
                  "n_e_cm3": np.full((n, n, n), 2e-7, np.float32), "T_keV": np.full((n, n, n), 1e-3, np.float32)}
        (tmp_path / f"CV_{b}").mkdir()
        save_run(tmp_path / f"CV_{b}" / "z0.100.h5", pos=np.zeros((n**3, 3)), p=np.zeros((n**3, 3)), theta=ThetaSim.fiducial(),
                 z=0.1, config=PMConfig((box,) * 3, (n,) * 3),
                 fields=fields | {f"halo_{k}": v for k, v in halo.items()})
    out = tmp_path / "set.h5"
    s = make_cutout_dataset(out, [tmp_path], config=CutoutConfig(n_pix=4, pixel_size=1.0), min_mass=1e13,
                            fractions=(0.5, 0.5, 0.0))
    assert s.maps.shape == (2 * 2 * 3, 4, 4, 4) and s.maps.dtype == np.float32
    assert s.metadata["synthetic"] and len(np.unique(s.cluster_id)) == 4
    np.testing.assert_array_equal(np.bincount(s.split, minlength=3), [6, 6, 0])
    for i in np.unique(s.cluster_id):
        assert np.unique(s.split[s.cluster_id == i]).size == 1 and np.sum(s.cluster_id == i) == 3
    assert np.all(s.halo["M200c"] >= 1e13)
    np.testing.assert_allclose(s.maps[:, 2], 2e-7 / mean_electron_density(Cosmology.from_theta(ThetaSim.fiducial())),
                               rtol=1e-5)


def _stored_boxes(tmp_path, n_boxes):
    """n_boxes tiny stored boxes (save_run) with 3 valid halos each, 2 above 1e13."""
    from jaxcluster.io.runs import save_run
    from jaxcluster.nbody.config import PMConfig
    from jaxcluster.params import ThetaSim

    n, box = 8, 8.0
    rng = np.random.default_rng(0)
    for b in range(n_boxes):
        M = np.array([5e13, 2e13, 5e12, 0.0])
        halo = {"pos": rng.uniform(0, box, (4, 3)), "vel": np.zeros((4, 3)), "M200c": M, "R200c": M ** (1 / 3) / 4e4,
                "M500c": 0.7 * M, "R500c": M ** (1 / 3) / 6e4, "M200m": 1.2 * M, "R200m": M ** (1 / 3) / 3e4,
                "n200c": np.full(4, 100), "offset": np.zeros(4), "infall": np.zeros(4),
                "valid": np.array([True, True, True, False])}
        fields = {"rho_dm": rng.uniform(0.5, 2.0, (n, n, n)).astype(np.float32) * RHO_MEAN,
                  "n_e_cm3": rng.uniform(1e-7, 3e-7, (n, n, n)).astype(np.float32),
                  "T_keV": np.full((n, n, n), 1e-3, np.float32)}
        (tmp_path / f"CV_{b}").mkdir()
        save_run(tmp_path / f"CV_{b}" / "z0.100.h5", pos=np.zeros((n**3, 3)), p=np.zeros((n**3, 3)),
                 theta=ThetaSim.fiducial(), z=0.1, config=PMConfig((box,) * 3, (n,) * 3),
                 fields=fields | {f"halo_{k}": v for k, v in halo.items()})


def test_cutout_build_resumes_after_a_kill(tmp_path, monkeypatch):
    """A build stopped after two boxes resumes with the other three only, and equals an uninterrupted build bit for bit."""
    import jaxcluster.fields.cutouts as cutouts_mod
    from jaxcluster.io.chunks import ChunkStore

    data = tmp_path / "data"
    data.mkdir()
    _stored_boxes(data, 5)
    kw = dict(config=CutoutConfig(n_pix=4, pixel_size=1.0), min_mass=1e13, fractions=(0.4, 0.3, 0.3), seed=3)
    ref = make_cutout_dataset(tmp_path / "ref.h5", [data], **kw)

    real_cut, calls = cutouts_mod.halo_cutouts, []

    def dies_on_third_box(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")  # what an interrupted build sees
        return real_cut(*a, **k)

    out = tmp_path / "killed.h5"
    monkeypatch.setattr(cutouts_mod, "halo_cutouts", dies_on_third_box)
    with pytest.raises(KeyboardInterrupt):
        make_cutout_dataset(out, [data], **kw)
    parts = tmp_path / "killed.h5.parts"
    assert sorted(p.name for p in parts.glob("chunk_*.h5")) == ["chunk_000000.h5", "chunk_000001.h5"] and not out.exists()

    monkeypatch.setattr(cutouts_mod, "halo_cutouts", real_cut)
    written, real_write = [], ChunkStore.publish
    monkeypatch.setattr(ChunkStore, "publish",
                        lambda self, c, *a: (written.append(self.chunk_path(c).name), real_write(self, c, *a))[1])
    got = make_cutout_dataset(out, [data], **kw)
    assert written == ["chunk_000002.h5", "chunk_000003.h5", "chunk_000004.h5"] and not parts.exists()
    for field in ("maps", "cluster_id", "axis", "split"):
        np.testing.assert_array_equal(getattr(got, field), getattr(ref, field))
    for k in ("lo", "hi", "floor"):
        np.testing.assert_array_equal(np.asarray(getattr(got.normalisation, k)), np.asarray(getattr(ref.normalisation, k)))
    # splits by cluster: every projection of a halo in one split, every split used
    assert got.maps.shape[0] == 5 * 2 * 3 and set(np.unique(got.split)) == {0, 1, 2}
    for i in np.unique(got.cluster_id):
        assert np.unique(got.split[got.cluster_id == i]).size == 1 and np.sum(got.cluster_id == i) == 3
    # the normalisation is fitted on the training split only
    t = np.asarray(normalise(got.maps[got.split == 0], got.normalisation))
    assert t.min() == pytest.approx(0.0, abs=1e-5) and t.max() == pytest.approx(1.0, abs=1e-5)  # float32 log10
    # a finished set is read back, not rebuilt; other settings are refused
    written.clear()
    make_cutout_dataset(out, [data], **kw)
    assert written == []
    with pytest.raises(ValueError, match="other settings"):
        make_cutout_dataset(out, [data], **(kw | {"seed": 4}))
