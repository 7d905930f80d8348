"""References: `name`, `name@3` or `name@alias`, the one way every stage names a version."""

from __future__ import annotations

import re
from dataclasses import dataclass

from corral.errors import InvalidInputError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ALIAS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Ref:
    """A parsed reference: exactly one of `version` or `alias`, or neither for the latest version."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}@{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name


def check_name(name: str, what: str = "name") -> str:
    if not NAME_RE.match(name or ""):
        raise InvalidInputError(
            f"invalid {what} '{name}'",
            hint="use letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


def check_alias(alias: str) -> str:
    if not ALIAS_RE.match(alias or "") or alias == "latest":
        raise InvalidInputError(
            f"invalid alias '{alias}'",
            hint="an alias starts with a letter (e.g. production); 'latest' is reserved",
        )
    return alias


def parse_ref(text: str) -> Ref:
    """Parse `name`, `name@3` or `name@alias`; `name@latest` is the same as bare `name`."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError("empty reference", hint="write name, name@3 or name@production")
    name, sep, rest = text.strip().partition("@")
    check_name(name)
    if not sep or rest == "latest":
        return Ref(name)
    if rest.isdigit():
        if int(rest) < 1:
            raise InvalidInputError(f"invalid reference '{text}': versions start at 1")
        return Ref(name, version=int(rest))
    if not ALIAS_RE.match(rest):
        raise InvalidInputError(f"invalid reference '{text}'", hint="write name, name@3 or name@production")
    return Ref(name, alias=rest)
