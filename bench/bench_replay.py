"""Replay benchmark (pytest-benchmark): the engine folding signed batches vs raw SQLite.

``make bench`` runs it on 20,000 events; ``riversync bench replay --events 200000 --json``
is the full-size run whose figures the docs quote (docs/explanation/merge.md).  Speed is
measured here, never asserted in tests.
"""

from __future__ import annotations

import sys

from riversync.engine import replay_bench

EVENTS = 20_000


def test_replay_inorder_and_shuffled(benchmark):
    out = benchmark.pedantic(replay_bench.run, args=(EVENTS,), rounds=1, iterations=1)
    benchmark.extra_info.update(out)
    assert out["same_state"]


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    print(replay_bench.run(n))
