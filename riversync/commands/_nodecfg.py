"""Shared by the operator commands: load a node config and reach its node."""

from __future__ import annotations

import os

from riversync.cli import EXIT_CRITICAL, EXIT_UNAVAILABLE, CommandError
from riversync.config import ConfigError, load_node_config
from riversync.node.client import NodeClient, NodeRefused, NodeUnreachable, node_url, token_for


def add_config_arg(p, *, multiple: bool = False) -> None:
    if multiple:
        p.add_argument("-c", "--config", action="append", required=True, metavar="NODE.toml",
                       help="a node's config file (give one per node)")
    else:
        p.add_argument("-c", "--config", required=True, metavar="NODE.toml",
                       help="the node's config file (node-<office>.toml)")
    p.add_argument("--token", default=None,
                   help="API token (default: $RIVERSYNC_TOKEN, else the cluster's tokens.txt)")


def load(path: str):
    try:
        return load_node_config(path)
    except ConfigError as e:
        # A config file that is not there is an input that could not be reached (exit 3);
        # one that is there but wrong is bad input (exit 2).
        missing = not os.path.exists(path)
        raise CommandError(str(e), e.hint,
                           exit_code=EXIT_UNAVAILABLE if missing else EXIT_CRITICAL) from None


def client_for(cfg, token: str | None, timeout_s: float = 30.0, *,
               admin: bool = False) -> NodeClient:
    tok = token_for(cfg, token, prefer=("admin",) if admin else ())
    if tok is None:
        raise CommandError(f"no API token for node {cfg.node_id}",
                           "pass --token or set RIVERSYNC_TOKEN", exit_code=EXIT_CRITICAL)
    return NodeClient(node_url(cfg), tok, timeout_s)


def exit_for_status(status: int) -> int:
    """The one rule (docs/reference/cli.md): a refusal of what was asked (any 4xx: bad
    input, unknown id, wrong token or role, a state that forbids it) is 2; an unavailable
    daemon (503) is 3; any other failure is 1."""
    if 400 <= status < 500:
        return EXIT_CRITICAL
    if status == 503:
        return EXIT_UNAVAILABLE
    return 1


def refusal(e: NodeRefused, where: str) -> CommandError:
    """The CommandError for a refusal; an answer without our error body is not a node."""
    if not e.code or e.code.startswith("HTTP_"):
        return CommandError(f"{where} answered HTTP {e.status}, not as a riversync node"
                            " (is listen_port the hub's port?)",
                            "check listen_host and listen_port in the node config",
                            exit_code=EXIT_UNAVAILABLE)
    return CommandError(f"the node refused: {e.code}: {e.message}", e.hint,
                        exit_code=exit_for_status(e.status))


def not_a_node(where: str) -> CommandError:
    return CommandError(f"{where} answered, but not as a riversync node"
                        " (is listen_port the hub's port?)",
                        "check listen_host and listen_port in the node config",
                        exit_code=EXIT_UNAVAILABLE)


def call(fn, *args, **kwargs):
    """Run one API call; its failures become CommandErrors with a next step.  A reply
    that is not a JSON object is not from a node (a hub answers msgpack)."""
    where = getattr(getattr(fn, "__self__", None), "base_url", "the server")
    try:
        res = fn(*args, **kwargs)
    except NodeUnreachable as e:
        raise CommandError(f"the node does not answer: {e}",
                           "start it with `riversync node serve -c NODE.toml`",
                           exit_code=EXIT_UNAVAILABLE) from None
    except NodeRefused as e:
        raise refusal(e, where) from None
    if not isinstance(res, dict):
        raise not_a_node(where)
    return res
