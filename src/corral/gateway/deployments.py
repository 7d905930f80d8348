"""Deployments: stored specs (the file seeds them, the admin API changes them) and their live routes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from corral.config import Deployment, Route
from corral.errors import ConfigError, CorralError, InvalidInputError, NotFoundError, PermissionDeniedError
from corral.gateway.routing import Breaker
from corral.gateway.upstream import Endpoint, KeyEnvPolicy, redact_url
from corral.store import Store
from corral.store.models import AliasEventRow, AuditRow, DeploymentRow, utcnow

log = logging.getLogger("corral.gateway.deployments")


def cached_model_dir(registry: Any, version: Any) -> str | None:
    """The directory a worker materialized this version (or its base) into, if it has a tokenizer.

    Only the local cache is looked at: nothing is downloaded or copied on the request path.
    """
    for _ in range(4):  # a version, its base, ... (adapters sit over one base)
        if version is None:
            return None
        directory = registry.models.artifacts.materialized(version.artifact) if version.artifact else None
        if directory is not None and (directory / "tokenizer.json").is_file():
            return str(directory)
        try:
            version = registry.models.resolve(version.base_ref) if version.base_ref else None
        except CorralError:
            return None
    return None


def _price_key(route: Route) -> tuple[float, float]:
    return (route.price.prompt_per_1k, route.price.completion_per_1k)


class WorkerDirectory(Protocol):
    """Where local workers for a registry version listen; `None` while they are starting."""

    def ensure(self, version: Any, replicas: int, embeddings: bool = False) -> list[str] | None: ...

    def retain(self, refs: set[str]) -> None: ...


def validate_spec(name: str, spec: Any, policies: Collection[str] | None = None) -> Deployment:
    """The spec as a `Deployment`; with `policies` (the guard policy names), its `guard:` must name one."""
    try:
        checked = Deployment.model_validate(spec)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise InvalidInputError(f"deployment '{name}' is invalid: {problems}") from None
    if policies is not None and unknown_policy(checked, policies):
        known = ", ".join(sorted(policies)) or "none defined"
        raise InvalidInputError(
            f"deployment '{name}' is invalid: guard: no policy '{checked.guard}' under guard.policies "
            f"(known: {known})",
            hint="name a policy from corral.yaml's guard.policies, or `off` for none",
        )
    return checked


def unknown_policy(spec: Deployment, policies: Collection[str]) -> bool:
    """True when the spec names a guard policy that is not defined (serving it would leave it unguarded)."""
    return spec.guard not in (None, "off") and spec.guard not in policies


def unservable_stage(target: str, version: Any) -> str:
    """ "is retired", or "is support@3, which is draining" when the target is an alias."""
    if target == version.ref:
        return f"is {version.stage}"
    return f"is {version.ref}, which is {version.stage}"


def unservable_targets(spec: Deployment, resolve_version: Callable[[str], Any]) -> list[tuple[str, str]]:
    """(key, reason) for each `target:` that names no version, or a draining or retired one."""
    found = []
    for kind in ("routes", "shadow", "fallbacks"):
        for i, route in enumerate(getattr(spec, kind)):
            if not route.target:
                continue
            key = f"{kind}[{i}].target"
            try:
                version = resolve_version(route.target)
            except CorralError as exc:
                found.append((key, f"'{route.target}' does not resolve: {exc}"))
                continue
            if version.stage in ("draining", "retired"):
                found.append((key, f"'{route.target}' {unservable_stage(route.target, version)}"))
    return found


def check_targets(specs: dict[str, Deployment], resolve_version: Callable[[str], Any], source: str) -> None:
    """Refuse deployments whose targets cannot serve, naming `source` (a file) and each key."""
    problems = [
        f"{source}: key 'deployments.{name}.{key}': {reason}"
        for name, spec in specs.items()
        for key, reason in unservable_targets(spec, resolve_version)
    ]
    if problems:
        raise ConfigError(
            "a deployment routes to a version that cannot serve:\n  " + "\n  ".join(problems),
            hint="register the model, point the alias at a live version (corral models alias), or fix the target",
        )


def check_policies(specs: dict[str, Deployment], policies: Collection[str] | None, where: str) -> None:
    """Refuse deployments naming a guard policy this gateway does not have (a reload adds none)."""
    if policies is None:
        return
    unknown = [f"{name}: '{spec.guard}'" for name, spec in specs.items() if unknown_policy(spec, policies)]
    if unknown:
        raise ConfigError(
            f"{where}: deployments name guard policies this gateway was not started with: "
            + ", ".join(unknown),
            hint="guard.policies is read at start: restart corral serve to add a policy",
        )


class DeploymentStore:
    """Deployment specs in the SQL store. File entries are seeded; admin changes win over the file."""

    def __init__(
        self, store: Store, key_policy: KeyEnvPolicy | None = None, policies: Collection[str] | None = None
    ) -> None:
        self.store = store
        self.key_policy = key_policy or KeyEnvPolicy()
        self.policies = policies  # the guard policy names a spec may pick (None: not checked)

    def seed(self, from_file: dict[str, Deployment], actor: str = "corral.yaml") -> None:
        wanted = {name: spec.model_dump(mode="json") for name, spec in from_file.items()}
        try:
            with self.store.session() as session:
                rows = {row.name: row for row in session.scalars(select(DeploymentRow)).all()}
                for name, spec in wanted.items():
                    row = rows.get(name)
                    if row is None:
                        session.add(DeploymentRow(name=name, spec=spec, source="file", updated_by=actor))
                    elif row.source == "file" and row.spec != spec:
                        row.spec, row.updated_at, row.updated_by = spec, utcnow(), actor
                    elif row.source == "admin" and row.spec != spec:
                        log.info(
                            "deployment %s was changed through the admin API; the stored one is used", name
                        )
                for name, row in rows.items():
                    if row.source == "file" and name not in wanted:
                        session.delete(row)
        except IntegrityError:
            pass  # another replica seeded the same names at the same moment

    def specs(self) -> dict[str, Deployment]:
        with self.store.session() as session:
            rows = session.scalars(select(DeploymentRow).where(DeploymentRow.spec.is_not(None))).all()
            out = {}
            for row in rows:
                if row.spec is None:  # deleted through the admin API (a JSON null, which SQL sees as a value)
                    continue
                try:
                    spec = Deployment.model_validate(row.spec)
                except ValidationError as exc:
                    log.error("stored deployment %s is invalid and is skipped: %s", row.name, exc)
                    continue
                if self.policies is not None and unknown_policy(spec, self.policies):
                    # served, it would be unguarded: not served until the policy exists again
                    log.error(
                        "stored deployment %s names guard policy '%s', which guard.policies lacks; skipped",
                        row.name,
                        spec.guard,
                    )
                    continue
                out[row.name] = spec
            return out

    def put(self, name: str, spec: Any, actor: str) -> Deployment:
        checked = validate_spec(name, spec, self.policies)
        for route in (*checked.routes, *checked.shadow, *checked.fallbacks):
            self.key_policy.check(route.api_key_env)
        data = checked.model_dump(mode="json")
        with self.store.session() as session:
            row = session.scalar(select(DeploymentRow).where(DeploymentRow.name == name))
            if row is None:
                session.add(DeploymentRow(name=name, spec=data, source="admin", updated_by=actor))
            else:
                row.spec, row.source, row.updated_by, row.updated_at = data, "admin", actor, utcnow()
        return checked

    def delete(self, name: str, actor: str) -> None:
        with self.store.session() as session:
            row = session.scalar(select(DeploymentRow).where(DeploymentRow.name == name))
            if row is None or row.spec is None:
                raise NotFoundError(f"no deployment '{name}'")
            row.spec, row.source, row.updated_by, row.updated_at = None, "admin", actor, utcnow()

    def signature(self) -> tuple[Any, ...]:
        """Changes when a deployment, an alias or a version's lifecycle changes."""
        with self.store.session() as session:
            deployments = session.execute(select(func.count(), func.max(DeploymentRow.updated_at))).one()
            alias = session.scalar(select(func.max(AliasEventRow.id)))
            audit = session.scalar(select(func.max(AuditRow.id)))
            return (*deployments, alias, audit)


@dataclass
class LiveDeployment:
    """A deployment with its routes resolved to endpoints; `None` marks a route that cannot serve now."""

    name: str
    spec: Deployment
    routes: list[Endpoint | None]
    shadow: list[Endpoint | None]
    fallbacks: list[Endpoint | None]
    weights: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # why routes are None, for the 503 and /ready

    @property
    def servable(self) -> bool:
        return any(r is not None for r in self.routes) or any(f is not None for f in self.fallbacks)


class RouteResolver:
    """Turns a route into an endpoint, reusing endpoint objects so breakers and in-flight counts persist."""

    def __init__(
        self,
        resolve_version: Callable[[str], Any] | None,
        workers: WorkerDirectory | None,
        breaker: Callable[[], Breaker],
        local_dir: Callable[[Any], str | None] | None = None,
        key_policy: KeyEnvPolicy | None = None,
    ) -> None:
        self.key_policy = key_policy or KeyEnvPolicy()
        self.resolve_version = resolve_version
        self.workers = workers
        self.breaker = breaker
        self.local_dir = local_dir  # a version's files on this machine (for its tokenizer), or None
        self._endpoints: dict[tuple[Any, ...], Endpoint] = {}
        self._current: dict[
            str, Endpoint
        ] = {}  # route target → what served it last, kept while the new one starts
        self.pending = False  # a target waits for its worker: resolve again on the next poll
        self.refs: set[str] = set()  # local versions in use, so their workers are kept
        self._worker_ref: dict[
            str, str
        ] = {}  # a local version → the version its worker serves (an adapter's base)
        self.problem: str | None = None  # why the last resolve() gave None
        self._logged: set[str] = set()  # problems already logged, so a poll does not repeat them

    def _endpoint(self, ident: tuple[Any, ...], make: Callable[[], Endpoint]) -> Endpoint:
        found = self._endpoints.get(ident)
        if found is None:
            found = self._endpoints[ident] = make()
            found.breaker = self.breaker()
        return found

    def _key(self, name: str | None, where: str, registered: bool = False) -> tuple[bool, str | None]:
        """(allowed, the key): a route naming a variable it may not read cannot serve."""
        try:
            return True, self.key_policy.read(name, registered=registered)
        except PermissionDeniedError as exc:
            log.error("route %s cannot serve: %s", where, exc)
            return False, None

    def resolve(self, route: Route) -> Endpoint | None:
        self.problem = None
        if route.url:
            allowed, api_key = self._key(route.api_key_env, redact_url(route.url))
            if not allowed:
                return None
            urls = [route.url, *route.instances]
            ident = ("url", tuple(urls), route.model, route.api_key_env, route.timeout_s, _price_key(route))
            return self._endpoint(
                ident,
                lambda: Endpoint(
                    label=f"{route.model}@{redact_url(str(route.url))}",
                    base_urls=urls,
                    model=str(route.model),
                    api_key=api_key,
                    timeout_s=route.timeout_s,
                    price=route.price,
                ),
            )
        return self._resolve_target(route)

    def _resolve_target(self, route: Route) -> Endpoint | None:
        target = str(route.target)
        if self.resolve_version is None:
            self.problem = f"{target}: this gateway has no registry to resolve it"
            return None
        try:
            version = self.resolve_version(target)
        except CorralError as exc:
            self.problem = f"{target} cannot be resolved: {exc}"
            return None
        if version.stage in ("draining", "retired"):
            self.problem = f"{target} {unservable_stage(target, version)}"
            return None
        if version.kind == "endpoint":
            if route.api_key_env and not version.api_key_env:
                allowed, api_key = self._key(route.api_key_env, version.ref)
            else:
                allowed, api_key = self._key(version.api_key_env, version.ref, registered=True)
            if not allowed:
                return None
            ident = (
                "version",
                version.ref,
                version.endpoint_url,
                version.upstream_model,
                route.timeout_s,
                _price_key(route),
            )
            return self._endpoint(
                ident,
                lambda: Endpoint(
                    label=version.ref,
                    base_urls=[version.endpoint_url],
                    model=version.upstream_model,
                    api_key=api_key,
                    timeout_s=route.timeout_s,
                    price=route.price,
                    version_ref=version.ref,
                ),
            )
        return self._local(route, target, version)

    def _served_by(self, version: Any) -> Any:
        """The version whose worker serves `version`: an adapter's base (one worker for all its adapters)."""
        if version.kind != "adapter" or not version.base_ref or self.resolve_version is None:
            return version
        return self.resolve_version(version.base_ref)

    def _local(self, route: Route, target: str, version: Any) -> Endpoint | None:
        previous = self._current.get(target)
        try:
            worker_version = self._served_by(version)
        except CorralError as exc:
            self.problem = f"{target}: the base of {version.ref} cannot be resolved: {exc}"
            return previous
        workers = self.workers
        urls = workers.ensure(worker_version, route.replicas, route.embeddings) if workers else None
        self.refs.update({version.ref, worker_version.ref})
        self._worker_ref[version.ref] = worker_version.ref
        if urls is None:
            self.pending = True
            if previous is not None:
                self.refs.add(str(previous.version_ref))
                self.refs.add(self._worker_ref.get(str(previous.version_ref), str(previous.version_ref)))
            if self.workers is None:
                self.problem = f"{version.ref} needs a local worker; start the gateway with `corral serve`"
            else:
                why = getattr(self.workers, "problem", None)
                self.problem = (
                    why(worker_version.ref) if why else None
                ) or f"the worker for {worker_version.ref} is starting"
            return previous  # the old version keeps serving until the new one is ready
        ident = ("local", version.ref, tuple(urls), route.timeout_s, _price_key(route))
        endpoint = self._endpoint(
            ident,
            lambda: Endpoint(
                label=version.ref,
                base_urls=urls,
                model=version.ref,
                timeout_s=route.timeout_s,
                price=route.price,
                version_ref=version.ref,
                tokenizer_dir=self.local_dir(version) if self.local_dir else None,
            ),
        )
        self._current[target] = endpoint
        return endpoint

    def _resolve_all(self, kind: str, routes: list[Route], problems: list[str]) -> list[Endpoint | None]:
        out = []
        for i, route in enumerate(routes):
            out.append(self.resolve(route))
            if out[-1] is None and self.problem:
                problems.append(f"{kind}[{i}]: {self.problem}")
        return out

    def build(self, specs: dict[str, Deployment]) -> dict[str, LiveDeployment]:
        self.pending, self.refs = False, set()
        live = {}
        problems: set[str] = set()
        for name, spec in specs.items():
            found: list[str] = []
            live[name] = LiveDeployment(
                name=name,
                spec=spec,
                routes=self._resolve_all("routes", spec.routes, found),
                shadow=self._resolve_all("shadow", spec.shadow, found),
                fallbacks=self._resolve_all("fallbacks", spec.fallbacks, found),
                weights=[r.weight for r in spec.routes],
                problems=found,
            )
            problems.update(f"deployment {name} {p}" for p in found if "is starting" not in p)
        for problem in sorted(problems - self._logged):
            log.warning("%s", problem)
        self._logged = problems
        if self.workers is not None:
            self.workers.retain(self.refs)
        return live
