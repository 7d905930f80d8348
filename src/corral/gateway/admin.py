"""The admin API (/admin/*, admin keys only): keys, deployments, costs, recent traces, status."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from sqlalchemy import select
from sqlalchemy.exc import DataError, StatementError

from corral.errors import InvalidInputError, MethodNotAllowedError, NotFoundError, PermissionDeniedError
from corral.gateway import costs
from corral.gateway.deployments import unservable_targets, validate_spec
from corral.gateway.http import Receive, Send, header, parse_json_object, read_body, send_json
from corral.gateway.upstream import redact_url
from corral.store.models import TraceRow

if TYPE_CHECKING:
    from corral.gateway.auth import KeyRing
    from corral.gateway.deployments import WorkerDirectory
    from corral.gateway.limits import Limiter
    from corral.gateway.routes import RouteTable
    from corral.gateway.tracing import TraceWriter
    from corral.store import Store


def _query(scope: dict[str, Any]) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}


def _optional_number(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (kind is int and not isinstance(value, int))
    ):
        raise InvalidInputError(f"`{name}` must be a {'whole ' if kind is int else ''}number")
    return value


class AdminApi:
    """The /admin/* handlers; `refresh` brings the routes up to date after a deployment change."""

    def __init__(
        self,
        keys: KeyRing,
        routes: RouteTable,
        store: Store,
        limiter: Limiter,
        tracer: TraceWriter | None,
        workers: WorkerDirectory | None,
        *,
        redis_configured: bool,
        refresh: Callable[[], None],
        registry: Any = None,
    ) -> None:
        self.keys, self.routes, self.store, self.limiter = keys, routes, store, limiter
        self.tracer, self.workers = tracer, workers
        self.redis_configured = redis_configured
        self.refresh = refresh
        self.registry = registry

    async def handle(
        self, method: str, path: str, scope: dict[str, Any], receive: Receive, send: Send, trace_id: str
    ) -> None:
        key = await self.keys.authenticate(header(scope, b"authorization"))
        if not key.is_admin and not (key.is_viewer and method == "GET"):
            hint = "a viewer key may only read (GET)" if key.is_viewer else "corral keys create --admin"
            raise PermissionDeniedError("the admin API needs an admin key", hint=hint)
        parts = path.strip("/").split("/")[1:]
        resource, name = (parts[0] if parts else ""), ("/".join(parts[1:]) or None)
        handler = getattr(self, f"_{resource}", None)
        if handler is None:
            raise NotFoundError(
                f"no admin resource '{resource}'",
                hint="use keys, deployments, costs, traces, users or status",
            )
        allowed = ALLOWED.get((resource, bool(name)), "")
        if method not in allowed.split(", "):  # before reading a body the method cannot take
            raise _bad_method(method, resource, name)
        body: dict[str, Any] = {}
        if method in ("POST", "PUT"):
            body = parse_json_object(await read_body(receive, 4 * 1024 * 1024))
        try:
            status, data = await handler(method, name, body, _query(scope), key.name)
        except (DataError, StatementError) as exc:  # e.g. a NUL character PostgreSQL will not store
            raise InvalidInputError(
                f"the store refused this value: {str(getattr(exc, 'orig', exc)).splitlines()[0]}"
            ) from None
        await send_json(send, status, data, trace_id)

    async def _keys(
        self, method: str, name: str | None, body: dict[str, Any], query: dict[str, str], actor: str
    ) -> tuple[int, Any]:
        store = self.keys.keys
        if method == "GET" and name is None:
            return 200, {"data": await asyncio.to_thread(store.list, query.get("revoked") == "true")}
        if method == "POST" and name is None:
            models = body.get("models", ["*"])
            if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
                raise InvalidInputError("`models` must be a list of deployment names")
            key_name = body.get("name")
            if not isinstance(key_name, str):
                raise InvalidInputError("`name` is required")
            raw, info = await asyncio.to_thread(
                store.create,
                key_name,
                models,
                rpm=_optional_number(body, "rpm", int),
                tpm=_optional_number(body, "tpm", int),
                budget_usd=_optional_number(body, "budget_usd", float),
                admin=bool(body.get("admin", False)),
                viewer=bool(body.get("viewer", False)),
                actor=actor,
            )
            return 201, {**info, "key": raw}
        if method == "DELETE" and name:
            return 200, await asyncio.to_thread(store.revoke, name)
        raise _bad_method(method, "keys", name)

    async def _deployments(
        self, method: str, name: str | None, body: dict[str, Any], query: dict[str, str], actor: str
    ) -> tuple[int, Any]:
        ds = self.routes.deployments
        if method == "GET":
            specs = await asyncio.to_thread(ds.specs)
            data = {
                n: {**_redacted(s.model_dump(mode="json")), "live": self._live(n)}
                for n, s in specs.items()
                if name in (None, n)
            }
            if name and not data:
                raise NotFoundError(f"no deployment '{name}'")
            return 200, data
        if method == "PUT" and name:
            checked, resolve = validate_spec(name, body, ds.policies), self.routes.resolver.resolve_version
            problems = await asyncio.to_thread(unservable_targets, checked, resolve) if resolve else []
            if problems:
                raise InvalidInputError(
                    f"deployment '{name}': " + "; ".join(f"key '{key}': {why}" for key, why in problems),
                    hint="register the model or point the alias at a live version first",
                )
            spec = await asyncio.to_thread(ds.put, name, body, actor)
            await asyncio.to_thread(self.refresh)
            return 200, _redacted(spec.model_dump(mode="json"))
        if method == "DELETE" and name:
            await asyncio.to_thread(ds.delete, name, actor)
            await asyncio.to_thread(self.refresh)
            return 200, {"deleted": name}
        raise _bad_method(method, "deployments", name)

    def _live(self, name: str) -> dict[str, Any]:
        live = self.routes.live.get(name)
        if live is None:
            return {}
        now = time.monotonic()

        def show(endpoints: list[Any]) -> list[Any]:
            return [
                None
                if e is None
                else {
                    "label": e.label,
                    "urls": [redact_url(u) for u in e.base_urls],
                    "in_flight": sum(e.in_flight),
                    "breaker_open": e.breaker.is_open(now),
                }
                for e in endpoints
            ]

        return {
            "routes": show(live.routes),
            "shadow": show(live.shadow),
            "fallbacks": show(live.fallbacks),
            "problems": live.problems,
        }

    async def _costs(
        self, method: str, name: str | None, body: dict[str, Any], query: dict[str, str], actor: str
    ) -> tuple[int, Any]:
        if method != "GET":
            raise _bad_method(method, "costs", name)
        group_by = costs.group_names(query.get("group_by") or query.get("by") or costs.DEFAULT_GROUPS)
        rows = await asyncio.to_thread(
            costs.totals, self.store, group_by, query.get("since"), query.get("until")
        )
        return 200, {"group_by": group_by, "data": rows}

    async def _traces(
        self, method: str, name: str | None, body: dict[str, Any], query: dict[str, str], actor: str
    ) -> tuple[int, Any]:
        if method != "GET":
            raise _bad_method(method, "traces", name)
        try:
            limit = max(1, min(1000, int(query.get("limit", "50"))))
        except ValueError:
            raise InvalidInputError("`limit` must be a whole number") from None

        def load() -> list[dict[str, Any]]:
            statement = select(TraceRow).order_by(TraceRow.at.desc()).limit(limit)
            if name:
                statement = select(TraceRow).where(TraceRow.id == name)
            if query.get("deployment"):
                statement = statement.where(TraceRow.deployment == query["deployment"])
            with self.store.session() as session:
                rows = session.scalars(statement).all()
                return [{c.name: getattr(r, c.key) for c in TraceRow.__table__.columns} for r in rows]

        rows = await asyncio.to_thread(load)
        for row in rows:
            row["at"] = row["at"].isoformat()
        if name and not rows:
            raise NotFoundError(f"no trace '{name}' (yet)")
        return 200, {"data": rows}

    async def _users(
        self, method: str, name: str | None, body: dict[str, Any], query: dict[str, str], actor: str
    ) -> tuple[int, Any]:
        """DELETE /admin/users/ID[?dry_run=true]: the same erasure as `corral privacy delete`."""
        if method != "DELETE" or not name:
            raise _bad_method(method, "users", name)
        if self.registry is None:
            raise InvalidInputError("this gateway has no registry, so it cannot delete a user's data")
        from corral.privacy import erase_user

        tracer = self.tracer

        def erase() -> dict[str, Any]:
            if tracer is not None:
                tracer.flush()  # traces still in memory are stored first, then deleted with the rest
            report = erase_user(
                self.registry.as_actor(actor),
                name,
                dry_run=query.get("dry_run") == "true",
                spool_dir=tracer.spool.directory if tracer is not None else None,
            )
            return report.as_dict()

        return 200, await asyncio.to_thread(erase)

    async def _status(
        self, method: str, name: str | None, body: dict[str, Any], query: dict[str, str], actor: str
    ) -> tuple[int, Any]:
        if method != "GET" or name:
            raise _bad_method(method, "status", name)
        tracer, workers = self.tracer, self.workers
        return 200, {
            "deployments": {n: self._live(n) for n in self.routes.live},
            "redis": "shared"
            if self.limiter.shared
            else ("local (Redis unreachable)" if self.redis_configured else "local"),
            "store_up": tracer.store_up if tracer else None,
            "spool_bytes": tracer.spool.bytes if tracer else 0,
            "workers": workers.status() if workers is not None and hasattr(workers, "status") else [],
        }


def _redacted(spec: dict[str, Any]) -> dict[str, Any]:
    """A deployment as shown: credentials in route URLs are taken out (put keys in api_key_env)."""
    for group in ("routes", "shadow", "fallbacks"):
        for route in spec.get(group) or []:
            if route.get("url"):
                route["url"] = redact_url(route["url"])
            route["instances"] = [redact_url(u) for u in route.get("instances") or []]
    return spec


ALLOWED = {  # (resource, names one item) -> the methods it takes
    ("keys", False): "GET, POST",
    ("keys", True): "DELETE",
    ("deployments", False): "GET",
    ("deployments", True): "GET, PUT, DELETE",
    ("costs", False): "GET",
    ("traces", False): "GET",
    ("traces", True): "GET",
    ("status", False): "GET",
    ("users", True): "DELETE",
}


def _bad_method(method: str, resource: str, name: str | None) -> Exception:
    target = f"/admin/{resource}" + (f"/{name}" if name else "")
    allow = ALLOWED.get((resource, bool(name)), "")
    if not allow:
        return NotFoundError(f"no route {target}", hint="see /openapi.json")
    return MethodNotAllowedError(f"{method} is not supported on {target}", allow=allow)
