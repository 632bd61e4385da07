"""Signed access tokens (JWT, HS256 via PyJWT) and the server secret.

Claims: ``sub`` (player id), ``role`` (player, spectator or admin), ``match``
(a match id or ``"*"`` for any), ``exp`` and ``iat``. The server trusts only
what the signature covers: a player id never comes from a message.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import jwt

from replay.protocol import ROLES

__all__ = ["AuthError", "Identity", "issue", "load_secret", "verify"]

log = logging.getLogger(__name__)

ALGORITHM = "HS256"
ANY_MATCH = "*"


class AuthError(Exception):
    """A token that cannot be trusted; ``code`` is ``unauthorized``."""

    code = "unauthorized"


@dataclass(frozen=True)
class Identity:
    player: str
    role: str
    match: str
    expires_at: float

    def may_enter(self, match_id: str) -> bool:
        return self.role == "admin" or self.match in (ANY_MATCH, match_id)


ANONYMOUS = Identity("", "spectator", "", float("inf"))
"""A connection without a token: a spectator of public matches only (player ``""``)."""


def issue(secret: str, player: str, role: str, match: str = ANY_MATCH, ttl: float = 3600) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    if not player or len(player) > 64:
        raise ValueError("player id must be 1..64 characters")
    if not match or len(match) > 64:
        raise ValueError("match must be a match id or '*' (1..64 characters)")
    if not ttl > 0:
        raise ValueError("ttl must be positive")
    now = int(time.time())
    claims = {"sub": player, "role": role, "match": match, "iat": now, "exp": now + int(ttl)}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify(secret: str, token: str) -> Identity:
    """The identity in ``token``; raises :class:`AuthError` saying why it is refused."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],  # pinned: never let the token pick its algorithm
            options={"require": ["sub", "role", "match", "exp"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired") from None
    except jwt.InvalidSignatureError:
        raise AuthError("token signature is invalid") from None
    except jwt.InvalidTokenError as exc:
        raise AuthError(f"token is malformed: {exc}") from None
    sub, role, match = claims["sub"], claims["role"], claims["match"]
    if not isinstance(sub, str) or not sub or role not in ROLES or not isinstance(match, str):
        raise AuthError("token claims are invalid (sub, role or match)")
    return Identity(sub, role, match, float(claims["exp"]))


def load_secret(secret: str, secret_file: str, data_dir: str) -> str:
    """The signing secret: explicit value, else a file, else ``<data_dir>/secret``
    (generated with a warning on first run, readable only by its owner)."""
    if secret:
        return secret
    if secret_file:
        return Path(secret_file).read_text().strip()
    path = Path(data_dir) / "secret"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    log.warning("no MATCHREPLAY_SECRET configured: generated a new secret in %s", path)
    return value
