"""`jaxcluster simulate` end to end on a tiny survey: every file read back with astropy; its input errors."""

import contextlib
import io
import json
import subprocess
import sys
import warnings

import astropy.units as u
import jax
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.table import Table
from astropy.wcs import WCS

from jaxcluster.baryons import ExtendedLDL, save_eldl
from jaxcluster.params import ThetaSim
from jaxcluster.survey.cli import _parser, main
from jaxcluster.survey.products import MAP_UNITS

SEED = 3
THETA = {"Omega_m": 0.3, "sigma_8": 0.8, "A_SN1": 1.0, "A_SN2": 1.0, "A_AGN1": 1.0, "A_AGN2": 1.0}


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "jaxcluster", "simulate", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny survey, in-process (a subprocess would pay the jax import and startup again)."""
    tmp = tmp_path_factory.mktemp("simulate")
    # near-identity eLDL weights (independent of the shipped ones), coarse cells, a threshold ~3× the median pixel
    weights = tmp / "eldl.eqx"
    save_eldl(weights, ExtendedLDL.init(jax.random.key(0)), {})
    out = tmp / "out"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["--out", str(out), "--area", "1", "--cell-size", "2", "--pixel", "6", "--steps", "2",
                   "--threshold", "3e-6", "--cr-min", "5e-4", "--eldl", str(weights), "--seed", str(SEED),
                   "--ra", "150.1", "--dec", "2.2"])
    assert rc == 0, err.getvalue()[-3000:]
    assert "boxes" in err.getvalue()  # tqdm progress bar
    assert "Warning" not in err.getvalue()  # e.g. astropy truncating a FITS card
    return out


def test_simulate_writes_maps_catalogue_xod_and_figures(run):
    out = run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_boxes"] == 12 and summary["mesh_per_box"] == [12, 12, 43] and summary["n_pix"] == 10
    with fits.open(out / "maps.fits") as hdul:
        names = [h.name for h in hdul[1:]]
        assert names == ["CR_0.5-1", "CR_1-2", "COMPTON_Y", "RHO_OVER_RHO_C", "MASS", "SEGMENTATION"]
        cr = hdul["CR_0.5-1"].data + hdul["CR_1-2"].data
        seg = hdul["SEGMENTATION"].data
        assert cr.shape == seg.shape == (12, 10, 10) and hdul[1].header["CTYPE1"] == "RA---TAN"
        assert abs(hdul[1].header["BOXZ0"] - summary["box_redshifts"][0]) < 1e-6
    cat = Table.read(out / "catalogue.ecsv")
    assert len(cat) == summary["n_detected"] > 0
    # the catalogue's count rates are the map's, summed in the segments
    for row in cat[:5]:
        b = int(row["box"])
        labels = np.unique(seg[b][seg[b] > 0])
        assert np.any(np.isclose([cr[b][seg[b] == lab].sum() for lab in labels], row["cr_0.5_2"], rtol=1e-5))
    xod = np.load(out / "xod.npz")
    assert xod["xod"].sum() == summary["xod_total"] <= int(np.sum(cat["selected"]))
    for png in ("maps.png", "lightcone.png", "xod.png", "dndz.png"):
        assert (out / png).stat().st_size > 10_000
    assert not list(out.glob(".*.tmp*"))  # atomic writes leave no temporary files


def test_maps_fits_units_wcs_and_provenance(run):
    path = run / "maps.fits"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a valid 3-D WCS, read without any warning
        for name, (unit, _) in MAP_UNITS.items():
            header = fits.getheader(path, name)
            assert u.Unit(header["BUNIT"], format="fits") == u.Unit(unit or "")
            ccd = CCDData.read(path, hdu=name)
            assert ccd.unit == u.Unit(unit or "") and ccd.data.shape == (12, 10, 10)
            wcs = WCS(header)
            assert wcs.naxis == 3 and wcs.wcs.ctype[2] == "BOX"
            assert wcs.world_axis_physical_types[:2] == ["pos.eq.ra", "pos.eq.dec"]
    assert CCDData.read(path, hdu="CR_0.5-1").unit == u.ct / u.s
    assert CCDData.read(path, hdu="MASS").unit == u.Msun
    primary = fits.getheader(path, 0)
    for header in (primary, fits.getheader(path, "MASS")):
        assert header["SEED"] == SEED and header["HUBBLE"] == pytest.approx(0.6711)
        assert header["CREATOR"].startswith("jaxcluster ") and header["DATE"][:2] == "20"
        assert [header[f"TH_{i}"] for i in range(6)] == pytest.approx(list(THETA.values()))
        rec = json.loads(header["PROVJSON"])
        assert rec["theta"] == THETA and rec["seed"] == SEED and rec["command"] == "simulate"
    h = fits.getheader(path, "CR_1-2")
    assert (h["CRVAL1"], h["CRVAL2"]) == (150.1, 2.2) and h["CDELT1"] < 0
    assert (h["CTYPE3"], h["CRPIX3"], h["CRVAL3"], h["CDELT3"]) == ("BOX", 1.0, 0.0, 1.0)
    # the MASS map is physical M☉: total of the h⁻¹ M☉ columns / h is positive and finite
    mass = CCDData.read(path, hdu="MASS")
    assert np.all(np.isfinite(mass.data)) and mass.data.sum() > 0


def test_catalogue_units_sky_positions_and_edges(run):
    cat = Table.read(run / "catalogue.ecsv")
    assert cat["cr_0.5_2"].unit == u.ct / u.s and cat["ra"].unit == u.deg and cat["dec"].unit == u.deg
    assert cat["m500c"].unit == u.Msun and cat["area_arcmin2"].unit == u.arcmin**2
    for name in cat.colnames:  # every unit is one astropy knows: the columns become Quantities
        if cat[name].unit is not None:
            assert not isinstance(cat[name].unit, u.UnrecognizedUnit), name
            assert isinstance(u.Quantity(cat[name]), u.Quantity)
    rec = cat.meta["provenance"]
    assert rec["seed"] == SEED and rec["theta"] == THETA and rec["software"].startswith("jaxcluster")
    assert cat.meta["hubble_h"] == pytest.approx(0.6711) and "halo_matching" in cat.meta
    wcs = WCS(fits.getheader(run / "maps.fits", "CR_0.5-1"))
    sky = wcs.celestial.pixel_to_world(cat["x_pix"], cat["y_pix"])
    np.testing.assert_allclose(sky.ra.deg, cat["ra"], atol=1e-9)
    np.testing.assert_allclose(sky.dec.deg, cat["dec"], atol=1e-9)
    assert np.all(np.abs(cat["dec"] - 2.2) < 0.6) and np.all(np.abs(cat["ra"] - 150.1) < 0.6)
    with fits.open(run / "maps.fits") as hdul:
        cr = hdul["CR_0.5-1"].data.astype(np.float64) + hdul["CR_1-2"].data
        seg = hdul["SEGMENTATION"].data
    ys, xs = np.mgrid[0:10, 0:10]
    for row in cat:  # (x_pix, y_pix): the flux-weighted centroid of the source's segment on the FITS maps
        plane = int(row["lightcone"]) * 12 + int(row["box"])
        m = seg[plane] == row["label"]
        assert m.sum() == row["area_pix"]
        w = cr[plane][m]
        assert np.average(xs[m], weights=w) == pytest.approx(row["x_pix"], abs=1e-4)
        assert np.average(ys[m], weights=w) == pytest.approx(row["y_pix"], abs=1e-4)
        on_border = bool(np.any(m[0]) or np.any(m[-1]) or np.any(m[:, 0]) or np.any(m[:, -1]))
        assert row["edge"] or not on_border
    assert np.all(cat["m500c"].mask | (cat["m500c"] > 0))


def test_summary_and_xod_npz(run):
    from jaxcluster.inference.observed import read_xod

    summary = json.loads((run / "summary.json").read_text())
    assert summary["theta"] == THETA and summary["provenance"]["seed"] == SEED
    assert summary["provenance"]["theta"] == THETA and "date_utc" in summary["provenance"]
    for key, unit in summary["units"].items():
        assert key in summary
        u.Unit(unit)
    assert summary["units"]["cr_min"] == "ct / s" and summary["hubble_h"] == pytest.approx(0.6711)
    assert {"lightcone.png", "maps.fits"} <= set(summary["outputs"])
    with np.load(run / "xod.npz") as f:
        assert {"xod", "xod_soft", "cr_edges", "hr_edges", "z_edges", "cr_min", "theta", "theta_names",
                "area_deg2", "provenance"} <= set(f.files)
        assert f["theta"].dtype == np.float64 and f["theta"].shape == (6,)
        assert json.loads(str(f["provenance"]))["seed"] == SEED
        xod = f["xod"]
    obs = read_xod(run / "xod.npz")
    np.testing.assert_array_equal(obs.xod, xod)
    assert obs.names == ThetaSim.names and list(obs.truth) == list(THETA.values())
    assert obs.area_deg2 == 1.0 and set(obs.edges) == {"cr", "hr", "z"} and len(obs.edges["z"]) == xod.shape[2] + 1


def test_help_shows_every_default():
    parser = _parser()
    text = " ".join(parser.format_help().split())  # unwrapped
    for opt in ("--omega-m", "--sigma-8", "--a-sn1", "--a-sn2", "--a-agn1", "--a-agn2", "--ra", "--dec", "--pixel"):
        assert opt in text
    assert "(default: None)" not in text and "(default: False)" not in text
    valued = [a for a in parser._actions  # `is`: the seed's default 0 == False
              if a.option_strings and a.default is not None and a.default is not False and a.default != "==SUPPRESS=="]
    assert text.count("(default:") == len(valued)
    assert "(default: 35.75)" in text and "(default: 0.02)" in text


def test_bad_field_centre_is_one_clear_line(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--dec", "95"]) == 2
    err = capsys.readouterr().err
    assert "--dec" in err and "(-90, 90)" in err and "Traceback" not in err


def test_simulate_bad_input_is_one_clear_line(tmp_path):
    res = _cli("--out", str(tmp_path), "--omega-m", "0.7")
    assert res.returncode == 2 and "Omega_m" in res.stderr and "[0.1, 0.5]" in res.stderr and "Traceback" not in res.stderr


def test_rerun_replaces_out_whole_and_a_kill_leaves_the_old_run(run, tmp_path, monkeypatch):
    """--out holds one complete run: a rerun replaces it whole, a kill while writing leaves the previous one."""
    import shutil

    from jaxcluster.survey import products

    out = tmp_path / "out"
    shutil.copytree(run, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    args = ["--out", str(out), "--area", "1", "--cell-size", "2", "--pixel", "6", "--steps", "2", "--threshold",
            "3e-6", "--cr-min", "5e-4", "--boxes", "3", "--no-figures", "--no-halos", "--seed", "9"]

    def killed(*a, **kw):
        raise KeyboardInterrupt  # a kill between the catalogue and the XOD

    with monkeypatch.context() as m:
        m.setattr(products, "write_xod", killed)
        with pytest.raises(KeyboardInterrupt):
            main(args)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # untouched: the old run, complete
    assert not list(tmp_path.glob(".out.*"))  # no staging folder left
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == 9 and summary["n_boxes"] == 3
    assert sorted(p.name for p in out.iterdir()) == ["catalogue.ecsv", "maps.fits", "summary.json", "xod.npz"]
    # a folder holding anything else is refused before any work, naming the file
    (out / "notes.txt").write_text("mine")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(args) == 2
    assert "notes.txt" in err.getvalue() and (out / "notes.txt").read_text() == "mine"


def test_a_survey_too_large_for_memory_is_refused_at_once(tmp_path, monkeypatch):
    from jaxcluster.engines import memory

    monkeypatch.setattr(memory, "estimate_survey_bytes", lambda *a, **k: 10**15)  # a petabyte
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["--out", str(tmp_path / "out"), "--area", "1", "--cell-size", "2", "--pixel", "6"]) == 2
    assert "the survey of 1 deg²" in err.getvalue() and "--no-memory-check" in err.getvalue()
    assert not (tmp_path / "out").exists()
