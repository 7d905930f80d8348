"""Prompt templates: versioned and aliased like models, rendered with bounded, sandboxed Jinja2."""

from __future__ import annotations

import builtins
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.registry import audit, owners
from corral.registry.refs import Ref, check_name
from corral.registry.templates import check_template, render_template
from corral.registry.types import PromptVersion
from corral.registry.versioned import Versioned
from corral.store.models import PromptRow, PromptVersionRow

KIND = "prompt"


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
