"""Which extra of corral provides a missing third-party package, so an error can say what to install."""

from __future__ import annotations

import functools
import importlib.metadata
import re

from corral.errors import CorralError

_REQUIREMENT = re.compile(r"^([A-Za-z0-9_.-]+).*;\s*extra\s*==\s*['\"]([^'\"]+)['\"]")
_NOT_FOR_USERS = {"dev", "all"}


@functools.cache
def _extras_by_package() -> dict[str, tuple[str, ...]]:
    """Import name (as best a distribution name gives it) → the extras that install it."""
    try:
        requirements = importlib.metadata.requires("corral") or []
    except importlib.metadata.PackageNotFoundError:
        return {}
    found: dict[str, list[str]] = {}
    for requirement in requirements:
        match = _REQUIREMENT.match(requirement)
        if match and match.group(2) not in _NOT_FOR_USERS:
            package = match.group(1).lower().replace("-", "_")
            found.setdefault(package, []).append(match.group(2))
    return {package: tuple(extras) for package, extras in found.items()}


def extras_for(module: str | None) -> tuple[str, ...]:
    """The extras that provide `module` (e.g. 'torch.nn' → ('engine', 'train')); () when none does."""
    if not module:
        return ()
    return _extras_by_package().get(module.split(".", 1)[0].lower(), ())


def missing_extra_error(exc: ModuleNotFoundError, command: str = "this command") -> CorralError | None:
    """A clear error for a missing optional dependency, or None when `exc` is not one (a bug: let it show)."""
    extras = extras_for(exc.name)
    if not extras:
        return None
    preferred = next((e for e in extras if e in command), extras[0])
    others = [e for e in extras if e != preferred]
    also = f" (or any of: {', '.join(others)})" if others else ""
    return CorralError(
        f"{command} needs the optional package '{exc.name}', which is not installed",
        hint=f"pip install 'corral[{preferred}]'{also}",
    )
