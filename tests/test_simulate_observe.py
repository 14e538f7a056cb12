"""`jaxcluster simulate --mode observed` on a tiny survey: photon images, exposure and background maps read back
with astropy, per-pointing files that add up to the mosaic, the measured catalogue; the products' helpers; refusals."""

import contextlib
import io
import json
import warnings

import astropy.units as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.table import Table
from astropy.wcs import WCS

from jaxcluster.observation import products as op
from jaxcluster.observation.field import FieldSettings, observation_factor, upsample_count_rate
from jaxcluster.survey.cli import main

SEED = 5
BANDS = ("0.5-1", "1-2")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny observed survey, in-process (0.3 deg², 2 boxes, 30″ observation pixels)."""
    out = tmp_path_factory.mktemp("observe") / "out"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["--out", str(out), "--area", "0.3", "--boxes", "2", "--cell-size", "2", "--steps", "2",
                   "--no-halos", "--threshold", "3e-6", "--cr-min", "5e-4", "--seed", str(SEED), "--mode", "observed",
                   "--obs-pixel", "30", "--exposure", "20000", "--nh", "3e20", "--no-figures"])
    assert rc == 0, err.getvalue()[-3000:]
    assert "Warning" not in err.getvalue()
    return out


def test_observation_fits_units_wcs_values(run):
    path = run / "observation.fits"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["mode"] == "observed" and summary["observation"]["exposure_s"] == 20000
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # valid units and WCS, read without any warning
        counts = {b: CCDData.read(path, hdu=(f"COUNTS_{b}", 1)) for b in BANDS}
        expo = {b: CCDData.read(path, hdu=(f"EXPOSURE_{b}", 1)) for b in BANDS}
        bkg = {b: CCDData.read(path, hdu=(f"BACKGROUND_{b}", 1)) for b in BANDS}
        model = {b: CCDData.read(path, hdu=(f"MODEL_{b}", 1)) for b in BANDS}
        wcs = WCS(fits.getheader(path, ("COUNTS_0.5-1", 1)))
    assert counts["0.5-1"].unit == u.ct and expo["1-2"].unit == u.s and bkg["1-2"].unit == u.ct
    assert wcs.world_axis_physical_types == ["pos.eq.ra", "pos.eq.dec"] and wcs.wcs.cdelt[0] < 0
    n = counts["0.5-1"].data.shape
    assert n == (66, 66)  # 33 survey pixels of 0.996′ split 2 × 2 (≈ 30″)
    # the field centre is the projection's: XXL-N by default
    ra, dec = wcs.pixel_to_world_values((n[1] - 1) / 2, (n[0] - 1) / 2)
    assert (ra, dec) == pytest.approx((35.75, -4.5), abs=1e-9)
    for b in BANDS:
        c = counts[b].data
        assert np.all(c >= 0) and np.all(c == np.round(c))
        # exposure: at most the 2 × 2 pointings' 20 ks each, vignetted; zero nowhere inside the grid's field of view
        e = expo[b].data
        assert 0 < e.max() <= 4 * 20000 * (1 + 1e-6) and np.all(e >= 0)
        # Poisson: the total photons agree with the model's expectation
        lam = model[b].data.sum()
        assert abs(c.sum() - lam) < 5 * np.sqrt(lam)
        assert np.all(bkg[b].data <= model[b].data * (1 + 1e-5) + 1e-6)
    head = fits.getheader(path, ("COUNTS_1-2", 1))
    assert head["EXPOSURE"] == 20000 and head["NH"] == pytest.approx(3e20) and head["SEED"] == SEED
    assert json.loads(head["PROVJSON"])["command"] == "simulate"
    seg = fits.getdata(path, ("SEGMENTATION", 1))
    assert seg.dtype.kind == "i" and seg.max() == summary["n_detected_observed"]


def test_pointing_files_add_up_to_the_mosaic(run):
    mosaic = fits.getdata(run / "observation.fits", ("COUNTS_0.5-1", 1)).astype(np.float64)
    mosaic_bkg = fits.getdata(run / "observation.fits", ("BACKGROUND_1-2", 1)).astype(np.float64)
    files = sorted((run / "pointings").glob("lc0_p*.fits"))
    assert len(files) == 4  # 0.3 deg² (33′ side) on a 20′ grid: 2 × 2 pointings
    total, total_bkg = np.zeros_like(mosaic), np.zeros_like(mosaic)
    w_mosaic = WCS(fits.getheader(run / "observation.fits", ("COUNTS_0.5-1", 1)))
    summary = json.loads((run / "summary.json").read_text())
    for k, f in enumerate(files):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            img = CCDData.read(f, hdu="COUNTS_0.5-1")
            w = WCS(fits.getheader(f, "COUNTS_0.5-1"))
        assert img.unit == u.ct
        head = fits.getheader(f, 0)
        assert head["PNTID"] == k and head["EXPOSURE"] == 20000
        # the cutout's WCS places its pixel (0, 0) where the mosaic has it
        ra, dec = w.pixel_to_world_values(0, 0)
        x0, y0 = (float(v) for v in w_mosaic.world_to_pixel_values(ra, dec))
        x0, y0 = round(x0), round(y0)
        h, wd = img.data.shape
        total[y0:y0 + h, x0:x0 + wd] += img.data
        total_bkg[y0:y0 + h, x0:x0 + wd] += fits.getdata(f, "BACKGROUND_1-2")
        assert summary["pointings"][k]["file"] == f"pointings/{f.name}"
    np.testing.assert_array_equal(total, mosaic)  # binomial thinning: every photon in exactly one pointing
    np.testing.assert_allclose(total_bkg, mosaic_bkg, rtol=1e-4, atol=1e-6)


def test_observed_catalogue_columns_and_positions(run):
    cat = Table.read(run / "observed_catalogue.ecsv")
    summary = json.loads((run / "summary.json").read_text())
    assert len(cat) == summary["n_detected_observed"] > 0
    assert cat["cr_0.5_2"].unit == u.ct / u.s and cat["extent"].unit == u.arcsec and cat["ra"].unit == u.deg
    assert np.all(cat["cr_0.5_2_err"] > 0) and np.all(np.isfinite(cat["cr_0.5_2_err"]))
    np.testing.assert_allclose(cat["cr_0.5_2"], cat["cr_0.5_1"] + cat["cr_1_2"], rtol=1e-12)
    np.testing.assert_allclose(cat["cr_0.5_2_err"], np.hypot(cat["cr_0.5_1_err"], cat["cr_1_2_err"]), rtol=1e-12)
    assert np.all(cat["c1"] == (cat["source_class"] == 1)) and summary["n_c1"] == int(np.sum(cat["c1"]))
    assert np.all((cat["det_lh"] >= 0) & (cat["ext_lh"] >= 0))
    # points held in a blend fit (at most 1 + n_peaks, 3 by default; observation.blends)
    assert np.all((cat["n_blended"] >= 0) & (cat["n_blended"] <= 3))
    wcs = WCS(fits.getheader(run / "observation.fits", ("COUNTS_0.5-1", 1)))
    sky = wcs.pixel_to_world(cat["x_pix"], cat["y_pix"])
    np.testing.assert_allclose(sky.ra.deg, cat["ra"], atol=1e-9)
    # the brightest detection sits on a photon excess: more counts within 2 pixels than the background
    k = int(np.argmax(cat["net_counts_0.5_1"] + cat["net_counts_1_2"]))
    counts = sum(fits.getdata(run / "observation.fits", (f"COUNTS_{b}", 1)) for b in BANDS)
    bkg = sum(fits.getdata(run / "observation.fits", (f"BACKGROUND_{b}", 1)) for b in BANDS)
    x, y = round(cat["x_pix"][k]), round(cat["y_pix"][k])
    assert counts[y - 2:y + 3, x - 2:x + 3].sum() > bkg[y - 2:y + 3, x - 2:x + 3].sum() + 10
    assert cat.meta["provenance"]["seed"] == SEED and cat.meta["observation"]["agn"] == "random"
    assert not (run / "observation.png").exists()  # --no-figures


def test_observation_figure(tmp_path):
    from jaxcluster.observation.figures import observation_figure

    w_maps = WCS(op.image_wcs_header((8, 8), 1.0, (35.75, -4.5)))
    w_obs = WCS(op.image_wcs_header((32, 32), 0.25, (35.75, -4.5)))
    counts = np.asarray(jax.random.poisson(jax.random.key(0), 2.0, (32, 32)), np.float64)
    ra, dec = w_obs.pixel_to_world_values(np.array([5.0, 16.0, 20.0]), np.array([5.0, 16.0, 8.0]))
    observation_figure(tmp_path / "observation.png", noiseless=np.full((8, 8), 1e-4), counts=counts, wcs_maps=w_maps,
                       wcs_obs=w_obs, ra=ra, dec=dec, source_class=np.array([0, 1, 2]), title="test")
    assert (tmp_path / "observation.png").stat().st_size > 20_000
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize("option, value", [("--exposure", "-1"), ("--exposure", "nan"), ("--nh", "-1e20"),
                                           ("--obs-pixel", "0")])
def test_bad_observation_options_are_refused_by_name(tmp_path, option, value, capsys):
    rc = main(["--out", str(tmp_path / "x"), "--mode", "observed", f"{option}={value}"])
    assert rc == 2
    assert option in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_upsample_conserves_each_pixel_and_factor():
    cr = jax.random.uniform(jax.random.key(1), (5, 4, 2)) * jnp.asarray([1.0, 2.0])[None, None, :]
    cr = cr.at[2, 2].set(0.0)
    fine = upsample_count_rate(cr, 3)
    assert fine.shape == (15, 12, 2) and bool(jnp.all(fine >= 0))
    np.testing.assert_allclose(fine.reshape(5, 3, 4, 3, 2).sum(axis=(1, 3)), cr, rtol=1e-12, atol=1e-15)
    assert observation_factor(0.996, 0.996 * 60 / 8) == 8
    with pytest.raises(ValueError, match="pixel_arcsec"):
        observation_factor(1.0, 7.0)
    with pytest.raises(ValueError, match="pixel_arcsec"):
        FieldSettings(pixel_arcsec=-1.0)


def test_split_by_pointing_is_exact_and_unbiased():
    key = jax.random.key(2)
    shape = (1, 6, 6)
    vig = jnp.stack([jnp.full(shape, 1.0), jnp.full(shape, 3.0)])  # second pointing: 3/4 of the exposure
    plain = jnp.stack([jnp.full(shape[1:], 1.0), jnp.full(shape[1:], 1.0)])
    model = jnp.full(shape, 40.0)
    particle = jnp.full(shape, 8.0)  # particles share by unvignetted exposure (1/2 each)
    counts = jax.random.poisson(key, model).astype(jnp.float64)
    parts, mu = op.split_counts_by_pointing(jax.random.key(3), counts, model, particle, vig, plain)
    np.testing.assert_array_equal(parts.sum(0), counts)
    np.testing.assert_allclose(mu[0], 32 * 0.25 + 8 * 0.5)
    np.testing.assert_allclose(mu.sum(0), model)
    frac = float(parts[0].sum() / counts.sum())  # expected 12/40
    assert abs(frac - 0.3) < 4 * np.sqrt(0.3 * 0.7 / float(counts.sum()))


def test_wcs_header_refuses_bad_pixel():
    with pytest.raises(ValueError, match="pixel_arcmin"):
        op.image_wcs_header((4, 4), 0.0, (10.0, 0.0))
