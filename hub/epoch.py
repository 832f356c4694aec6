"""Hub epochs: where a pull starts when the node's cursor belongs to another epoch.

Pure functions over the epoch history (no I/O), so the rule is tested on its own.

A hub restored from a backup forgets everything after the backup's head and then hands
out those sequence numbers again, to other batches.  So it starts a new epoch whose
restore point is the restored head.  A cursor ``c`` of an older epoch ``E`` is trusted
only up to the smallest restore point of the epochs after ``E``: below it the older and
newer history are the same rows.  A cursor of an epoch the hub does not know (its store
was replaced, or restored to before that epoch began) is not trusted at all: the node
pulls from 0.  Re-pulling is safe because applying a batch twice changes nothing.
"""

from __future__ import annotations

from .store import EpochInfo


def start_for(epochs: list[EpochInfo], node_hub_epoch: int, cursor: int) -> int:
    """The cursor to serve from for a node that says it stands at ``cursor`` of ``node_hub_epoch``."""
    ids = [e.epoch for e in epochs]
    if node_hub_epoch == ids[-1]:
        return cursor
    if node_hub_epoch not in ids:
        return 0
    later = epochs[ids.index(node_hub_epoch) + 1:]
    return min([cursor] + [e.restore_point for e in later])
