"""``riversync cluster init``: keys, roster, configs and tokens, with private files private."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest

from riversync import config
from riversync.cli import main
from riversync.cluster import read_tokens


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_init_makes_a_whole_cluster(tmp_path, capsys):
    d = tmp_path / "cl"
    assert main(["cluster", "init", str(d), "--offices", "north,south",
                 "--hub-url", "http://10.0.0.5:8700", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    roster = config.load_roster(d / "roster.toml")
    assert out["cluster_id"] == roster.cluster_id and roster.offices == ["north", "south"]
    assert set(roster.nodes) == {"north", "south"}

    # keys: private, and the roster holds their public halves
    assert mode(d / "keys") == 0o700
    for office in ("north", "south"):
        kf = d / "keys" / f"{office}.key"
        assert mode(kf) == 0o600
        assert config.load_signing_key(kf).public_key == roster.nodes[office].public_key
    assert roster.nodes["north"].public_key != roster.nodes["south"].public_key

    # users: a clerk and an operator per office, one admin; tokens stored hashed only
    roles = {u.name: (u.home_office, u.role) for u in roster.users.values()}
    assert roles == {"north-clerk": ("north", "clerk"), "north-operator": ("north", "operator"),
                     "south-clerk": ("south", "clerk"), "south-operator": ("south", "operator"),
                     "admin": ("north", "admin")}
    tokens = read_tokens(d / "tokens.txt")
    assert mode(d / "tokens.txt") == 0o600
    assert tokens == {name: u["token"] for name, u in out["users"].items()}
    for name, token in tokens.items():
        assert roster.users[name].token_sha256 == hashlib.sha256(token.encode()).hexdigest()
        assert token not in (d / "roster.toml").read_text()

    # configs load, and point at the hub URL given
    hub = config.load_hub_config(d / "hub.toml")
    assert hub.roster.cluster_id == roster.cluster_id
    for office in ("north", "south"):
        node = config.load_node_config(d / f"node-{office}.toml")
        assert node.hub_url == "http://10.0.0.5:8700" and node.node_id == office


def test_plain_output_prints_each_token_once(tmp_path, capsys):
    assert main(["cluster", "init", str(tmp_path / "cl"), "--offices", "a"]) == 0
    text = capsys.readouterr().out
    for token in read_tokens(tmp_path / "cl" / "tokens.txt").values():
        assert text.count(token) == 1


def test_init_refuses_an_existing_cluster_and_changes_nothing(tmp_path, capsys):
    d = tmp_path / "cl"
    assert main(["cluster", "init", str(d), "--offices", "north,south"]) == 0
    before = {p: p.read_bytes() for p in d.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["cluster", "init", str(d), "--offices", "north,south"]) == 2
    err = capsys.readouterr().err
    assert "already holds a cluster" in err and "Try:" in err
    assert {p: p.read_bytes() for p in d.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("offices", ["", "North", "a,a", "a b", "_x", "x" * 40])
def test_bad_office_names_are_refused_before_anything_is_written(tmp_path, capsys, offices):
    d = tmp_path / "cl"
    assert main(["cluster", "init", str(d), f"--offices={offices}"]) == 2
    assert "Try:" in capsys.readouterr().err
    assert not d.exists()


def test_bad_hub_url_is_refused(tmp_path, capsys):
    assert main(["cluster", "init", str(tmp_path / "cl"), "--offices", "a",
                 "--hub-url", "hub:8700"]) == 2
    assert not (tmp_path / "cl").exists()


def test_tokens_never_start_with_a_dash():
    """`--token -x...` would be read as an option by every command that takes a token."""
    from riversync.cluster import new_token

    assert not any(new_token().startswith("-") for _ in range(2000))
