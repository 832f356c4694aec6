"""Ed25519 keys and the cluster roster.

Keys are made from a seed the caller supplies (``os.urandom(32)`` in production, fixed
bytes in tests and vectors), so this module never draws randomness itself.  The roster
says which node holds which public key, which office it serves, and who the users are:
it is the same file on every daemon.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import BadSignature, Malformed

ROLES = ("clerk", "operator", "admin")


def key_id(public_key: bytes) -> str:
    """Short, stable id of a public key: the first 8 bytes of its SHA-256, hex."""
    return hashlib.sha256(public_key).hexdigest()[:16]


class SigningKey:
    """A node's private key; signs the exact bytes it is given."""

    def __init__(self, seed: bytes):
        if len(seed) != 32:
            raise Malformed("an Ed25519 seed is 32 bytes")
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.seed = seed
        self.public_key = self._key.public_key().public_bytes_raw()
        self.key_id = key_id(self.public_key)

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


class VerifyKey:
    """A public key from the roster."""

    def __init__(self, public_key: bytes):
        if len(public_key) != 32:
            raise Malformed("an Ed25519 public key is 32 bytes")
        self._key = Ed25519PublicKey.from_public_bytes(public_key)
        self.public_key = public_key
        self.key_id = key_id(public_key)

    def verify(self, signature: bytes, data: bytes) -> None:
        """Raises BadSignature unless ``signature`` is this key's over exactly ``data``."""
        try:
            self._key.verify(signature, data)
        except InvalidSignature:
            raise BadSignature(f"signature does not verify with key {self.key_id}") from None


@dataclass(frozen=True)
class NodeEntry:
    node_id: str
    office: str
    public_key: bytes

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)


@dataclass(frozen=True)
class User:
    name: str
    home_office: str
    role: str
    token_sha256: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class Roster:
    """Who is in the cluster.  Built by ``riversync cluster init``; loaded by every daemon."""

    cluster_id: str
    nodes: dict[str, NodeEntry]
    users: dict[str, User] = field(default_factory=dict)

    @property
    def offices(self) -> list[str]:
        return sorted({n.office for n in self.nodes.values()})

    def verify_key(self, node_id: str) -> VerifyKey:
        return VerifyKey(self.nodes[node_id].public_key)

    def office_of_node(self, node_id: str) -> str | None:
        entry = self.nodes.get(node_id)
        return entry.office if entry else None

    def home_office(self, user: str) -> str | None:
        u = self.users.get(user)
        return u.home_office if u else None

    def is_admin(self, user: str) -> bool:
        u = self.users.get(user)
        return bool(u and u.is_admin)
