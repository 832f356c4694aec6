"""Restore a node from a backup and start a new node epoch at once.

After the files are swapped (``backup.restore_file``) the node asks the hub what it holds
of the epoch the backup belongs to.  Events of that epoch the hub holds come back through
the ordinary pull; events the backup holds but the hub never got are re-sequenced into
the new epoch (``Store.start_new_epoch``) and pushed as new.  If the hub cannot be
reached, the backup's own record of what the hub acknowledged is used: anything the hub
got after the backup was taken then comes back twice, once under each epoch, which the
merge treats as two writes of the same values (see docs/how-to/operate.md).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from riversync.config import NodeConfig
from riversync.protocol.codec import sign
from riversync.protocol.messages import Hello
from riversync.protocol.version import VERSION

from .agent import META_CHAIN, META_PENDING, now_ms
from .backup import restore_file
from .transport import HubClient, HubUnreachable

HELLO_TIMEOUT_S = 5.0


async def _hello(cfg: NodeConfig, epoch: int, hub_url: str):
    client = HubClient(hub_url)
    try:
        body = Hello(v=VERSION, c=cfg.roster.cluster_id, o=cfg.node_id, ts=now_ms(), e=epoch,
                     nonce=os.urandom(16))
        return await asyncio.wait_for(client.hello(sign(body, cfg.signing_key())),
                                      HELLO_TIMEOUT_S)
    finally:
        await client.close()


def hub_last_seq(cfg: NodeConfig, epoch: int, hub_url: str) -> int | None:
    """The last event of ``epoch`` the hub holds (0: none); None when the hub is away."""
    try:
        reply = asyncio.run(_hello(cfg, epoch, hub_url))
    except (HubUnreachable, TimeoutError, OSError):
        return None
    for o in reply.origins:
        if o.epoch == epoch:
            return o.last_seq
    return 0


def acked_in_store(store) -> int:
    """What the backup itself records as acknowledged by the hub for its epoch."""
    pending = store.outbox(limit=1)
    if pending and pending[0].epoch == store.epoch:
        return pending[0].seq - 1
    return int(store.digests()["events"].get(f"{store.node_id}/{store.epoch}", 0))


def restore_into_closed(cfg: NodeConfig, schema, backup: Path, hub_url: str) -> dict:
    """Swap ``backup`` in (no connection may be open), start a new epoch, return the store."""
    from .daemon import new_epoch, open_store

    moved = restore_file(backup, cfg.db_path)
    store = open_store(cfg, schema)
    restored = store.digests()  # what the backup holds, before anything else touches it
    old_epoch = store.epoch
    held = hub_last_seq(cfg, old_epoch, hub_url)
    source = "hub"
    if held is None:
        held = acked_in_store(store)
        source = "backup"
    epoch = new_epoch()
    store.start_new_epoch(epoch, held)
    store.meta_set(META_PENDING, "")
    store.meta_set(META_CHAIN, "")
    return {
        "store": store,
        "backup": str(backup),
        "db_path": str(cfg.db_path),
        "moved_aside": [str(p) for p in moved],
        "old_epoch": old_epoch,
        "new_epoch": epoch,
        "hub_last_seq": held,
        "hub_last_seq_from": source,
        "restored_tables": restored["tables"],
        "restored_events": restored["events"],
    }
