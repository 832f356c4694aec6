"""A small synchronous client of a node's local API, for the operator commands and the demo.

Commands run once and exit, so plain ``urllib`` is enough and keeps them free of an event
loop.  The token comes from ``--token``, else ``RIVERSYNC_TOKEN``, else the cluster's
``tokens.txt`` beside the roster (written by ``riversync cluster init``; the demo and a
fresh cluster use it), preferring this office's operator.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

DEFAULT_TIMEOUT_S = 30.0


class NodeUnreachable(Exception):
    """The node's API did not answer at all."""


class NodeRefused(Exception):
    """The node answered with an API error."""

    def __init__(self, status: int, code: str, message: str, hint: str = ""):
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.hint = hint


def read_tokens(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 4 and not line.startswith("#"):
            out[parts[0]] = parts[3]
    return out


def token_for(cfg: Any, explicit: str | None = None, *, prefer: tuple[str, ...] = ()) -> str | None:
    """The token to use against ``cfg``'s node, or None when none can be found."""
    if explicit:
        return explicit
    env = os.environ.get("RIVERSYNC_TOKEN")
    if env:
        return env
    tokens_file = cfg.roster_path.parent / "tokens.txt"
    if not tokens_file.exists():
        return None
    tokens = read_tokens(tokens_file)
    for name in (*prefer, f"{cfg.office}-operator", "admin", f"{cfg.office}-clerk"):
        if name in tokens:
            return tokens[name]
    return None


def node_url(cfg: Any) -> str:
    host = cfg.listen_host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{host}:{cfg.listen_port}"


class NodeClient:
    def __init__(self, base_url: str, token: str | None, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def request(self, method: str, path: str, body: dict | None = None) -> Any:
        """Call the API; returns the decoded JSON reply.

        Raises:
            NodeUnreachable: nothing answered.
            NodeRefused: the node answered with an error.
        """
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                raw = resp.read()
                ctype = resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                err = json.loads(raw)["error"]
            except (ValueError, KeyError, TypeError):
                raise NodeRefused(e.code, f"HTTP_{e.code}", raw[:200].decode(errors="replace")) \
                    from None
            raise NodeRefused(e.code, err.get("code", ""), err.get("message", ""),
                              err.get("hint", "")) from None
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            raise NodeUnreachable(f"{self.base_url}: {getattr(e, 'reason', e)}") from None
        if "json" in ctype:
            return json.loads(raw)
        return raw.decode()

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: dict | None = None) -> Any:
        return self.request("POST", path, body if body is not None else {})
