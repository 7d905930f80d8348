"""Prompt templates: versioned and aliased like models, rendered with sandboxed Jinja2."""

from __future__ import annotations

import builtins
from typing import Any

from jinja2 import StrictUndefined, TemplateError, meta
from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.errors import InvalidInputError
from corral.registry import audit, owners
from corral.registry.refs import Ref, check_name
from corral.registry.types import PromptVersion
from corral.registry.versioned import Versioned
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


class PromptRegistry(Versioned[PromptVersion]):
    """Prompt templates with numbered versions and aliases, checked like models' (no retirement)."""

    kind = KIND
    owner_table = PromptRow
    version_table = PromptVersionRow
    owner_fk = "prompt_id"

    def _to_version(self, session: Session, prompt: PromptRow, row: PromptVersionRow) -> PromptVersion:
        pointing = self._pointing(session, prompt, row.version)
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
            number = self._next_number(session, prompt)
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
        return self._lookup(ref)

    def list(self) -> builtins.list[PromptVersion]:
        """The latest version of every prompt."""
        with self.store.session() as session:
            out = []
            for prompt in session.scalars(select(PromptRow).order_by(PromptRow.name)).all():
                out.append(
                    self._to_version(session, prompt, self._version_row(session, prompt, Ref(prompt.name)))
                )
            return out

    def render(self, ref: str, variables: dict[str, Any]) -> Any:
        version = self.get(ref)
        return render_template(version.template, variables, label=f"prompt {version.ref}")
