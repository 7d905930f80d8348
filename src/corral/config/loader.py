"""Loading settings from corral.yaml and CORRAL_* variables, and printing them with secrets masked.

Precedence, lowest first: defaults, the YAML file, `CORRAL_SECTION__KEY` variables, and the short
names (`CORRAL_DATABASE_URL`, `CORRAL_REDIS_URL`, `CORRAL_ARTIFACTS_URL`). Every problem is a
ConfigError naming the source (file or variable), the dotted key and what to do about it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from corral.config.sections import ENV_PREFIX, NON_SETTING_VARS, SECRET_WORDS, SHORT_NAMES, Settings
from corral.config.yamlfile import parse_yaml
from corral.errors import ConfigError


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist", hint="create it or drop --config") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    data = parse_yaml(text, path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def _env_value(raw: str, path: tuple[str, ...]) -> Any:
    """Variables are strings: a JSON list or object is parsed so nested values can be set too, and a
    number or boolean key gets its type here, because the settings themselves are strict (in YAML,
    `port: true` or `require_keys: "no"` is an error, not 1 or false). Booleans are `true` or `false`."""
    stripped = raw.strip()
    if stripped[:1] in "[{":
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return raw
    annotation = _annotation_at(path)
    if annotation is None:
        return raw  # an unknown key: validation names it
    if _takes_bool(annotation):
        return {"true": True, "false": False}.get(stripped.lower(), raw)
    try:
        return TypeAdapter(annotation).validate_strings(stripped)
    except ValidationError:
        return raw  # validation reports it against the variable


def _takes_bool(annotation: Any) -> bool:
    return annotation is bool or bool in getattr(annotation, "__args__", ())


def _annotation_at(path: tuple[str, ...]) -> Any:
    """The type of the setting at `path`; a key that is not a field (a deployment name) stays on its model."""
    annotation: Any = Settings
    for part in path:
        model = _model_of(annotation)
        if model is None:
            return None
        if part in model.model_fields:
            annotation = model.model_fields[part].annotation
        elif annotation is model:
            return None
        else:
            annotation = model
    return annotation


def _env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """Nested overrides from CORRAL_A__B variables, and which variable set each key path."""
    tree: dict[str, Any] = {}
    origin: dict[tuple[str, ...], str] = {}

    def put(path: tuple[str, ...], value: Any, var: str) -> None:
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{var}: conflicts with another variable setting '{'.'.join(path[:-1])}'")
        node[path[-1]] = value
        origin[path] = var

    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or var in NON_SETTING_VARS or var in SHORT_NAMES:
            continue
        if "__" not in var:
            continue  # process-level variables such as CORRAL_TEST_*; only SECTION__KEY forms are settings
        path = tuple(part.lower() for part in var[len(ENV_PREFIX) :].split("__"))
        put(path, _env_value(environ[var], path), var)
    for var, path in SHORT_NAMES.items():
        if environ.get(var):
            put(path, environ[var], var)
    return tree, origin


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _describe(error: Any, source: str, origin: dict[tuple[str, ...], str]) -> str:
    loc = tuple(str(part) for part in error["loc"])
    key = ".".join(loc) or "(top level)"
    where = next((origin[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in origin), source)
    kind = error["type"]
    if kind == "extra_forbidden":
        parent = loc[:-1]
        known = _known_keys(parent)
        fix = f"remove it or use one of: {', '.join(known)}" if known else "remove it"
        return f"{where}: unknown key '{key}' ({fix})"
    message = error["msg"].removeprefix("Value error, ")
    got = error.get("input")
    if isinstance(got, dict):  # a whole section: the message names what is wrong in it
        return f"{where}: key '{key}': {message}"
    return f"{where}: key '{key}': {message} (got {got!r})"


def _model_of(annotation: Any) -> Any:
    """The pydantic model inside an annotation such as `Route`, `list[Route]` or `dict[str, Deployment]`."""
    if hasattr(annotation, "model_fields"):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _known_keys(path: tuple[str, ...]) -> list[str]:
    """The keys allowed at `path`, so an unknown-key error can suggest the right one."""
    model: Any = Settings
    for part in path:
        fields = model.model_fields
        # a key that is not a field (a deployment name, a list index) stays on the same model
        if part in fields:
            model = _model_of(fields[part].annotation)
        if model is None:
            return []
    return sorted(k for k in model.model_fields if k != "source")


def load_settings(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Load and validate the settings. `path` beats CORRAL_CONFIG; ./corral.yaml is used when present."""
    env = os.environ if environ is None else environ
    chosen = path or env.get("CORRAL_CONFIG")
    file_path: Path | None = Path(chosen) if chosen else None
    if file_path is None and Path("corral.yaml").is_file():
        file_path = Path("corral.yaml")
    data = _read_yaml(file_path) if file_path else {}
    source = str(file_path) if file_path else "defaults"
    overrides, origin = _env_overrides(env)
    merged = _merge(data, overrides)
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        problems = [_describe(err, source, origin) for err in exc.errors()]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None
    except ConfigError:
        raise
    settings.source = str(file_path) if file_path else None
    return settings


def _is_secret(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in SECRET_WORDS) and not lowered.endswith("_env")


def _mask_url(value: str) -> str:
    if "://" in value and "@" in value:
        scheme, rest = value.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        if ":" in creds:
            user = creds.split(":", 1)[0]
            return f"{scheme}://{user}:***@{host}"
    return value


def _not_available_yet(model: Any) -> dict[str, Any]:
    """The keys refused for now (Section.NOT_AVAILABLE_YET), as a model_dump `exclude`, so nobody copies them."""
    exclude: dict[str, Any] = dict.fromkeys(model.NOT_AVAILABLE_YET, True)
    for name, field in model.model_fields.items():
        inner = _model_of(field.annotation)
        nested = _not_available_yet(inner) if field.annotation is inner and name not in exclude else {}
        if nested:
            exclude[name] = nested
    return exclude


def masked(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, with passwords and secrets masked."""

    def walk(node: Any, key: str = "") -> Any:
        if isinstance(node, dict):
            return {k: walk(v, k) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, key) for v in node]
        if isinstance(node, str):
            if _is_secret(key) and node:
                return "***"
            return _mask_url(node)
        return node

    data = settings.model_dump(mode="json", exclude=_not_available_yet(Settings))
    data["store"]["database_url"] = settings.store.resolved_url()
    data["artifacts"]["url"] = settings.artifacts.resolved_url()
    return walk(data)
