"""Subcommands of the ``matchreplay`` CLI, one module each."""
