"""Alert rules of the node (pure), metric names, and the agent's backoff."""

from __future__ import annotations

import random

import pytest
from prometheus_client import generate_latest

from riversync.node.agent import backoff_delay
from riversync.node.auth import Caller, authenticate, token_sha256
from riversync.node.errors import Forbidden, Unauthenticated
from riversync.node.health import (
    CRITICAL,
    OK,
    WARNING,
    NodeMetrics,
    Thresholds,
    evaluate,
)
from riversync.protocol.keys import NodeEntry, Roster, User

T = Thresholds()
NOW = 1_000_000.0


def snap(**kw) -> dict:
    base = {"now": NOW, "started_at": NOW - 5, "last_push_ok": NOW - 1, "last_pull_ok": NOW - 1,
            "outbox": 0, "db_ok": True, "agent": {"state": "running"},
            "replay_failures_consecutive": 0}
    base.update(kw)
    return base


def test_healthy_node_is_ok():
    assert evaluate(snap(), T) == (OK, [])


@pytest.mark.parametrize(
    ("age_s", "level"),
    [(599, OK), (600, WARNING), (1799, WARNING), (1800, CRITICAL)],
)
def test_no_sync_thresholds_follow_the_runbook(age_s, level):
    s = snap(last_push_ok=NOW - 1, last_pull_ok=NOW - age_s)
    got, reasons = evaluate(s, T)
    assert got == level
    if level != OK:
        assert reasons[0]["code"] == "NO_SYNC"


def test_never_synced_counts_from_start():
    s = snap(last_push_ok=None, last_pull_ok=None, started_at=NOW - 700)
    assert evaluate(s, T)[0] == WARNING


def test_queue_over_500_warns_and_500_does_not():
    assert evaluate(snap(outbox=500), T)[0] == OK
    level, reasons = evaluate(snap(outbox=501), T)
    assert level == WARNING and reasons[0]["code"] == "QUEUE_GROWING"


def test_replay_failures_over_threshold_are_critical():
    assert evaluate(snap(replay_failures_consecutive=3), T)[0] == OK
    level, reasons = evaluate(snap(replay_failures_consecutive=4), T)
    assert level == CRITICAL and reasons[0]["code"] == "REPLAY_FAILING"


def test_database_unavailable_is_critical():
    level, reasons = evaluate(snap(db_ok=False, db_error="disk I/O error"), T)
    assert level == CRITICAL and reasons[0]["code"] == "DB_UNAVAILABLE"


def test_stopped_replication_is_critical_and_worst_reason_first():
    s = snap(outbox=900, agent={"state": "stopped",
                                "error": {"code": "BAD_SIGNATURE", "message": "x"}})
    level, reasons = evaluate(s, T)
    assert level == CRITICAL
    assert [r["code"] for r in reasons] == ["SYNC_STOPPED", "QUEUE_GROWING"]


def test_thresholds_are_configurable():
    t = Thresholds(warn_queued_events=5, warn_no_sync_s=2, critical_no_sync_s=4)
    assert evaluate(snap(outbox=6), t)[0] == WARNING
    assert evaluate(snap(last_pull_ok=NOW - 3), t)[0] == WARNING
    assert evaluate(snap(last_pull_ok=NOW - 5), t)[0] == CRITICAL


def test_metrics_are_prefixed_and_carry_units():
    m = NodeMetrics()
    m.update(snap(outbox=7, open_conflicts=2, parked=1, staging={"email_backlog": 3, "xlsx_pending": 2,
                                                             "excel_oldest_age_s": 60.0}), WARNING)
    m.write_latency.labels(kind="local").observe(0.002)
    text = generate_latest(m.registry).decode()
    assert "riversync_node_outbound_queue_events 7.0" in text
    assert "riversync_node_open_conflicts 2.0" in text
    assert "riversync_node_parked_events 1.0" in text
    assert 'riversync_node_staging_backlog_items{kind="email"} 3.0' in text
    assert 'riversync_node_staging_backlog_items{kind="excel"} 2.0' in text
    assert "riversync_node_staging_excel_oldest_age_seconds 60.0" in text
    assert "riversync_node_alert_level 1.0" in text
    assert "riversync_node_sqlite_write_latency_seconds_bucket" in text
    names = [ln.split()[2] for ln in text.splitlines() if ln.startswith("# TYPE")]
    assert names and all(n.startswith("riversync_node_") for n in names)


def test_two_nodes_in_one_process_do_not_share_metrics():
    a, b = NodeMetrics(), NodeMetrics()
    a.outbox.set(3)
    assert "riversync_node_outbound_queue_events 0.0" in generate_latest(b.registry).decode()


def test_backoff_grows_has_jitter_and_a_cap():
    rng = random.Random(7)
    delays = [backoff_delay(i, 0.5, 8.0, rng) for i in range(10)]
    assert all(0.25 <= d <= 8.0 for d in delays)
    assert delays[0] <= 0.5 and max(delays[5:]) <= 8.0 and min(delays[5:]) >= 4.0
    again = [backoff_delay(6, 0.5, 8.0, rng) for _ in range(20)]
    assert len(set(again)) > 1  # jitter: offices do not return in lockstep


ROSTER = Roster(
    cluster_id="c1",
    nodes={"north": NodeEntry("north", "north", bytes(32))},
    users={
        "ann": User("ann", "north", "clerk", token_sha256("tok-ann")),
        "ops": User("ops", "north", "operator", token_sha256("tok-ops")),
    },
)


def test_tokens_are_checked_against_hashes():
    assert authenticate("Bearer tok-ann", ROSTER) == Caller("ann", "clerk", "north")
    for header in (None, "", "Bearer", "Basic tok-ann", "Bearer tok-nobody"):
        with pytest.raises(Unauthenticated):
            authenticate(header, ROSTER)


def test_roles_are_ordered():
    clerk = authenticate("Bearer tok-ann", ROSTER)
    ops = authenticate("Bearer tok-ops", ROSTER)
    ops.require("operator", "resolving")
    with pytest.raises(Forbidden, match="clerk"):
        clerk.require("operator", "resolving a conflict")
    with pytest.raises(Forbidden):
        ops.require("admin", "an override")


def test_every_metric_and_alert_code_is_in_the_runbook():
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "how-to" / "operate.md").read_text()
    m = NodeMetrics()
    names = {s.name for metric in m.registry.collect() for s in [metric]}
    assert names
    for name in names:
        assert f"`{name}`" in doc or f"`{name}_total`" in doc, name
    for code in ("NO_SYNC", "QUEUE_GROWING", "REPLAY_FAILING", "SYNC_STOPPED", "DB_UNAVAILABLE",
                 "STAGING_STALE", "EMAIL_BACKLOG"):
        assert f"`{code}`" in doc, code


@pytest.mark.parametrize(
    ("age_s", "words"),
    [(34, "34 seconds"), (90, "90 seconds"), (600, "10 minutes"), (1830, "30 minutes"),
     (3 * 3600, "3.0 hours")],
)
def test_no_sync_message_says_the_age_in_plain_words(age_s, words):
    """A sync age under a minute must not read "0 minutes" with low thresholds set."""
    low = Thresholds(warn_no_sync_s=15, critical_no_sync_s=40 * 3600)
    _, reasons = evaluate(snap(last_push_ok=NOW - 1, last_pull_ok=NOW - age_s), low)
    assert reasons[0]["message"] == f"no successful sync for {words}"
