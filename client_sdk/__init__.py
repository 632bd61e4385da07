"""matchreplay's async Python client for players, spectators and leaderboards."""

from client_sdk.game_client import ClientClosed, GameClient

__all__ = ["ClientClosed", "GameClient"]
