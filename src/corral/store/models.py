"""SQLAlchemy models: the only durable shared state. Change them only with a migration."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class ModelRow(Base):
    __tablename__ = "models"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ModelVersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # weights | adapter | endpoint
    artifact: Mapped[str | None] = mapped_column(String(80), default=None)  # sha256 digest of the directory
    base_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), default=None)
    endpoint_url: Mapped[str | None] = mapped_column(String(512), default=None)
    upstream_model: Mapped[str | None] = mapped_column(String(256), default=None)
    api_key_env: Mapped[str | None] = mapped_column(String(128), default=None)
    lineage: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    description: Mapped[str] = mapped_column(Text, default="")
    lifecycle: Mapped[str | None] = mapped_column(String(16), default=None)  # None | draining | retired
    artifact_purged: Mapped[bool] = mapped_column(default=False)
    # asked for by `retire --purge`; carried out by whichever process completes the retirement
    purge_requested: Mapped[bool] = mapped_column(default=False, server_default=false())
    draining_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class AliasRow(Base):
    """A movable name for one version of a model or prompt (`kind` says which)."""

    __tablename__ = "aliases"
    __table_args__ = (UniqueConstraint("kind", "owner_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # model | prompt
    owner_id: Mapped[int] = mapped_column(Integer, index=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AliasEventRow(Base):
    """One move of an alias; the history that rollback walks back along."""

    __tablename__ = "alias_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    owner_id: Mapped[int] = mapped_column(Integer, index=True)
    alias: Mapped[str] = mapped_column(String(64))
    from_version: Mapped[int | None] = mapped_column(Integer, default=None)
    to_version: Mapped[int | None] = mapped_column(Integer, default=None)
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text, default="")
    is_rollback: Mapped[bool] = mapped_column(default=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DatasetRow(Base):
    __tablename__ = "datasets"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DatasetVersionRow(Base):
    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "version"), UniqueConstraint("dataset_id", "digest"))
    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(80))  # sha256 of the canonical JSONL = its artifact
    row_count: Mapped[int] = mapped_column(Integer)
    schema_kind: Mapped[str] = mapped_column(String(32))  # chat | prompt_completion | classification
    splits: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    lineage: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PromptRow(Base):
    __tablename__ = "prompts"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PromptVersionRow(Base):
    __tablename__ = "prompt_versions"
    __table_args__ = (UniqueConstraint("prompt_id", "version"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    template: Mapped[dict[str, Any]] = mapped_column()  # {"text": ...} or {"messages": [...]}
    variables: Mapped[list[Any]] = mapped_column(default=list)
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditRow(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(256))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)


# -- gateway: keys, deployments changed at run time, traces, feedback --------------------------------


class ApiKeyRow(Base):
    """An API key, stored as its SHA-256 only; `models` lists the deployments it reaches (`*` = all)."""

    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # the first characters, to recognise a key in lists
    models: Mapped[list[Any]] = mapped_column(default=list)
    rpm: Mapped[int | None] = mapped_column(Integer, default=None)
    tpm: Mapped[int | None] = mapped_column(Integer, default=None)
    budget_usd: Mapped[float | None] = mapped_column(Float, default=None)  # per calendar month (UTC)
    is_admin: Mapped[bool] = mapped_column(default=False)
    is_viewer: Mapped[bool] = mapped_column(default=False)  # the dashboard and read-only admin GETs only
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class DeploymentRow(Base):
    """A deployment's spec (the `deployments:` entry as JSON); `source` is file or admin."""

    __tablename__ = "deployments"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    spec: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)  # None: deleted by an admin
    source: Mapped[str] = mapped_column(String(16), default="file")
    updated_by: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TraceRow(Base):
    """One request through the gateway (or one shadow copy of it)."""

    __tablename__ = "traces"
    __table_args__ = (Index("ix_traces_day_key", "day", "key_id"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    day: Mapped[str] = mapped_column(String(10))  # YYYY-MM-DD (UTC), for cost totals
    key_id: Mapped[int | None] = mapped_column(Integer, default=None)
    key_name: Mapped[str | None] = mapped_column(String(128), default=None)
    deployment: Mapped[str] = mapped_column(String(128), index=True)
    endpoint: Mapped[str] = mapped_column(String(32))  # chat | completions | embeddings
    route: Mapped[str | None] = mapped_column(String(512), default=None)
    model_version: Mapped[str | None] = mapped_column(String(256), default=None)
    shadow_of: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    prompt_ref: Mapped[str | None] = mapped_column(String(256), default=None)
    request: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    tokens_estimated: Mapped[bool] = mapped_column(default=False)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    ttft_ms: Mapped[float | None] = mapped_column(Float, default=None)
    status: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    stream: Mapped[bool] = mapped_column(default=False)
    user: Mapped[str | None] = mapped_column(String(256), default=None)
    session: Mapped[str | None] = mapped_column(String(256), default=None)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)


class FeedbackRow(Base):
    """A score in [0, 1] on a trace (thumbs up 1, down 0), with an optional label and comment."""

    __tablename__ = "feedback"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    trace_id: Mapped[str] = mapped_column(String(32), index=True)  # no FK: the trace may still be spooled
    score: Mapped[float] = mapped_column(Float)
    label: Mapped[str | None] = mapped_column(String(128), default=None)
    comment: Mapped[str | None] = mapped_column(Text, default=None)
    key_id: Mapped[int | None] = mapped_column(Integer, default=None)
    # `user` for people's feedback; `judge:<rubric>` for scores that online evaluation stored.
    source: Mapped[str] = mapped_column(String(128), default="user", server_default="user")
    correction: Mapped[str | None] = mapped_column(Text, default=None)  # the right answer, a training target
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# -- evaluation: runs and their per-item results ---------------------------------------------------


class EvalRunRow(Base):
    """One evaluation of a target on a dataset version's split; `summary` holds each metric with its interval."""

    __tablename__ = "eval_runs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    target: Mapped[str] = mapped_column(String(512))  # a version ref, a deployment name or a URL
    target_kind: Mapped[str] = mapped_column(String(16))  # model | deployment | url
    model_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL"), default=None, index=True
    )
    dataset: Mapped[str] = mapped_column(String(256))  # NAME@N
    split: Mapped[str] = mapped_column(String(32))
    metrics: Mapped[list[Any]] = mapped_column(default=list)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    config_key: Mapped[str] = mapped_column(String(64), index=True)  # dataset, split and metric config hashed
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16))  # complete | interrupted
    item_count: Mapped[int] = mapped_column(Integer, default=0)
    error_count: Mapped[int] = mapped_column(Integer, default=0)
    duration_s: Mapped[float] = mapped_column(Float, default=0.0)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class EvalItemRow(Base):
    """One item of a run: what was asked, answered and expected, its scores, latency, tokens and error."""

    __tablename__ = "eval_items"
    __table_args__ = (UniqueConstraint("run_id", "position"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("eval_runs.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)  # the item's index in the split
    request: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prediction: Mapped[str | None] = mapped_column(Text, default=None)
    reference: Mapped[str | None] = mapped_column(Text, default=None)
    scores: Mapped[dict[str, Any]] = mapped_column(default=dict)
    latency_ms: Mapped[float | None] = mapped_column(Float, default=None)
    ttft_ms: Mapped[float | None] = mapped_column(Float, default=None)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text, default=None)


# -- shared: leases (one replica does a job at a time) ----------------------------------------------


class LeaseRow(Base):
    """A named lease: `holder` owns the job `name` until `expires_at` unless it renews."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    acquired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# -- monitor: rollups of traces, drift reports, alert history ---------------------------------------


class RollupRow(Base):
    """Aggregates of the traces of one time bucket (grain m, h or d) for one deployment, route and version."""

    __tablename__ = "monitor_rollups"
    __table_args__ = (
        UniqueConstraint("grain", "bucket", "deployment", "route", "model_version"),
        Index("ix_monitor_rollups_deployment", "deployment", "grain", "bucket"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    grain: Mapped[str] = mapped_column(String(1))  # m | h | d
    bucket: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deployment: Mapped[str] = mapped_column(String(128))
    route: Mapped[str] = mapped_column(String(512), default="")
    model_version: Mapped[str] = mapped_column(String(256), default="")
    requests: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    statuses: Mapped[dict[str, Any]] = mapped_column(default=dict)
    latency_ms_sum: Mapped[float] = mapped_column(Float, default=0.0)
    latency_hist: Mapped[dict[str, Any]] = mapped_column(default=dict)
    ttft_hist: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    feedback_count: Mapped[int] = mapped_column(Integer, default=0)
    feedback_sum: Mapped[float] = mapped_column(Float, default=0.0)
    users: Mapped[int] = mapped_column(Integer, default=0)  # distinct within the bucket
    sessions: Mapped[int] = mapped_column(Integer, default=0)  # distinct within the bucket
    turns: Mapped[int] = mapped_column(Integer, default=0)  # requests that name a session
    regenerations: Mapped[int] = mapped_column(Integer, default=0)


class MonitorStateRow(Base):
    """Small named values the monitor keeps between runs (e.g. how far rollups have been checked)."""

    __tablename__ = "monitor_state"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DriftReportRow(Base):
    """A drift report computed by the monitor loop, stored so that opening one is a read."""

    __tablename__ = "drift_reports"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    deployment: Mapped[str] = mapped_column(String(128), index=True)
    drifted: Mapped[bool] = mapped_column(default=False)
    report: Mapped[dict[str, Any]] = mapped_column(default=dict)


class AlertEventRow(Base):
    """One firing of an alert rule, resolved later; the values it fired and resolved with."""

    __tablename__ = "alert_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    rule: Mapped[str] = mapped_column(String(128), index=True)
    subject: Mapped[str] = mapped_column(String(256), default="")  # the deployment, or "" for all
    state: Mapped[str] = mapped_column(String(16))  # firing | resolved
    value: Mapped[float | None] = mapped_column(Float, default=None)
    threshold: Mapped[float] = mapped_column(Float)
    resolved_value: Mapped[float | None] = mapped_column(Float, default=None)
    fired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    last_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    sends: Mapped[int] = mapped_column(Integer, default=0)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class TraceSearchRow(Base):
    """A trace's prompt and answer as plain text, for full-text search (derived: the monitor job fills it).

    Migration 0007 adds the text index beside it: FTS5 on SQLite (kept by triggers); on PostgreSQL a
    generated `search_tsv` column (`to_tsvector('simple', body)`) with a GIN index.
    """

    __tablename__ = "trace_search"
    trace_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    body: Mapped[str] = mapped_column(Text)


class DashboardSessionRow(Base):
    """A dashboard login, shared by every gateway replica: the token's SHA-256, its key's and a CSRF token.

    `key_hash` is the key's SHA-256 as `api_keys` stores it (or the configured admin key's), so a
    session ends when its key is revoked or the admin key changes.
    """

    __tablename__ = "dashboard_sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class GatewayHeartbeatRow(Base):
    """One gateway replica's latest report: requests in flight per model version, fresh until `expires_at`.

    A draining version retires once every fresh heartbeat reads 0 for it, whichever process asks.
    """

    __tablename__ = "gateway_heartbeats"
    replica: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(256), default="")
    pid: Mapped[int] = mapped_column(Integer, default=0)
    in_flight: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {"support@1": 3}; zeros omitted
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


# -- the refresh pipeline: runs and their stages -------------------------------------------------------


class PipelineRunRow(Base):
    """One run of a refresh pipeline file: what started it, where it stands, and why it stopped."""

    __tablename__ = "pipeline_runs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(128), index=True)
    file: Mapped[str] = mapped_column(String(1024))
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the file as parsed when the run began
    trigger: Mapped[str] = mapped_column(String(256))  # manual | schedule | alert:ID
    status: Mapped[str] = mapped_column(String(16))  # running | succeeded | rejected | failed
    error: Mapped[str | None] = mapped_column(Text, default=None)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class PipelineStageRow(Base):
    """One stage of a run: its inputs, and the reference to what it made (a dataset, a version, a verdict)."""

    __tablename__ = "pipeline_stages"
    __table_args__ = (UniqueConstraint("run_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("pipeline_runs.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(32))
    position: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # running | done | failed | skipped
    inputs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    output: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    duration_s: Mapped[float | None] = mapped_column(Float, default=None)
