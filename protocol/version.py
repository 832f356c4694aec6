"""Protocol versions and the compatibility rule.

Under one major version, fields are only ever added, with defaults, and receivers ignore
fields they do not know.  Renaming, retyping or reusing a field needs a new major.
"""

from __future__ import annotations

from .errors import UnsupportedVersion

MAJOR = 1
MINOR = 2  # 1.1: Hello states the schema version and digest; 1.2: CURSOR_AHEAD
VERSION = (MAJOR, MINOR)
SUPPORTED_MAJORS = frozenset({1})


def check(peer: tuple[int, int] | list[int], *, who: str = "peer") -> None:
    """Refuse a peer whose major version this implementation does not speak.

    Raises:
        UnsupportedVersion: naming both versions, and whether the peer is older or newer.
    """
    major, minor = int(peer[0]), int(peer[1])
    if major in SUPPORTED_MAJORS:
        return
    side = "newer" if major > MAJOR else "older"
    raise UnsupportedVersion(
        f"{who} speaks protocol {major}.{minor}, which is {side} than this riversync's "
        f"{MAJOR}.{MINOR}",
        path="$.v",
    )
