"""Crash safety: SIGKILL in the middle of a remote apply or a local commit.

After reopening, the interrupted transaction is wholly applied or wholly absent (journal,
rows, audit and cursor agree), and re-applying gives the same state as a replica that was
never interrupted.  Case C13 step 4 is the fault-hook variant: the process dies between
the data write and the commit of its audit record.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from engine_crash_child import BATCHES, LOCAL_GROUP, PER_BATCH, SCHEMA, batches
from engine_util import NOW, open_store

from riversync.engine import db

CHILD = Path(__file__).parent / "engine_crash_child.py"


def _run_child(path, mode, fault_at=None, kill_after=None):
    args = [sys.executable, str(CHILD), str(path), mode]
    if fault_at is not None:
        args.append(str(fault_at))
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        if kill_after is not None:
            time.sleep(kill_after)
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
    return proc.returncode


def _check_remote(path, tmp_path):
    all_batches = batches()
    s = open_store(path, SCHEMA, node="north")
    assert db.integrity_ok(s.conn)
    cursor = s.get_cursor("hub")
    done = cursor[1] if cursor else 0
    assert s.stats()["events"] == done * PER_BATCH
    assert s.audit_count() == done * PER_BATCH
    assert s.verify_audit()
    clean = open_store(tmp_path / "clean.db", SCHEMA, node="east")
    for evs in all_batches[:done]:
        clean.apply_remote(evs, now_ms=NOW)
    assert s.digests()["state"] == clean.digests()["state"]
    # Re-apply everything (the already applied batches again, then the rest).
    for n, evs in enumerate(all_batches, start=1):
        s.apply_remote(evs, now_ms=NOW, cursor=("hub", 1, n))
    for evs in all_batches[done:]:
        clean.apply_remote(evs, now_ms=NOW)
    assert s.digests()["state"] == clean.digests()["state"]
    assert s.get_cursor("hub") == (1, BATCHES)
    s.close()
    clean.close()
    return done


@pytest.mark.parametrize("fault_at", [1, 4])
def test_sigkill_inside_a_remote_apply_leaves_it_wholly_absent(tmp_path, fault_at):
    """Proves [N-CUR-1]: a batch and its cursor commit together or not at all."""
    path = tmp_path / "n.db"
    assert _run_child(path, "remote", fault_at=fault_at) == -signal.SIGKILL
    assert _check_remote(path, tmp_path) == fault_at - 1


def test_sigkill_at_a_random_moment_of_replay(tmp_path):
    path = tmp_path / "n.db"
    rc = _run_child(path, "remote", kill_after=random.uniform(0.3, 1.2))
    assert rc in (0, -signal.SIGKILL)
    _check_remote(path, tmp_path)


def _check_local(path, tmp_path):
    s = open_store(path, SCHEMA, node="north")
    assert db.integrity_ok(s.conn)
    events = s.stats()["events"]
    assert events % LOCAL_GROUP == 0  # whole commits only
    assert s.count_rows("players") == events == s.audit_count()
    assert s.verify_audit()
    replay = open_store(tmp_path / "replay.db", SCHEMA, node="east")
    replay.apply_remote(s.outbox(limit=1_000_000), now_ms=NOW)
    assert replay.digests()["tables"] == s.digests()["tables"]
    s.close()
    replay.close()
    return events


def test_sigkill_inside_a_local_commit_leaves_it_wholly_absent(tmp_path):
    """C13 step 4: killed after the row and journal writes, before the commit."""
    path = tmp_path / "n.db"
    assert _run_child(path, "local", fault_at=3) == -signal.SIGKILL
    assert _check_local(path, tmp_path) == 2 * LOCAL_GROUP


def test_sigkill_at_a_random_moment_of_local_commits(tmp_path):
    path = tmp_path / "n.db"
    _run_child(path, "local", kill_after=random.uniform(0.3, 1.0))
    assert _check_local(path, tmp_path) > 0
