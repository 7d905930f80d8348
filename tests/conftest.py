"""Shared fixtures: a fresh store on SQLite and on PostgreSQL, Redis, an isolated CORRAL_HOME.

PostgreSQL and Redis tests skip with a reason when the server is unreachable, unless
CORRAL_REQUIRE_SERVICES=1 (set by .ci/run), which turns the skip into a failure.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

POSTGRES_URL = os.environ.get("CORRAL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CORRAL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_SERVICES = os.environ.get("CORRAL_REQUIRE_SERVICES") == "1"


def service_missing(reason: str) -> None:
    """Skip, or fail when CI requires the real services."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (CORRAL_REQUIRE_SERVICES=1 forbids skipping)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own CORRAL_HOME and working directory and no stray CORRAL_* settings."""
    for var in list(os.environ):
        if var.startswith("CORRAL_") and not var.startswith(("CORRAL_TEST_", "CORRAL_REQUIRE")):
            monkeypatch.delenv(var)
    home = tmp_path / "corral-home"
    monkeypatch.setenv("CORRAL_HOME", str(home))
    monkeypatch.chdir(tmp_path)


def _admin_dsn(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def _postgres_server() -> str | None:
    try:
        import psycopg

        with psycopg.connect(_admin_dsn(POSTGRES_URL), connect_timeout=3):
            return POSTGRES_URL
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return f"!PostgreSQL at {POSTGRES_URL} is unreachable: {exc}".splitlines()[0]


@pytest.fixture
def postgres_url(_postgres_server: str | None) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test, dropped afterwards."""
    if _postgres_server is None or _postgres_server.startswith("!"):
        service_missing((_postgres_server or "!PostgreSQL unavailable")[1:])
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"corral_t_{uuid.uuid4().hex[:12]}"
    admin = _admin_dsn(POSTGRES_URL)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """The same test on SQLite and on PostgreSQL."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def store(db_url: str) -> Iterator[object]:
    from corral.store import Store

    s = Store(db_url, auto_upgrade=True)
    yield s
    s.dispose()


@pytest.fixture
def registry(store: object, tmp_path: Path) -> object:
    from corral.artifacts import ArtifactStore
    from corral.registry import Registry

    return Registry(store, ArtifactStore(str(tmp_path / "artifacts"), tmp_path / "cache"), actor="tester")  # type: ignore[arg-type]


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A reachable Redis URL; tests must prefix their keys (see `redis_prefix`)."""
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        client.ping()
        client.close()
    except Exception as exc:  # noqa: BLE001
        service_missing(f"Redis at {REDIS_URL} is unreachable: {exc}")
    yield REDIS_URL


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix unique to this test, so runs never see each other's counters."""
    return f"corral-test-{uuid.uuid4().hex[:10]}:"


# the smallest tokenizer.json that `tokenizers` loads: the registry refuses a model without one
TINY_TOKENIZER = (
    '{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,'
    '"pre_tokenizer":null,"post_processor":null,"decoder":null,'
    '"model":{"type":"WordLevel","vocab":{"[UNK]":0,"hi":1},"unk_token":"[UNK]"}}'
)


@pytest.fixture
def model_dir(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Factory: a minimal Hugging Face-style directory the registry accepts (no real weights)."""

    def make(marker: str = "1") -> Path:
        path = tmp_path / f"model-{marker}"
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps({"model_type": "llama", "marker": marker}))
        (path / "weights.bin").write_bytes(marker.encode() * 64)
        (path / "tokenizer.json").write_text(TINY_TOKENIZER)
        return path

    return make
