"""Who is calling: bearer tokens checked against the roster's hashed tokens.

The roster stores only SHA-256 hex digests of tokens, so a copied roster grants nothing.
Roles are ordered: a clerk works on rows, an operator also handles conflicts, staging and
sync, an admin also makes overrides and transfers rows its office does not own.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from riversync.protocol.keys import Roster, User

from .errors import Forbidden, Unauthenticated

CLERK = "clerk"
OPERATOR = "operator"
ADMIN = "admin"
RANK = {CLERK: 1, OPERATOR: 2, ADMIN: 3}


@dataclass(frozen=True)
class Caller:
    """An authenticated user of this node; ``office`` is the user's home office."""

    name: str
    role: str
    office: str

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN

    def require(self, role: str, what: str) -> None:
        """Raises Forbidden unless this caller's role is at least ``role``."""
        if RANK.get(self.role, 0) < RANK[role]:
            raise Forbidden(f"user {self.name!r} has the {self.role} role; {what} needs the "
                            f"{role} role",
                            hint=who_can(role))


def who_can(role: str) -> str:
    """The refusal names who may act, so a clerk is not sent to an operator for an admin's job."""
    holders = [r for r, rank in RANK.items() if rank >= RANK[role]]
    return (f"ask a user the roster makes {' or '.join(holders)} to do it, or an admin to "
            f"change your role in the roster")


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def authenticate(header: str | None, roster: Roster) -> Caller:
    """Map an Authorization header to a roster user.

    Raises:
        Unauthenticated: no header, not a bearer token, or no user holds this token.
    """
    if not header:
        raise Unauthenticated("this endpoint needs a token and none was sent")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    digest = token_sha256(token)
    found: User | None = None
    for user in roster.users.values():
        # Compare every entry in constant time so timing does not reveal a prefix match.
        if user.token_sha256 and hmac.compare_digest(user.token_sha256, digest):
            found = user
    if found is None:
        raise Unauthenticated("the token does not belong to any user of this cluster")
    return Caller(name=found.name, role=found.role, office=found.home_office)
