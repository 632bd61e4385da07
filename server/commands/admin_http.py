"""The admin calls a command line makes to a running server (``matchreplay rewind``,
``matchreplay fork``): one POST with the admin token, the JSON answer or its error."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, urlencode

__all__ = ["add_server_arguments", "match_path", "post"]


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        default=os.environ.get("MATCHREPLAY_SERVER", "http://127.0.0.1:8765"),
        help="the server's base URL (env MATCHREPLAY_SERVER)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("MATCHREPLAY_TOKEN"),
        help="an admin token (env MATCHREPLAY_TOKEN; `matchreplay token NAME --role admin`)",
    )


def post(args: argparse.Namespace, prog: str, path: str, params: dict[str, Any]) -> int:
    """POST ``path`` (match ids quoted by the caller) and print the JSON answer; exit 0,
    or 1 with the server's error code on stderr (2: no token)."""
    if not args.token:
        print(f"matchreplay {prog}: an admin token is required (--token)", file=sys.stderr)
        return 2
    query = urlencode({k: v for k, v in params.items() if v is not None})
    request = urllib.request.Request(
        f"{args.server.rstrip('/')}{path}?{query}", method="POST", data=b""
    )
    request.add_header("Authorization", f"Bearer {args.token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            print(json.dumps(json.loads(response.read()), indent=2))
            return 0
    except urllib.error.HTTPError as exc:
        try:
            error = json.loads(exc.read())["error"]
            print(f"matchreplay {prog}: {error['message']} [{error['code']}]", file=sys.stderr)
        except (ValueError, KeyError, TypeError):
            print(f"matchreplay {prog}: HTTP {exc.code}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"matchreplay {prog}: cannot reach {args.server}: {exc}", file=sys.stderr)
        return 1


def match_path(match_id: str, action: str) -> str:
    return f"/api/matches/{quote(match_id, safe='')}/{action}"
