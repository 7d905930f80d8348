"""Evaluation fixtures: the registry of the isolated CORRAL_HOME (the one the CLI opens too), a small
chat dataset, and fake upstreams whose answers depend on the question."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from corral.testing import FakeUpstream

ROWS = [
    {
        "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}],
        "split": "test",
    }
    for i in range(20)
]


def question(body: dict[str, Any]) -> str:
    return str(body["messages"][-1]["content"])


def half_right(body: dict[str, Any]) -> str:
    """Right on even questions, wrong on odd ones."""
    n = int(question(body)[1:])
    return f"a{n}" if n % 2 == 0 else "wrong"


@pytest.fixture
def reg() -> Any:
    from corral import open_registry

    return open_registry(actor="tester")


@pytest.fixture
def qa(reg: Any) -> str:
    return reg.datasets.register("qa", ROWS, kind="chat").ref


@pytest.fixture
def answering() -> Iterator[Callable[..., Any]]:
    """Start fake upstreams with a reply function: `answering(reply, **settings)` → the running fake."""
    stack: list[Any] = []

    def start(reply: Callable[[dict[str, Any]], str | None], **settings: Any) -> FakeUpstream:
        fake = FakeUpstream(reply=reply, **settings)
        context = fake.running()
        context.__enter__()
        stack.append(context)
        return fake

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)
