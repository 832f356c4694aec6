"""Node settings beyond the basics: where the schema is, how often a pulled batch may fail
before replication stops, and how many backups are kept; each checked, each used."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest
import tomli_w

from riversync import config
from riversync.cluster import init_cluster
from riversync.node import backup as backups
from riversync.node.daemon import make_agent, schema_path_for, thresholds_from
from riversync.node.localcluster import LocalCluster, update_toml

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "examples" / "leagues" / "schema.toml"


@pytest.fixture
def cdir(tmp_path):
    init_cluster(tmp_path / "c", ["north", "south"])
    return tmp_path / "c"


def edit(path: Path, **changes) -> None:
    data = tomllib.loads(path.read_text())
    for key, value in changes.items():
        table = data
        *parents, leaf = key.split(".")
        for p in parents:
            table = table.setdefault(p, {})
        table[leaf] = value
    path.write_text(tomli_w.dumps(data))


def test_defaults_are_the_former_fixed_values(cdir):
    cfg = config.load_node_config(cdir / "node-north.toml")
    assert cfg.schema_path == cdir / "schema.toml"
    assert schema_path_for(cfg) == cdir / "schema.toml"
    assert cfg.replay_retry_threshold == 3
    assert backups.retention_for(cfg) == backups.Retention(keep_last=24, keep_daily=14)


def test_settings_are_read_and_passed_on(cdir):
    path = cdir / "node-north.toml"
    edit(path, schema_path="schemas/leagues.toml", replay_retry_threshold=7,
         backup_keep_last=5, backup_keep_daily=0)
    cfg = config.load_node_config(path)
    assert schema_path_for(cfg) == cdir / "schemas" / "leagues.toml"
    assert thresholds_from(cfg).replay_retry_threshold == 7
    assert backups.retention_for(cfg) == backups.Retention(keep_last=5, keep_daily=0)


def test_the_agent_takes_the_configured_retry_threshold(cdir):
    from types import SimpleNamespace

    path = cdir / "node-north.toml"
    edit(path, replay_retry_threshold=9)
    cfg = config.load_node_config(path)
    ctx = SimpleNamespace(cfg=cfg, store=None, db=None, metrics=None)
    assert make_agent(ctx).s.replay_retry_threshold == 9


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"schema_path": ""}, "schema_path", "non-empty"),
        ({"schema_path": 3}, "schema_path", "non-empty string"),
        ({"replay_retry_threshold": 0}, "replay_retry_threshold", "between"),
        ({"replay_retry_threshold": "3"}, "replay_retry_threshold", "integer"),
        ({"replay_retry_threshold": 5000}, "replay_retry_threshold", "between"),
        ({"backup_keep_last": 0}, "backup_keep_last", "between"),
        ({"backup_keep_last": 2.5}, "backup_keep_last", "integer"),
        ({"backup_keep_daily": -1}, "backup_keep_daily", "between"),
        ({"backup_keep_daily": True}, "backup_keep_daily", "integer"),
    ],
)
def test_bad_settings_name_the_field_and_change_nothing(cdir, change, field, words):
    path = cdir / "node-north.toml"
    edit(path, **change)
    before = {p: p.read_bytes() for p in cdir.rglob("*") if p.is_file()}
    with pytest.raises(config.ConfigError) as e:
        config.load_node_config(path)
    assert e.value.field == field
    assert words in str(e.value)
    assert {p: p.read_bytes() for p in cdir.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_a_node_runs_on_a_configured_schema_and_keeps_the_configured_backups(tmp_path):
    """The schema lives elsewhere than beside the roster, and only two backups are kept."""
    c = LocalCluster(tmp_path / "c", ["north", "south"], schema=SCHEMA).create()
    (c.dir / "schemas").mkdir()
    shutil.move(c.dir / "schema.toml", c.dir / "schemas" / "leagues.toml")
    for office in c.offices:
        update_toml(c.node_configs[office], schema_path="schemas/leagues.toml",
                    backup_keep_last=2, backup_keep_daily=0)
    try:
        c.start_all()
        c.client("north", "north-clerk").post(
            "/v1/tables/players/rows", {"pk": "P-1", "values": {"full_name": "Kim"}})
        c.wait_for("convergence", c.converged, 30)
        assert c.client("south").get("/v1/tables/players/rows/P-1")["row"]["full_name"] == "Kim"
        made = [c.client("north").post("/v1/backup", {})["path"] for _ in range(3)]
        left = backups.list_backups(c.node_config("north").backup_dir, "north")
        assert [str(p) for p in left] == made[1:]
    finally:
        c.stop_all()


def test_cluster_init_writes_every_new_setting(cdir):
    data = tomllib.loads((cdir / "node-south.toml").read_text())
    assert data["schema_path"] == "schema.toml"
    assert data["replay_retry_threshold"] == config.DEFAULT_REPLAY_RETRY_THRESHOLD
    assert (data["backup_keep_last"], data["backup_keep_daily"]) == (24, 14)
    assert data["staging"]["watch_email"] is False and data["staging"]["email_poll_s"] == 30
