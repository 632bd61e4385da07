"""The README's promise: python3 and make are all `make test` needs; it brings in the rest
itself (scripts/test-deps.sh), so CI runs exactly `make test`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from cli_helpers import ROOT, TIMEOUT

DEPS = ROOT / "scripts" / "test-deps.sh"


def fake_apt_get(bin_dir: Path, log: Path) -> None:
    """An apt-get that records its arguments (the package index is outside our control)."""
    bin_dir.mkdir()
    apt = bin_dir / "apt-get"
    apt.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    apt.chmod(0o755)


def run_deps(tmp_path: Path, chromium: str) -> tuple[subprocess.CompletedProcess[str], str]:
    log = tmp_path / "apt.log"
    fake_apt_get(tmp_path / "bin", log)
    done = subprocess.run(
        [str(DEPS)],
        env=os.environ | {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "CHROMIUM": chromium},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    return done, log.read_text() if log.exists() else ""


def test_test_deps_installs_chromium_when_it_is_missing(tmp_path: Path) -> None:
    done, apt = run_deps(tmp_path, str(tmp_path / "no-chromium"))
    assert done.returncode == 0, done.stderr
    assert "update" in apt and "install -y -qq chromium" in apt


def test_test_deps_installs_nothing_that_is_there(tmp_path: Path) -> None:
    present = tmp_path / "chromium"
    present.write_text("#!/bin/sh\n")
    present.chmod(0o755)
    done, apt = run_deps(tmp_path, str(present))
    assert done.returncode == 0 and apt == "", done.stderr


def test_make_test_brings_its_dependencies_and_ci_runs_only_make_test() -> None:
    plan = subprocess.run(
        ["make", "-n", "--no-print-directory", "test"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    ).stdout.splitlines()
    assert "scripts/test-deps.sh" in plan
    assert plan.index("scripts/test-deps.sh") < next(
        i for i, line in enumerate(plan) if "pytest" in line
    )
    ci = [
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ci[-1] == "make test" and not any("apt-get" in line for line in ci)
