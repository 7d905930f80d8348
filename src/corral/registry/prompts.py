"""Prompt templates: versioned and aliased like models, rendered with sandboxed Jinja2."""

from __future__ import annotations

import builtins
from typing import Any

from jinja2 import StrictUndefined, TemplateError, meta
from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from corral.errors import InvalidInputError, NotFoundError
from corral.registry import aliases, audit, owners
from corral.registry.refs import check_name, parse_ref
from corral.registry.types import AliasEvent, PromptVersion
from corral.store import Store
from corral.store.models import PromptRow, PromptVersionRow

KIND = "prompt"
_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


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
            names |= meta.find_undeclared_variables(_ENV.parse(source))
        except TemplateError as exc:
            raise InvalidInputError(f"prompt template has a syntax error: {exc}") from None
    return sorted(names)


def render_template(template: dict[str, Any], variables: dict[str, Any], label: str = "prompt") -> Any:
    """Render text (a string) or messages (a list); missing variables are one error naming them all."""
    missing = sorted(set(check_template(template)) - set(variables))
    if missing:
        raise InvalidInputError(f"{label} needs variables it was not given: {', '.join(missing)}")
    try:
        if "text" in template:
            return _ENV.from_string(template["text"]).render(**variables)
        return [
            {**m, "content": _ENV.from_string(m["content"]).render(**variables)} for m in template["messages"]
        ]
    except TemplateError as exc:  # includes sandbox violations
        raise InvalidInputError(f"{label} failed to render: {exc}") from None


class PromptRegistry:
    def __init__(self, store: Store, actor: str) -> None:
        self.store = store
        self.actor = actor

    def _prompt_row(self, session: Session, name: str, *, lock: bool = False) -> PromptRow:
        return owners.find(session, PromptRow, name, "prompt", lock=lock)

    def _latest(self, session: Session, prompt: PromptRow) -> int | None:
        return session.scalar(
            select(func.max(PromptVersionRow.version)).where(PromptVersionRow.prompt_id == prompt.id)
        )

    def _version_row(self, session: Session, prompt: PromptRow, ref: str) -> PromptVersionRow:
        parsed = parse_ref(ref)
        number = parsed.version
        if parsed.alias is not None:
            number = aliases.current(session, KIND, prompt.id, parsed.alias)
            if number is None:
                raise NotFoundError(f"prompt '{prompt.name}' has no alias '{parsed.alias}'")
        latest = self._latest(session, prompt)
        number = number or latest
        row = session.scalar(
            select(PromptVersionRow).where(
                PromptVersionRow.prompt_id == prompt.id, PromptVersionRow.version == number
            )
        )
        if row is None:
            raise NotFoundError(f"prompt '{prompt.name}' has no version {number} (latest is {latest})")
        return row

    def _to_version(self, session: Session, prompt: PromptRow, row: PromptVersionRow) -> PromptVersion:
        pointing = sorted(
            a for a, v in aliases.aliases_of(session, KIND, prompt.id).items() if v == row.version
        )
        return PromptVersion(
            prompt.name,
            row.version,
            dict(row.template),
            list(row.variables),
            pointing,
            dict(row.tags or {}),
            row.created_by,
            row.created_at,
        )

    def register(
        self,
        name: str,
        template: dict[str, Any],
        *,
        tags: dict[str, Any] | None = None,
        description: str = "",
    ) -> PromptVersion:
        check_name(name, "prompt name")
        variables = check_template(template)
        with self.store.session() as session:
            prompt, _ = owners.find_or_create(
                session, PromptRow, name, description=description, created_by=self.actor
            )
            number = (self._latest(session, prompt) or 0) + 1
            row = PromptVersionRow(
                prompt_id=prompt.id,
                version=number,
                template=template,
                variables=variables,
                tags=tags or {},
                created_by=self.actor,
            )
            session.add(row)
            session.flush()
            audit.record(
                session,
                self.actor,
                "prompt.register",
                f"prompt:{name}@{number}",
                None,
                {"template": template},
            )
            return self._to_version(session, prompt, row)

    def get(self, ref: str) -> PromptVersion:
        parsed = parse_ref(ref)
        with self.store.session() as session:
            prompt = self._prompt_row(session, parsed.name)
            return self._to_version(session, prompt, self._version_row(session, prompt, ref))

    def list(self) -> builtins.list[PromptVersion]:
        """The latest version of every prompt."""
        with self.store.session() as session:
            out = []
            for prompt in session.scalars(select(PromptRow).order_by(PromptRow.name)).all():
                out.append(self._to_version(session, prompt, self._version_row(session, prompt, prompt.name)))
            return out

    def render(self, ref: str, variables: dict[str, Any]) -> Any:
        version = self.get(ref)
        return render_template(version.template, variables, label=f"prompt {version.ref}")

    def set_alias(self, name: str, alias: str, version: str | int, reason: str = "") -> PromptVersion:
        text = str(version)
        with self.store.session() as session:
            prompt = self._prompt_row(session, name, lock=True)
            row = self._version_row(session, prompt, text if "@" in text else f"{name}@{text}")
            aliases.move(
                session,
                kind=KIND,
                owner_id=prompt.id,
                subject=name,
                alias=alias,
                version=row.version,
                actor=self.actor,
                reason=reason,
            )
            return self._to_version(session, prompt, row)

    def alias_history(self, name: str, alias: str | None = None) -> builtins.list[AliasEvent]:
        with self.store.session() as session:
            return aliases.history(session, KIND, self._prompt_row(session, name).id, alias)

    def rollback(self, name: str, alias: str = "production", reason: str = "") -> PromptVersion:
        with self.store.session() as session:
            prompt = self._prompt_row(session, name, lock=True)
            target = aliases.rollback(
                session,
                kind=KIND,
                owner_id=prompt.id,
                subject=name,
                alias=alias,
                actor=self.actor,
                reason=reason,
            )
            return self._to_version(session, prompt, self._version_row(session, prompt, f"{name}@{target}"))
