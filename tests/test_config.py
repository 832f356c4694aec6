"""Config loading: defaults, and a field-named error for every kind of bad value."""

from __future__ import annotations

import os
import tomllib

import pytest
import tomli_w

from riversync import config
from riversync.cluster import init_cluster


@pytest.fixture
def cdir(tmp_path):
    init_cluster(tmp_path / "c", ["north", "south"])
    return tmp_path / "c"


def edit(path, **changes):
    data = tomllib.loads(path.read_text())
    for key, value in changes.items():
        table = data
        *parents, leaf = key.split(".")
        for p in parents:
            table = table.setdefault(p, {})
        if value is None:
            table.pop(leaf, None)
        else:
            table[leaf] = value
    path.write_text(tomli_w.dumps(data))


def test_generated_configs_load_with_the_documented_defaults(cdir):
    hub = config.load_hub_config(cdir / "hub.toml")
    assert (hub.listen_host, hub.listen_port) == ("127.0.0.1", config.DEFAULT_HUB_PORT)
    assert hub.db_path == cdir / "hub.db" and hub.roster.offices == ["north", "south"]
    assert hub.limits == config.HubLimits()
    node = config.load_node_config(cdir / "node-south.toml")
    assert node.node_id == node.office == "south"
    assert node.sync_interval_s == 60 and node.realtime is False
    assert node.alerts == config.Alerts(warn_no_sync_s=600, warn_queued_events=500,
                                        critical_no_sync_s=1800)
    assert node.key_path == cdir / "keys" / "south.key"
    assert node.signing_key().public_key == node.roster.nodes["south"].public_key


def test_missing_settings_take_defaults(cdir):
    (cdir / "hub.toml").write_text("")
    hub = config.load_hub_config(cdir / "hub.toml")
    assert hub.limits.max_wait_ms == config.DEFAULT_MAX_WAIT_MS
    assert hub.roster_path == cdir / "roster.toml"


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"listen_port": "8700"}, "listen_port", "integer"),
        ({"listen_port": 70000}, "listen_port", "between"),
        ({"limits.max_wait_ms": 10**9}, "limits.max_wait_ms", "between"),
        ({"limits.max_body_bytes": True}, "limits.max_body_bytes", "integer"),
        ({"limits.max_wiat_ms": 5}, "limits.max_wiat_ms", "unknown"),
        ({"db_path": ""}, "db_path", "non-empty"),
        ({"roster_path": "nope.toml"}, "", "not found"),
    ],
)
def test_bad_hub_settings_name_the_field(cdir, change, field, words):
    edit(cdir / "hub.toml", **change)
    with pytest.raises(config.ConfigError) as e:
        config.load_hub_config(cdir / "hub.toml")
    assert e.value.field == field and words in str(e.value)


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"node_id": "west"}, "node_id", "not a node"),
        ({"node_id": None}, "node_id", "missing"),
        ({"hub_url": "ftp://x"}, "hub_url", "http"),
        ({"hub_url": "http://127.0.0.1:99999"}, "hub_url", "out of range"),
        ({"sync_interval_s": 0}, "sync_interval_s", "between"),
        ({"realtime": "yes"}, "realtime", "true or false"),
        ({"alerts.critical_no_sync_s": 60}, "alerts.critical_no_sync_s", "warn_no_sync_s"),
        ({"staging.inbox": "x"}, "staging.inbox", "unknown"),
    ],
)
def test_bad_node_settings_name_the_field(cdir, change, field, words):
    edit(cdir / "node-north.toml", **change)
    with pytest.raises(config.ConfigError) as e:
        config.load_node_config(cdir / "node-north.toml")
    assert e.value.field == field and words in str(e.value)
    assert str(e.value).startswith("node-north.toml: ")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"nodes.north.public_key": "abcd"}, "nodes.north.public_key"),
        ({"nodes.north.office": "west"}, "nodes.north.office"),
        ({"users.admin.role": "boss"}, "users.admin.role"),
        ({"users.admin.token_sha256": "secret"}, "users.admin.token_sha256"),
        ({"cluster_id": "a b"}, "cluster_id"),
        ({"offices": []}, "offices"),
    ],
)
def test_bad_roster_names_the_field(cdir, change, field):
    edit(cdir / "roster.toml", **change)
    with pytest.raises(config.ConfigError) as e:
        config.load_roster(cdir / "roster.toml")
    assert e.value.field == field


def test_broken_toml_is_a_config_error(cdir):
    (cdir / "hub.toml").write_text("listen_port = = 3\n")
    with pytest.raises(config.ConfigError, match="not valid TOML"):
        config.load_hub_config(cdir / "hub.toml")


def test_key_file_readable_by_others_is_refused(cdir):
    key = cdir / "keys" / "north.key"
    os.chmod(key, 0o644)
    with pytest.raises(config.ConfigError, match="readable by others") as e:
        config.load_signing_key(key)
    assert "chmod 600" in e.value.hint


def test_key_of_another_node_is_refused(cdir):
    edit(cdir / "node-north.toml", key_path="keys/south.key")
    node = config.load_node_config(cdir / "node-north.toml")
    with pytest.raises(config.ConfigError) as e:
        node.signing_key()
    assert e.value.field == "key_path"


def test_config_objects_are_frozen(cdir):
    hub = config.load_hub_config(cdir / "hub.toml")
    with pytest.raises(AttributeError):
        hub.listen_port = 1  # type: ignore[misc]
