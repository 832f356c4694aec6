"""The node daemon watches its email drop folder when its config says so, and only then."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from riversync import config
from riversync.cluster import init_cluster
from riversync.node.localcluster import LocalCluster, update_toml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "examples" / "leagues" / "schema.toml"
MAIL = ROOT / "examples" / "leagues" / "mail" / "001-registration.eml"


def email_batches(c: LocalCluster, office: str) -> list[dict]:
    return [b for b in c.client(office).get("/v1/staging")["batches"] if b["kind"] == "email"]


def test_watcher_runs_when_enabled_and_not_otherwise(tmp_path):
    c = LocalCluster(tmp_path / "c", ["north", "south"], schema=SCHEMA).create()
    update_toml(c.node_configs["south"], staging={"watch_email": True, "email_poll_s": 1})
    update_toml(c.node_configs["north"], staging={"email_poll_s": 1})
    drops = {o: Path(c.node_config(o).staging_email_dir) for o in c.offices}
    try:
        c.start_all()
        for drop in drops.values():
            drop.mkdir(parents=True, exist_ok=True)
            shutil.copy(MAIL, drop / "a.eml")
        c.wait_for("south's watcher to stage the email", lambda: email_batches(c, "south"), 30)
        assert (drops["south"] / "processed" / "a.eml").exists()
        assert not (drops["south"] / "a.eml").exists()
        time.sleep(2.5)  # more than two of north's poll intervals, had it a watcher
        assert (drops["north"] / "a.eml").exists()
        assert email_batches(c, "north") == []
    finally:
        c.stop_all()


def test_watch_settings_default_off_and_bad_values_name_the_field(tmp_path):
    init_cluster(tmp_path / "c", ["north"])
    path = tmp_path / "c" / "node-north.toml"
    cfg = config.load_node_config(path)
    assert cfg.staging_watch_email is False and cfg.staging_email_poll_s == 30
    for change, field in (({"watch_email": "yes"}, "staging.watch_email"),
                          ({"email_poll_s": 0}, "staging.email_poll_s")):
        update_toml(path, staging=change)
        with pytest.raises(config.ConfigError) as e:
            config.load_node_config(path)
        assert e.value.field == field
        update_toml(path, staging={"watch_email": False, "email_poll_s": 30})
