"""The worker image and the compose file build where a Docker engine runs (skipped elsewhere)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.engine_helpers import REPO


def _engine() -> str | None:
    """Why Docker cannot build here, or None when it can."""
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    if info.returncode != 0:
        lines = (info.stderr or info.stdout).strip().splitlines()
        return f"no Docker engine: `docker info` says {lines[-1] if lines else 'nothing'}"
    return None


def test_worker_image_builds_and_runs_the_cli() -> None:
    reason = _engine()
    if reason:
        pytest.skip(reason)
    tag = "streamflow-worker:test"
    subprocess.run(
        ["docker", "build", "-f", "docker/Dockerfile", "-t", tag, "."],
        cwd=REPO,
        check=True,
        timeout=900,
    )
    shown = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "streamflow", tag, "describe",
         "topologies/order_totals.py"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert "customer-totals" in shown.stdout


def test_compose_file_is_valid() -> None:
    reason = _engine()
    if reason:
        pytest.skip(reason)
    compose = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    if compose.returncode != 0:
        pytest.skip("the docker client has no compose plugin")
    subprocess.run(
        ["docker", "compose", "-f", "docker/compose.yml", "config", "-q"],
        cwd=REPO,
        check=True,
        timeout=60,
    )
