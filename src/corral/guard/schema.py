"""Output schema: is a JSON answer valid against the policy's JSON schema, and why not."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from corral.errors import ConfigError

_FENCE = ("```json", "```")


@lru_cache(maxsize=16)
def load_schema(path: str) -> Any:
    """The validator for the schema file at `path`; a missing or invalid schema is a ConfigError."""
    import jsonschema

    try:
        schema = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"guard output_schema: no file {path}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"guard output_schema: {path} is not JSON ({exc})") from None
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ConfigError(f"guard output_schema: {path} is not a valid JSON schema ({exc.message})") from None
    return cls(schema)


def schema_error(text: str, validator: Any) -> str | None:
    """None when `text` (optionally inside a ```json fence) is JSON that satisfies the schema, else why not."""
    body = text.strip()
    if body.startswith(_FENCE[0]) and body.endswith(_FENCE[1]):
        body = body[len(_FENCE[0]) : -len(_FENCE[1])].strip()
    try:
        value = json.loads(body)
    except ValueError as exc:
        return f"the answer is not JSON: {exc}"
    except RecursionError:
        return "the answer is nested too deeply to check"
    error = next(iter(validator.iter_errors(value)), None)
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"at {where}: {error.message}"


def retry_message(error: str) -> dict[str, str]:
    """The user message appended for the one retry: the validation error, and what to do."""
    return {
        "role": "user",
        "content": f"Your previous answer did not match the required JSON schema ({error}). "
        "Answer again with only JSON that matches it.",
    }
