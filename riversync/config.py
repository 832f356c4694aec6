"""Loading and validating the files every daemon reads at start-up.

Theory of operation: ``riversync cluster init`` writes ``roster.toml`` (who is in the
cluster), ``hub.toml`` and one ``node-<office>.toml`` per office.  A daemon loads its file
once, checks every field, and gets one frozen object (``HubConfig`` or ``NodeConfig``)
that is passed down; nothing deeper reads files or the environment.  Every error names
the file and the field (``hub.toml: limits.max_body_bytes: ...``) and says what to do.
Relative paths in a config file are relative to the directory holding that file, so a
cluster directory can be moved as a whole.

Defaults are the named constants below, each with its unit and the reason for its value.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from riversync.protocol import hlc, limits
from riversync.protocol.keys import ROLES, NodeEntry, Roster, SigningKey, User

# ---- hub defaults -----------------------------------------------------------------------
DEFAULT_LISTEN_HOST = "127.0.0.1"  # loopback unless the operator opens it on purpose
DEFAULT_HUB_PORT = 8700  # TCP port; nodes use the ports above it
DEFAULT_MAX_BODY_BYTES = limits.MAX_BLOB_BYTES  # bytes; one signed blob, the protocol's limit
DEFAULT_MAX_EVENTS_PER_BATCH = limits.MAX_EVENTS_PER_BATCH  # events; keeps an apply short
DEFAULT_MAX_CONCURRENT_REQUESTS = 64  # requests being worked on (not waiting) before BUSY
DEFAULT_MAX_LONG_POLLS = 256  # pulls waiting for batches; each holds a socket, little else
DEFAULT_MAX_WAIT_MS = 30_000  # ms; longest long-poll, under typical proxy idle timeouts
DEFAULT_PULL_MAX_BYTES = 8 * 1024 * 1024  # bytes of batches per pull reply; bounds memory
DEFAULT_PULL_MAX_BATCHES = limits.MAX_BATCHES_PER_PULL  # batches; the byte budget is the real bound
DEFAULT_MAX_DRIFT_MS = hlc.DEFAULT_MAX_DRIFT_MS  # ms; runbook: refuse clocks 5 min ahead
DEFAULT_FRESH_WINDOW_MS = 5 * 60 * 1000  # ms; a signed request is valid this long either way
DEFAULT_MAX_NONCES = 200_000  # remembered request nonces; ~30 MB worst case
DEFAULT_VERIFY_WORKERS = 0  # processes checking pushes; 0: on the event loop, ~1 core's worth

# ---- node defaults ----------------------------------------------------------------------
DEFAULT_NODE_PORT = 8701  # TCP port of the first office's node
DEFAULT_SYNC_INTERVAL_S = 60  # s; the design's default, runbook allows 60 to 300
MIN_SYNC_INTERVAL_S = 1  # s; anything faster is realtime mode's job
MAX_SYNC_INTERVAL_S = 3600  # s; slower than an hour is an outage, not a setting
DEFAULT_REALTIME = False  # push-on-write and long-poll pull are opt-in
DEFAULT_WARN_NO_SYNC_S = 10 * 60  # s; runbook: warn after 10 minutes without a sync
DEFAULT_WARN_QUEUED_EVENTS = 500  # events; runbook: warn when more than 500 are queued
DEFAULT_CRITICAL_NO_SYNC_S = 30 * 60  # s; runbook: critical after 30 minutes without a sync
DEFAULT_REPLAY_RETRY_THRESHOLD = 3  # failed applies of one pull in a row before replication stops
MAX_REPLAY_RETRY_THRESHOLD = 1000  # beyond this a stuck batch would go unnoticed for days
DEFAULT_BACKUP_KEEP_LAST = 24  # backups; the newest are always kept (a day of hourly backups)
DEFAULT_BACKUP_KEEP_DAILY = 14  # days; plus the newest backup of each day, two weeks back
DEFAULT_WATCH_EMAIL = False  # the drop-folder watcher is opt-in: ingestion may be run by hand
DEFAULT_EMAIL_POLL_S = 30  # s; how often the watcher looks into the drop folder
# days; pulled batches kept to relay after a hub restore: twice the 14 days of daily backups
# the runbook keeps, so any hub backup an operator would still restore is covered; 0: off
DEFAULT_RELAY_KEEP_DAYS = 30
MAX_RELAY_KEEP_DAYS = 3650  # days; beyond ten years no hub backup would be restored

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


class ConfigError(Exception):
    """A config file is missing, unreadable or has a bad field.

    ``field`` is the dotted name of the offending field (``limits.max_body_bytes``), empty
    when the whole file is at fault.
    """

    def __init__(self, path: Path | str, field: str, message: str, hint: str = ""):
        self.path = Path(path)
        self.field = field
        self.message = message
        self.hint = hint or f"edit {self.path} (see docs/reference/config.md)"
        where = f"{self.path.name}: {field}: " if field else f"{self.path.name}: "
        super().__init__(where + message)


@dataclass(frozen=True)
class HubLimits:
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_events_per_batch: int = DEFAULT_MAX_EVENTS_PER_BATCH
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS
    max_long_polls: int = DEFAULT_MAX_LONG_POLLS
    max_wait_ms: int = DEFAULT_MAX_WAIT_MS
    pull_max_bytes: int = DEFAULT_PULL_MAX_BYTES
    pull_max_batches: int = DEFAULT_PULL_MAX_BATCHES
    max_drift_ms: int = DEFAULT_MAX_DRIFT_MS
    fresh_window_ms: int = DEFAULT_FRESH_WINDOW_MS
    max_nonces: int = DEFAULT_MAX_NONCES
    verify_workers: int = DEFAULT_VERIFY_WORKERS


@dataclass(frozen=True)
class HubConfig:
    """Everything ``riversync hub serve`` needs, checked."""

    path: Path
    listen_host: str
    listen_port: int
    db_path: Path
    roster_path: Path
    roster: Roster
    limits: HubLimits


@dataclass(frozen=True)
class Alerts:
    warn_no_sync_s: int = DEFAULT_WARN_NO_SYNC_S
    warn_queued_events: int = DEFAULT_WARN_QUEUED_EVENTS
    critical_no_sync_s: int = DEFAULT_CRITICAL_NO_SYNC_S


@dataclass(frozen=True)
class NodeConfig:
    """Everything ``riversync node serve`` needs, checked."""

    path: Path
    node_id: str
    office: str
    hub_url: str
    listen_host: str
    listen_port: int
    db_path: Path
    key_path: Path
    roster_path: Path
    roster: Roster
    sync_interval_s: int
    realtime: bool
    backup_dir: Path
    staging_xlsx_dir: Path
    staging_email_dir: Path
    alerts: Alerts
    schema_path: Path | None = None  # None: schema.toml next to the roster
    replay_retry_threshold: int = DEFAULT_REPLAY_RETRY_THRESHOLD
    backup_keep_last: int = DEFAULT_BACKUP_KEEP_LAST
    backup_keep_daily: int = DEFAULT_BACKUP_KEEP_DAILY
    staging_watch_email: bool = DEFAULT_WATCH_EMAIL
    staging_email_poll_s: int = DEFAULT_EMAIL_POLL_S
    relay_keep_days: int = DEFAULT_RELAY_KEEP_DAYS

    def signing_key(self) -> SigningKey:
        """The node's private key, checked against the roster."""
        key = load_signing_key(self.key_path)
        if key.public_key != self.roster.nodes[self.node_id].public_key:
            raise ConfigError(
                self.path, "key_path",
                f"{self.key_path} is not the key the roster lists for node {self.node_id!r}",
                hint="point key_path at this node's key from `riversync cluster init`",
            )
        return key


# ---- reading ----------------------------------------------------------------------------


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found",
                          hint="run `riversync cluster init DIR --offices A,B` to create it") from None
    except OSError as e:
        raise ConfigError(path, "", f"cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, "", f"not valid TOML: {e}") from None


class _Fields:
    """Typed field access on one TOML table; every error names the field."""

    def __init__(self, path: Path, data: dict[str, Any], prefix: str = ""):
        self.path = path
        self.data = data
        self.prefix = prefix
        self.used: set[str] = set()

    def _name(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(self.path, self._name(key), message)

    def _get(self, key: str, default: Any) -> Any:
        self.used.add(key)
        if key in self.data:
            return self.data[key]
        if default is _REQUIRED:
            raise self.error(key, "missing (required)")
        return default

    def str(self, key: str, default: Any = None) -> str:
        v = self._get(key, _REQUIRED if default is None else default)
        if not isinstance(v, str) or not v:
            raise self.error(key, f"must be a non-empty string, got {v!r}")
        return v

    def int(self, key: str, default: Any = None, *, lo: int = 0, hi: int = (1 << 63) - 1) -> int:
        v = self._get(key, _REQUIRED if default is None else default)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.error(key, f"must be an integer, got {v!r}")
        if not lo <= v <= hi:
            raise self.error(key, f"must be between {lo} and {hi}, got {v}")
        return v

    def bool(self, key: str, default: Any = None) -> bool:
        v = self._get(key, _REQUIRED if default is None else default)
        if not isinstance(v, bool):
            raise self.error(key, f"must be true or false, got {v!r}")
        return v

    def path_(self, key: str, default: Any = None) -> Path:
        p = Path(self.str(key, default))
        return p if p.is_absolute() else (self.path.parent / p)

    def table(self, key: str) -> _Fields:
        v = self._get(key, {})
        if not isinstance(v, dict):
            raise self.error(key, "must be a table")
        return _Fields(self.path, v, f"{self.prefix}{key}.")

    def check_unknown(self) -> None:
        """Refuse keys we do not know: a typo must not silently fall back to a default."""
        for key in self.data:
            if key not in self.used:
                raise self.error(key, "unknown setting (misspelt?)")


_REQUIRED = object()


def _port(f: _Fields, key: str, default: int) -> int:
    return f.int(key, default, lo=0, hi=65535)


# ---- roster -----------------------------------------------------------------------------


def load_roster(path: Path | str) -> Roster:
    """Read ``roster.toml``.

    Raises:
        ConfigError: naming the field (``nodes.north.public_key``).
    """
    path = Path(path)
    f = _Fields(path, _read_toml(path))
    cluster_id = f.str("cluster_id")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", cluster_id):
        raise f.error("cluster_id", "must be 1-64 letters, digits, '-' or '_'")
    offices = f._get("offices", _REQUIRED)
    if not isinstance(offices, list) or not offices or not all(isinstance(o, str) for o in offices):
        raise f.error("offices", "must be a non-empty list of office names")
    if len(set(offices)) != len(offices):
        raise f.error("offices", "lists an office twice")
    nodes_t = f.table("nodes")
    nodes: dict[str, NodeEntry] = {}
    for node_id in nodes_t.data:
        n = nodes_t.table(node_id)
        office = n.str("office")
        if office not in offices:
            raise n.error("office", f"{office!r} is not one of offices {offices}")
        pk_hex = n.str("public_key")
        try:
            pk = bytes.fromhex(pk_hex)
        except ValueError:
            pk = b""
        if len(pk) != 32:
            raise n.error("public_key", "must be 64 hex digits (an Ed25519 public key)")
        n.check_unknown()
        nodes[node_id] = NodeEntry(node_id=node_id, office=office, public_key=pk)
    if not nodes:
        raise f.error("nodes", "no nodes listed")
    users_t = f.table("users")
    users: dict[str, User] = {}
    for name in users_t.data:
        u = users_t.table(name)
        home = u.str("home_office")
        if home not in offices:
            raise u.error("home_office", f"{home!r} is not one of offices {offices}")
        role = u.str("role")
        if role not in ROLES:
            raise u.error("role", f"must be one of {', '.join(ROLES)}, got {role!r}")
        token = u.str("token_sha256")
        if not re.fullmatch(r"[0-9a-f]{64}", token):
            raise u.error("token_sha256", "must be 64 lowercase hex digits (a SHA-256)")
        u.check_unknown()
        users[name] = User(name=name, home_office=home, role=role, token_sha256=token)
    f.check_unknown()
    return Roster(cluster_id=cluster_id, nodes=nodes, users=users)


# ---- keys -------------------------------------------------------------------------------


def load_signing_key(path: Path | str) -> SigningKey:
    """Read a node's private key file (64 hex digits: the Ed25519 seed).

    Raises:
        ConfigError: missing, readable by others, or not a seed.
    """
    path = Path(path)
    try:
        st = path.stat()
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise ConfigError(path, "", "key file not found",
                          hint="run `riversync cluster init` or fix key_path") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(path, "", f"cannot read key file: {e}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(path, "", f"key file is readable by others (mode {st.st_mode & 0o777:o})",
                          hint=f"chmod 600 {path}")
    try:
        seed = bytes.fromhex(text)
    except ValueError:
        seed = b""
    if len(seed) != 32:
        raise ConfigError(path, "", "not a key file: expected 64 hex digits")
    return SigningKey(seed)


# ---- hub --------------------------------------------------------------------------------


def load_hub_config(path: Path | str) -> HubConfig:
    """Read and check ``hub.toml`` and the roster it names.

    Raises:
        ConfigError: naming the field.
    """
    path = Path(path)
    f = _Fields(path, _read_toml(path))
    host = f.str("listen_host", DEFAULT_LISTEN_HOST)
    port = _port(f, "listen_port", DEFAULT_HUB_PORT)
    db_path = f.path_("db_path", "hub.db")
    roster_path = f.path_("roster_path", "roster.toml")
    lt = f.table("limits")
    lim = HubLimits(
        max_body_bytes=lt.int("max_body_bytes", DEFAULT_MAX_BODY_BYTES, lo=1024,
                              hi=limits.MAX_BLOB_BYTES + 1024),
        max_events_per_batch=lt.int("max_events_per_batch", DEFAULT_MAX_EVENTS_PER_BATCH,
                                    lo=1, hi=limits.MAX_EVENTS_PER_BATCH),
        max_concurrent_requests=lt.int("max_concurrent_requests",
                                       DEFAULT_MAX_CONCURRENT_REQUESTS, lo=1, hi=10_000),
        max_long_polls=lt.int("max_long_polls", DEFAULT_MAX_LONG_POLLS, lo=0, hi=100_000),
        max_wait_ms=lt.int("max_wait_ms", DEFAULT_MAX_WAIT_MS, lo=0, hi=limits.MAX_WAIT_MS),
        pull_max_bytes=lt.int("pull_max_bytes", DEFAULT_PULL_MAX_BYTES, lo=1024,
                              hi=256 * 1024 * 1024),
        pull_max_batches=lt.int("pull_max_batches", DEFAULT_PULL_MAX_BATCHES, lo=1,
                                hi=limits.MAX_BATCHES_PER_PULL),
        max_drift_ms=lt.int("max_drift_ms", DEFAULT_MAX_DRIFT_MS, lo=1000, hi=24 * 3600 * 1000),
        fresh_window_ms=lt.int("fresh_window_ms", DEFAULT_FRESH_WINDOW_MS, lo=1000,
                               hi=24 * 3600 * 1000),
        max_nonces=lt.int("max_nonces", DEFAULT_MAX_NONCES, lo=100, hi=10_000_000),
        verify_workers=lt.int("verify_workers", DEFAULT_VERIFY_WORKERS, lo=0, hi=64),
    )
    lt.check_unknown()
    f.check_unknown()
    return HubConfig(path=path, listen_host=host, listen_port=port, db_path=db_path,
                     roster_path=roster_path, roster=load_roster(roster_path), limits=lim)


# ---- node -------------------------------------------------------------------------------


def load_node_config(path: Path | str) -> NodeConfig:
    """Read and check ``node-<office>.toml`` and the roster it names.

    Raises:
        ConfigError: naming the field.
    """
    path = Path(path)
    f = _Fields(path, _read_toml(path))
    node_id = f.str("node_id")
    roster_path = f.path_("roster_path", "roster.toml")
    roster = load_roster(roster_path)
    schema_path = f.path_("schema_path", str(roster_path.parent / "schema.toml"))
    if node_id not in roster.nodes:
        raise f.error("node_id", f"{node_id!r} is not a node of {roster_path.name}")
    office = roster.nodes[node_id].office
    hub_url = f.str("hub_url")
    if not re.fullmatch(r"https?://[^\s/]+(/[^\s]*)?", hub_url):
        raise f.error("hub_url", f"must be an http:// or https:// URL, got {hub_url!r}")
    try:
        urllib.parse.urlsplit(hub_url).port  # noqa: B018 - raises on a port out of range
    except ValueError as e:
        raise f.error("hub_url", f"{hub_url!r} is not a usable URL: {e}") from None
    host = f.str("listen_host", DEFAULT_LISTEN_HOST)
    port = _port(f, "listen_port", DEFAULT_NODE_PORT)
    db_path = f.path_("db_path", f"{node_id}.db")
    key_path = f.path_("key_path", f"keys/{node_id}.key")
    interval = f.int("sync_interval_s", DEFAULT_SYNC_INTERVAL_S, lo=MIN_SYNC_INTERVAL_S,
                     hi=MAX_SYNC_INTERVAL_S)
    realtime = f.bool("realtime", DEFAULT_REALTIME)
    backup_dir = f.path_("backup_dir", f"backups/{node_id}")
    replay_retry = f.int("replay_retry_threshold", DEFAULT_REPLAY_RETRY_THRESHOLD, lo=1,
                         hi=MAX_REPLAY_RETRY_THRESHOLD)
    keep_last = f.int("backup_keep_last", DEFAULT_BACKUP_KEEP_LAST, lo=1, hi=100_000)
    keep_daily = f.int("backup_keep_daily", DEFAULT_BACKUP_KEEP_DAILY, lo=0, hi=100_000)
    relay_keep_days = f.int("relay_keep_days", DEFAULT_RELAY_KEEP_DAYS, lo=0,
                            hi=MAX_RELAY_KEEP_DAYS)
    st = f.table("staging")
    xlsx_dir = st.path_("xlsx_dir", f"staging/{node_id}/xlsx")
    email_dir = st.path_("email_dir", f"staging/{node_id}/email")
    watch_email = st.bool("watch_email", DEFAULT_WATCH_EMAIL)
    email_poll_s = st.int("email_poll_s", DEFAULT_EMAIL_POLL_S, lo=1, hi=MAX_SYNC_INTERVAL_S)
    st.check_unknown()
    at = f.table("alerts")
    alerts = Alerts(
        warn_no_sync_s=at.int("warn_no_sync_s", DEFAULT_WARN_NO_SYNC_S, lo=1),
        warn_queued_events=at.int("warn_queued_events", DEFAULT_WARN_QUEUED_EVENTS, lo=1),
        critical_no_sync_s=at.int("critical_no_sync_s", DEFAULT_CRITICAL_NO_SYNC_S, lo=1),
    )
    if alerts.critical_no_sync_s < alerts.warn_no_sync_s:
        raise at.error("critical_no_sync_s", "must not be shorter than warn_no_sync_s")
    at.check_unknown()
    f.check_unknown()
    return NodeConfig(
        path=path, node_id=node_id, office=office, hub_url=hub_url.rstrip("/"), listen_host=host,
        listen_port=port, db_path=db_path, key_path=key_path, roster_path=roster_path,
        roster=roster, sync_interval_s=interval, realtime=realtime, backup_dir=backup_dir,
        staging_xlsx_dir=xlsx_dir, staging_email_dir=email_dir, alerts=alerts,
        schema_path=schema_path, replay_retry_threshold=replay_retry,
        backup_keep_last=keep_last, backup_keep_daily=keep_daily,
        staging_watch_email=watch_email, staging_email_poll_s=email_poll_s,
        relay_keep_days=relay_keep_days,
    )


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically: temp file, fsync, rename, fsync the directory.

    The temp file is created with ``mode`` from the start, so a private key is never
    readable by others, not even for an instant.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
