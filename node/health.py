"""Health of an office node: the runbook's metrics and the alert rules over them.

Theory of operation: the daemon gathers one *snapshot* (a plain dict) from the agent and the
store; ``evaluate`` turns a snapshot and the thresholds into a level (ok, warning,
critical) and the reasons, as a pure function so the rules are tested without a daemon;
``NodeMetrics`` exposes the same snapshot to Prometheus from its own registry, so two nodes
in one process (tests) never share a metric.  ``/v1/status``, ``/metrics`` and
``riversync status`` all read the same snapshot, so they can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from riversync.config import (
    DEFAULT_CRITICAL_NO_SYNC_S,
    DEFAULT_REPLAY_RETRY_THRESHOLD,
    DEFAULT_WARN_NO_SYNC_S,
    DEFAULT_WARN_QUEUED_EVENTS,
)

from .hubclock import duration, held_back

OK = "ok"
WARNING = "warning"
CRITICAL = "critical"
LEVELS = (OK, WARNING, CRITICAL)
EXIT_CODES = {OK: 0, WARNING: 1, CRITICAL: 2}

# Runbook defaults.  Each can be changed in the node config's [alerts] table.
# The runbook's defaults are defined once, with the node config that can override them.
WARN_NO_SYNC_S = DEFAULT_WARN_NO_SYNC_S  # warning: no successful sync for 10 minutes
CRIT_NO_SYNC_S = DEFAULT_CRITICAL_NO_SYNC_S  # critical: no successful sync for 30 minutes
WARN_QUEUE_EVENTS = DEFAULT_WARN_QUEUED_EVENTS  # warning: more than 500 events queued
REPLAY_RETRY_THRESHOLD = DEFAULT_REPLAY_RETRY_THRESHOLD  # critical: failed replays in a row
STAGING_MAX_AGE_S = 24 * 3600  # warning: Excel staging waiting for review longer than a day
EMAIL_BACKLOG_FILES = 50  # warning: this many unprocessed emails in the drop folder


@dataclass(frozen=True)
class Thresholds:
    warn_no_sync_s: float = WARN_NO_SYNC_S
    critical_no_sync_s: float = CRIT_NO_SYNC_S
    warn_queued_events: int = WARN_QUEUE_EVENTS
    replay_retry_threshold: int = REPLAY_RETRY_THRESHOLD
    staging_max_age_s: float = STAGING_MAX_AGE_S
    email_backlog_files: int = EMAIL_BACKLOG_FILES


def sync_age(snap: dict) -> float:
    """Seconds since the last complete sync (push and pull both succeeded).

    A node that never synced counts from its start, so a node that cannot reach the hub
    from the first minute still raises the alert.
    """
    push, pull = snap.get("last_push_ok"), snap.get("last_pull_ok")
    last = min(push, pull) if push is not None and pull is not None else None
    since = last if last is not None else snap["started_at"]
    return max(0.0, snap["now"] - since)


def evaluate(snap: dict, t: Thresholds) -> tuple[str, list[dict]]:
    """The alert level of a snapshot and the reasons for it, worst first."""
    reasons: list[dict] = []

    def add(level: str, code: str, message: str) -> None:
        reasons.append({"level": level, "code": code, "message": message})

    if not snap.get("db_ok", True):
        add(CRITICAL, "DB_UNAVAILABLE", f"the database cannot be read: {snap.get('db_error', '')}")
    agent = snap.get("agent", {})
    if agent.get("state") == "stopped":
        err = agent.get("error") or {}
        add(
            CRITICAL,
            "SYNC_STOPPED",
            f"replication stopped on {err.get('code', 'an error')}: {err.get('message', '')}",
        )
    for gap in agent.get("skipped") or []:
        add(CRITICAL, "EVENTS_SKIPPED",
            f"this node holds {gap['origin']} up to #{gap['holds_up_to']} but lacks it from "
            f"#{gap['first']}, and the hub has nothing more to send: a hub store put back by "
            "hand moved its cursor past them; restore this node from a backup taken before")
    failures = snap.get("replay_failures_consecutive", 0)
    if failures > t.replay_retry_threshold:
        add(
            CRITICAL,
            "REPLAY_FAILING",
            f"{failures} replays in a row failed (threshold {t.replay_retry_threshold})",
        )
    clock = agent.get("clock") or {}
    if clock.get("ahead"):
        add(CRITICAL, "CLOCK_AHEAD",
            f"this node's clock is {_duration(clock['offset_ms'] / 1000)} ahead of the hub's "
            f"(the cluster allows {_duration(clock['max_drift_ms'] / 1000)}): new writes are "
            "refused until it is fixed (NTP); writes already taken are kept")
    refused = agent.get("refused")
    if refused and agent.get("state") != "stopped":
        add(WARNING, "HUB_REFUSING", _refusal_words(refused, snap, bool(clock.get("ahead"))))
    age = sync_age(snap)
    if age >= t.critical_no_sync_s:
        add(CRITICAL, "NO_SYNC", f"no successful sync for {_duration(age)}")
    elif age >= t.warn_no_sync_s:
        add(WARNING, "NO_SYNC", f"no successful sync for {_duration(age)}")
    queued = snap.get("outbox", 0)
    if queued > t.warn_queued_events:
        add(WARNING, "QUEUE_GROWING", f"{queued} events wait for the hub (limit {t.warn_queued_events})")
    staging = snap.get("staging") or {}
    oldest = staging.get("excel_oldest_age_s")
    if oldest is not None and oldest > t.staging_max_age_s:
        add(WARNING, "STAGING_STALE", f"Excel staging has waited {oldest / 3600:.0f} hours for review")
    if staging.get("email_backlog", 0) > t.email_backlog_files:
        add(WARNING, "EMAIL_BACKLOG", f"{staging['email_backlog']} emails wait in the drop folder")
    level = OK
    for r in reasons:
        if LEVELS.index(r["level"]) > LEVELS.index(level):
            level = r["level"]
    reasons.sort(key=lambda r: -LEVELS.index(r["level"]))
    return level, reasons


class NodeMetrics:
    """Prometheus metrics of one node, in a registry of its own."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        p = "riversync_node_"
        self.last_push = Gauge(p + "last_push_success_timestamp_seconds",
                               "Unix time of the last push that left nothing unacknowledged "
                               "(or found nothing to send)", registry=r)
        self.last_pull = Gauge(p + "last_pull_success_timestamp_seconds",
                               "Unix time of the last pull that applied completely", registry=r)
        self.sync_age = Gauge(p + "sync_age_seconds",
                              "Seconds since the last complete sync (push and pull)", registry=r)
        self.outbox = Gauge(p + "outbound_queue_events",
                            "Local events not yet acknowledged by the hub", registry=r)
        self.inbound_lag = Gauge(p + "inbound_replay_lag_hub_seqs",
                                 "Hub sequence numbers between the hub head and this node's cursor",
                                 registry=r)
        self.replay_lag = Histogram(p + "replay_delay_seconds",
                                    "From an event's HLC time to its apply here",
                                    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15, 60, 300, 1800),
                                    registry=r)
        self.replay_failures = Counter(p + "replay_failures_total",
                                       "Pulled batches that failed to verify or apply", registry=r)
        self.replay_failures_consecutive = Gauge(p + "replay_failures_consecutive",
                                                 "Failed replays since the last success",
                                                 registry=r)
        self.write_latency = Histogram(p + "sqlite_write_latency_seconds",
                                       "Duration of SQLite write transactions",
                                       ["kind"],
                                       buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                0.25, 0.5, 1, 2.5),
                                       registry=r)
        self.open_conflicts = Gauge(p + "open_conflicts", "Conflicts waiting for a decision",
                                    registry=r)
        self.parked = Gauge(p + "parked_events", "Events parked until what they need arrives",
                            registry=r)
        self.staging_backlog = Gauge(p + "staging_backlog_items",
                                     "Staging work waiting (rows or files)", ["kind"], registry=r)
        self.staging_oldest = Gauge(p + "staging_excel_oldest_age_seconds",
                                    "Age of the oldest Excel batch waiting for review (0: none)",
                                    registry=r)
        self.sync_errors = Counter(p + "sync_errors_total",
                                   "Failed hub exchanges by error code and action",
                                   ["code", "action"], registry=r)
        self.pushed_events = Counter(p + "pushed_events_total", "Events the hub acknowledged",
                                     registry=r)
        self.pulled_events = Counter(p + "pulled_events_total", "Events pulled and applied",
                                     registry=r)
        self.alert_level = Gauge(p + "alert_level",
                                 "0 ok, 1 warning, 2 critical (see docs/how-to/operate.md)",
                                 registry=r)
        self.db_up = Gauge(p + "db_up", "1 when the database answers, else 0", registry=r)
        self.relay_kept_batches = Gauge(p + "relay_kept_batches",
                                        "Pulled batches kept to relay after a hub restore",
                                        registry=r)
        self.relay_kept_bytes = Gauge(p + "relay_kept_bytes",
                                      "Signed bytes of the kept relay batches", registry=r)
        self.clock_offset = Gauge(p + "clock_offset_seconds",
                                  "This node's wall clock minus the hub's, by the hub's latest "
                                  "reply that showed it (positive: ahead)", registry=r)
        self.hub_refusing = Gauge(p + "hub_refusing",
                                  "1 while the hub refuses this node's requests (not BUSY)",
                                  registry=r)
        self.relay_due = Gauge(p + "relay_due",
                               "1 while a relay pass after a hub restore has not completed",
                               registry=r)

    def update(self, snap: dict, level: str) -> None:
        """Copy a snapshot into the gauges (counters and histograms move as things happen)."""
        if snap.get("last_push_ok") is not None:
            self.last_push.set(snap["last_push_ok"])
        if snap.get("last_pull_ok") is not None:
            self.last_pull.set(snap["last_pull_ok"])
        self.sync_age.set(sync_age(snap))
        self.outbox.set(snap.get("outbox", 0))
        if snap.get("inbound_lag") is not None:
            self.inbound_lag.set(snap["inbound_lag"])
        self.replay_failures_consecutive.set(snap.get("replay_failures_consecutive", 0))
        self.open_conflicts.set(snap.get("open_conflicts", 0))
        self.parked.set(snap.get("parked", 0))
        staging = snap.get("staging") or {}
        for key, kind in (("email_backlog", "email"), ("xlsx_pending", "excel")):
            if isinstance(staging.get(key), int | float):
                self.staging_backlog.labels(kind=kind).set(staging[key])
        oldest = staging.get("excel_oldest_age_s")
        self.staging_oldest.set(oldest if isinstance(oldest, int | float) else 0)
        self.alert_level.set(EXIT_CODES[level])
        self.db_up.set(1 if snap.get("db_ok", True) else 0)
        agent = snap.get("agent") or {}
        self.relay_due.set(1 if agent.get("relay_due") else 0)
        clock = agent.get("clock")
        if clock is not None:
            self.clock_offset.set(clock["offset_ms"] / 1000)
        self.hub_refusing.set(1 if agent.get("refused") else 0)


def _refusal_words(refused: dict, snap: dict, ahead: bool) -> str:
    """The HUB_REFUSING message, with the queue as it is now (the agent's words were made
    at the refusal, and writes may have been taken since)."""
    queued = snap.get("outbox", 0)
    head = (f"the hub refused this node's latest {refused.get('request', 'request')} "
            f"({refused.get('code')})")
    held = refused.get("held")
    if held and not ahead:
        return f"{head}: " + held_back(queued, held["newest_hlc"], int(snap["now"] * 1000),
                                       held["max_drift_ms"])
    if ahead:
        return f"{head} because this node's clock is ahead (CLOCK_AHEAD); {queued} event(s) wait"
    return f"{head} and {queued} event(s) wait: {refused.get('hint', '')}"


def _duration(seconds: float) -> str:
    """Plain words for a span, the same words as the clock guard's (one rounding)."""
    return duration(seconds * 1000)
