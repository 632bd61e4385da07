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

__all__ = [
    "AuthError",
    "Identity",
    "SecretError",
    "issue",
    "load_secret",
    "secret_origin",
    "verify",
]

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
    if not 0 < ttl < float("inf"):
        raise ValueError(f"ttl must be a positive number of seconds, not {ttl}")
    now = int(time.time())
    claims = {"sub": player, "role": role, "match": match, "iat": now, "exp": now + int(ttl)}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify(secret: str, token: str, secret_origin: str = "") -> Identity:
    """The identity in ``token``; raises :class:`AuthError` saying why it is refused.
    ``secret_origin`` (:func:`secret_origin`) goes into the refusal of a token signed
    with another secret, so its issuer learns which secret to sign with."""
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
        raise AuthError(_signed_elsewhere(secret_origin)) from None
    except jwt.InvalidTokenError as exc:
        raise AuthError(f"token is malformed: {exc}") from None
    sub, role, match = claims["sub"], claims["role"], claims["match"]
    if not isinstance(sub, str) or not sub or role not in ROLES or not isinstance(match, str):
        raise AuthError("token claims are invalid (sub, role or match)")
    return Identity(sub, role, match, float(claims["exp"]))


REASON_BYTES = 120
"""A websocket close reason holds at most 123 bytes; refusals fit in this."""


def _signed_elsewhere(origin: str) -> str:
    message = "token signature is invalid"
    if not origin:
        return message
    message += ": signed with another secret; the server's is "
    room = REASON_BYTES - len(message.encode())
    if len(origin.encode()) > room:  # keep the end of a long path: the file name
        origin = "..." + origin.encode()[-(room - 3) :].decode(errors="ignore")
    return message + origin


class SecretError(Exception):
    """No usable secret where one was looked for."""

    code = "no_secret"


ENV_SECRET = "MATCHREPLAY_SECRET"


def secret_origin(secret: str, secret_file: str, data_dir: str) -> str:
    """Where the secret :func:`load_secret` returns comes from, for people: a file's
    absolute path, or the setting that holds it."""
    if secret:
        return f"set by {ENV_SECRET} or --secret"
    return str(Path(secret_file or Path(data_dir) / "secret").absolute())


def load_secret(secret: str, secret_file: str, data_dir: str, *, create: bool = True) -> str:
    """The signing secret: explicit value, else a file, else ``<data_dir>/secret``.
    Only the server ``create``s that file (generated with a warning on first run,
    readable only by its owner): a token signed with a secret made up elsewhere (from
    another working directory) would be refused by the server."""
    if secret:
        return secret
    if secret_file:
        return _read_secret(Path(secret_file))
    path = Path(data_dir) / "secret"
    if path.exists():
        return _read_secret(path)
    if not create:
        raise SecretError(
            f"no secret at {path.absolute()}: the server creates its secret in its data"
            f" directory; pass --data-dir or --secret-file (the server prints its secret's"
            f" path when it starts), or set {ENV_SECRET}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    log.warning("no %s configured: generated a new secret in %s", ENV_SECRET, path)
    return value


def _read_secret(path: Path) -> str:
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise SecretError(f"cannot read the secret file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SecretError(f"the secret file {path} is not text") from None
    if not value:
        raise SecretError(f"the secret file {path} is empty")
    return value
