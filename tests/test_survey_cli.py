"""`jaxcluster simulate` end to end on a tiny survey, and its input errors."""

import json
import subprocess
import sys

import jax
import numpy as np
from astropy.io import fits
from astropy.table import Table

from jaxcluster.baryons import ExtendedLDL, save_eldl
from jaxcluster.survey.cli import main


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "jaxcluster", "simulate", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_simulate_writes_maps_catalogue_xod_and_figures(tmp_path, capsys):
    # near-identity eLDL weights (independent of the shipped ones), coarse cells, a threshold ~3× the median pixel
    weights = tmp_path / "eldl.eqx"
    save_eldl(weights, ExtendedLDL.init(jax.random.key(0)), {})
    out = tmp_path / "out"
    # in-process (a subprocess would pay the jax import and startup again; test_simulate_bad_input runs one)
    rc = main(["--out", str(out), "--area", "1", "--cell-size", "2", "--pixel", "6", "--steps", "2",
               "--threshold", "3e-6", "--cr-min", "5e-4", "--eldl", str(weights), "--seed", "3"])
    err = capsys.readouterr().err
    assert rc == 0, err[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_boxes"] == 12 and summary["mesh_per_box"] == [12, 12, 43] and summary["n_pix"] == 10
    with fits.open(out / "maps.fits") as hdul:
        names = [h.name for h in hdul[1:]]
        assert names == ["CR_0.5-1", "CR_1-2", "COMPTON_Y", "RHO_OVER_RHO_C", "MASS", "SEGMENTATION"]
        cr = hdul["CR_0.5-1"].data + hdul["CR_1-2"].data
        seg = hdul["SEGMENTATION"].data
        assert cr.shape == seg.shape == (12, 10, 10) and hdul[1].header["CTYPE1"] == "RA---TAN"
        assert abs(hdul[1].header["BOXZ0"] - summary["box_redshifts"][0]) < 1e-9
    cat = Table.read(out / "catalogue.ecsv")
    assert len(cat) == summary["n_detected"] > 0
    # the catalogue's count rates are the map's, summed in the segments
    for row in cat[:5]:
        b = int(row["box"])
        labels = np.unique(seg[b][seg[b] > 0])
        assert np.any(np.isclose([cr[b][seg[b] == lab].sum() for lab in labels], row["cr_0.5_2"], rtol=1e-5))
    xod = np.load(out / "xod.npz")
    assert xod["xod"].sum() == summary["xod_total"] <= int(np.sum(cat["selected"]))
    for png in ("maps.png", "xod.png", "dndz.png"):
        assert (out / png).stat().st_size > 10_000
    assert "boxes" in err  # tqdm progress bar


def test_simulate_bad_input_is_one_clear_line(tmp_path):
    res = _cli("--out", str(tmp_path), "--omega-m", "0.7")
    assert res.returncode == 2 and "Omega_m" in res.stderr and "[0.1, 0.5]" in res.stderr and "Traceback" not in res.stderr
