"""Upstream endpoints and the one pooled HTTP client (corral.gateway.h1client) every call goes through."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from corral.config import Price
from corral.errors import ConfigError, PermissionDeniedError
from corral.gateway.h1client import Pool, Response
from corral.gateway.routing import Breaker, least_loaded

# What counts as the upstream failing (worth a retry or a fallback) rather than the request being wrong.
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class UpstreamFailure(Exception):
    """A connect error, timeout or retryable status; `status` is the HTTP status when there was one."""

    def __init__(self, reason: str, status: int | None = None, body: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.body = body


@dataclass
class Endpoint:
    """One resolved route: where to send, what model name to send, what it costs, which version it is."""

    label: str  # shown in traces and metrics: a version ref (support@3) or the upstream URL + model
    base_urls: list[str]
    model: str
    api_key: str | None = None
    timeout_s: float = 60.0
    price: Price = field(default_factory=Price)
    version_ref: str | None = None  # the registry version this serves, for in-flight counts
    tokenizer_dir: str | None = None  # a local model's directory, to count tokens when usage is absent
    in_flight: list[int] = field(default_factory=list)
    breaker: Breaker = field(default_factory=Breaker)
    _turn: int = 0

    def __post_init__(self) -> None:
        self.base_urls = [u.rstrip("/") for u in self.base_urls]
        self.in_flight = [0] * len(self.base_urls)
        self.headers = {"Content-Type": "application/json"}  # also for evaluation's httpx clients
        if self.api_key:
            self.api_key = _header_value(self.api_key)
            self.headers["Authorization"] = f"Bearer {self.api_key}"
        # the gateway's own client does not decompress, and an upstream may compress unasked otherwise
        lines = {**self.headers, "Accept-Encoding": "identity"}
        self.header_lines = "".join(f"{k}: {v}\r\n" for k, v in lines.items()).encode("latin-1")

    def pick(self) -> int:
        """Least in-flight instance, round-robin on ties."""
        if len(self.base_urls) == 1:
            return 0
        self._turn += 1
        return least_loaded(self.in_flight, self._turn)


def _header_value(value: str) -> str:
    """`value` without surrounding whitespace (a file-backed secret's newline); ValueError on a line break."""
    value = value.strip()
    if any(c in value for c in "\r\n\0"):
        raise ValueError(
            "an upstream API key holds a line break; sent as a header it would split the request"
        )
    return value


def redact_url(url: str) -> str:
    """The URL with any user and password taken out (http://user:pass@host → http://***@host)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    if "@" not in authority:
        return url
    return f"{scheme}://***@{authority.rpartition('@')[2]}{slash}{path}"


@dataclass(frozen=True)
class KeyEnvPolicy:
    """Which environment variables a route's `api_key_env` may name: its value is sent upstream as a bearer.

    An admin chooses a route's URL, so a route naming any variable could send the gateway's own secrets
    (or cloud credentials) to a server of the admin's choosing. Allowed: names starting with `prefix`
    and names the operator wrote in corral.yaml; never the admin key's variable nor another CORRAL_* one.
    """

    prefix: str = "CORRAL_UPSTREAM_"
    declared: frozenset[str] = frozenset()
    admin_key_env: str = "CORRAL_ADMIN_KEY"

    @classmethod
    def from_settings(cls, settings: Any) -> KeyEnvPolicy:
        declared = {
            route.api_key_env
            for spec in settings.deployments.values()
            for route in (*spec.routes, *spec.shadow, *spec.fallbacks)
            if route.api_key_env
        }
        policy = cls(settings.auth.upstream_key_env_prefix, frozenset(), settings.auth.admin_key_env)
        for name in sorted(declared):
            if policy.secret(name):
                raise ConfigError(
                    f"{settings.source or 'corral.yaml'}: deployments: a route's api_key_env is {name}, "
                    "one of corral's own settings; upstream keys must not be corral's secrets",
                    hint=f"put the upstream key in a variable such as {policy.prefix or 'CORRAL_UPSTREAM_'}NAME",
                )
        return cls(policy.prefix, frozenset(declared), policy.admin_key_env)

    def secret(self, name: str) -> bool:
        own = name.startswith("CORRAL_") and not (self.prefix and name.startswith(self.prefix))
        return name == self.admin_key_env or own

    def check(self, name: str | None, *, registered: bool = False) -> None:
        """Raise PermissionDeniedError unless a route may name this variable.

        `registered`: named by a registry endpoint version (written by someone with store access, not
        through the admin API): any variable but corral's own.
        """
        if not name:
            return
        allowed = registered or (self.prefix and name.startswith(self.prefix)) or name in self.declared
        if self.secret(name) or not allowed:
            raise PermissionDeniedError(
                f"api_key_env '{name}' is not a variable routes may read",
                hint=f"use a variable starting with {self.prefix or '(auth.upstream_key_env_prefix)'} "
                "or name it in corral.yaml",
            )

    def read(self, name: str | None, *, registered: bool = False) -> str | None:
        self.check(name, registered=registered)
        value = os.environ.get(name) if name else None
        if value is None:
            return None
        try:
            return _header_value(value)
        except ValueError as exc:
            raise PermissionDeniedError(
                f"api_key_env '{name}': {exc}", hint="set the key alone in it"
            ) from None


class UpstreamPool:
    """The shared client: keep-alive connections to every upstream, opened lazily."""

    def __init__(self, max_connections: int = 1000) -> None:
        self.max_connections = max_connections
        self._pool: Pool | None = None

    @property
    def pool(self) -> Pool:
        if self._pool is None:
            self._pool = Pool(self.max_connections, keepalive_s=60.0)
        return self._pool

    async def open(self, endpoint: Endpoint, instance: int, path: str, body: bytes) -> Response:
        """POST and return the response with its head read; failures come back as UpstreamFailure."""
        url = endpoint.base_urls[instance] + path
        try:
            response = await self.pool.request(b"POST", url, endpoint.header_lines, body, endpoint.timeout_s)
        except (TimeoutError, OSError, ValueError) as exc:
            raise UpstreamFailure(f"{type(exc).__name__}: {exc}".strip(": ")) from None
        if response.status in RETRYABLE_STATUS:
            try:
                data = await response.read()
            except (TimeoutError, OSError):
                data = b""
            finally:  # also when cancelled mid-read: an unreleased answer holds its connection forever
                response.release()
            raise UpstreamFailure(f"upstream answered {response.status}", response.status, data)
        return response

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
