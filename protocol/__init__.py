"""riversync protocol v1: sans-I/O.  Bytes in, typed messages out, bytes back.

Nothing in this package opens a socket or a file, reads a clock, draws randomness or
touches SQLite; time, keys and nonces are arguments.  Hub and node share it.
"""

from . import chain, codec, errors, hlc, keys, limits, messages, version
from .codec import ZERO_HASH, body_hash, decode, encode, make_batch, open_envelope, sign
from .errors import ProtocolError
from .messages import (
    AnyEvent,
    Batch,
    Create,
    Delete,
    Envelope,
    ErrorReply,
    Event,
    Hello,
    HelloReply,
    NodeStatus,
    OriginState,
    Pull,
    PullReply,
    PushReply,
    Resolve,
    StatusReply,
    StatusRequest,
    Transfer,
    Update,
)

__all__ = [
    "ZERO_HASH",
    "AnyEvent",
    "Batch",
    "Create",
    "Delete",
    "Envelope",
    "ErrorReply",
    "Event",
    "Hello",
    "HelloReply",
    "NodeStatus",
    "OriginState",
    "ProtocolError",
    "Pull",
    "PullReply",
    "PushReply",
    "Resolve",
    "StatusReply",
    "StatusRequest",
    "Transfer",
    "Update",
    "body_hash",
    "chain",
    "codec",
    "decode",
    "encode",
    "errors",
    "hlc",
    "keys",
    "limits",
    "make_batch",
    "messages",
    "open_envelope",
    "sign",
    "version",
]
