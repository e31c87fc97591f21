"""The stand-in ``docker`` (tests/harness/fake_docker/docker) for container sources.

No Docker engine runs on these machines. The stand-in executes what ``docker exec`` /
``docker compose exec -T`` would run in the container directly here, with only the variables
passed by ``-e NAME``, so the engine's real code path (argv construction, secrets by name,
stdin for restores) runs end to end against the loopback services.

    env = fake_docker_env(log_path, containers=("db",))   # for run_playbook(env=...)
    invocations(log_path) -> ["exec -e PGPASSWORD ... db pg_dump ...", ...]
"""

from __future__ import annotations

import os
from pathlib import Path

FAKE_DOCKER_DIR = Path(__file__).resolve().parent / "fake_docker"


def fake_docker_env(log_path, containers=()) -> dict:
    """Environment that puts the stand-in ``docker`` first on PATH (before /usr/local/bin/docker)."""
    env = {"PATH": "%s:%s" % (FAKE_DOCKER_DIR, os.environ.get("PATH", "")), "FAKE_DOCKER_LOG": str(log_path)}
    if containers:
        env["FAKE_DOCKER_CONTAINERS"] = " ".join(containers)
    return env


def invocations(log_path) -> list[str]:
    path = Path(log_path)
    return path.read_text().splitlines() if path.exists() else []
