"""Our run format: exact roundtrip of particles, fields, θ_sim, z, config and metadata; clear errors."""

import h5py
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcluster.io import load_run, save_run
from jaxcluster.nbody import PMConfig
from jaxcluster.params import PARAM_NAMES, ThetaSim

CFG = PMConfig(25.0, 4, mesh_shape=8, gradient="exact")
THETA = ThetaSim(0.25, 0.9, 2.0, 0.7, 0.5, 1.5)


def _run_kwargs():
    rng = np.random.default_rng(0)
    return dict(
        pos=jnp.asarray(rng.uniform(0, 25, (64, 3)), dtype=jnp.float32),
        p=jnp.asarray(rng.normal(size=(64, 3))),
        fields={"n_e_cm3": rng.uniform(0, 1e-3, (8, 8, 8)).astype(np.float32),
                "T_keV": jnp.asarray(rng.uniform(0.1, 8, (8, 8, 8))),
                "halo_count": np.arange(5, dtype=np.int32)},
        theta=THETA, z=0.21, config=CFG,
        metadata={"sim": "LH_12", "seed": 15052, "a_steps": [0.1, 0.5, 1.0], "nested": {"x": 1.5, "ok": True}},
        field_units={"n_e_cm3": "cm^-3 (comoving)", "T_keV": "keV"},
    )


def test_roundtrip_is_exact(tmp_path):
    kw = _run_kwargs()
    save_run(tmp_path / "run.h5", **kw)
    run = load_run(tmp_path / "run.h5")
    for name in ("pos", "p"):
        got, want = getattr(run, name), kw[name]
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert set(run.fields) == set(kw["fields"])
    for name, want in kw["fields"].items():
        assert run.fields[name].dtype == np.asarray(want).dtype
        np.testing.assert_array_equal(np.asarray(run.fields[name]), np.asarray(want))
    assert run.field_units == kw["field_units"]
    np.testing.assert_array_equal(np.asarray(run.theta.to_array()), np.asarray(THETA.to_array()))
    assert run.z == 0.21
    assert (run.config.box_size, run.config.particle_shape, run.config.mesh_shape, run.config.gradient) == (
        CFG.box_size, CFG.particle_shape, CFG.mesh_shape, CFG.gradient)
    assert run.metadata == kw["metadata"]


def test_file_layout_carries_units(tmp_path):
    save_run(tmp_path / "run.h5", **_run_kwargs())
    with h5py.File(tmp_path / "run.h5", "r") as f:
        assert f.attrs["format"] == "jaxcluster-run"
        assert f.attrs["scale_factor"] == pytest.approx(1 / 1.21)
        assert "h^-1 Mpc" in f["particles/pos"].attrs["units"]
        assert "a^3 E dx/da" in f["particles/p"].attrs["units"]
        assert f["fields/T_keV"].attrs["units"] == "keV"
        assert tuple(n.decode() if isinstance(n, bytes) else n for n in f["theta"].attrs["names"]) == PARAM_NAMES
        np.testing.assert_array_equal(f["config"].attrs["box_size_Mpc_h"], [25.0, 25.0, 25.0])


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (dict(pos=np.zeros((63, 3)), p=np.zeros((63, 3))), "pos shape"),
        (dict(theta=ThetaSim(np.array([0.3, 0.3]))), "theta"),
        (dict(z=-1.0), "z = "),
        (dict(fields={"a/b": np.zeros(2)}, field_units=None), "field name"),
        (dict(field_units={"other": "keV"}), "field_units"),
        (dict(metadata={"bad": object()}), "metadata"),
    ],
)
def test_save_rejects_bad_inputs(tmp_path, change, match):
    kw = _run_kwargs() | change
    with pytest.raises(ValueError, match=match):
        save_run(tmp_path / "run.h5", **kw)


def test_load_names_what_is_missing(tmp_path):
    path = tmp_path / "run.h5"
    save_run(path, **_run_kwargs())
    with h5py.File(path, "a") as f:
        del f["particles/p"]
    with pytest.raises(ValueError, match="particles/p"):
        load_run(path)
    save_run(path, **_run_kwargs())
    with h5py.File(path, "a") as f:
        del f["config"].attrs["mesh_shape"]
    with pytest.raises(ValueError, match="mesh_shape"):
        load_run(path)
    save_run(path, **_run_kwargs())
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(ValueError, match="format_version"):
        load_run(path)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_group("Header")
    with pytest.raises(ValueError, match="format"):
        load_run(tmp_path / "other.h5")
    with pytest.raises(ValueError, match="does not exist"):
        load_run(tmp_path / "absent.h5")
