"""The ``matchreplay.v1`` wire protocol: the one definition of every message.

Sans-I/O: this package turns bytes into typed messages and messages into bytes, and
validates them. It knows nothing about sockets or asyncio; the server
(``server/session.py``) and the client SDK (``client_sdk/``) both use it as
``from replay import protocol as p``. docs/protocol.md is its specification for
implementers in other languages. One module per part, each declaring its own messages:

    framing      the subprotocol name, limits, unpacking a frame, field checks
    errors       ERROR codes, close codes, which closes not to retry
    player       JOIN, INPUT, COMMAND, LEAVE; WELCOME, JOINED, CATCHUP, UPDATE, ...
    spectator    LIST, WATCH, SEEK, PLAY, ...; MATCHES, WATCHING, STATE, FRAME, ...
    leaderboard  LEADERBOARD and its reply; the HTTP route of each query
    messages     the registry of all of them: decode_client, decode_server
    json_shapes  the JSON of a match and of an error (HTTP routes, listings)

Every public name of these modules is importable from the package itself.
"""

from replay.protocol.errors import *  # noqa: F403
from replay.protocol.framing import *  # noqa: F403
from replay.protocol.json_shapes import *  # noqa: F403
from replay.protocol.leaderboard import *  # noqa: F403
from replay.protocol.messages import *  # noqa: F403
from replay.protocol.player import *  # noqa: F403
from replay.protocol.spectator import *  # noqa: F403
