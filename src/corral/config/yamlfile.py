"""Reading the YAML files corral loads (corral.yaml, training specs): one-line errors, duplicate keys refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError

from corral.errors import ConfigError

_MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKeyError(ConstructorError):
    """A mapping sets the same key twice; plain YAML keeps the last silently, which loses settings."""


class _UniqueKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _value in node.value:
            if key_node.tag == _MERGE_TAG:
                continue  # `<<: *base` may legitimately be overridden by the keys beside it
            key = self.construct_object(key_node, deep=True)
            try:
                seen = first_line.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if seen is not None:
                raise DuplicateKeyError(
                    problem=f"duplicate key '{key}' (first set on line {seen + 1})",
                    problem_mark=key_node.start_mark,
                )
            first_line[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def yaml_error(path: Path, exc: yaml.YAMLError) -> ConfigError:
    """One line for a YAML file that does not parse: the file, line and column, what the parser expected."""
    mark = getattr(exc, "problem_mark", None)
    where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if isinstance(exc, DuplicateKeyError):
        return ConfigError(f"{path}:{where}: {problem}", hint="remove or merge the repeated key")
    return ConfigError(f"{path}:{where}: malformed YAML: {problem}", hint="fix the syntax")


def parse_yaml(text: str, path: Path) -> Any:
    """The data in `text` (read from `path`, named in errors); a key set twice in one mapping is an error."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise yaml_error(path, exc) from None
