"""`riversync conformance`: run the protocol's conformance vectors against this riversync.

The vectors (spec/vectors/, format in spec/vectors/README.md) are data any implementation
can run; this module is the Python runner, used by the command and by the test suite.
A vector passes when the implementation gives exactly the expected JSON-safe value, or
raises exactly the expected error code.
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from riversync.protocol import chain, codec, errors, hlc, keys, messages
from riversync.protocol.errors import ProtocolError

DEFAULT_VECTORS = Path(__file__).resolve().parents[2] / "spec" / "vectors"

ENDPOINT_BODIES: dict[str, type] = {
    "/v1/hello": messages.Hello,
    "/v1/push": messages.Batch,
    "/v1/pull": messages.Pull,
    "/v1/status": messages.StatusRequest,
}
DECODE_TYPES: dict[str, type] = {
    "Envelope": messages.Envelope,
    "OriginState": messages.OriginState,
    "HelloReply": messages.HelloReply,
    "PushReply": messages.PushReply,
    "PullReply": messages.PullReply,
    "StatusReply": messages.StatusReply,
    "ErrorReply": messages.ErrorReply,
}


def json_safe(x: object) -> object:
    """The JSON-safe form of a decoded value (spec/vectors/README.md, "Values")."""
    if x is None or x is True or x is False or type(x) is str:
        return x
    if type(x) is int:
        return x if abs(x) < 2**53 else {"int": str(x)}
    if type(x) is float:
        return {"float": repr(x)}
    if type(x) is bytes:
        return {"bin": x.hex()}
    if isinstance(x, list | tuple):
        return [json_safe(i) for i in x]
    if type(x) is dict:
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, msgspec.Struct):
        cfg = x.__struct_config__
        out = {cfg.tag_field: cfg.tag} if cfg.tag_field else {}
        out.update({f: json_safe(getattr(x, f)) for f in x.__struct_fields__})
        return out
    raise TypeError(f"no JSON-safe form for {type(x).__name__}")


def json_int(v: object) -> int:
    return int(v["int"]) if isinstance(v, dict) else int(v)


def load_roster(data: dict) -> keys.Roster:
    nodes = {
        n["node_id"]: keys.NodeEntry(n["node_id"], n["office"], bytes.fromhex(n["public_key"]))
        for n in data["nodes"]
    }
    return keys.Roster(data["cluster_id"], nodes)


def load_vectors(directory: Path) -> tuple[keys.Roster, list[dict]]:
    """Read roster.json and every vector file (sorted by name) from ``directory``."""
    roster = load_roster(json.loads((directory / "roster.json").read_text(encoding="utf-8")))
    vectors = [
        json.loads(p.read_text(encoding="utf-8"))
        for p in sorted(directory.glob("*.json"))
        if p.name != "roster.json"
    ]
    return roster, vectors


def _outcome(vec: dict, roster: keys.Roster) -> dict:
    """Run one vector; return {"error": CODE} or the kind's success value."""
    kind = vec["kind"]
    data = bytes.fromhex(vec["input"]) if "input" in vec else b""
    try:
        if kind in ("open", "chain"):
            env, body = codec.open_envelope(data, roster, **(
                {"max_bytes": vec["max_bytes"]} if "max_bytes" in vec else {}))
            if "endpoint" in vec:
                codec.expect(body, ENDPOINT_BODIES[vec["endpoint"]])
            if "window_ms" in vec and not isinstance(body, messages.Batch):
                codec.check_fresh(body, vec["now_ms"], vec["window_ms"])
            if "seen_nonces" in vec:
                codec.check_nonce(body, {bytes.fromhex(n) for n in vec["seen_nonces"]})
            if "max_drift_ms" in vec and isinstance(body, messages.Batch):
                codec.check_batch_clock(body, vec["now_ms"], vec["max_drift_ms"])
            if kind == "open":
                return {"body": json_safe(body)}
            held = vec.get("held")
            state = None if held is None else messages.OriginState(
                epoch=json_int(held["epoch"]), batches=json_int(held["batches"]),
                last_seq=json_int(held["last_seq"]), last_hash=bytes.fromhex(held["last_hash"]["bin"]))
            at_n = vec.get("held_hash_at_n")
            result = chain.classify(
                body, codec.body_hash(env.b), state, None if at_n is None else bytes.fromhex(at_n)
            )
            return {"chain": result}
        if kind == "decode":
            return {"value": json_safe(codec.decode(data, DECODE_TYPES[vec["type"]]))}
        if kind == "error":
            reply = codec.decode(data, messages.ErrorReply)
            cls = errors.BY_CODE.get(reply.code)
            if cls is None:
                return {"unknown_code": reply.code}
            return {"code": cls.code, "http_status": cls.http_status, "action": cls.action}
        if kind == "hlc":
            return {"steps": _run_hlc(vec)}
    except ProtocolError as e:
        return {"error": e.code}
    raise ValueError(f"unknown vector kind {kind!r}")


def _run_hlc(vec: dict) -> list[object]:
    """Each step's result (an HLC or {"error": CODE}); a refused step leaves the clock as it was."""
    last = json_int(vec["start"])
    results: list[object] = []
    for step in vec["steps"]:
        try:
            if step["op"] == "send":
                last = hlc.send(last, step["now_ms"])
                results.append(json_safe(last))
            elif step["op"] == "receive":
                last = hlc.receive(
                    last, json_int(step["remote"]), step["now_ms"], step["max_drift_ms"]
                )
                results.append(json_safe(last))
            elif step["op"] == "make":
                results.append(json_safe(hlc.make(step["wall_ms"], step["counter"])))
            else:
                raise ValueError(f"unknown hlc op {step['op']!r}")
        except ProtocolError as e:
            results.append({"error": e.code})
    return results


def run_vector(vec: dict, roster: keys.Roster) -> str | None:
    """None if ``vec`` passes, else a one-line description of the difference."""
    got = _outcome(vec, roster)
    if vec["kind"] == "hlc":
        want = [
            {"error": s["expect_error"]} if "expect_error" in s else s["expect"]
            for s in vec["steps"]
        ]
        got = got["steps"]
    else:
        want = vec["expect"]
    if got != want:
        return f"expected {json.dumps(want)[:300]}, got {json.dumps(got)[:300]}"
    return None


def run_all(directory: Path) -> list[dict]:
    roster, vectors = load_vectors(directory)
    results = []
    for vec in vectors:
        try:
            problem = run_vector(vec, roster)
        except Exception as e:  # a crash is reported as that vector's failure, not hidden
            problem = f"crashed: {type(e).__name__}: {e}"
        results.append({"name": vec["name"], "kind": vec["kind"], "ok": problem is None,
                        "problem": problem})
    return results


def handle(args) -> int:
    from riversync.cli import EXIT_CRITICAL, CommandError

    directory = Path(args.vectors) if args.vectors else DEFAULT_VECTORS
    if not (directory / "roster.json").is_file():
        raise CommandError(
            f"no conformance vectors in {directory} (roster.json missing)",
            hint="riversync conformance --vectors path/to/spec/vectors",
            exit_code=EXIT_CRITICAL,
        )
    results = run_all(directory)
    failed = [r for r in results if not r["ok"]]
    if args.json:
        print(json.dumps({"vectors": len(results), "passed": len(results) - len(failed),
                          "failed": failed}, indent=2))
    else:
        for r in failed:
            print(f"FAIL {r['name']} ({r['kind']}): {r['problem']}")
        print(f"{len(results) - len(failed)} of {len(results)} conformance vectors passed"
              f" ({directory})")
    return 1 if failed else 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "conformance",
        help="run the protocol conformance vectors against this riversync",
        description="Run every vector in spec/vectors/ against riversync.protocol. "
        "Exit code 0: all passed; 1: some failed; 2: no vectors found.",
    )
    p.add_argument("--vectors", metavar="DIR", help="vector directory (default: spec/vectors)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(handler=handle)
