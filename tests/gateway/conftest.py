"""Gateway fixtures: fake upstreams on loopback ports and a real gateway served by uvicorn on a thread."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import httpx
import openai
import pytest

from corral.config import Settings
from corral.gateway import Gateway
from corral.gateway.server import RunningGateway, serve_in_thread
from corral.testing import FakeUpstream

ADMIN_KEY = "sk-test-admin-key"


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_ADMIN_KEY", ADMIN_KEY)


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream(name="a").running() as upstream:
        yield upstream


@pytest.fixture
def fake_b() -> Iterator[FakeUpstream]:
    with FakeUpstream(name="b").running() as upstream:
        yield upstream


def url_route(upstream: FakeUpstream, **extra: Any) -> dict[str, Any]:
    return {"url": upstream.url, "model": "fake-model", **extra}


def make_settings(deployments: dict[str, Any], **sections: Any) -> Settings:
    """Settings for a test: fast polling and trace flushing, given deployments and section overrides."""
    data: dict[str, Any] = {
        "gateway": {"deployments_poll_s": 0.2, "drain_timeout_s": 5},
        "tracing": {"flush_interval_s": 0.05},
        "deployments": deployments,
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return Settings.model_validate(data)


GatewayFactory = Callable[..., AbstractContextManager[RunningGateway]]


@pytest.fixture
def gateway() -> GatewayFactory:
    """Factory: `with gateway(settings) as gw:` serves a real gateway on a free loopback port."""

    @contextmanager
    def run(settings: Settings, **kwargs: Any) -> Iterator[RunningGateway]:
        with serve_in_thread(Gateway(settings, **kwargs)) as running:
            yield running

    return run


def client(gw: RunningGateway, key: str = ADMIN_KEY, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url, api_key=key, max_retries=0, **kwargs)


def admin(gw: RunningGateway) -> httpx.Client:
    return httpx.Client(base_url=gw.base_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)


def chat(c: openai.OpenAI, model: str = "m", text: str = "hi", **kwargs: Any) -> Any:
    return c.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], **kwargs)


def traces(gw: RunningGateway, **filters: Any) -> list[dict[str, Any]]:
    """Every trace stored so far (once requests in flight have submitted theirs), filtered by columns."""
    assert gw.gateway.flush_traces()
    from sqlalchemy import select

    from corral.store.models import TraceRow

    with gw.gateway.store.session() as session:
        rows = session.scalars(select(TraceRow).order_by(TraceRow.at)).all()
        out = [{c.name: getattr(r, c.key) for c in TraceRow.__table__.columns} for r in rows]
    return [t for t in out if all(t.get(k) == v for k, v in filters.items())]


@pytest.fixture
def h() -> Any:
    """The helpers above, for test modules (importlib mode cannot import conftest directly)."""
    import types

    return types.SimpleNamespace(
        ADMIN_KEY=ADMIN_KEY,
        url_route=url_route,
        settings=make_settings,
        client=client,
        admin=admin,
        chat=chat,
        traces=traces,
    )
