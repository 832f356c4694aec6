"""Typed protocol errors with stable codes.

Every failure a peer can cause has one code.  The code is what travels on the wire
(in an error response), what the conformance vectors name and what the docs list, so it
never changes once released.  Each error also says what the receiver should do next
(``action``): ``retry`` later with backoff, ``resync`` (say hello again and reconcile),
or ``stop`` and alert an operator.  Any other exception escaping a decoder is a bug.
"""

from __future__ import annotations

RETRY = "retry"
RESYNC = "resync"
STOP = "stop"


class ProtocolError(Exception):
    """Root of every error the protocol layer raises.

    ``path`` names the offending field in JSONPath style (``$.events[3].hlc``) where one
    is known.
    """

    code = "PROTOCOL_ERROR"
    http_status = 400
    action = STOP
    hint = "check the peer's riversync version and configuration"

    def __init__(self, message: str, *, path: str | None = None, hint: str | None = None):
        self.message = message
        self.path = path
        if hint is not None:
            self.hint = hint
        super().__init__(f"{self.code}: {message}" + (f" at {path}" if path else ""))

    def to_wire(self) -> dict:
        """The error as the body of an HTTP error response."""
        return {"code": self.code, "message": str(self), "hint": self.hint, "action": self.action}


class Malformed(ProtocolError):
    code = "MALFORMED"
    hint = "the bytes are not a valid riversync message; check the sender's version"


class TooLarge(ProtocolError):
    code = "TOO_LARGE"
    http_status = 413
    hint = ("the hub refuses a blob over limits.max_body_bytes or a batch over"
            " limits.max_events_per_batch (hub.toml): raise them there")


class BadSignature(ProtocolError):
    code = "BAD_SIGNATURE"
    http_status = 401
    hint = "the node's key does not match the roster; re-run `riversync cluster init` or fix the key file"


class UnknownNode(ProtocolError):
    code = "UNKNOWN_NODE"
    http_status = 401
    hint = "add the node to the cluster roster on every daemon"


class WrongCluster(ProtocolError):
    code = "WRONG_CLUSTER"
    http_status = 403
    hint = "the node's config points at another cluster's hub"


class UnsupportedVersion(ProtocolError):
    code = "UNSUPPORTED_VERSION"
    http_status = 426
    hint = "upgrade the older side so both speak the same protocol major version"


class OriginMismatch(ProtocolError):
    code = "ORIGIN_MISMATCH"
    http_status = 403
    hint = "a batch may only carry events of its signer; the sender is misbehaving"


class SequenceGap(ProtocolError):
    code = "SEQUENCE_GAP"
    http_status = 409
    action = RESYNC
    hint = "say hello to learn what the hub holds, then push from there"


class SequenceFork(ProtocolError):
    code = "SEQUENCE_FORK"
    http_status = 409
    action = RESYNC
    hint = "this node was restored from an old backup; start a new node epoch (riversync restore does this)"


class ClockSkew(ProtocolError):
    code = "CLOCK_SKEW"
    http_status = 422
    action = RETRY
    hint = "fix the clock (NTP) of the node whose time is ahead"


class ClockOverflow(ProtocolError):
    code = "CLOCK_OVERFLOW"
    http_status = 422
    hint = "the HLC ran past year 6429; the clock is badly wrong"


class StaleRequest(ProtocolError):
    code = "STALE_REQUEST"
    http_status = 401
    action = RETRY
    hint = "the request is older than the allowed window; check the node's clock"


class ReplayedRequest(ProtocolError):
    code = "REPLAYED_REQUEST"
    http_status = 401
    hint = "a request may be sent only once; every request needs a fresh nonce"


class UnexpectedMessage(ProtocolError):
    code = "UNEXPECTED_MESSAGE"
    hint = "the message type does not belong on this endpoint"


class Busy(ProtocolError):
    code = "BUSY"
    http_status = 503
    action = RETRY
    hint = "the hub is at its concurrency limit; retry with backoff"


class CursorPruned(ProtocolError):
    """The pull's cursor is before the hub's prune horizon: batches of other origins the
    node lacks were deleted by ``riversync hub prune``.  Serving the rest would leave the
    node short of those events for good, silently; so the pull is refused and the node
    stops until an operator gives it a history the hub can continue."""

    code = "CURSOR_PRUNED"
    http_status = 410
    hint = ("restore this node from a backup taken after the hub's prune (riversync restore), "
            "or restore the hub from a hub backup taken before it (riversync hub restore); "
            "see 'Restoring after a hub prune' in docs/how-to/operate.md")


class SchemaMismatch(ProtocolError):
    """A hello states a schema digest other than the one the hub registered for that
    schema version (the first one a node told it).  Two offices running one version by
    different rules would each park the other's events as bad values while both report
    OK, so the node is refused before it pushes or pulls anything and stops until an
    operator gives it the cluster's file."""

    code = "SCHEMA_MISMATCH"
    http_status = 409
    hint = ("copy the cluster's schema file to this node and follow 'A schema file that "
            "differs between offices' in docs/how-to/operate.md; for a file changed on "
            "purpose, raise its `version` and roll it out to every office")


class CursorAhead(ProtocolError):
    """The pull's cursor is past the head of the hub's current epoch: the node holds
    batches this hub does not (its store went back without a new hub epoch, such as a copy
    put back by hand), or the peer is not honest.  Recording the cursor would silently
    skip every batch up to it and let a prune delete them as delivered."""

    code = "CURSOR_AHEAD"
    http_status = 409
    hint = ("the hub's store is older than what this node pulled from it: restore the hub "
            "with `riversync hub restore` from its newest backup (a copy put back by hand "
            "keeps the old hub epoch); see 'A hub store put back by hand' in "
            "docs/how-to/operate.md")


ALL_ERRORS: tuple[type[ProtocolError], ...] = (
    Malformed,
    TooLarge,
    BadSignature,
    UnknownNode,
    WrongCluster,
    UnsupportedVersion,
    OriginMismatch,
    SequenceGap,
    SequenceFork,
    ClockSkew,
    ClockOverflow,
    StaleRequest,
    ReplayedRequest,
    UnexpectedMessage,
    Busy,
    CursorPruned,
    SchemaMismatch,
    CursorAhead,
)

BY_CODE: dict[str, type[ProtocolError]] = {cls.code: cls for cls in ALL_ERRORS}


def from_wire(body: dict) -> ProtocolError:
    """Rebuild a typed error from an error response (unknown codes become ProtocolError)."""
    code = str(body.get("code", "PROTOCOL_ERROR"))
    cls = BY_CODE.get(code, ProtocolError)
    message = str(body.get("message", ""))
    # A sender's message is str(error), which starts with its code: keep it once.
    message = message.removeprefix(f"{code}: ")
    if cls is ProtocolError:
        err = ProtocolError.__new__(ProtocolError)
        err.code = code
        ProtocolError.__init__(err, message)
        return err
    return cls(message)
