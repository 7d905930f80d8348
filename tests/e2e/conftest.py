"""What the whole-system tests share: a user running `corral` in a project directory, ports, waiting."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import openai
import pytest
import yaml

ADMIN = "sk-e2e-admin-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class User:
    """Runs `corral ...` in one project directory, as a user at a shell would."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")},
            "CORRAL_HOME": str(home / ".corral"),
            "CORRAL_ADMIN_KEY": ADMIN,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "corral.cli.main", *args],
            cwd=self.home,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def corral(self, *args: str, timeout: float = 300) -> str:
        done = self.run(*args, timeout=timeout)
        assert done.returncode == 0, (
            f"corral {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.corral(*args, "--json"))


def until(predicate: Callable[[], Any], what: str, log: Path, timeout_s: float = 180) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            found = predicate()
        except (httpx.HTTPError, openai.APIError):
            found = None
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"{what} did not happen; serve log:\n{log.read_text()[-4000:]}")


def serving_config(config_file: Path, deployments: dict[str, Any], **sections: Any) -> int:
    """Point corral.yaml at a free port with fast polls, a CPU engine and these deployments; the port."""
    config = yaml.safe_load(config_file.read_text()) or {}
    port = free_port()
    config["gateway"] = {
        **config.get("gateway", {}),
        "port": port,
        "deployments_poll_s": 0.2,
        "worker_health_interval_s": 0.2,
    }
    config["engine"] = {"device": "cpu", "worker_port_start": free_port()}
    config["deployments"] = deployments
    config.update(sections)
    config_file.write_text(yaml.safe_dump(config))
    return port


@pytest.fixture
def e2e() -> SimpleNamespace:
    return SimpleNamespace(
        ADMIN=ADMIN, User=User, free_port=free_port, until=until, serving_config=serving_config
    )
