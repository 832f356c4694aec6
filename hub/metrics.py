"""The hub's Prometheus metrics.

Each app gets its own ``CollectorRegistry`` (never the global one), so several hubs in one
process, as in tests, do not share counters.  Counters are bumped where things happen;
gauges that describe the store (cursors, backlog, storage) are computed at scrape time
from the same snapshot ``/v1/status`` returns, so the two never disagree.
Every name is listed in docs/reference/hub.md.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

P = "riversync_hub_"


class HubMetrics:
    def __init__(self, snapshot: Callable[[], dict], commits: Callable[[], int] = lambda: 0):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.batches_stored = Counter(P + "batches_stored", "Batches stored (new, not duplicates)",
                                      registry=r)
        self.events_stored = Counter(P + "events_stored", "Events stored in new batches",
                                     registry=r)
        self.duplicate_batches = Counter(P + "duplicate_batches",
                                         "Pushes acknowledged as duplicates", registry=r)
        self.batches_served = Counter(P + "batches_served", "Batches sent in pull replies",
                                      registry=r)
        self.events_served = Counter(P + "events_served", "Events sent in pull replies",
                                     registry=r)
        self.bytes_received = Counter(P + "received_bytes", "Request body bytes read",
                                      registry=r)
        self.requests = Counter(P + "requests", "Requests answered, by endpoint",
                                ["endpoint"], registry=r)
        self.refused = Counter(P + "requests_refused",
                               "Requests refused with a protocol error, by error code",
                               ["code"], registry=r)
        self.api_errors = Counter(P + "api_errors",
                                  "Requests that failed by the hub's own fault (5xx), by endpoint",
                                  ["endpoint"], registry=r)
        self.failed_deliveries = Counter(P + "failed_deliveries",
                                         "Pull requests of a known node that got no batches "
                                         "because of an error", ["node"], registry=r)
        self.disconnects = Counter(P + "client_disconnects",
                                   "Requests whose client went away before the body arrived",
                                   registry=r)
        self.inflight = Gauge(P + "inflight_requests", "Requests being handled now", registry=r)
        self.long_polls = Gauge(P + "long_polls", "Pull requests waiting for new batches",
                                registry=r)
        r.register(_StoreCollector(snapshot, commits))


class _StoreCollector:
    """Gauges read from the store at scrape time."""

    def __init__(self, snapshot: Callable[[], dict], commits: Callable[[], int]):
        self._snapshot = snapshot
        self._commits = commits

    def describe(self):
        return []

    def collect(self):
        s = self._snapshot()
        yield CounterMetricFamily(P + "push_commits", "Store transactions that committed pushes "
                                  "(batches stored / commits = group-commit size)",
                                  value=self._commits())
        yield GaugeMetricFamily(P + "head_seq", "Highest hub sequence handed out", value=s["head"])
        yield GaugeMetricFamily(P + "epoch_restore_point_seq",
                                "Hub sequence the current hub epoch started from",
                                value=s["restore_point"])
        yield GaugeMetricFamily(P + "prune_horizon_seq",
                                "Highest hub sequence pruned (0: never); a node cursor below "
                                "it is refused with CURSOR_PRUNED",
                                value=(s.get("pruned") or {}).get("upto_seq", 0))
        yield GaugeMetricFamily(P + "epochs", "Hub epochs so far (1 + restores)",
                                value=len(s["epochs"]))
        yield GaugeMetricFamily(P + "held_batches", "Batches held", value=s["batches_held"])
        yield GaugeMetricFamily(P + "held_events", "Events held", value=s["events_held"])
        yield GaugeMetricFamily(P + "storage_used_bytes", "Bytes of the store files (db, wal, shm)",
                                value=s["storage_bytes_used"])
        yield GaugeMetricFamily(P + "storage_free_bytes", "Bytes free on the store's filesystem",
                                value=s["storage_bytes_free"])
        cursor = GaugeMetricFamily(P + "node_cursor_seq",
                                   "Hub sequence each node confirmed it holds", labels=["node"])
        backlog_b = GaugeMetricFamily(P + "node_backlog_batches",
                                      "Batches waiting for each node", labels=["node"])
        backlog_e = GaugeMetricFamily(P + "node_backlog_events", "Events waiting for each node",
                                      labels=["node"])
        last_push = GaugeMetricFamily(P + "node_last_push_timestamp_seconds",
                                      "Unix time of each node's last stored batch", labels=["node"])
        last_pull = GaugeMetricFamily(P + "node_last_pull_timestamp_seconds",
                                      "Unix time of each node's last pull", labels=["node"])
        for node, n in s["nodes"].items():
            cursor.add_metric([node], n["cursor"])
            backlog_b.add_metric([node], n["backlog_batches"])
            backlog_e.add_metric([node], n["backlog_events"])
            if n["last_push_ms"]:
                last_push.add_metric([node], n["last_push_ms"] / 1000)
            if n["last_pull_ms"]:
                last_pull.add_metric([node], n["last_pull_ms"] / 1000)
        yield from (cursor, backlog_b, backlog_e, last_push, last_pull)
