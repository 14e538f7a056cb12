"""The top-level package: what `import jaxcluster` loads, and what it exposes."""

import subprocess
import sys


def test_inference_is_imported_on_first_use():
    # distrax / tfp-nightly (seconds of import, a DeprecationWarning) only when asked for.
    code = (
        "import sys, warnings; import jaxcluster as jc; "
        "assert 'distrax' not in sys.modules, 'distrax imported eagerly'; "
        "import jaxcluster.engines, jaxcluster.io.campaign; "
        "assert 'distributed' not in sys.modules and 'dask' not in sys.modules, 'Dask imported eagerly'; "
        "warnings.simplefilter('ignore'); "
        "assert jc.inference.NeuralPosterior is not None; "
        "assert 'distrax' in sys.modules; "
        "assert {'fields', 'inference', 'sensitivity'} <= set(jc.__all__)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr


def test_unknown_attribute_raises():
    import jaxcluster

    try:
        jaxcluster.no_such_stage  # noqa: B018
    except AttributeError as err:
        assert "no_such_stage" in str(err)
    else:
        raise AssertionError("expected AttributeError")
