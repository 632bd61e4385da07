"""matchreplay's async Python client for players, spectators and leaderboards."""
