"""CAMELS parameter tables: CAMELS column order (A_SN1 A_AGN1 A_SN2 A_AGN2) mapped to θ_sim order."""

import numpy as np
import pytest

from jaxcluster.io import read_camels_params
from jaxcluster.params import PARAM_NAMES

ROWS = [  # CAMELS order: Omega_m sigma_8 A_SN1 A_AGN1 A_SN2 A_AGN2 seed
    ("LH_0", 0.3090, 0.9790, 3.1189, 1.0929, 0.6742, 1.6147, 15052),
    ("LH_1", 0.1270, 0.6510, 0.2703, 3.8011, 1.9326, 0.5221, 2),
]
# Our order: Omega_m sigma_8 A_SN1 A_SN2 A_AGN1 A_AGN2
EXPECTED = np.array([[r[1], r[2], r[3], r[5], r[4], r[6]] for r in ROWS])


def _write(path, header, rows):
    lines = ([header] if header else []) + [" ".join(str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_named_table_with_header_is_reordered(tmp_path):
    path = _write(tmp_path / "LH.txt", "#Name Omega_m sigma_8 A_SN1 A_AGN1 A_SN2 A_AGN2 seed", ROWS)
    table = read_camels_params(path)
    assert PARAM_NAMES == ("Omega_m", "sigma_8", "A_SN1", "A_SN2", "A_AGN1", "A_AGN2")
    np.testing.assert_array_equal(np.asarray(table.theta.to_array()), EXPECTED)
    np.testing.assert_array_equal(table.seeds, [15052, 2])
    assert table.seeds.dtype == np.int64
    assert table.names == ("LH_0", "LH_1")
    assert float(table.theta.A_AGN1[0]) == 1.0929 and float(table.theta.A_SN2[0]) == 0.6742


def test_bare_table_assumes_camels_order(tmp_path):
    path = _write(tmp_path / "LH.txt", None, [r[1:] for r in ROWS])
    table = read_camels_params(path)
    np.testing.assert_array_equal(np.asarray(table.theta.to_array()), EXPECTED)
    assert table.names is None
    # A comment line that does not name the columns is skipped; blank lines too.
    path.write_text("# CAMELS IllustrisTNG LH\n\n" + path.read_text())
    np.testing.assert_array_equal(np.asarray(read_camels_params(path).theta.to_array()), EXPECTED)


def test_header_order_is_honoured(tmp_path):
    perm = [6, 0, 2, 1, 5, 4, 3]  # seed Omega_m A_SN1 sigma_8 A_AGN2 A_SN2 A_AGN1
    cols = ["Omega_m", "sigma_8", "A_SN1", "A_AGN1", "A_SN2", "A_AGN2", "seed"]
    rows = [[r[1:][i] for i in perm] for r in ROWS]
    path = _write(tmp_path / "x.txt", "# " + " ".join(cols[i] for i in perm), rows)
    table = read_camels_params(path)
    np.testing.assert_array_equal(np.asarray(table.theta.to_array()), EXPECTED)
    np.testing.assert_array_equal(table.seeds, [15052, 2])


@pytest.mark.parametrize(
    ("row", "match"),
    [
        (("LH_1", 0.6, 0.8, 1, 1, 1, 1, 3), r"line 3: Omega_m = 0.6 is outside"),
        (("LH_1", 0.3, 0.8, 1, 5.0, 1, 1, 3), r"line 3: A_AGN1 = 5.0 is outside"),
        (("LH_1", 0.3, 0.8, 1, 1, 0.4, 1, 3), r"line 3: A_SN2 = 0.4 is outside"),
        (("LH_1", 0.3, 0.8, 1, 1, 1, 3), r"line 3: expected 8 columns, got 7"),
        (("LH_1", 0.3, "abc", 1, 1, 1, 1, 3), r"line 3: sigma_8 = 'abc' is not a number"),
        (("LH_1", 0.3, 0.8, 1, 1, 1, 1, 3.5), r"line 3: seed = '3.5' is not an integer"),
    ],
)
def test_bad_rows_are_named(tmp_path, row, match):
    path = _write(tmp_path / "LH.txt", "#Name Omega_m sigma_8 A_SN1 A_AGN1 A_SN2 A_AGN2 seed", [ROWS[0], row])
    with pytest.raises(ValueError, match=match):
        read_camels_params(path)


def test_empty_or_missing_file(tmp_path):
    with pytest.raises(ValueError, match="no data rows"):
        read_camels_params(_write(tmp_path / "e.txt", "# nothing", []))
    with pytest.raises(ValueError, match="does not exist"):
        read_camels_params(tmp_path / "absent.txt")
