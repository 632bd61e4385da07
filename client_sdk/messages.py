"""The wire messages, re-exported from their one definition in :mod:`replay.protocol`."""

from replay.protocol import (
    SUBPROTOCOL,
    Catchup,
    Ended,
    Error,
    Joined,
    Ok,
    ProtocolError,
    ServerMessage,
    Update,
    Welcome,
)

__all__ = [
    "SUBPROTOCOL",
    "Catchup",
    "Ended",
    "Error",
    "Joined",
    "Ok",
    "ProtocolError",
    "ServerMessage",
    "Update",
    "Welcome",
]
