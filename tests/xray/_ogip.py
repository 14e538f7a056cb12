"""Small synthetic OGIP ARF/RMF files written with astropy, for the tests."""

from __future__ import annotations

import numpy as np
from astropy.io import fits


def energy_grid(n_e: int = 40, e_lo: float = 0.2, e_hi: float = 8.0):
    edges = np.geomspace(e_lo, e_hi, n_e + 1)
    return edges[:-1], edges[1:]


def write_arf(path, lo, hi, area, extname="SPECRESP", drop_column=None):
    cols = {
        "ENERG_LO": fits.Column(name="ENERG_LO", format="E", unit="keV", array=lo),
        "ENERG_HI": fits.Column(name="ENERG_HI", format="E", unit="keV", array=hi),
        "SPECRESP": fits.Column(name="SPECRESP", format="E", unit="cm2", array=area),
    }
    cols.pop(drop_column, None)
    hdu = fits.BinTableHDU.from_columns(list(cols.values()), name=extname)
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path, overwrite=True)


def redistribution(lo, hi, n_chan: int, e_max: float, sigma_keV: float = 0.15):
    """Dense Gaussian redistribution (n_E, n_chan), rows sum to <= 1, with zeros."""
    ch_edges = np.linspace(0.0, e_max, n_chan + 1)
    ch_mid = 0.5 * (ch_edges[1:] + ch_edges[:-1])
    e = 0.5 * (lo + hi)
    m = np.exp(-0.5 * ((ch_mid[None, :] - e[:, None]) / sigma_keV) ** 2)
    m[m < 1e-3] = 0.0
    m /= np.maximum(m.sum(axis=1, keepdims=True), 1e-30) * 1.05
    # a second, detached group per row (an escape peak 1.5 keV below) to exercise N_GRP = 2
    esc = np.clip(np.searchsorted(ch_mid, e - 1.5), 0, n_chan - 1)
    for i in range(e.size):
        if e[i] > 2.5:
            m[i, esc[i]] += 0.02
    return ch_edges, m


def write_rmf(
    path,
    lo,
    hi,
    ch_edges,
    m,
    *,
    first_channel: int = 0,
    variable_length: bool = True,
    extname: str = "MATRIX",
    drop_column: str | None = None,
    with_ebounds: bool = True,
    ebounds_first_channel: int | None = None,
):
    """Write m (n_E, n_chan) as an OGIP RMF with grouped (F_CHAN, N_CHAN) rows.

    ebounds_first_channel: TLMIN and first EBOUNDS channel, if not first_channel
    (to write inconsistent files).
    """
    ebounds_first = first_channel if ebounds_first_channel is None else ebounds_first_channel
    n_chan = m.shape[1]
    n_grp, f_chan, n_chn, mat = [], [], [], []
    for row in m:
        nz = np.flatnonzero(row > 0)
        groups = []
        if nz.size:
            starts = [nz[0]] + [b for a, b in zip(nz[:-1], nz[1:]) if b != a + 1]
            ends = [a for a, b in zip(nz[:-1], nz[1:]) if b != a + 1] + [nz[-1]]
            groups = list(zip(starts, ends))
        n_grp.append(len(groups))
        f_chan.append(np.array([s + first_channel for s, _ in groups], dtype=np.int32))
        n_chn.append(np.array([e - s + 1 for s, e in groups], dtype=np.int32))
        mat.append(np.concatenate([row[s : e + 1] for s, e in groups]).astype(np.float32)
                   if groups else np.zeros(0, np.float32))
    if variable_length:
        fmt_i, fmt_m = "PJ()", "PE()"
        fc, nc = np.array(f_chan, dtype=object), np.array(n_chn, dtype=object)
        ma = np.array(mat, dtype=object)
    else:
        width = max(max(n_grp), 1)
        fmt_i = f"{width}J"
        fc = np.zeros((len(m), width), np.int32)
        nc = np.zeros((len(m), width), np.int32)
        for i in range(len(m)):
            fc[i, : n_grp[i]] = f_chan[i]
            nc[i, : n_grp[i]] = n_chn[i]
        mwidth = max(max(len(x) for x in mat), 1)
        fmt_m = f"{mwidth}E"
        ma = np.zeros((len(m), mwidth), np.float32)
        for i in range(len(m)):
            ma[i, : len(mat[i])] = mat[i]
    cols = {
        "ENERG_LO": fits.Column(name="ENERG_LO", format="E", unit="keV", array=lo),
        "ENERG_HI": fits.Column(name="ENERG_HI", format="E", unit="keV", array=hi),
        "N_GRP": fits.Column(name="N_GRP", format="J", array=np.array(n_grp, np.int32)),
        "F_CHAN": fits.Column(name="F_CHAN", format=fmt_i, array=fc),
        "N_CHAN": fits.Column(name="N_CHAN", format=fmt_i, array=nc),
        "MATRIX": fits.Column(name="MATRIX", format=fmt_m, array=ma),
    }
    cols.pop(drop_column, None)
    mhdu = fits.BinTableHDU.from_columns(list(cols.values()), name=extname)
    if "F_CHAN" in cols:
        idx = list(cols).index("F_CHAN") + 1
        mhdu.header[f"TLMIN{idx}"] = ebounds_first
    hdus = [fits.PrimaryHDU(), mhdu]
    if with_ebounds:
        chan = np.arange(n_chan, dtype=np.int32) + ebounds_first
        ehdu = fits.BinTableHDU.from_columns(
            [
                fits.Column(name="CHANNEL", format="J", array=chan),
                fits.Column(name="E_MIN", format="E", unit="keV", array=ch_edges[:-1]),
                fits.Column(name="E_MAX", format="E", unit="keV", array=ch_edges[1:]),
            ],
            name="EBOUNDS",
        )
        hdus.append(ehdu)
    fits.HDUList(hdus).writeto(path, overwrite=True)


def write_pair(tmp_path, name="inst", *, n_e=40, n_chan=60, first_channel=0, variable_length=True):
    """Write an ARF + RMF pair; return (arf, rmf, lo, hi, area, ch_edges, m)."""
    lo, hi = energy_grid(n_e)
    e = 0.5 * (lo + hi)
    area = (400.0 * np.exp(-0.5 * (np.log(e / 1.5) / 0.8) ** 2)).astype(np.float32)
    ch_edges, m = redistribution(lo, hi, n_chan, e_max=10.0)
    arf, rmf = tmp_path / f"{name}.arf", tmp_path / f"{name}.rmf"
    write_arf(arf, lo, hi, area)
    write_rmf(rmf, lo, hi, ch_edges, m, first_channel=first_channel, variable_length=variable_length)
    return arf, rmf, lo, hi, area, ch_edges, m
