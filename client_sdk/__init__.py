"""matchreplay's async Python client for players, spectators and leaderboards."""

from client_sdk.game_client import ClientClosed, GameClient
from client_sdk.leaderboards import LeaderboardError, Leaderboards
from client_sdk.replay_file import ReplayFile
from client_sdk.spectator import Spectator
from client_sdk.view import ViewFrame

__all__ = [
    "ClientClosed",
    "GameClient",
    "LeaderboardError",
    "Leaderboards",
    "ReplayFile",
    "Spectator",
    "ViewFrame",
]
