"""The data stages: collect the deployment's badly rated traces (corrected) and a sample of good ones,
then build, redact and register them as a dataset version with a replay share of the old training data."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from corral.data.build import BuildOptions, build_rows
from corral.data.traces import SOURCE_TRACE, TraceQuery, select_trace_rows, span_ago
from corral.errors import InvalidInputError
from corral.pipeline.context import StageContext


def window_start(window: str, now: datetime) -> datetime:
    start = span_ago(window, now)
    assert start is not None, window  # the spec checked it
    return start


def collect(ctx: StageContext) -> dict[str, Any]:
    spec, registry = ctx.spec, ctx.registry
    production = registry.models.resolve(f"{spec.model}@production")
    now = datetime.now(UTC)
    query = TraceQuery(
        deployment=spec.deployment,
        since=window_start(spec.collect.window, now),
        until=now,
        limit=spec.collect.limit,
        use_corrections=spec.collect.use_corrections,
    )
    selected = select_trace_rows(registry, query)
    below = spec.collect.below
    bad = [i for i, score in enumerate(selected.scores) if score is not None and score < below]
    good = [i for i, score in enumerate(selected.scores) if score is not None and score >= below]
    good = sorted(ctx.rng("good").sample(good, min(spec.collect.good_sample, len(good))))
    chosen = sorted(bad + good)
    if len(chosen) < spec.collect.min_rows:
        raise InvalidInputError(
            f"collected {len(chosen)} rated traces of deployment '{spec.deployment}' in the last "
            f"{spec.collect.window} ({len(bad)} below {below}), fewer than collect.min_rows={spec.collect.min_rows}",
            hint="wait for more feedback, widen collect.window, or lower collect.min_rows",
        )
    rows = [{**selected.rows[i], SOURCE_TRACE: selected.trace_ids[i]} for i in chosen]
    body = "".join(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n" for row in rows)
    digest = registry.artifacts.put_bytes(body.encode())
    ctx.say(f"collected {len(rows)} traces: {len(bad)} rated below {below}, {len(good)} good")
    return {
        "production": production.ref,
        "production_version": production.version,
        "rows_artifact": digest,
        "rows": len(rows),
        "bad": len(bad),
        "good": len(good),
        "corrected": selected.corrected,
        "skipped": dict(selected.skipped),
        "query": query.as_dict(),
    }


def _replay_rows(
    ctx: StageContext, source: str | None, new_rows: int
) -> tuple[list[dict[str, Any]], str | None]:
    share = ctx.spec.dataset.replay
    if not share or not source:
        return [], None
    previous = [r for r in ctx.registry.datasets.rows(source) if r.get("split", "train") == "train"]
    wanted = min(len(previous), round(new_rows * share / (1 - share)))
    picked = ctx.rng("replay").sample(previous, wanted)
    return [{k: v for k, v in row.items() if k != "split"} | {"split": "train"} for row in picked], source


def dataset(ctx: StageContext) -> dict[str, Any]:
    collected = ctx.output("collect")
    body = ctx.registry.artifacts.get_bytes(collected["rows_artifact"]).decode()
    rows = [json.loads(line) for line in body.splitlines() if line.strip()]
    production = ctx.registry.models.resolve(collected["production"])
    source = ctx.spec.dataset.replay_from or production.lineage.get("dataset")
    replay, replay_ref = _replay_rows(ctx, source, len(rows))
    ratios = dict(
        zip(("train", "validation", "test"), (int(p) for p in ctx.spec.dataset.split.split("/")), strict=True)
    )
    options = BuildOptions(redact=ctx.spec.dataset.redact, split_ratios=ratios, split_salt=ctx.spec.name)
    built = build_rows(rows + replay, options, "chat")
    version = ctx.registry.datasets.register(
        ctx.spec.dataset.name,
        built.rows,
        kind="chat",
        lineage={
            "source": "pipeline",
            "pipeline": ctx.spec.name,
            "run": ctx.run.id,
            "collected": len(rows),
            "replay": {"from": replay_ref, "rows": len(replay), "share": ctx.spec.dataset.replay},
            "build": options.as_dict(),
            "report": built.report,
        },
        tags={"pipeline_run": ctx.run.id},
    )
    ctx.say(f"dataset {version.ref}: {version.row_count} rows ({len(replay)} replayed) {version.splits}")
    return {
        "dataset": version.ref,
        "rows": version.row_count,
        "replayed": len(replay),
        "replay_from": replay_ref,
        "splits": version.splits,
        "created": version.created,
    }
