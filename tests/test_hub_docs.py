"""Every hub metric, route, error code, command and config field is documented."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from prometheus_client import generate_latest

from riversync import config
from riversync.cli import build_parser
from riversync.hub.app import HTTP_CODES, ROUTES, RequestTimeout
from riversync.hub.metrics import HubMetrics
from riversync.protocol.errors import ALL_ERRORS

DOCS = Path(__file__).resolve().parent.parent / "docs"
HUB = (DOCS / "reference" / "hub.md").read_text()
CONFIG = (DOCS / "reference" / "config.md").read_text()

SNAPSHOT = {
    "head": 1, "restore_point": 0, "epochs": [{}], "batches_held": 1, "events_held": 1,
    "storage_bytes_used": 1, "storage_bytes_free": 1,
    "nodes": {"north": {"cursor": 1, "backlog_batches": 0, "backlog_events": 0,
                        "last_push_ms": 1, "last_pull_ms": 1}},
}


def test_every_metric_is_documented():
    m = HubMetrics(lambda: SNAPSHOT)
    m.requests.labels("x").inc()
    text = generate_latest(m.registry).decode()
    names = set(re.findall(r"^# TYPE (\S+) (\w+)", text, re.M))
    assert len(names) > 20
    for name, kind in names:
        if name.endswith("_created"):  # prometheus-client's per-counter creation time
            continue
        documented = name + "_total" if kind == "counter" and not name.endswith("_total") else name
        assert f"`{documented}`" in HUB, documented


def test_every_route_and_error_code_is_documented():
    for method, path, _ in ROUTES:
        assert re.search(rf"\| {method} \| `{re.escape(path)}` \|", HUB), (method, path)
    for err in ALL_ERRORS:
        assert f"`{err.code}`" in HUB
    for code in [*HTTP_CODES.values(), RequestTimeout.code, "STORAGE_FULL", "INTERNAL"]:
        assert f"`{code}`" in HUB


def test_every_hub_command_is_documented():
    parser = build_parser()
    hub = parser._subparsers._group_actions[0].choices["hub"]
    for action in hub._subparsers._group_actions[0].choices:
        assert f"riversync hub {action} -c hub.toml" in HUB, action


def test_every_config_field_is_documented():
    for f in dataclasses.fields(config.HubLimits):
        assert f"`limits.{f.name}`" in CONFIG, f.name
    node_fields = {"node_id", "hub_url", "listen_host", "listen_port", "db_path", "key_path",
                   "roster_path", "sync_interval_s", "realtime", "backup_dir"}
    for name in node_fields:
        assert f"`{name}`" in CONFIG, name
    for f in dataclasses.fields(config.Alerts):
        assert f"`alerts.{f.name}`" in CONFIG, f.name
    for name in ("staging.xlsx_dir", "staging.email_dir", "cluster_id", "token_sha256"):
        assert name in CONFIG
