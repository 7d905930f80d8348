"""Prompt template rendering: sandboxed Jinja2, bounded in time and in the size of what it makes."""

from __future__ import annotations

import re
import time
from contextvars import ContextVar
from typing import Any

from jinja2 import StrictUndefined, TemplateError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

from corral.errors import InvalidInputError

MAX_RENDER_CHARS = 1 << 20  # past any model's context window: a bigger prompt is a mistake or an attack
MAX_RENDER_S = 1.0
MAX_ITEMS = 100_000  # range() items one render may make, all calls together
MAX_POWER = 1024
RESERVED = frozenset({"self"})  # Jinja's own: `self` is the template's blocks, never a variable
_WIDE = re.compile(r"\d{7,}")  # a format width or precision of a million or more


class _Budget:
    def __init__(self) -> None:
        self.deadline = time.monotonic() + MAX_RENDER_S
        self.items = 0

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise InvalidInputError(f"took longer than {MAX_RENDER_S:g} s to render")


_BUDGET: ContextVar[_Budget | None] = ContextVar("corral_render_budget", default=None)


def _budget() -> _Budget:
    budget = _BUDGET.get()
    if budget is None:  # rendering outside render_template (e.g. a test of the environment itself)
        budget = _Budget()
        _BUDGET.set(budget)
    budget.tick()
    return budget


def _sized(value: Any) -> Any:
    """`value`, unless it is a string or sequence longer than a render may make."""
    if isinstance(value, str | bytes | list | tuple | dict) and len(value) > MAX_RENDER_CHARS:
        raise InvalidInputError(f"made a value of {len(value):,} items (the limit is {MAX_RENDER_CHARS:,})")
    return value


def _length(value: Any) -> int:
    return len(value) if isinstance(value, str | bytes | list | tuple) else 0


def _bounded_range(*args: int) -> range:
    budget = _budget()
    items = range(*args)
    budget.items += len(items)
    if budget.items > MAX_ITEMS:
        raise InvalidInputError(f"loops over more than {MAX_ITEMS:,} range() items")
    return items


class BoundedSandbox(SandboxedEnvironment):
    """Jinja's sandbox, plus a deadline and size checks on every call, attribute and arithmetic step."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _budget()
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if _length(seq) and isinstance(times, int) and _length(seq) * times > MAX_RENDER_CHARS:
                    raise InvalidInputError(f"'*' would make {_length(seq) * times:,} items")
        elif operator == "**" and isinstance(right, int) and abs(right) > MAX_POWER:
            raise InvalidInputError(f"exponent {right} is over {MAX_POWER}")
        elif operator == "%" and isinstance(left, str) and _WIDE.search(left):
            raise InvalidInputError("a format width of a million or more")
        elif operator == "+" and _length(left) + _length(right) > MAX_RENDER_CHARS:
            raise InvalidInputError(f"'+' would make {_length(left) + _length(right):,} items")
        return _sized(super().call_binop(context, operator, left, right))

    def getattr(self, obj: Any, attribute: str) -> Any:
        _budget()
        return _sized(super().getattr(obj, attribute))

    def getitem(self, obj: Any, argument: Any) -> Any:
        _budget()
        return _sized(super().getitem(obj, argument))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's own signature
        _budget()
        for value in (*args, *kwargs.values()):
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_RENDER_CHARS:
                raise InvalidInputError(f"a call with the number {value:,} (over {MAX_RENDER_CHARS:,})")
            if isinstance(value, str) and _WIDE.search(value) and "{" in value:
                raise InvalidInputError("a format width of a million or more")
            _sized(value)
        return _sized(super().call(__context, __obj, *args, **kwargs))


def _bounded_filter(name: str, env: SandboxedEnvironment) -> Any:
    original = env.filters[name]

    def checked(value: Any, *args: Any, **kwargs: Any) -> Any:
        _budget()
        for number in (*args, *kwargs.values()):
            if isinstance(number, int) and abs(number) > MAX_RENDER_CHARS:
                raise InvalidInputError(f"filter {name} with the number {number:,}")
            if isinstance(number, str) and _WIDE.search(number):
                raise InvalidInputError("a format width of a million or more")
        if name == "format" and isinstance(value, str) and _WIDE.search(value):
            raise InvalidInputError("a format width of a million or more")
        return _sized(original(value, *args, **kwargs))

    return checked


ENV = BoundedSandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
ENV.globals["range"] = _bounded_range
for _name in ("center", "indent", "wordwrap", "format", "truncate", "join", "replace"):
    ENV.filters[_name] = _bounded_filter(_name, ENV)


def _sources(template: dict[str, Any]) -> list[str]:
    if "text" in template:
        return [template["text"]]
    return [m["content"] for m in template["messages"]]


def check_template(template: dict[str, Any]) -> list[str]:
    """Validate a template's shape and syntax; return the variables it uses, sorted."""
    if not isinstance(template, dict) or ("text" in template) == ("messages" in template):
        raise InvalidInputError("a prompt template is either {'text': ...} or {'messages': [...]}")
    if "text" in template and not isinstance(template["text"], str):
        raise InvalidInputError("prompt 'text' must be a string")
    if "messages" in template:
        messages = template["messages"]
        if not isinstance(messages, list) or not messages:
            raise InvalidInputError("prompt 'messages' must be a non-empty list")
        for i, m in enumerate(messages):
            if (
                not isinstance(m, dict)
                or not isinstance(m.get("role"), str)
                or not isinstance(m.get("content"), str)
            ):
                raise InvalidInputError(f"prompt messages[{i}] needs string 'role' and 'content'")
    names: set[str] = set()
    for source in _sources(template):
        try:
            tree = ENV.parse(source)
        except TemplateError as exc:
            raise InvalidInputError(f"prompt template has a syntax error: {exc}") from None
        if any(node.name in RESERVED for node in tree.find_all(nodes.Name)):
            raise InvalidInputError(
                f"prompt template uses {', '.join(sorted(RESERVED))} as a variable; Jinja reserves those names",
                hint="rename the variable, e.g. {{ me }}",
            )
        names |= meta.find_undeclared_variables(tree)
    return sorted(names)


def _render_one(source: str, variables: dict[str, Any], made: int) -> str:
    """One source rendered chunk by chunk, stopping as soon as the whole render passes the size limit."""
    parts: list[str] = []
    for chunk in ENV.from_string(source).generate(variables):  # a dict, so a variable may be named `self`
        made += len(chunk)
        if made > MAX_RENDER_CHARS:
            raise InvalidInputError(f"made more than {MAX_RENDER_CHARS:,} characters")
        _budget()
        parts.append(chunk)
    return "".join(parts)


def render_template(template: dict[str, Any], variables: dict[str, Any], label: str = "prompt") -> Any:
    """Render text (a string) or messages (a list); missing variables are one error naming them all.

    Whatever a template does wrong (a sandbox violation, a runaway loop, a huge output, a type
    error) is an InvalidInputError naming the prompt, never an internal error.
    """
    missing = sorted(set(check_template(template)) - set(variables))
    if missing:
        raise InvalidInputError(f"{label} needs variables it was not given: {', '.join(missing)}")
    token = _BUDGET.set(_Budget())
    try:
        if "text" in template:
            return _render_one(template["text"], variables, 0)
        out, made = [], 0
        for m in template["messages"]:
            content = _render_one(m["content"], variables, made)
            made += len(content)
            out.append({**m, "content": content})
        return out
    except InvalidInputError as exc:  # a limit: the gateway answers 400
        raise InvalidInputError(f"{label} {exc.message}") from None
    except (
        TemplateError,
        ArithmeticError,
        TypeError,
        ValueError,
        LookupError,
        RecursionError,
        MemoryError,
    ) as exc:
        raise InvalidInputError(f"{label} failed to render: {type(exc).__name__}: {exc}") from None
    finally:
        _BUDGET.reset(token)
