"""A restore through the running node while clerks write: every write is answered 2xx and
kept, or 503 (the node is busy) and not taken; none is a 500 for a write that was committed
(a write under way reached the store after the restore closed it)."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

from restore_util import run, running_cluster


def all_players(c) -> set[str]:
    out: set[str] = set()
    client = c.client("north")
    while True:
        rows = client.get(f"/v1/tables/players/rows?limit=1000&offset={len(out)}")["rows"]
        out |= {r["player_id"] for r in rows}
        if len(rows) < 1000:
            return out


def test_writes_during_a_restore_are_kept_or_refused_never_a_500(tmp_path):
    with running_cluster(tmp_path) as c:
        cfg = str(c.node_configs["north"])
        backup = run("backup", "-c", cfg)["path"]
        url = c.node_url("north") + "/v1/tables/players/rows"
        token = c.tokens["north-clerk"]
        answers: dict[str, int] = {}
        stop = threading.Event()

        def writer(w: int) -> None:
            i = 0
            while not stop.is_set():
                pk = f"W{w}-{i}"
                req = urllib.request.Request(url, method="POST", data=json.dumps(
                    {"pk": pk, "values": {"full_name": pk}}).encode())
                req.add_header("Authorization", f"Bearer {token}")
                req.add_header("Content-Type", "application/json")
                try:
                    with urllib.request.urlopen(req, timeout=60) as resp:
                        answers[pk] = resp.status
                except urllib.error.HTTPError as e:
                    answers[pk] = e.code
                    e.close()
                i += 1

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        try:
            for _ in range(2):
                run("restore", "-c", cfg, backup)
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        assert 500 not in answers.values(), sorted(set(answers.values()))
        kept = {pk for pk, status in answers.items() if status == 201}
        held = all_players(c)
        assert kept and kept <= held
        refused = {pk for pk, status in answers.items() if status == 503}
        assert not refused & held
