"""Match creation rules: the id alphabet, seats below the game's minimum, long player ids."""

from __future__ import annotations

import pytest
from server_helpers import FAST_SETTINGS, running_app, token, url

from client_sdk import GameClient
from server.lobby import BadMatchIdError, LobbyError


async def test_match_ids_outside_the_alphabet_are_refused_at_creation(tmp_path):
    async with running_app(tmp_path) as app:
        for bad in ("two words", "café", "a\x00b", "", "x" * 65, "a/b", "%2e%2e"):
            with pytest.raises(BadMatchIdError) as refused:
                await app.lobby.create("arena", FAST_SETTINGS, match_id=bad)
            assert refused.value.code == "bad_match_id"
        created = await app.lobby.create("arena", FAST_SETTINGS, match_id="Cup-2026.final_1")
        assert created.match_id == "Cup-2026.final_1"


async def test_start_players_below_the_games_minimum_is_refused(tmp_path):
    async with running_app(tmp_path) as app:
        with pytest.raises(LobbyError, match=r"start_players must be in \[2, 8\]"):
            await app.lobby.create("arena", FAST_SETTINGS, start_players=1)


async def test_a_long_player_id_joins_with_a_shortened_display_name(tmp_path):
    """Token player ids may be 64 characters; a game's display names may be shorter."""
    async with running_app(tmp_path) as app:
        match = await app.lobby.create("arena", FAST_SETTINGS | {"time_limit_s": 0})
        player = "p" * 64
        client = GameClient(url(app), token(player, match=match.match_id))
        await client.connect()
        joined = await client.join(match.match_id)
        assert joined.slot is not None
        assert match.rules.scoreboard(match.state)[0]["player"] == player
        await client.close()
