"""Exit codes follow one rule (docs/reference/cli.md), checked on real processes:
0 done; 1 failed otherwise; 2 the request was refused (bad usage, input, id, token, role);
3 a daemon, database or file could not be reached.  Never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from riversync.node.localcluster import LocalCluster, update_toml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "examples" / "leagues" / "schema.toml"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalCluster(tmp_path_factory.mktemp("exits") / "c", ["north", "south"], schema=SCHEMA,
                     sync_interval_s=1, realtime=True).create()
    try:
        c.start_all()
        c.stop("south")  # its database exists; offline commands open it themselves
        yield c
    finally:
        c.stop_all()


def cli(*argv: str, env_cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "riversync.cli", *argv], capture_output=True,
                          text=True, timeout=120, cwd=env_cwd)


def one_line_error(p: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert lines[0].startswith("riversync: ") and lines[-1].startswith("Try: "), p.stderr


def test_a_representative_set_of_commands_exit_by_the_rule(cluster, tmp_path):
    north = str(cluster.node_configs["north"])
    south = str(cluster.node_configs["south"])  # south is stopped: offline commands
    xlsx = ROOT / "tests" / "data" / "C28-apply-atomicity.xlsx"
    cases = [
        # argv, exit code
        (["conflicts", "show", "nope", "-c", north], 2),
        (["conflicts", "resolve", "nope", "--merge", "{bad", "-c", north], 2),
        (["conflicts", "resolve", "north:9:9", "--merge", '{"full_name": "X"}', "-c", north],
         2),
        (["staging", "apply", "999", "-c", north], 2),
        (["staging", "apply", "999", "-c", south], 2),
        (["status", "-c", north, "--token", "bad"], 2),
        (["conflicts", "list", "-c", north, "--token", "bad"], 2),
        (["import", "xlsx", str(tmp_path / "missing.xlsx"), "--table", "players", "-c", north],
         3),
        (["restore", str(tmp_path / "missing.db"), "-c", south], 3),
        (["hub", "restore", "-c", str(cluster.hub_config), str(tmp_path / "missing.db")], 3),
        # the hub serves: a refusal because of state
        (["hub", "restore", "-c", str(cluster.hub_config), str(xlsx)], 2),
        # an existing file is never written over
        (["hub", "backup", "-c", str(cluster.hub_config), str(xlsx)], 2),
        (["ingest", "email", str(tmp_path / "no-folder"), "-c", south], 3),
        (["import", "xlsx", str(xlsx), "--table", "nope", "-c", south], 2),
        (["bench", "replay", "--workdir", str(tmp_path / "nonexist")], 3),
        (["status", "-c", str(tmp_path / "no-such-node.toml")], 3),
    ]
    for argv, want in cases:
        p = cli(*argv)
        assert p.returncode == want, (argv, p.returncode, p.stderr)
        one_line_error(p)


def test_a_config_pointing_at_the_hub_is_a_clear_error(cluster, tmp_path):
    cfg = tmp_path / "node-at-hub.toml"
    cfg.write_text(cluster.node_configs["north"].read_text())
    hub_port = int(cluster.hub_url.rsplit(":", 1)[1])
    update_toml(cfg, listen_port=hub_port, roster_path=str(cluster.dir / "roster.toml"))
    for argv in (["status", "-c", str(cfg)], ["conflicts", "list", "-c", str(cfg)]):
        p = cli(*argv)
        assert p.returncode == 3, (argv, p.stdout, p.stderr)
        one_line_error(p)
        assert "not as a riversync node" in p.stderr and p.stdout == ""


def test_status_never_prints_lag_none(cluster):
    p = cli("status", "-c", str(cluster.node_configs["north"]))
    assert p.returncode in (0, 1, 2) and "None" not in p.stdout, p.stdout


def test_offline_commands_refuse_a_missing_database_and_create_none(cluster, tmp_path):
    cfg = tmp_path / "node-south-wrong.toml"
    cfg.write_text(cluster.node_configs["south"].read_text())
    wrong = tmp_path / "typo" / "south.db"
    wrong.parent.mkdir()
    update_toml(cfg, db_path=str(wrong), roster_path=str(cluster.dir / "roster.toml"),
                backup_dir=str(tmp_path / "backups"))
    xlsx = ROOT / "tests" / "data" / "C28-apply-atomicity.xlsx"
    for argv in (["staging", "list", "-c", str(cfg)],
                 ["import", "xlsx", str(xlsx), "--table", "players", "-c", str(cfg)],
                 ["backup", "-c", str(cfg)]):
        p = cli(*argv)
        assert p.returncode == 3, (argv, p.stderr)
        one_line_error(p)
        assert "no database" in p.stderr
    assert list(wrong.parent.iterdir()) == []
    assert not (tmp_path / "backups").exists() or not any((tmp_path / "backups").iterdir())


def test_refusals_of_an_uploaded_workbook_name_the_users_file(cluster, tmp_path):
    """Through the running node the workbook travels under a temporary name; messages
    must still name the file the user gave."""
    bad = tmp_path / "roster-march.xlsx"
    bad.write_bytes(b"this is not a workbook")
    p = cli("import", "xlsx", str(bad), "--table", "players", "-c",
            str(cluster.node_configs["north"]))
    assert p.returncode == 2, p.stderr
    one_line_error(p)
    assert "roster-march.xlsx" in p.stderr and "upload.xlsx" not in p.stderr


def test_a_reader_that_goes_away_is_not_an_error():
    """`riversync ... | head` closes the pipe early: exit 0, no traceback (needs no cluster)."""
    exe = Path(sys.executable).parent / "riversync"
    p = subprocess.Popen([str(exe), "conformance", "--json"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.close()  # before the command has written anything (it is still importing)
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
