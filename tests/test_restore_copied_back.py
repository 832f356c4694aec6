"""A node database put back from a copy by hand, and fixed with backup then restore.

Two ways the node's own old numbers can name other events at the hub: a copy of an older
file put in place while the hub is away (the node must notice before any write, from its
head file) and a node that did take writes over such a copy (an older release, or the
head file went back too).  In both cases every accepted write must reach every office,
and every office must end with the same events and the same state.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from restore_util import add, players, run, running_cluster

from riversync.engine.schema import load_schema
from riversync.engine.store import Store
from riversync.node.localcluster import LocalCluster

pytestmark = pytest.mark.slow

WAIT = 30.0


def put_back(db: Path, copy: Path, aside: Path, *, with_head: bool) -> None:
    """What an operator does by hand: the live files aside, an old copy in their place."""
    aside.mkdir()
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(db) + suffix)
        if p.exists():
            shutil.move(p, aside / p.name)
    shutil.copyfile(copy, db)
    if with_head:
        shutil.copyfile(Path(str(copy) + ".head"), Path(str(db) + ".head"))


def converged_clean(c: LocalCluster, want: set[str]) -> bool:
    if not c.converged():
        return False
    for office in c.offices:
        st = c.status(office)
        if st["agent"]["error"] is not None or players(c, office) != want:
            return False
    return True


@pytest.fixture
def cluster(tmp_path):
    with running_cluster(tmp_path) as c:
        yield c


def test_copy_put_back_with_the_hub_away_is_noticed_before_any_write(cluster, tmp_path):
    """Proves [N-EPOCH-3]: a database behind its head file starts a new epoch at start-up."""
    c = cluster
    cfg = str(c.node_configs["north"])
    db = c.node_config("north").db_path
    add(c, "P-0")
    c.wait_for("convergence", c.converged, WAIT)
    b1 = run("backup", "-c", cfg)
    hf = add(c, *(f"HF{i}" for i in range(5)))
    c.wait_for("HF at south", lambda: {f"HF{i}" for i in range(5)} <= players(c, "south"), WAIT)
    old_epoch = hf[0][0]

    c.stop("north")
    c.stop("hub")
    put_back(db, Path(b1["path"]), tmp_path / "aside", with_head=False)
    c.start("north")
    st = c.status("north")
    assert st["epoch"] != old_epoch  # renewed before any write, hub still away
    hg = add(c, "HG0", "HG1", "HG2")
    assert {e for e, _ in hg} == {st["epoch"]}
    c.start("hub")
    want = {"P-0", *(f"HF{i}" for i in range(5)), "HG0", "HG1", "HG2"}
    c.wait_for("convergence with every write", lambda: converged_clean(c, want), WAIT)


def test_writes_over_a_copy_survive_backup_and_restore(cluster, tmp_path):
    """Proves [N-EPOCH-4]: own old-epoch events are compared by content, never acknowledged
    by number; the node's divergent writes are re-issued, the hub's events adopted."""
    c = cluster
    cfg = str(c.node_configs["north"])
    db = c.node_config("north").db_path
    add(c, "P-0")
    c.wait_for("convergence", c.converged, WAIT)
    b1 = run("backup", "-c", cfg)
    shutil.copyfile(Path(str(db) + ".head"), Path(b1["path"] + ".head"))  # copied with it
    hf = add(c, *(f"HF{i}" for i in range(5)))
    c.wait_for("HF at south", lambda: {f"HF{i}" for i in range(5)} <= players(c, "south"), WAIT)
    old_epoch = hf[0][0]

    c.stop("north")
    c.stop("hub")
    # The head file goes back with the copy, so nothing at start-up can tell.
    put_back(db, Path(b1["path"]), tmp_path / "aside", with_head=True)
    c.start("north")
    hg = add(c, "HG0", "HG1", "HG2")
    assert {e for e, _ in hg} == {old_epoch}
    assert [s for _, s in hg] == [s for _, s in hf[:3]]  # the numbers the hub holds for HF
    c.start("hub")
    c.wait_for("the fork", lambda: (c.status("north")["agent"]["error"] or {}).get("code")
               == "SEQUENCE_FORK", WAIT)

    b2 = run("backup", "-c", cfg)
    res = run("restore", "-c", cfg, b2["path"])
    assert res["new_epoch"] != old_epoch
    want = {"P-0", *(f"HF{i}" for i in range(5)), "HG0", "HG1", "HG2"}
    c.wait_for("convergence with every write", lambda: converged_clean(c, want), WAIT)
    st = c.status("north")
    assert st["level"] == "ok", st["reasons"]
    for office in c.offices:
        audit = c.client(office).get("/v1/audit?limit=1000")["audit"]
        hg_ids = [a["event"] for a in audit if a["pk"].startswith("HG")]
        assert len(hg_ids) == 3 and {e for _n, e, _s in hg_ids} == {res["new_epoch"]}
    # The re-issued writes' first copies stay in the journal, bytes untouched: the audit
    # chain still verifies.
    c.stop("north")
    ncfg = c.node_config("north")
    with Store.open(str(ncfg.db_path), load_schema(c.dir / "schema.toml"), ncfg.roster,
                    "north") as s:
        assert s.verify_audit()
