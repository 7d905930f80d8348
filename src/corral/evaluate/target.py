"""What an evaluation asks: a registry version (served by an engine worker started for the run), a
deployment through a running gateway, or any OpenAI-compatible URL."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

from corral.errors import InvalidInputError, TargetUnreachableError
from corral.evaluate.client import Endpoint
from corral.registry import ModelVersion, Registry


@dataclass(frozen=True)
class TargetSpec:
    """Exactly one of `model`, `deployment` or `url` (with `upstream_model`)."""

    model: str | None = None
    deployment: str | None = None
    gateway: str = "http://127.0.0.1:8000"
    key_env: str | None = None
    url: str | None = None
    upstream_model: str | None = None
    api_key_env: str | None = None
    timeout_s: float = 120.0

    def check(self) -> None:
        given = [name for name in ("model", "deployment", "url") if getattr(self, name)]
        if len(given) != 1:
            raise InvalidInputError("give exactly one target: --model REF, --deployment NAME or --url URL")
        if self.url and not self.upstream_model:
            raise InvalidInputError("--url needs --upstream-model (the model name that endpoint serves)")

    @property
    def label(self) -> str:
        return self.model or self.deployment or f"{self.url}#{self.upstream_model}"

    @property
    def kind(self) -> str:
        return "model" if self.model else "deployment" if self.deployment else "url"


@dataclass(frozen=True)
class Target:
    spec: TargetSpec
    endpoint: Endpoint
    version: ModelVersion | None = None  # the resolved registry version, for --model
    model_dir: Path | None = None  # its weights, when local (perplexity)

    @property
    def label(self) -> str:
        return self.version.ref if self.version else self.spec.label


def key_header(env: str | None) -> dict[str, str]:
    if not env:
        return {}
    value = os.environ.get(env)
    if not value:
        raise InvalidInputError(f"the environment variable {env} (the API key) is not set")
    return {"authorization": f"Bearer {value}"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(process: subprocess.Popen[bytes], url: str, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise TargetUnreachableError(
                f"the engine worker exited with {process.returncode} before it was ready: {' / '.join(tail)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback health check
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise TargetUnreachableError(
        f"the engine worker did not become healthy within {timeout_s:.0f} s (log {log})"
    )


@contextmanager
def engine_worker(ref: str, config: str | None, timeout_s: float = 300.0) -> Iterator[str]:
    """An engine worker child process serving `ref`; yields its /v1 URL and stops it afterwards."""
    port = _free_port()
    env = dict(os.environ)
    if config:
        env["CORRAL_CONFIG"] = str(Path(config).resolve())
    with tempfile.NamedTemporaryFile(prefix="corral-eval-worker-", suffix=".log", delete=False) as log_file:
        log = Path(log_file.name)
        process = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "corral.cli.main", "worker", "--model", ref, "--port", str(port)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        _wait_healthy(process, f"http://127.0.0.1:{port}/health", log, timeout_s)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.unlink(missing_ok=True)


@contextmanager
def open_target(
    spec: TargetSpec, registry: Registry, config: str | None = None, worker_timeout_s: float = 300.0
) -> Iterator[Target]:
    """The target ready to answer: for a registry version with weights, a worker runs for the block."""
    spec.check()
    if spec.url:
        yield Target(
            spec, Endpoint(spec.url, spec.upstream_model or "", key_header(spec.api_key_env), spec.timeout_s)
        )
        return
    if spec.deployment:
        url = spec.gateway.rstrip("/") + ("" if spec.gateway.rstrip("/").endswith("/v1") else "/v1")
        yield Target(spec, Endpoint(url, spec.deployment, key_header(spec.key_env), spec.timeout_s))
        return
    version = registry.models.resolve(spec.model or "")
    if version.kind == "endpoint":
        endpoint = Endpoint(
            version.endpoint_url or "", version.upstream_model or version.ref, key_header(version.api_key_env)
        )
        yield Target(spec, endpoint, version)
        return
    model_dir = registry.models.materialize(version) if version.kind == "weights" else None
    kept = _KEPT.get()
    if kept is not None and version.ref in kept.urls:
        url = kept.urls[version.ref]
    elif kept is not None:
        url = kept.urls[version.ref] = kept.stack.enter_context(
            engine_worker(version.ref, config, worker_timeout_s)
        )
    else:
        with engine_worker(version.ref, config, worker_timeout_s) as url:
            yield Target(spec, Endpoint(url, version.ref, {}, spec.timeout_s), version, model_dir)
        return
    yield Target(spec, Endpoint(url, version.ref, {}, spec.timeout_s), version, model_dir)


@dataclass
class _KeptWorkers:
    stack: ExitStack
    urls: dict[str, str] = field(default_factory=dict)


_KEPT: ContextVar[_KeptWorkers | None] = ContextVar("corral_eval_kept_workers", default=None)


@contextmanager
def kept_workers() -> Iterator[None]:
    """Within the block, a worker started for a version serves every run of it and stops at the end
    (several datasets, or a gate and its reruns, pay the start-up once)."""
    with ExitStack() as stack:
        token = _KEPT.set(_KeptWorkers(stack))
        try:
            yield
        finally:
            _KEPT.reset(token)
