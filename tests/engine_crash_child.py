"""Child process for the crash tests: applies or commits until it is killed.

Usage: python engine_crash_child.py DB MODE [FAULT_AT]
MODE "remote": apply the batches of ``batches()`` with the hub cursor; "local": commit
changes in groups of ``LOCAL_GROUP``.  With FAULT_AT=n it kills itself with SIGKILL inside
the n-th transaction (after the journal and the fast path wrote, before it commits).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from engine_util import LEAGUES, NOW, Origin, open_store  # noqa: E402

from riversync.engine.schema import load_schema  # noqa: E402
from riversync.engine.store import LocalChange  # noqa: E402
from riversync.protocol import hlc  # noqa: E402

SCHEMA = load_schema(LEAGUES)
BATCHES = 30
PER_BATCH = 400
LOCAL_GROUP = 7


def batches():
    o = Origin("south")
    out = []
    for b in range(BATCHES):
        evs = []
        for i in range(PER_BATCH):
            n = b * PER_BATCH + i
            h = hlc.make(NOW - 100_000 + n)
            if n % 3 == 2:
                evs.append(o.update(h, "players", f"P{n - 1}", {"phone": f"p{n}"}, "sam"))
            else:
                evs.append(o.create(h, "players", f"P{n}", {"full_name": f"Player {n}"}, "sam"))
        out.append(evs)
    return out


def main() -> None:
    path, mode = sys.argv[1], sys.argv[2]
    fault_at = int(sys.argv[3]) if len(sys.argv) > 3 else None
    store = open_store(path, SCHEMA, node="north")
    count = {"n": 0}

    def fault(phase: str) -> None:
        count["n"] += 1
        if fault_at is not None and count["n"] == fault_at:
            os.kill(os.getpid(), signal.SIGKILL)

    store._fault = fault
    print("ready", flush=True)
    if mode == "remote":
        for n, evs in enumerate(batches(), start=1):
            store.apply_remote(evs, now_ms=NOW, cursor=("hub", 1, n))
    else:
        i = 0
        while True:
            store.commit_local([LocalChange("create", "players", f"L{i}-{j}",
                                            {"full_name": f"Local {i} {j}"})
                                for j in range(LOCAL_GROUP)], user="nora", now_ms=NOW)
            i += 1


if __name__ == "__main__":
    main()
