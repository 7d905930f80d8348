"""The settings tree: one section per lifecycle stage, each a pydantic model that forbids unknown keys.

`corral.config.loader` reads them from corral.yaml and CORRAL_* variables.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

ENV_PREFIX = "CORRAL_"
SHORT_NAMES = {
    "CORRAL_DATABASE_URL": ("store", "database_url"),
    "CORRAL_REDIS_URL": ("redis", "url"),
    "CORRAL_ARTIFACTS_URL": ("artifacts", "url"),
}
# Variables that belong to the process, not to the settings tree.
NON_SETTING_VARS = {"CORRAL_CONFIG", "CORRAL_HOME", "CORRAL_DEBUG", "CORRAL_ADMIN_KEY"}
SECRET_WORDS = ("key", "password", "secret", "token")


def corral_home() -> Path:
    """Where the embedded store and artifacts live by default: `$CORRAL_HOME` or `./.corral`."""
    return Path(os.environ.get("CORRAL_HOME", ".corral")).expanduser()


class Section(BaseModel):
    """A settings section: unknown keys are errors, and types are strict (`port: true` is not 1, and
    `require_keys: "no"` is not false); the loader types CORRAL_* variables, which are strings."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)

    # Keys that would validate and then do nothing, because the feature that reads them is not built
    # yet: setting one is refused, naming the feature. The change that builds it removes its entry.
    NOT_AVAILABLE_YET: ClassVar[dict[str, str]] = {}

    @field_validator("*", mode="before")
    @classmethod
    def _refuse_not_available_yet(cls, value: Any, info: ValidationInfo) -> Any:
        feature = cls.NOT_AVAILABLE_YET.get(info.field_name or "")
        if feature is not None:
            raise ValueError(f"{feature} is not available yet, so this setting would do nothing; remove it")
        return value


class StoreSettings(Section):
    database_url: str = Field(default="", description="SQLAlchemy URL; empty means SQLite under CORRAL_HOME")
    auto_upgrade: bool | None = Field(
        default=None, description="apply migrations on first use; default: yes for SQLite, no otherwise"
    )
    echo: bool = False
    connect_timeout_s: float = Field(default=5.0, gt=0, description="PostgreSQL: time to connect, then down")
    statement_timeout_s: float = Field(
        default=30.0,
        ge=0,
        description="PostgreSQL: a statement (or an unanswered connection) past this fails; 0: none",
    )

    @field_validator("database_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value:
            return value
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(value)
        except ArgumentError as exc:
            raise ValueError(f"not a database URL ({exc}); e.g. postgresql+psycopg://user@host/db") from None
        if url.get_backend_name() not in {"sqlite", "postgresql"}:
            raise ValueError(f"unsupported database '{url.get_backend_name()}'; use sqlite or postgresql")
        return value

    def resolved_url(self) -> str:
        return self.database_url or f"sqlite:///{corral_home() / 'corral.db'}"


class ArtifactSettings(Section):
    url: str = Field(
        default="", description="local directory or fsspec URL; empty means CORRAL_HOME/artifacts"
    )
    cache_dir: str = Field(default="", description="where directories are materialized for serving")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if "://" in value:
            import fsspec

            protocol = value.split("://", 1)[0]
            if protocol not in fsspec.available_protocols():
                raise ValueError(
                    f"unknown storage protocol '{protocol}://'; use a local path, s3://, gs://, memory://"
                )
        return value

    def resolved_url(self) -> str:
        return self.url or str(corral_home() / "artifacts")

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else corral_home() / "cache"


class RedisSettings(Section):
    url: str | None = Field(
        default=None, description="redis:// URL shared by gateway replicas; unset = in process"
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://, e.g. redis://127.0.0.1:6379/0")
        return value or None


class AuthSettings(Section):
    admin_key_env: str = Field(default="CORRAL_ADMIN_KEY", description="variable holding the first admin key")
    require_keys: bool = Field(default=True, description="refuse requests without an API key")
    redis_prefix: str = Field(default="corral:", description="prefix of every Redis key the gateway writes")
    upstream_key_env_prefix: str = Field(
        default="CORRAL_UPSTREAM_",
        description="variables a route's api_key_env may name (besides those named in corral.yaml)",
    )


class GatewaySettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    request_timeout_s: float = Field(default=600.0, gt=0)
    drain_timeout_s: float = Field(default=30.0, ge=0)
    deployments_poll_s: float = Field(default=1.0, gt=0)
    max_body_mb: float = Field(default=16.0, gt=0)
    max_connections: int = Field(default=1000, ge=1, description="pooled upstream connections, all routes")
    breaker_failures: int = Field(
        default=5, ge=1, description="consecutive failures that open a route's breaker"
    )
    breaker_reset_s: float = Field(default=10.0, gt=0, description="how long an open breaker stays open")
    shadow_max_in_flight: int = Field(default=64, ge=0, description="shadow copies beyond this are skipped")
    metrics_key_env: str | None = Field(
        default=None, description="variable holding a key /metrics then requires (an admin key works too)"
    )
    max_header_kb: float = Field(default=64.0, gt=0, description="request headers past this get a 431")
    client_header_timeout_s: float = Field(
        default=10.0, gt=0, description="time a client has to send its headers"
    )
    client_body_timeout_s: float = Field(default=60.0, gt=0, description="time a client has to send its body")
    max_client_connections: int = Field(
        default=4096, ge=1, description="client connections held at once; more are closed on arrival"
    )
    worker_command: list[str] = Field(
        default_factory=lambda: [
            "{python}",
            "-m",
            "corral.cli.main",
            "worker",
            "--model",
            "{ref}",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
        ],
        description="how `corral serve` starts a local worker; {python}, {ref}, {port} and {config} are filled in",
    )
    worker_start_timeout_s: float = Field(
        default=300.0, gt=0, description="how long a new worker may take to answer its first health probe"
    )
    worker_health_interval_s: float = Field(default=1.0, gt=0)
    worker_failed_probes: int = Field(
        default=5, ge=1, description="consecutive failed health probes that restart a worker that was serving"
    )

    @field_validator("worker_command")
    @classmethod
    def _check_worker_command(cls, value: list[str]) -> list[str]:
        if not value or not any("{port}" in part for part in value):
            raise ValueError("the worker command must contain {port}, e.g. [..., '--port', '{port}']")
        return value


class TracingSettings(Section):
    enabled: bool = True
    store_bodies: bool | Literal["redacted"] = Field(
        default=True,
        description="false keeps no message bodies; redacted keeps them with PII and secrets replaced",
    )
    retention_days: float | None = Field(
        default=None, gt=0, description="traces and feedback older than this are purged in the background"
    )
    retention_batch: int = Field(default=500, ge=1, description="rows deleted per purge transaction")
    retention_interval_s: float = Field(default=3600.0, gt=0, description="how often the purge runs")
    max_body_kb: float = Field(
        default=1024.0,
        gt=0,
        description="bodies past this are not stored; answers past it are streamed through",
    )
    batch_size: int = Field(default=256, ge=1)
    flush_interval_s: float = Field(default=0.5, gt=0)
    queue_size: int = Field(default=10_000, ge=1)
    spool_dir: str = ""
    spool_max_mb: float = Field(default=512.0, gt=0)
    spool_warn_fraction: float = Field(default=0.8, gt=0, le=1, description="spool fill that logs a warning")
    otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP collector base URL (e.g. http://127.0.0.1:4318); spans go to /v1/traces",
    )
    otlp_headers: dict[str, str] = Field(default_factory=dict, description="e.g. an Authorization header")
    otlp_timeout_s: float = Field(default=5.0, gt=0)

    @field_validator("otlp_endpoint")
    @classmethod
    def _check_otlp(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(
                "must be an OTLP/HTTP URL starting with http:// or https://, e.g. http://127.0.0.1:4318"
            )
        return value or None

    mlflow_tracking_uri: str | None = None

    def resolved_spool_dir(self) -> Path:
        return Path(self.spool_dir) if self.spool_dir else corral_home() / "spool"

    def mlflow_uri(self) -> str | None:
        """Where training and evaluation log to MLflow: this setting, else MLFLOW_TRACKING_URI."""
        return self.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None


class EngineSettings(Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    block_size: int = Field(default=16, ge=1)
    kv_cache_gb: float | None = Field(
        default=None,
        gt=0,
        description="memory for the KV cache, GiB; unset: enough for max_num_seqs sequences of the "
        "model's full context, at most 1 GiB",
    )
    max_num_seqs: int = Field(default=64, ge=1)
    max_num_batched_tokens: int = Field(default=4096, ge=16)
    max_waiting: int = Field(default=256, ge=0)
    worker_port_start: int = Field(default=8101, ge=1, le=65535)
    max_loras: int = Field(
        default=8,
        ge=1,
        description="LoRA adapters kept loaded per worker; the least recently used is dropped",
    )


class Price(Section):
    prompt_per_1k: float = Field(default=0.0, ge=0)
    completion_per_1k: float = Field(default=0.0, ge=0)


class Route(Section):
    """Where a request can go: a registry reference served locally, or a remote endpoint."""

    target: str | None = Field(default=None, description="registry reference, e.g. support@production")
    url: str | None = Field(default=None, description="OpenAI-compatible base URL, e.g. http://host:8001/v1")
    model: str | None = Field(default=None, description="upstream model name, with url")
    api_key_env: str | None = None
    instances: list[str] = Field(
        default_factory=list,
        description="more base URLs serving the same `model`, balanced by least in-flight",
    )
    replicas: int = Field(default=1, ge=1, le=64, description="local workers to start for a `target:`")
    embeddings: bool = Field(
        default=False,
        description="a `target:`'s local worker also serves /v1/embeddings (corral worker --embeddings)",
    )
    weight: float = Field(default=1.0, ge=0)
    timeout_s: float = Field(default=60.0, gt=0)
    price: Price = Field(default_factory=Price)

    @field_validator("target")
    @classmethod
    def _check_target(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from corral.errors import CorralError
        from corral.registry.refs import parse_ref

        try:
            parse_ref(value)
        except CorralError as exc:  # a ValueError, so the message names the file and key
            raise ValueError(f"{exc}; write NAME@VERSION or NAME@ALIAS, e.g. support@production") from None
        return value

    @model_validator(mode="after")
    def _target_or_url(self) -> Route:
        if bool(self.target) == bool(self.url):
            raise ValueError("give either `target:` (a registry reference) or `url:` + `model:`, not both")
        if self.url:
            if not self.url.startswith(("http://", "https://")):
                raise ValueError(f"url '{self.url}' must start with http:// or https://")
            if not self.model:
                raise ValueError("a `url:` route also needs `model:` (the upstream model name)")
        for extra in self.instances:
            if not extra.startswith(("http://", "https://")):
                raise ValueError(f"instance '{extra}' must start with http:// or https://")
        if self.embeddings and not self.target:
            raise ValueError("`embeddings: true` asks a local worker for embeddings; it needs a `target:`")
        if self.instances and not self.url:
            raise ValueError("`instances:` are extra URLs of a `url:` route; for a `target:` use `replicas:`")
        return self


class Deployment(Section):
    mode: Literal["weighted", "canary"] = "weighted"
    sticky_by: Literal["user", "session", "key"] = "user"
    routes: list[Route] = Field(min_length=1)
    shadow: list[Route] = Field(default_factory=list)
    fallbacks: list[Route] = Field(default_factory=list)
    retries: int = Field(
        default=1, ge=0, le=10, description="extra attempts on the chosen route before falling back"
    )
    guard: str | None = Field(default=None, description="a guard policy name; none: `default`; `off`: none")

    @model_validator(mode="after")
    def _check_canary(self) -> Deployment:
        if self.mode == "canary":
            if len(self.routes) < 2:
                raise ValueError(
                    "a canary needs two routes: production first, then the canary with its share"
                )
            share = sum(r.weight for r in self.routes[1:])
            if share > 100:
                raise ValueError(
                    f"canary shares add up to {share}%; keep the non-production weights within 100"
                )
        elif sum(r.weight for r in self.routes) <= 0:
            raise ValueError("at least one route needs a weight above 0")
        return self


class Classifier(Section):
    """An OpenAI-compatible moderation endpoint consulted besides the built-in checks."""

    url: str = Field(description="base URL, e.g. http://127.0.0.1:9000/v1 (POST {url}/moderations)")
    model: str | None = None
    api_key_env: str | None = None
    timeout_s: float = Field(default=2.0, gt=0)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"url '{value}' must start with http:// or https://")
        return value.rstrip("/")


class GuardPolicy(Section):
    """What one deployment's requests and answers are checked for, and what a finding does."""

    pii: Literal["off", "redact", "pseudonymize", "block", "flag"] = "off"
    pii_engine: Literal["fast", "presidio"] = Field(
        default="fast",
        description="fast: one compiled pattern set; presidio: the thorough mode (guard extra)",
    )
    pii_kinds: list[str] = Field(default_factory=list, description="empty: every kind the engine knows")
    secrets: Literal["off", "redact", "block", "flag"] = "off"
    moderation: Literal["off", "flag", "block"] = "off"
    moderation_terms: dict[str, list[str]] = Field(
        default_factory=dict, description="extra patterns per category, matched as whole words"
    )
    moderation_classifier: Classifier | None = None
    injection: Literal["off", "flag", "block"] = "off"
    injection_classifier: Classifier | None = None
    output_schema: str | None = Field(default=None, description="JSON schema file the answer must satisfy")
    output_schema_action: Literal["flag", "block"] = "block"
    output_schema_retry: bool = Field(default=True, description="one more attempt with the validation error")
    max_input_chars: int | None = Field(default=None, ge=1)
    max_input_tokens: int | None = Field(default=None, ge=1)

    @field_validator("pii_kinds")
    @classmethod
    def _check_kinds(cls, value: list[str]) -> list[str]:
        from corral.guard.pii import KINDS

        unknown = sorted(set(value) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown PII kinds {unknown}; known: {', '.join(KINDS)}")
        return value

    @field_validator("moderation_terms")
    @classmethod
    def _check_terms(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        import re

        for category, terms in value.items():
            for term in terms:
                try:
                    re.compile(term)
                except re.error as exc:
                    raise ValueError(
                        f"moderation_terms.{category}: '{term}' is not a pattern ({exc})"
                    ) from None
        return value


OLD_GUARD_FORM = """guard:
  policies:
    default: {pii: redact, secrets: block, injection: flag, moderation: flag}
deployments:
  NAME: {guard: default, routes: [...]}"""


class GuardSettings(Section):
    """Named policies; `default` applies to every deployment that names none (`guard: off` opts out)."""

    policies: dict[str, GuardPolicy] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _refuse_flat_keys(cls, data: object) -> object:
        if isinstance(data, dict):
            flat = sorted(set(data) & set(GuardPolicy.model_fields))
            if flat:
                raise ValueError(
                    f"guard.{', guard.'.join(flat)}: the flat form is gone; settings now live in named "
                    f"policies, chosen per deployment:\n{OLD_GUARD_FORM}"
                )
        return data

    def policy_for(self, deployment: Deployment) -> GuardPolicy | None:
        name = deployment.guard or "default"
        return None if name == "off" else self.policies.get(name)


AlertMetric = Literal[
    "p95_latency_ms", "error_rate", "cost_per_day", "feedback_mean", "feedback_mean_drop", "drift_p_value",
    "new_topic_share",
]
FALLING_METRICS = ("drift_p_value", "feedback_mean")  # these fire when they fall below the threshold


AlertSink = Literal["log", "webhook", "subscribers"]
ALERT_SINKS: tuple[AlertSink, ...] = ("log", "webhook", "subscribers")


class AlertRuleSettings(Section):
    """One alert rule: fires when `metric` passes `threshold` (drift_p_value, feedback_mean: fall below it)."""

    name: str = Field(min_length=1, max_length=128)
    metric: AlertMetric
    threshold: float
    deployment: str | None = Field(default=None, description="one deployment; default: each one separately")
    for_minutes: float = Field(default=5.0, gt=0, description="how long the condition must hold")
    repeat_minutes: float | None = Field(default=None, gt=0, description="re-send while firing this often")
    sinks: list[AlertSink] = Field(default_factory=lambda: list(ALERT_SINKS))
    webhook: str | None = Field(default=None, description="default: monitor.alert_webhook")


class MonitorSettings(Section):
    enabled: bool = True
    interval_s: float = Field(default=30.0, gt=0, description="how often the monitor loop runs")
    lookback_s: float = Field(default=900.0, gt=0, description="how far back rollups are re-checked")
    drift_window_hours: float = Field(default=24.0, gt=0)
    drift_reference_hours: float = Field(default=168.0, gt=0, description="the window before the current one")
    drift_reference_datasets: dict[str, str] = Field(
        default_factory=dict,
        description="per deployment, a dataset version to compare with instead of the window before: "
        "'faq@2', or 'trained-on:MODEL@REF' (the dataset that model version trained on)",
    )
    drift_reports: bool = Field(default=True, description="compute drift reports in the monitor loop")
    drift_every_minutes: float = Field(default=60.0, gt=0)
    drift_alpha: float = Field(default=0.05, gt=0, lt=1)
    alert_webhook: str | None = Field(default=None, description="the default webhook sink of every rule")
    webhook_retries: int = Field(default=3, ge=0)
    alerts: list[AlertRuleSettings] = Field(default_factory=list)
    dashboard: bool = True

    @field_validator("drift_reference_datasets")
    @classmethod
    def _dataset_refs(cls, value: dict[str, str]) -> dict[str, str]:
        from corral.errors import InvalidInputError
        from corral.registry.refs import parse_ref

        for deployment, ref in value.items():
            try:
                parse_ref(ref.removeprefix("trained-on:"))
            except InvalidInputError as exc:
                raise ValueError(f"{deployment}: '{ref}' is not a dataset or model reference ({exc})") from None
        return value

    @model_validator(mode="after")
    def _unique_rules(self) -> MonitorSettings:
        names = [r.name for r in self.alerts]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"alert rule names must be unique: {', '.join(dupes)}")
        return self


class PipelineSettings(Section):
    """Refresh pipelines `corral serve` starts: on their cron `schedule` and on the alerts they name."""

    enabled: bool = Field(default=True, description="schedule and trigger the pipeline files")
    files: list[str] = Field(
        default_factory=list, description="pipeline YAML files (relative to corral.yaml's directory)"
    )
    poll_s: float = Field(default=30.0, gt=0, description="how often schedules are checked")
    lease_s: float = Field(default=90.0, gt=0, description="the runner lease: one replica starts runs")


class OnlineEvalRule(Section):
    """Score a sample of one deployment's live traces with a judge rubric or a reference-free metric."""

    deployment: str
    sample_rate: float = Field(default=0.1, gt=0, le=1, description="share of traces scored")
    rubric: str | None = Field(default=None, description="prompt template used as the judge's rubric")
    judge_url: str | None = Field(default=None, description="OpenAI-compatible base URL of the judge")
    judge_model: str | None = None
    judge_key_env: str | None = Field(default=None, description="variable holding the judge's API key")
    metric: str | None = Field(default=None, description="a metric that needs no reference, e.g. json_valid")

    @model_validator(mode="after")
    def _one_scorer(self) -> OnlineEvalRule:
        if (self.rubric is None) == (self.metric is None):
            raise ValueError("give either rubric (with judge_url and judge_model) or metric")
        if self.rubric is not None and not (self.judge_url and self.judge_model):
            raise ValueError("a rubric needs judge_url and judge_model (the route that judges)")
        return self


class EvaluateSettings(Section):
    online: list[OnlineEvalRule] = Field(default_factory=list)
    online_interval_s: float = Field(default=10.0, gt=0, description="how often new traces are scored")
    online_lookback_s: float = Field(default=3600.0, gt=0, description="how far back traces are scored")
    online_lease_s: float = Field(default=60.0, gt=0, description="how long one replica holds the job")


class Settings(Section):
    """The whole configuration tree; one section per lifecycle stage."""

    store: StoreSettings = Field(default_factory=StoreSettings)
    artifacts: ArtifactSettings = Field(default_factory=ArtifactSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    deployments: dict[str, Deployment] = Field(default_factory=dict)
    guard: GuardSettings = Field(default_factory=GuardSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    evaluate: EvaluateSettings = Field(default_factory=EvaluateSettings)

    source: str | None = Field(default=None, exclude=True, description="the file these came from")

    @model_validator(mode="after")
    def _check_guard_names(self) -> Settings:
        for name, deployment in self.deployments.items():
            policy = deployment.guard
            if policy and policy != "off" and policy not in self.guard.policies:
                known = ", ".join(sorted(self.guard.policies)) or "none defined"
                raise ValueError(
                    f"deployments.{name}.guard: no policy '{policy}' under guard.policies (known: {known})"
                )
        return self
