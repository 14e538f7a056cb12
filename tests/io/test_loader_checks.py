"""Loaders refuse corrupted or mismatched files, naming the file and the problem (issue #26 deliverable 3)."""

import json

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcluster.fields.cutouts import CutoutNormalisation, load_cutouts, save_cutouts
from jaxcluster.inference.compressor import (
    Compressor,
    Normaliser,
    ResNetCompressor,
    load_compressor,
    save_compressor,
)
from jaxcluster.io.runs import load_run, save_run
from jaxcluster.nbody.config import PMConfig
from jaxcluster.params import ThetaSim


@pytest.fixture
def run_file(tmp_path):
    config = PMConfig(8.0, 2)
    pos = np.random.default_rng(0).uniform(0, 8, (8, 3))
    path = tmp_path / "run.h5"
    save_run(path, pos=pos, p=np.zeros((8, 3)), fields={"T_keV": np.ones((2, 2, 2))}, theta=ThetaSim(), z=0.1,
             config=config)
    return path


def _edit(path, fn):
    with h5py.File(path, "a") as f:
        fn(f)


def _replace(name, data):
    def fn(f):
        del f[name]
        f[name] = data
    return fn


RUN_CASES = {
    "NaN positions": (_replace("particles/pos", np.full((8, 3), np.nan)), "non-finite"),
    "integer momenta": (_replace("particles/p", np.zeros((8, 3), np.int64)), "dtype int64"),
    "wrong particle count": (_replace("particles/pos", np.zeros((7, 3))), r"shape \(7, 3\)"),
    "NaN field": (_replace("fields/T_keV", np.full((2, 2, 2), np.nan)), "fields/T_keV"),
    "negative mesh": (lambda f: f["config"].attrs.__setitem__("mesh_shape", [-2, -2, -2]), "mesh_shape"),
    "bad metadata": (lambda f: f.attrs.__setitem__("metadata_json", "{oops"), "metadata_json"),
    "NaN redshift": (lambda f: f.attrs.__setitem__("redshift", np.nan), "redshift"),
    "theta outside prior": (_replace("theta", np.array([0.9, 0.8, 1, 1, 1, 1.0])), "Omega_m"),
}


@pytest.mark.parametrize("case", sorted(RUN_CASES))
def test_load_run_refuses(run_file, case):
    fn, needle = RUN_CASES[case]
    if case == "theta outside prior":
        names = None

        def fn(f, _old=fn):  # keep the names attribute
            nonlocal names
            names = f["theta"].attrs["names"]
            _old(f)
            f["theta"].attrs["names"] = names
    _edit(run_file, fn)
    with pytest.raises(ValueError, match=needle) as err:
        load_run(run_file)
    assert str(run_file) in str(err.value)


def test_load_run_good_and_not_hdf5(run_file, tmp_path):
    assert load_run(run_file).pos.shape == (8, 3)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        load_run(junk)


@pytest.fixture
def compressor_file(tmp_path):
    shape, d = (4, 3, 2), 2
    net = ResNetCompressor(shape, d, "mse", 4, 8, 1, key=jax.random.key(0))
    comp = Compressor(net, Normaliser(jnp.zeros(shape, jnp.float32), jnp.ones(shape, jnp.float32), True),
                      Normaliser(jnp.zeros((d,), jnp.float32), jnp.ones((d,), jnp.float32), False))
    path = tmp_path / "c.eqx"
    save_compressor(path, comp)
    return path


def test_load_compressor_refuses(compressor_file, tmp_path):
    assert load_compressor(compressor_file).network.n_param == 2
    raw = compressor_file.read_bytes()
    header, body = raw.split(b"\n", 1)
    h = json.loads(header)
    cases = {
        "junk": (b"garbage\x00\x01", "not a JSON header"),
        "missing key": (json.dumps({k: v for k, v in h.items() if k != "n_param"}).encode() + b"\n" + body, "n_param"),
        "negative width": (json.dumps(h | {"width": -4}).encode() + b"\n" + body, "width"),
        "bad head": (json.dumps(h | {"head": "xyz"}).encode() + b"\n" + body, "head"),
        "other shape": (json.dumps(h | {"xod_shape": [5, 3, 2]}).encode() + b"\n" + body, "cannot be read"),
        "truncated": (raw[: len(raw) // 2], "cannot be read"),
    }
    for name, (data, needle) in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.eqx"
        path.write_bytes(data)
        with pytest.raises(ValueError, match=needle) as err:
            load_compressor(path)
        assert str(path) in str(err.value), name
    comp = load_compressor(compressor_file)
    nan = jax.tree.map(lambda a: jnp.full_like(a, jnp.nan) if eqx_is_float(a) else a, comp)
    save_compressor(tmp_path / "nan.eqx", nan)
    with pytest.raises(ValueError, match="NaN or inf"):
        load_compressor(tmp_path / "nan.eqx")


def eqx_is_float(a):
    return isinstance(a, jax.Array) and jnp.issubdtype(a.dtype, jnp.floating)


@pytest.fixture
def cutout_file(tmp_path):
    n, c = 3, 4
    path = tmp_path / "cut.h5"
    norm = CutoutNormalisation(lo=jnp.zeros(c), hi=jnp.ones(c), floor=jnp.full(c, 1e-6), log=(True,) * c)
    save_cutouts(path, np.ones((n, c, 4, 4), np.float32), cluster_id=np.arange(n), axis=np.zeros(n, np.int8),
                 split=np.zeros(n, np.int8), halo={"M200c": np.ones(n)}, normalisation=norm, pixel_size=0.5, depth=2.0)
    return path


CUT_CASES = {
    "NaN maps": (_replace("maps", np.full((3, 4, 4, 4), np.nan, np.float32)), "non-finite"),
    "short split": (_replace("split", np.zeros(2, np.int8)), "'split' has shape"),
    "bad split code": (_replace("split", np.full(3, 7, np.int8)), "codes"),
    "float ids": (_replace("cluster_id", np.zeros(3)), "dtype float64"),
    "channels": (_replace("maps", np.ones((3, 2, 4, 4), np.float32)), "channels"),
    "halo length": (_replace("halo/M200c", np.ones(5)), "halo/M200c"),
    "normalisation": (_replace("normalisation/lo", np.zeros(2, np.float32)), "normalisation/lo"),
}


@pytest.mark.parametrize("case", sorted(CUT_CASES))
def test_load_cutouts_refuses(cutout_file, case):
    assert load_cutouts(cutout_file).maps.shape[0] == 3 if case == "NaN maps" else True
    fn, needle = CUT_CASES[case]
    _edit(cutout_file, fn)
    with pytest.raises(ValueError, match=needle) as err:
        load_cutouts(cutout_file)
    assert str(cutout_file) in str(err.value)
