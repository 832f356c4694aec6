"""``riversync hub``: serve the hub, back up, restore or prune its store, and list or forget
the schema digests it registered."""

from __future__ import annotations

import json
import time
from pathlib import Path

from riversync.cli import EXIT_CRITICAL, EXIT_UNAVAILABLE, CommandError
from riversync.config import ConfigError, load_hub_config


def register(subparsers) -> None:
    p = subparsers.add_parser("hub", help="run the hub and look after its store")
    sub = p.add_subparsers(dest="hub_command", metavar="ACTION", required=True)

    s = sub.add_parser("serve", help="serve the hub's HTTP API until SIGTERM",
                       description="Serve /v1/hello, /v1/push, /v1/pull, /v1/status, "
                       "/metrics and /healthz. Prints the URL it listens on first.")
    s.add_argument("-c", "--config", required=True, metavar="HUB_TOML")
    s.add_argument("--host", default=None, help="override listen_host")
    s.add_argument("--port", type=int, default=None,
                   help="override listen_port (0: pick a free port and print it)")
    s.set_defaults(handler=cmd_serve)

    b = sub.add_parser("backup", help="copy the live hub store to a file (WAL-safe)")
    b.add_argument("-c", "--config", required=True, metavar="HUB_TOML")
    b.add_argument("out", metavar="FILE",
                   help="the new file to write; an existing file is refused (exit 2), never "
                        "written over")
    b.add_argument("--json", action="store_true")
    b.set_defaults(handler=cmd_backup)

    r = sub.add_parser("restore", help="replace the hub store with a backup (hub stopped); "
                       "the next start begins a new hub epoch")
    r.add_argument("-c", "--config", required=True, metavar="HUB_TOML")
    r.add_argument("backup", metavar="FILE", help="a file made by `riversync hub backup`")
    r.add_argument("--json", action="store_true")
    r.set_defaults(handler=cmd_restore)

    pr = sub.add_parser("prune", help="delete batches every node has already pulled",
                        description="Delete the batches every roster node has pulled and "
                        "record the prune horizon. A node restored from a backup taken "
                        "before the prune can no longer catch up from the hub.")
    pr.add_argument("-c", "--config", required=True, metavar="HUB_TOML")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(handler=cmd_prune)

    sc = sub.add_parser("schemas", help="list the schema digests the hub registered, or "
                        "forget one",
                        description="The hub refuses a node whose schema file states a "
                        "registered version with another digest (SCHEMA_MISMATCH). Each "
                        "version is registered by the first node that tells it. If that node "
                        "had the wrong file, stop it, forget the version here, and let a node "
                        "with the right file say hello first.")
    sc.add_argument("-c", "--config", required=True, metavar="HUB_TOML")
    sc.add_argument("--forget", type=int, metavar="VERSION",
                    help="drop the registration of this schema version; the next node to "
                         "say hello with it registers its digest")
    sc.add_argument("--json", action="store_true")
    sc.set_defaults(handler=cmd_schemas)


def _config(args):
    try:
        return load_hub_config(args.config)
    except ConfigError as e:
        raise CommandError(str(e), e.hint, exit_code=EXIT_CRITICAL) from None


def cmd_serve(args) -> int:
    from riversync.hub.server import serve
    from riversync.hub.store_sqlite import StoreLockedError

    cfg = _config(args)
    try:
        return serve(cfg, host=args.host, port=args.port)
    except StoreLockedError as e:
        raise CommandError(str(e), "stop the other hub, or point db_path elsewhere",
                           exit_code=EXIT_UNAVAILABLE) from None
    except OSError as e:
        raise CommandError(f"cannot serve: {e}", "check listen_host/listen_port and db_path",
                           exit_code=EXIT_UNAVAILABLE) from None


def cmd_backup(args) -> int:
    import apsw

    from riversync.hub.store_sqlite import backup_store

    cfg = _config(args)
    if not cfg.db_path.exists():
        raise CommandError(f"no hub store at {cfg.db_path}", "check db_path in hub.toml",
                           exit_code=EXIT_UNAVAILABLE)
    out = Path(args.out)
    if not out.absolute().parent.is_dir():
        raise CommandError(f"folder {out.absolute().parent} does not exist",
                           "create it or choose another FILE", exit_code=EXIT_CRITICAL)
    try:
        if out.exists() or out.is_symlink():
            raise FileExistsError(f"{out} already exists")
        head = backup_store(cfg.db_path, out, cfg.roster.cluster_id)
    except FileExistsError:
        raise CommandError(
            f"{out} already exists; a hub backup never writes over a file (it may be the "
            "backup you would restore from)",
            "give a new file name, for example with the date and time in it; move the old "
            "file away first only if you are sure it is not needed",
            exit_code=EXIT_CRITICAL) from None
    except (apsw.Error, OSError) as e:
        raise CommandError(f"backup failed: {e}", "check the paths and free space") from None
    _say(args, {"backup": args.out, "head": head},
         f"Backed up the hub store to {args.out} (head {head}).")
    return 0


def cmd_restore(args) -> int:
    import apsw

    from riversync.hub.restore_check import HubRestoreRefused
    from riversync.hub.store_sqlite import StoreLockedError, restore_store

    cfg = _config(args)
    if not Path(args.backup).is_file():
        raise CommandError(f"no backup file {args.backup}", "check the path; `ls` the folder "
                           "where `riversync hub backup` writes", exit_code=EXIT_UNAVAILABLE)
    note = f"{args.backup} at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"
    try:
        head, moved = restore_store(args.backup, cfg.db_path, note, cfg.roster)
    except StoreLockedError as e:  # a refusal because of state (cli.md): 2, as `restore`
        raise CommandError(str(e), "stop `riversync hub serve` first, then restore",
                           exit_code=EXIT_CRITICAL) from None
    except HubRestoreRefused as e:
        raise CommandError(f"{e.code}: {e}", e.hint, exit_code=EXIT_CRITICAL) from None
    except (apsw.Error, OSError) as e:
        raise CommandError(f"restore failed: {e}", "check that FILE is a hub backup",
                           exit_code=EXIT_CRITICAL) from None
    kept = "".join(f"\n  kept the previous file as {p}" for p in moved)
    _say(args, {"restored": args.backup, "head": head, "db_path": str(cfg.db_path),
                "moved_aside": [str(p) for p in moved]},
         f"Restored {args.backup} to {cfg.db_path} (head {head}). The next "
         "`riversync hub serve` starts a new hub epoch; nodes re-pull and re-push from there."
         + kept)
    return 0


def _open_existing(cfg):
    """The hub's store for a command that works beside a running hub (never creates one)."""
    from riversync.hub.server import random_epoch
    from riversync.hub.store_sqlite import SqliteHubStore

    if not cfg.db_path.exists():
        raise CommandError(f"no hub store at {cfg.db_path}", "check db_path in hub.toml",
                           exit_code=EXIT_UNAVAILABLE)
    return SqliteHubStore.open(cfg.db_path, new_epoch=random_epoch(),
                               now_ms=time.time_ns() // 1_000_000, exclusive=False)


def cmd_prune(args) -> int:
    from riversync.hub.store import utc_text

    cfg = _config(args)
    store = _open_existing(cfg)
    try:
        res = store.prune_delivered(sorted(cfg.roster.nodes))
    finally:
        store.close()
    h = res.horizon
    data = {"removed_batches": res.removed_batches, "upto_seq": res.upto_seq,
            "held_back_by": list(res.held_back_by), "advanced": res.advanced,
            "horizon": {"upto_seq": h.upto_seq, "hub_epoch": h.hub_epoch,
                        "pruned_ms": h.pruned_ms, "pruned_at": utc_text(h.pruned_ms)}
            if h else None}
    who = ", ".join(res.held_back_by) or "no node"
    if res.advanced and h is not None:
        text = (f"Removed {res.removed_batches} batches up to hub sequence {res.upto_seq} "
                f"(every node had pulled them). Prune horizon: {h.upto_seq}, "
                f"{utc_text(h.pruned_ms)}. A node restored from a backup taken before then "
                "cannot catch up from the hub: see 'Restoring after a hub prune' in "
                "docs/how-to/operate.md.")
    elif res.upto_seq == 0:
        text = (f"Nothing pruned: not pulled yet in this hub's history by {who} (no cursor, "
                "or one of a hub epoch this hub does not know).")
    else:
        text = (f"Nothing pruned: the furthest every node has pulled is hub sequence "
                f"{res.upto_seq} ({who} stand(s) there), and the hub is already pruned up to "
                f"{h.upto_seq if h else 0}.")
    _say(args, data, text)
    return 0


def cmd_schemas(args) -> int:
    from riversync.hub.store import short_digest, utc_text

    store = _open_existing(_config(args))
    try:
        if args.forget is not None:
            gone = store.forget_schema(args.forget)
            if gone is None:
                known = ", ".join(str(r.version) for r in store.schema_registrations())
                raise CommandError(f"the hub holds no registration of schema version "
                                   f"{args.forget}", f"registered versions: {known or 'none'}; "
                                   "see `riversync hub schemas -c HUB_TOML`",
                                   exit_code=EXIT_CRITICAL)
        regs = store.schema_registrations()
    finally:
        store.close()

    def row(r) -> dict:
        return {"version": r.version, "digest": r.digest, "node": r.node,
                "registered_ms": r.registered_ms, "registered_at": utc_text(r.registered_ms)}

    if args.forget is not None:
        _say(args, {"forgot": row(gone), "schemas": [row(r) for r in regs]},
             f"Forgot schema version {gone.version} (digest {short_digest(gone.digest)}, "
             f"registered by node {gone.node} at {utc_text(gone.registered_ms)}). The next "
             f"node to say hello with version {gone.version} registers its digest: make sure "
             "it is one with the cluster's file.")
        return 0
    lines = [f"version {r.version}: digest {short_digest(r.digest)} (full {r.digest}), "
             f"registered by node {r.node} at {utc_text(r.registered_ms)}" for r in regs]
    _say(args, {"schemas": [row(r) for r in regs]},
         "\n".join(lines) or "No schema registered yet: the first node to say hello "
         "registers its schema version and digest.")
    return 0


def _say(args, data: dict, text: str) -> None:
    print(json.dumps(data) if getattr(args, "json", False) else text)
