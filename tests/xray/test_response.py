"""OGIP ARF/RMF reader: grouped rows, TLMIN, band collapse, malformed files."""

from pathlib import Path

import numpy as np
import pytest

from jaxcluster.xray import (
    band_effective_area,
    band_response,
    default_band_response,
    read_response,
    read_responses,
    sum_responses,
)

from ._ogip import energy_grid, redistribution, write_arf, write_pair, write_rmf

PN_ARF = Path("/work/shared/data/xmm/pn-thin-5-ao20.arf")
PN_RMF = Path("/work/shared/data/xmm/pn-thin-5-ao20.rmf")


def _expected(area, m):
    # files store float32: compare with what was written
    return area.astype(np.float32).astype(np.float64)[:, None] * m.astype(np.float32).astype(np.float64)


@pytest.mark.parametrize("variable_length", [True, False])
@pytest.mark.parametrize("first_channel", [0, 1])
def test_read_grouped_matrix(tmp_path, variable_length, first_channel):
    arf, rmf, lo, hi, area, ch_edges, m = write_pair(
        tmp_path, first_channel=first_channel, variable_length=variable_length
    )
    r = read_response(arf, rmf)
    assert r.area_cm2.shape == m.shape
    # some rows really have two groups, so grouping is exercised
    assert np.any([(np.diff(np.flatnonzero(row)) > 1).any() for row in m])
    np.testing.assert_allclose(np.asarray(r.area_cm2), _expected(area, m), rtol=1e-12, atol=0)
    np.testing.assert_array_equal(np.asarray(r.channel), np.arange(m.shape[1]) + first_channel)
    np.testing.assert_allclose(np.asarray(r.energ_lo_keV), lo.astype(np.float32), rtol=0)
    np.testing.assert_allclose(np.asarray(r.e_max_keV), ch_edges[1:].astype(np.float32), rtol=0)
    assert r.sources == (str(arf), str(rmf))


def test_band_effective_area_is_channel_sum(tmp_path):
    arf, rmf, lo, hi, area, ch_edges, m = write_pair(tmp_path)
    r = read_response(arf, rmf)
    bands = ((0.5, 1.0), (1.0, 2.0), (2.0, 7.0))
    got = np.asarray(band_effective_area(r, bands))
    full = _expected(area, m)
    mid = 0.5 * (ch_edges[1:].astype(np.float32) + ch_edges[:-1].astype(np.float32))
    for b, (elo, ehi) in enumerate(bands):
        want = full[:, (mid >= elo) & (mid < ehi)].sum(axis=1)
        np.testing.assert_allclose(got[:, b], want, rtol=1e-12, atol=1e-12)
    # trimmed band response keeps exactly the bins with non-zero area
    br = band_response(r, bands)
    nz = np.flatnonzero(got.max(axis=1) > 0)
    assert br.area_cm2.shape == (nz[-1] - nz[0] + 1, 3)
    np.testing.assert_allclose(np.asarray(br.area_cm2), got[nz[0] : nz[-1] + 1])


def test_band_validation(tmp_path):
    arf, rmf, *_ = write_pair(tmp_path)
    r = read_response(arf, rmf)
    with pytest.raises(ValueError, match="0 < lo < hi"):
        band_effective_area(r, [(2.0, 1.0)])
    with pytest.raises(ValueError, match="at least one"):
        band_effective_area(r, [])


def test_several_instruments_add(tmp_path):
    a1, r1, *_ = write_pair(tmp_path, "mos")
    a2, r2, *_ = write_pair(tmp_path, "pn")
    rs = read_responses([(a1, r1), (a2, r2)])
    assert len(rs) == 2
    s = sum_responses(rs)
    np.testing.assert_allclose(np.asarray(s.area_cm2), 2 * np.asarray(rs[0].area_cm2))
    assert len(s.sources) == 4
    a3, r3, *_ = write_pair(tmp_path, "other", n_chan=50)
    with pytest.raises(ValueError, match="different grids"):
        sum_responses([rs[0], read_response(a3, r3)])
    with pytest.raises(ValueError, match="at least one"):
        read_responses([])


def test_rmf_without_arf_is_full_response(tmp_path):
    arf, rmf, lo, hi, area, ch_edges, m = write_pair(tmp_path)
    r = read_response(None, rmf)
    np.testing.assert_allclose(np.asarray(r.area_cm2), m.astype(np.float32), rtol=1e-7)


def test_specresp_matrix_extname(tmp_path):
    lo, hi = energy_grid(20)
    ch_edges, m = redistribution(lo, hi, 30, e_max=10.0)
    path = tmp_path / "full.rsp"
    write_rmf(path, lo, hi, ch_edges, m, extname="SPECRESP MATRIX")
    assert read_response(None, path).area_cm2.shape == (20, 30)


def test_mismatched_grids_raise(tmp_path):
    arf, rmf, lo, hi, area, ch_edges, m = write_pair(tmp_path)
    bad = tmp_path / "shifted.arf"
    write_arf(bad, lo * 1.01, hi * 1.01, area)
    with pytest.raises(ValueError, match=r"shifted\.arf.*differs from that of RMF"):
        read_response(bad, rmf)
    short = tmp_path / "short.arf"
    write_arf(short, lo[:-3], hi[:-3], area[:-3])
    with pytest.raises(ValueError, match=r"short\.arf"):
        read_response(short, rmf)


@pytest.mark.parametrize(
    "kind, match",
    [
        ("arf_extname", r"bad\.arf: no extension named SPECRESP"),
        ("arf_column", r"bad\.arf: extension SPECRESP has no column SPECRESP"),
        ("rmf_ebounds", r"bad\.rmf: no extension named EBOUNDS"),
        ("rmf_column", r"bad\.rmf: extension MATRIX has no column N_CHAN"),
        ("rmf_range", r"bad\.rmf: MATRIX row \d+ addresses channels"),
        ("arf_order", r"bad\.arf: ARF energy bins must be increasing"),
    ],
)
def test_malformed_files_raise(tmp_path, kind, match):
    arf, rmf, lo, hi, area, ch_edges, m = write_pair(tmp_path)
    bad_arf, bad_rmf = tmp_path / "bad.arf", tmp_path / "bad.rmf"
    if kind == "arf_extname":
        write_arf(bad_arf, lo, hi, area, extname="AREA")
    elif kind == "arf_column":
        write_arf(bad_arf, lo, hi, area, drop_column="SPECRESP")
    elif kind == "arf_order":
        write_arf(bad_arf, lo[::-1], hi[::-1], area)
    elif kind == "rmf_ebounds":
        write_rmf(bad_rmf, lo, hi, ch_edges, m, with_ebounds=False)
    elif kind == "rmf_column":
        write_rmf(bad_rmf, lo, hi, ch_edges, m, drop_column="N_CHAN")
    elif kind == "rmf_range":
        # the matrix addresses channels 5.. while EBOUNDS / TLMIN start at 0: overruns the end
        m = m.copy()
        m[-1, -1] = 0.01
        write_rmf(bad_rmf, lo, hi, ch_edges, m, first_channel=5, ebounds_first_channel=0)
    use_arf = bad_arf if kind.startswith("arf") else arf
    use_rmf = bad_rmf if kind.startswith("rmf") else rmf
    with pytest.raises(ValueError, match=match):
        read_response(use_arf, use_rmf)


@pytest.mark.skipif(not (PN_ARF.exists() and PN_RMF.exists()), reason="XMM pn response not present")
def test_shipped_band_response_matches_pn_files():
    """The band response stored with the default table is the pn files' collapse."""
    shipped = default_band_response()
    r = read_response(PN_ARF, PN_RMF)
    assert r.area_cm2.shape == (2067, 4096)
    again = band_response(r, shipped.bands_keV)
    np.testing.assert_allclose(np.asarray(again.area_cm2), np.asarray(shipped.area_cm2), rtol=1e-6)
    # EPIC-pn thin: ~1200 cm² at 1.5 keV (XMM Users' Handbook)
    peak = float(np.asarray(shipped.area_cm2).max())
    assert 900.0 < peak < 1500.0
