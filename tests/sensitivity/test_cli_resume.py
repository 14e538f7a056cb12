"""`jaxcluster sensitivity`: a kill at any write resumes to the same bits; other options and corrupt stage files.

The survey's derivatives are replaced by cheap deterministic stand-ins (the
physics is tested in test_pipeline.py / test_gradients.py; here only the
stage files, settings and writes are): a real tiny run takes minutes.
"""

import json
import shutil
import types

import jax
import numpy as np
import pytest

import jaxcluster.sensitivity.gradients as gradients
from jaxcluster.cli import main as cli_main
from tests.faults import KilledAtWrite, count_writes, files_bytes, kill_at_write

ARGS = ["--keys", "3", "--skip-scaling"]


def _rng(keys, salt):
    return np.random.default_rng([int(np.asarray(jax.random.key_data(keys)).sum()) % 2**32, salt])


def _fake_segmentations(theta, keys, config, **kw):
    return _rng(keys, 0).integers(0, 5, size=(keys.shape[0], 1, 1, 4, 4))


def _fake_sensitivity(theta, keys, config, *, segmentations, **kw):
    shape = config.binning.shape
    rng = _rng(keys, 1)
    xod = rng.uniform(1.0, 5.0, size=(keys.shape[0], *shape))
    jac = rng.normal(size=(keys.shape[0], 6, *shape))

    class Cat:
        def __init__(self, i):
            self.i = i

        def soft_xod(self, config, softness, softness_z):
            return xod[self.i] * (1 + softness), jac[self.i] * (1 + softness)

    return types.SimpleNamespace(xod=xod, jacobian=jac), [Cat(i) for i in range(keys.shape[0])]


def _fake_fd(theta, keys, config, steps, *, policy, soft=False, both=False, **kw):
    rng = _rng(keys, 2 + int(1e6 * float(np.asarray(steps)[0])) + (policy == "fixed"))
    one = lambda: rng.normal(size=(keys.shape[0], 6, *config.binning.shape))  # noqa: E731
    return (one(), one()) if both else one()


def _fake(mp):
    mp.setattr(gradients, "reference_segmentations", _fake_segmentations)
    mp.setattr(gradients, "xod_sensitivity", _fake_sensitivity)
    mp.setattr(gradients, "finite_difference_jacobians", _fake_fd)


@pytest.fixture
def fake_survey(monkeypatch):
    _fake(monkeypatch)


def _run(out, *extra):
    return cli_main(["sensitivity", "--out", str(out), *ARGS, *extra])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """reference(extra) → (folder, targets of its writes in order): one uninterrupted run per option set,
    shared by the tests of this module (each full run draws its figures: seconds)."""
    done = {}

    def get(extra):
        key = tuple(extra)
        if key not in done:
            out = tmp_path_factory.mktemp("sensitivity_ref") / "ref"
            with pytest.MonkeyPatch.context() as mp:
                _fake(mp)
                with count_writes(mp) as writes:
                    assert _run(out, *extra) == 0
            done[key] = out, list(writes)
        return done[key]

    return get


def _same_bits(a, b):
    fa, fb = files_bytes(a, skip=("sensitivity.json",)), files_bytes(b, skip=("sensitivity.json",))
    assert fa.keys() == fb.keys() and [k for k in fa if fa[k] != fb[k]] == []
    ja, jb = (json.loads((d / "sensitivity.json").read_text()) for d in (a, b))
    for j in (ja, jb):
        for k in ("timings", "provenance", "config"):
            j.pop(k)
    assert ja == jb


@pytest.mark.parametrize("extra, every", [(["--skip-fd"], False), pytest.param(["--skip-fd"], True, marks=pytest.mark.slow),
                                          pytest.param([], True, marks=pytest.mark.slow)])
def test_sensitivity_resumes_after_a_kill_at_every_write(reference, fake_survey, tmp_path, monkeypatch, capsys, extra,
                                                         every):
    """CI-sized: kills at the settings, each stage file and the JSON (each figure too with ``-m slow``)."""
    ref, writes = reference(extra)
    names = [p.name for p in writes]
    assert names[:3] == ["settings.json", "stage_segmentations.npz", "stage_autodiff.npz"] and "sensitivity.json" in names
    ns = range(1, len(writes) + 1) if every else sorted({1, 2, 3, names.index("sensitivity.json") + 1})
    for n in ns:
        out = tmp_path / f"k{n}"
        with kill_at_write(monkeypatch, n) as seen, pytest.raises(KilledAtWrite):
            _run(out, *extra)
        assert seen[-1].name == names[n - 1] and not any(out.glob(".*.tmp"))
        assert _run(out, *extra) == 0
        _same_bits(ref, out)
    capsys.readouterr()


def test_sensitivity_refuses_other_options_and_recomputes_corrupt_stages(reference, fake_survey, tmp_path, capsys):
    ref, _ = reference(["--skip-fd"])  # an uninterrupted run (it returned 0)
    out = tmp_path / "s"
    shutil.copytree(ref, out)  # the same run's files, here changed and damaged
    capsys.readouterr()
    for extra, named in ((["--seed", "1"], "seed: 0 there, 1 requested"), (["--keys", "4"], "keys: 3 there, 4 requested"),
                         (["--softness", "0.03"], "softness: 0.02 there, 0.03 requested")):
        assert _run(out, "--skip-fd", *extra) == 2  # argparse: the last --keys wins
        err = capsys.readouterr().err
        assert named in err and str(out) in err, err
    # options the stages do not depend on are free
    assert _run(out, "--skip-fd", "--fisher-area", "100") == 0
    assert _run(out, "--skip-fd") == 0
    # a damaged stage file is named and recomputed, to the same bits
    stage = out / "stage_autodiff.npz"
    data = bytearray(stage.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stage.write_bytes(bytes(data))
    capsys.readouterr()
    assert _run(out, "--skip-fd") == 0
    assert "stage_autodiff.npz is unreadable" in capsys.readouterr().err
    _same_bits(ref, out)
    # a damaged settings file is refused, naming it
    (out / "settings.json").write_text("{")
    assert _run(out, "--skip-fd") == 2
    assert "settings.json is corrupt" in capsys.readouterr().err
