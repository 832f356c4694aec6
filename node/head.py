"""The node's head file: its own highest (epoch, seq), kept beside the database.

Why.  A database put back by hand (an old copy over ``north.db``) looks perfectly sound;
only the hub knows the node had handed out more numbers since.  When the hub is away, the
node would take new writes under numbers the hub already holds for other events (a
fork the hub refuses later, with those writes stranded).  The head file is written after
every local commit (``<db>.head``, replaced atomically), so at start-up a database that is
behind it is recognised before any write, hub or no hub, and the node starts a new node
epoch at once (like ``riversync restore``).

The file is updated after the commit, never before, so a crash in between leaves it
behind the database, which is harmless (nothing is detected); it is never ahead unless
the database went back.  A missing or unreadable file detects nothing.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("riversync.node.head")


def head_path(db_path) -> Path:
    p = Path(db_path)
    return p.with_name(p.name + ".head")


def read(db_path) -> tuple[int, int] | None:
    """The recorded (epoch, seq), or None when there is no usable head file."""
    try:
        text = head_path(db_path).read_text().strip()
        e, s = text.split(":")
        return int(e), int(s)
    except (OSError, ValueError):
        return None


def write(db_path, epoch: int, seq: int) -> None:
    """Replace the head file atomically (temp file + rename); no fsync: see the module doc."""
    p = head_path(db_path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(f"{epoch}:{seq}\n")
    os.replace(tmp, p)


def record(store) -> None:
    """Record the store's current epoch and highest own number (db thread, after a commit)."""
    write(store.path, store.epoch, store.own_seq(store.epoch) or 0)


def behind(store) -> tuple[int, int] | None:
    """The head (epoch, seq) when the database is older than it (put back from a copy)."""
    head = read(store.path)
    if head is None:
        return None
    epoch, seq = head
    # A node that never wrote in ``epoch`` has handed out nothing there (the head says 0):
    # that is not behind, or every idle node would start a new epoch at each start-up.
    if (store.own_seq(epoch) or 0) < seq:
        return head
    return None
