"""Creating a cluster: keys, roster and one config file per daemon.

Everything a cluster needs to start is made here, once, in one directory:

- ``keys/<office>.key``: each node's Ed25519 seed (hex), mode 0600 in a 0700 directory;
- ``roster.toml``: cluster id, offices, nodes with their public keys, users with home
  office, role and the SHA-256 of their token (never the token itself);
- ``hub.toml`` and ``node-<office>.toml`` (the hub listens on the port of ``hub_url``);
- ``schema.toml``: a copy of the schema given (default: the example leagues schema),
  checked first, since every daemon reads it beside the roster;
- ``tokens.txt`` (0600): the plain tokens, so a demo script can log in.  They are also
  printed once; an operator hands them out and deletes the file.

Files are written temp, fsync, rename, so a crash leaves either no file or a whole one.
Randomness (seeds, cluster id, tokens) comes from the OS here, never from protocol/.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from riversync import config
from riversync.protocol.keys import SigningKey

# The schema a new cluster gets when none is named: the example the demo and docs use.
DEFAULT_SCHEMA = Path(__file__).resolve().parent.parent / "examples" / "leagues" / "schema.toml"


class ClusterInitError(Exception):
    """The cluster cannot be created as asked; ``hint`` says what to do."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


@dataclass
class ClusterFiles:
    """What ``init_cluster`` made: paths, and the plain tokens (shown once)."""

    dir: Path
    cluster_id: str
    offices: list[str]
    hub_url: str
    roster: Path
    hub_config: Path
    node_configs: dict[str, Path]
    key_files: dict[str, Path]
    tokens_file: Path
    tokens: dict[str, str] = field(default_factory=dict)
    users: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (office, role)
    schema: Path | None = None

    def to_json(self) -> dict:
        return {
            "dir": str(self.dir),
            "cluster_id": self.cluster_id,
            "offices": self.offices,
            "hub_url": self.hub_url,
            "roster": str(self.roster),
            "hub_config": str(self.hub_config),
            "node_configs": {k: str(v) for k, v in self.node_configs.items()},
            "key_files": {k: str(v) for k, v in self.key_files.items()},
            "tokens_file": str(self.tokens_file),
            "schema": str(self.schema) if self.schema else None,
            "users": {
                name: {"home_office": o, "role": r, "token": self.tokens[name]}
                for name, (o, r) in self.users.items()
            },
        }


def token_sha256(token: str) -> str:
    """How the roster stores a token: SHA-256 hex of its UTF-8 bytes."""
    return hashlib.sha256(token.encode()).hexdigest()


def parse_offices(text: str) -> list[str]:
    """``"north,south"`` -> ``["north", "south"]``, checked.

    Raises:
        ClusterInitError: empty, duplicated or badly formed names.
    """
    offices = [o.strip() for o in text.split(",") if o.strip()]
    check_offices(offices)
    return offices


def check_offices(offices: list[str]) -> None:
    """Raises ClusterInitError for an empty list, a bad name or a name given twice."""
    if not offices:
        raise ClusterInitError("no offices given", hint="--offices north,south")
    for o in offices:
        if not config.NAME_RE.match(o):
            raise ClusterInitError(
                f"office name {o!r} is not allowed",
                hint="use 1-32 lowercase letters, digits, '-' or '_', starting with a letter or digit",
            )
    if len(set(offices)) != len(offices):
        raise ClusterInitError("an office is listed twice", hint="--offices north,south")


def new_token() -> str:
    """A random bearer token (24 bytes, URL-safe) that never starts with "-", which a
    shell command would take for an option (``--token -x...`` fails to parse)."""
    while True:
        token = secrets.token_urlsafe(24)
        if not token.startswith("-"):
            return token


def init_cluster(
    directory: Path | str,
    offices: list[str],
    *,
    hub_url: str | None = None,
    hub_port: int | None = None,
    first_node_port: int = config.DEFAULT_NODE_PORT,
    schema: Path | str | None = DEFAULT_SCHEMA,
) -> ClusterFiles:
    """Create a new cluster in ``directory`` (made if missing, refused if it holds one).

    The hub listens on ``hub_port``, else on the port ``hub_url`` names, else on the
    default port.  ``schema`` is checked and copied to ``schema.toml`` (None: no copy).

    Raises:
        ClusterInitError: the directory already holds a cluster, or bad arguments.
    """
    d = Path(directory)
    check_offices(offices)
    if hub_url is not None:
        hub_url = hub_url.rstrip("/")
        parts = urllib.parse.urlsplit(hub_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ClusterInitError(f"hub URL {hub_url!r} is not an http(s) URL",
                                   hint="--hub-url http://hub.example:8700")
        try:
            url_port = parts.port
        except ValueError:
            raise ClusterInitError(f"hub URL {hub_url!r} has a bad port",
                                   hint="--hub-url http://hub.example:8700") from None
        if hub_port is None:
            hub_port = url_port or config.DEFAULT_HUB_PORT
    if hub_port is None:
        hub_port = config.DEFAULT_HUB_PORT
    hub_url = hub_url or f"http://127.0.0.1:{hub_port}"
    schema_text = None
    if schema is not None:
        from riversync.engine.errors import SchemaError
        from riversync.engine.schema import load_schema

        try:
            load_schema(schema)
        except SchemaError as e:
            raise ClusterInitError(str(e), hint="--schema PATH naming a valid schema file"
                                   " (docs/reference/schema.md)") from None
        schema_text = Path(schema).read_bytes()
    if (d / "roster.toml").exists() or (d / "keys").exists():
        raise ClusterInitError(
            f"{d} already holds a cluster (roster.toml or keys/ exists)",
            hint="choose an empty directory; never overwrite a cluster's keys",
        )
    d.mkdir(parents=True, exist_ok=True)
    keys_dir = d / "keys"
    keys_dir.mkdir(mode=0o700)
    os.chmod(keys_dir, 0o700)

    cluster_id = "rs-" + secrets.token_hex(6)
    key_files: dict[str, Path] = {}
    nodes: dict[str, dict] = {}
    for office in offices:
        key = SigningKey(os.urandom(32))
        kf = keys_dir / f"{office}.key"
        config.write_private(kf, (key.seed.hex() + "\n").encode())
        key_files[office] = kf
        nodes[office] = {"office": office, "public_key": key.public_key.hex()}

    users: dict[str, tuple[str, str]] = {}
    for office in offices:
        users[f"{office}-clerk"] = (office, "clerk")
        users[f"{office}-operator"] = (office, "operator")
    users["admin"] = (offices[0], "admin")
    tokens = {name: new_token() for name in users}

    roster = {
        "cluster_id": cluster_id,
        "offices": list(offices),
        "nodes": nodes,
        "users": {
            name: {"home_office": o, "role": r, "token_sha256": token_sha256(tokens[name])}
            for name, (o, r) in users.items()
        },
    }
    roster_path = d / "roster.toml"
    _write_toml(roster_path, roster, "Cluster roster: the same file on every daemon.", 0o644)

    hub = {
        "listen_host": config.DEFAULT_LISTEN_HOST,
        "listen_port": hub_port,
        "db_path": "hub.db",
        "roster_path": "roster.toml",
        "limits": {
            "max_body_bytes": config.DEFAULT_MAX_BODY_BYTES,
            "max_events_per_batch": config.DEFAULT_MAX_EVENTS_PER_BATCH,
            "max_concurrent_requests": config.DEFAULT_MAX_CONCURRENT_REQUESTS,
            "max_long_polls": config.DEFAULT_MAX_LONG_POLLS,
            "max_wait_ms": config.DEFAULT_MAX_WAIT_MS,
            "pull_max_bytes": config.DEFAULT_PULL_MAX_BYTES,
            "pull_max_batches": config.DEFAULT_PULL_MAX_BATCHES,
            "max_drift_ms": config.DEFAULT_MAX_DRIFT_MS,
            "fresh_window_ms": config.DEFAULT_FRESH_WINDOW_MS,
            "verify_workers": config.DEFAULT_VERIFY_WORKERS,
        },
    }
    hub_path = d / "hub.toml"
    _write_toml(hub_path, hub, "Hub daemon: riversync hub serve -c hub.toml", 0o644)

    node_configs: dict[str, Path] = {}
    for i, office in enumerate(offices):
        node = {
            "node_id": office,
            "hub_url": hub_url,
            "listen_host": config.DEFAULT_LISTEN_HOST,
            "listen_port": first_node_port + i,
            "db_path": f"{office}.db",
            "key_path": f"keys/{office}.key",
            "roster_path": "roster.toml",
            "schema_path": "schema.toml",
            "sync_interval_s": config.DEFAULT_SYNC_INTERVAL_S,
            "realtime": config.DEFAULT_REALTIME,
            "replay_retry_threshold": config.DEFAULT_REPLAY_RETRY_THRESHOLD,
            "backup_dir": f"backups/{office}",
            "backup_keep_last": config.DEFAULT_BACKUP_KEEP_LAST,
            "backup_keep_daily": config.DEFAULT_BACKUP_KEEP_DAILY,
            "relay_keep_days": config.DEFAULT_RELAY_KEEP_DAYS,
            "staging": {
                "xlsx_dir": f"staging/{office}/xlsx",
                "email_dir": f"staging/{office}/email",
                "watch_email": config.DEFAULT_WATCH_EMAIL,
                "email_poll_s": config.DEFAULT_EMAIL_POLL_S,
            },
            "alerts": {
                "warn_no_sync_s": config.DEFAULT_WARN_NO_SYNC_S,
                "warn_queued_events": config.DEFAULT_WARN_QUEUED_EVENTS,
                "critical_no_sync_s": config.DEFAULT_CRITICAL_NO_SYNC_S,
            },
        }
        p = d / f"node-{office}.toml"
        _write_toml(p, node, f"Node daemon of office {office}: riversync node serve -c {p.name}",
                    0o644)
        node_configs[office] = p

    schema_path = None
    if schema_text is not None:
        schema_path = d / "schema.toml"
        config.write_private(schema_path, schema_text, 0o644)

    tokens_path = d / "tokens.txt"
    lines = ["# user  home_office  role  token  (plain tokens: hand out, then delete this file)"]
    lines += [f"{name} {o} {r} {tokens[name]}" for name, (o, r) in users.items()]
    config.write_private(tokens_path, ("\n".join(lines) + "\n").encode())

    return ClusterFiles(
        dir=d, cluster_id=cluster_id, offices=list(offices), hub_url=hub_url, roster=roster_path,
        hub_config=hub_path, node_configs=node_configs, key_files=key_files,
        tokens_file=tokens_path, tokens=tokens, users=users, schema=schema_path,
    )


def read_tokens(path: Path | str) -> dict[str, str]:
    """The plain tokens from a ``tokens.txt`` written by ``init_cluster`` (user -> token)."""
    out: dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _office, _role, token = line.split()
            out[name] = token
    return out


def _write_toml(path: Path, data: dict, comment: str, mode: int) -> None:
    text = f"# {comment}\n# Fields: docs/reference/config.md\n" + tomli_w.dumps(data)
    config.write_private(path, text.encode(), mode)
