"""Campaign storage: failures recorded and retried a bounded number of times, checksums, settings, status."""

import dataclasses
import hashlib

import h5py
import numpy as np
import pytest

from jaxcluster.io.campaign import Campaign, campaign_status, merge_campaign, run_worker
from jaxcluster.io.chunks import ChunkStore, CorruptChunks, array_digest, parts_dir

N_CHUNKS = 5


def _make_chunk(c: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(c)  # deterministic in the index alone
    return {"x": rng.normal(size=(3, 4)), "grp/id": np.full(3, c, np.int64)}


def _campaign(out, make_chunk=_make_chunk, **settings) -> Campaign:
    return Campaign(out, {"seed": 1, **settings}, N_CHUNKS, make_chunk, chunk_rows=(3,) * N_CHUNKS, unit="row")


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ref.h5"
    report = run_worker(_campaign(out))
    assert report.out == out and report.merged and report.published == list(range(N_CHUNKS))
    return out


def test_merged_layout(reference):
    with h5py.File(reference) as f:
        np.testing.assert_array_equal(f["x"][()], np.concatenate([_make_chunk(c)["x"] for c in range(N_CHUNKS)]))
        np.testing.assert_array_equal(f["grp/id"][()], np.repeat(np.arange(N_CHUNKS), 3))
        assert f.attrs["seed"] == 1
    assert not parts_dir(reference).exists()
    assert campaign_status(reference).merged


def test_failing_chunk_is_recorded_retried_and_reported(tmp_path, reference):
    calls = []

    def flaky(c):
        calls.append(c)
        if c == 2:
            raise ZeroDivisionError("the simulator blew up")
        return _make_chunk(c)

    out = tmp_path / "d.h5"
    report = run_worker(_campaign(out, flaky), max_attempts=2)
    assert report.failed == [2] and report.out is None and not out.exists()
    assert calls.count(2) == 2 and sorted(set(calls)) == list(range(N_CHUNKS))  # bounded retries, the rest went on
    failures = ChunkStore(out, N_CHUNKS).failures(2)
    assert len(failures) == 2 and "ZeroDivisionError: the simulator blew up" in failures[-1]["traceback"]
    st = campaign_status(out)
    assert st.failed == {2: 2} and st.missing == [2] and len(st.done) == 4 and st.done_rows == 12 and st.n_rows == 15
    assert st.running == {} and not st.merged
    with pytest.raises(FileNotFoundError, match="1 of 5 chunks are missing"):
        merge_campaign(_campaign(out))
    # exhausted: another worker with the same limit does not try again...
    calls.clear()
    assert run_worker(_campaign(out, flaky), max_attempts=2).failed == [2] and calls == []
    # ...a fixed simulator with a higher limit finishes the campaign, equal to an uninterrupted run
    report = run_worker(_campaign(out), max_attempts=3)
    assert report.computed == [2] and report.merged and _sha(out) == _sha(reference)


def _flip_data_byte(path, name="x"):
    with h5py.File(path, "r") as f:
        offset = f[name].id.get_offset()
    with open(path, "r+b") as f:
        f.seek(offset + 5)
        byte = f.read(1)
        f.seek(offset + 5)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_corrupted_chunks_are_detected_and_recomputed(tmp_path, reference):
    out = tmp_path / "d.h5"
    run_worker(_campaign(out), merge=False)
    store = ChunkStore(out, N_CHUNKS)
    assert store.done_chunks() == list(range(N_CHUNKS)) and not out.exists()
    _flip_data_byte(store.chunk_path(1))  # silent bit rot in the data
    with open(store.chunk_path(3), "r+b") as f:  # a truncated file
        f.truncate(200)
    with pytest.raises(CorruptChunks) as err:
        merge_campaign(_campaign(out))
    assert err.value.chunks == [3] or err.value.chunks == [1, 3]
    report = run_worker(_campaign(out))  # detects what is left, recomputes, merges
    assert sorted(report.computed) == [1, 3] and report.merged and _sha(out) == _sha(reference)


def test_digest_sees_values_dtypes_and_shapes():
    a = {"x": np.arange(4.0)}
    assert array_digest(a) == array_digest({"x": np.arange(4.0)})
    assert array_digest(a) != array_digest({"x": np.arange(4.0).astype(np.float32)})
    assert array_digest(a) != array_digest({"x": np.arange(4.0).reshape(2, 2)})
    assert array_digest(a) != array_digest({"y": np.arange(4.0)})
    b = np.arange(4.0)
    b[2] = np.nextafter(b[2], 9.0)
    assert array_digest(a) != array_digest({"x": b})


def test_other_settings_are_refused_by_name(tmp_path, reference):
    out = tmp_path / "d.h5"
    run_worker(_campaign(out), merge=False, order=[0], wait=False)
    with pytest.raises(ValueError, match=r"seed: 1 there, 2 requested"):
        run_worker(_campaign(out, seed=2))
    with pytest.raises(ValueError, match=r"exists and|other settings"):
        run_worker(_campaign(reference, seed=2))  # a finished file too


def test_a_kill_during_cleanup_is_finished_later(tmp_path, reference):
    out = tmp_path / "d.h5"
    run_worker(_campaign(out))
    parts_dir(out).mkdir()  # what a kill during the removal of the chunk folder leaves
    (parts_dir(out) / "chunk_000000.h5").write_bytes(b"half")
    assert run_worker(_campaign(out)).out == out and not parts_dir(out).exists()
    assert _sha(out) == _sha(reference)


def test_a_campaign_needs_chunks(tmp_path):
    with pytest.raises(ValueError, match="n_chunks"):
        Campaign(tmp_path / "x.h5", {}, 0, _make_chunk)
    with pytest.raises(ValueError, match="max_attempts"):
        run_worker(_campaign(tmp_path / "x.h5"), max_attempts=0)
    with pytest.raises(ValueError, match="chunk_rows"):
        dataclasses.replace(_campaign(tmp_path / "x.h5"), chunk_rows=(1, 2))
