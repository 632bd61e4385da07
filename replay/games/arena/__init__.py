"""Arena: the top-down 2D deathmatch reference game (docs/games.md, "Arena")."""
