"""Leases on the file system: one winner per claim, stale claims taken over, heartbeats keep claims alive."""

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from jaxcluster.io.claims import Owner, claim, claim_owner, claim_state, create_exclusive


def test_one_claim_one_owner(tmp_path):
    path = tmp_path / "c.claim"
    first = claim(path, 60.0, task="a")
    assert first is not None and first.held() and claim_state(path, 60.0) == "live"
    assert claim(path, 60.0, task="b") is None  # a live owner keeps it
    assert claim_owner(path).task == "a" and claim_owner(path).pid == os.getpid()
    first.release()
    assert claim_state(path, 60.0) == "free"
    second = claim(path, 60.0, task="b")
    assert second is not None and claim_owner(path).task == "b"
    with pytest.raises(ValueError, match="lease_s"):
        claim(tmp_path / "x.claim", 0.0)


def test_racing_threads_one_winner(tmp_path):
    for trial in range(20):
        path = tmp_path / f"race{trial}.claim"
        barrier, won = threading.Barrier(8), []

        def go():
            barrier.wait()
            lease = claim(path, 60.0)
            if lease is not None:
                won.append(lease)

        threads = [threading.Thread(target=go) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1 and won[0].held()
    assert not list(tmp_path.glob(".*"))  # no temporary or stale file left behind


def test_expired_lease_is_taken_over(tmp_path):
    path = tmp_path / "c.claim"
    old = claim(path, 60.0, task="frozen")
    past = time.time() - 120
    os.utime(path, (past, past))  # no heartbeat for two minutes
    assert claim_state(path, 60.0) == "stale" and claim_state(path, 300.0) == "live"
    new = claim(path, 60.0, task="rescuer")
    assert new is not None and new.held() and not old.held()
    old.release()  # the frozen owner waking up does not remove the new claim
    assert claim_owner(path).task == "rescuer"


def test_dead_process_on_this_host_is_stale_at_once(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # exited and reaped: its pid no longer exists
    dead = Owner(Owner.me().host, proc.pid, "killed", "feedbeef", time.time())
    path = tmp_path / "c.claim"
    assert create_exclusive(path, json.dumps(dead.__dict__))
    assert dead.is_dead_here() and claim_state(path, 3600.0) == "stale"
    assert claim(path, 3600.0) is not None and claim_owner(path).pid == os.getpid()
    other_host = Owner("elsewhere.example", proc.pid, "", "", 0.0)
    assert not other_host.is_dead_here()  # another host's pid says nothing here


def test_heartbeat_keeps_the_lease(tmp_path):
    path = tmp_path / "c.claim"
    lease = claim(path, 0.4)
    with lease:
        time.sleep(1.2)  # three leases long
        assert claim_state(path, 0.4) == "live"
    assert claim_state(path, 0.4) == "free"  # released on exit


def test_exclusive_create_is_whole_or_absent(tmp_path):
    path = tmp_path / "meta.json"
    assert create_exclusive(path, '{"a": 1}')
    assert not create_exclusive(path, '{"a": 2}')
    assert json.loads(path.read_text()) == {"a": 1}
