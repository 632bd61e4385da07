"""Session-wide test fixtures.

PostgreSQL. The store's PostgreSQL tests need a server. ``MATCHREPLAY_TEST_PG`` (a
``postgresql://`` URL of a database the tests may fill) names one; otherwise the
session starts a throwaway cluster of its own (:class:`PgCluster`): ``initdb`` and
``pg_ctl start`` in a temporary directory, as the ``postgres`` user when run as
root, on a free loopback port with its own socket directory, and stops it at the
end. When PostgreSQL is not installed and we are root, Debian's ``postgresql``
package is installed first. Under CI (``CI=true``) a PostgreSQL that cannot be had
fails the run; elsewhere those tests skip, and the reason is printed at the end.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from server import local_pg
from server.local_pg import PgCluster

# Admission by measured load (server/headroom.py) is off in every server the tests
# start, in-process or as a child process (which reads these settings from the
# environment): a busy test machine must not refuse players at random. The tests of
# admission itself turn it on where it is their subject.
os.environ.setdefault("MATCHREPLAY_MAX_CPU", "0")
os.environ.setdefault("MATCHREPLAY_MAX_TICK_LATENESS_MS", "0")

_PG_SKIPPED: list[str] = []


def _need_pg(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"PostgreSQL is required under CI: {reason}", pytrace=False)
    if not _PG_SKIPPED:
        _PG_SKIPPED.append(reason)
    pytest.skip(f"no PostgreSQL: {reason}")


@pytest.fixture(scope="session")
def pg_bindir() -> str:
    """The PostgreSQL binaries (installed when missing and we may)."""
    bindir = local_pg.pg_bindir()
    if bindir is None:
        local_pg.install_postgresql()
        bindir = local_pg.pg_bindir()
    if bindir is None:
        _need_pg("pg_ctl not found and postgresql could not be installed (not root?)")
    return bindir  # type: ignore[return-value]


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> Iterator[str]:
    """A ``postgresql://`` URL of a server for the whole session (its ``postgres``
    database is the admin database: tests create databases of their own)."""
    url = os.environ.get("MATCHREPLAY_TEST_PG")
    if url:
        yield url
        return
    cluster = PgCluster(request.getfixturevalue("pg_bindir"))
    try:
        cluster.init()
        cluster.start()
    except (subprocess.SubprocessError, OSError) as exc:
        cluster.remove()
        _need_pg(f"cannot start a throwaway cluster: {exc}")
    os.environ["MATCHREPLAY_TEST_PG"] = cluster.url  # child processes of the tests see it
    try:
        yield cluster.url
    finally:
        os.environ.pop("MATCHREPLAY_TEST_PG", None)
        cluster.remove()


@pytest.fixture(scope="session")
def _pg_test_db(pg_server: str) -> str:
    """One database for the session's store tests, created once (CREATE DATABASE
    costs a checkpoint: seconds each on a busy machine)."""
    import asyncio

    import asyncpg

    name = f"matchreplay_test_{os.getpid()}"

    async def create() -> None:
        conn = await asyncpg.connect(pg_server, timeout=10)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            await conn.execute(f"CREATE DATABASE {name}")
        finally:
            await conn.close()

    asyncio.run(create())
    base, _, _ = pg_server.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture
def pg_url(_pg_test_db: str) -> str:
    """A ``postgresql://`` URL of an empty database: everything in it is dropped
    before each test, so every test also creates the store's schema."""
    import asyncio

    import asyncpg

    async def empty() -> None:
        conn = await asyncpg.connect(_pg_test_db, timeout=10)
        try:
            await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        finally:
            await conn.close()

    asyncio.run(empty())
    return _pg_test_db


@pytest.fixture
def pg_cluster(pg_bindir: str) -> Iterator[PgCluster]:
    """A cluster of this test's own, started: for tests that stop the server."""
    cluster = PgCluster(pg_bindir)
    try:
        cluster.init()
        cluster.start()
    except (subprocess.SubprocessError, OSError) as exc:
        cluster.remove()
        _need_pg(f"cannot start a throwaway cluster: {exc}")
    yield cluster
    cluster.remove()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _PG_SKIPPED:
        terminalreporter.write_line(f"PostgreSQL tests skipped: {_PG_SKIPPED[0]}", yellow=True)
