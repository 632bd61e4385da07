"""``matchreplay cluster``: a local cluster in one command, for a newcomer to see it work.

A throwaway PostgreSQL (server/local_pg.py), ``--nodes`` node processes on loopback
(``matchreplay serve --node nK --store postgresql://...``), ``--matches`` bot matches
placed by load through the first node, and a printout of where to look and what to
try (kill a node with ``kill -9``: its matches carry on elsewhere). Ctrl-C stops the
nodes (each hands its matches to the ones still up), then the database.
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from server import auth, local_pg
from server.commands.common import CliError, UsageError
from server.node_process import NodeProcess

MAX_NODES = 8


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cluster",
        help="run a local cluster: PostgreSQL, nodes and bot matches",
        description="Start a throwaway PostgreSQL, several nodes on loopback and bot"
        " matches spread over them; print where to look. Ctrl-C stops it all.",
    )
    parser.add_argument("--nodes", type=int, default=3, help=f"nodes, 2..{MAX_NODES} (default 3)")
    parser.add_argument("--matches", type=int, default=3, help="bot matches (default 3)")
    parser.add_argument("--bots", type=int, default=4, help="bots per match (default 4)")
    parser.add_argument("--port", type=int, default=8801, help="first node's port (default 8801)")
    parser.add_argument(
        "--data-dir", default="data/cluster", help="nodes' files (default data/cluster)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 2 <= args.nodes <= MAX_NODES:
        raise UsageError(f"--nodes must be in 2..{MAX_NODES}, not {args.nodes}")
    bindir = local_pg.pg_bindir()
    if bindir is None:
        local_pg.install_postgresql()
        bindir = local_pg.pg_bindir()
    if bindir is None:
        raise CliError(
            "PostgreSQL is not installed (apt-get install postgresql, or run as root to let"
            " this command install it)",
            "no_postgresql",
        )
    data = Path(args.data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    env = {**_env(), "MATCHREPLAY_SECRET": secret}
    pg = local_pg.PgCluster(bindir)
    nodes: list[NodeProcess] = []
    bots: list[subprocess.Popen[bytes]] = []
    try:
        pg.init()
        pg.start()
        print(f"PostgreSQL  {pg.url}   (throwaway, in {pg.dir})", flush=True)
        for k in range(args.nodes):
            name = f"n{k + 1}"
            node = NodeProcess(name, pg.url, data / name, env=env, port=args.port + k)
            nodes.append(node)
            try:
                node.start()
            except RuntimeError:
                raise CliError(
                    f"node {name} did not start: see {node.log}", "node_failed"
                ) from None
        admin = auth.issue(secret, "admin", "admin", auth.ANY_MATCH, 24 * 3600)
        _wait_for_membership(nodes)  # placement needs every node's heartbeat
        by_name = {n.name: n for n in nodes}
        matches = []
        for _ in range(args.matches):
            info = _post(nodes[0].base, "/api/matches?game=arena", admin)
            matches.append(info)
            bots.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "server.cli",
                        "bots",
                        "--url",
                        by_name[info.get("node", "n1")].url,
                        "--match",
                        info["match_id"],
                        "--count",
                        str(args.bots),
                        "--nodes",
                        ",".join(n.url for n in nodes),
                    ],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=(data / "bots.log").open("ab"),
                )
            )
        _print_guide(nodes, matches, data, admin)
        signal.signal(signal.SIGTERM, _interrupt)
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        for proc in bots:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in bots:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for node in reversed(nodes):  # the last one up has no peer: it stops its matches
            node.stop(timeout=60)
        pg.remove()
        print("stopped: nodes and PostgreSQL", flush=True)
    return 0


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("MATCHREPLAY_")}


def _wait_for_membership(nodes: list[NodeProcess], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(nodes[0].base + "/api/nodes", timeout=10) as answer:
            up = {n["name"] for n in json.load(answer)["nodes"] if n["status"] == "up"}
        if up >= {n.name for n in nodes}:
            return
        time.sleep(0.2)
    raise CliError("the nodes did not see each other within 30 s", "node_failed")


def _post(base: str, path: str, token: str) -> dict:
    req = urllib.request.Request(
        base + path, method="POST", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(req, timeout=30) as answer:
        return json.load(answer)


def _print_guide(nodes: list[NodeProcess], matches: list[dict], data: Path, admin: str) -> None:
    lines = ["", "nodes (any node is a front door):"]
    for n in nodes:
        lines.append(f"  {n.name}  {n.base}/   pid {n.pid}")
    lines.append("matches (bots playing):")
    for m in matches:
        lines.append(f"  {m['match_id']}  on {m.get('node', '?')}   viewer on any node")
    lines += [
        f"membership and load:  curl {nodes[0].base}/api/nodes",
        "failover:             kill -9 <a node's pid>   (its matches carry on elsewhere in ~2 s)",
        f"logs:                 {data}/n*/serve.log",
        f"admin token:          {admin}",
        "Ctrl-C stops everything.",
    ]
    print("\n".join(lines), flush=True)
