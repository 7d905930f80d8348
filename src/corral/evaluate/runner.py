"""`corral.evaluate.run`: ask a target every item of a dataset split, score, summarise, store."""

from __future__ import annotations

import asyncio
import getpass
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from corral.errors import InvalidInputError, TargetUnreachableError
from corral.evaluate import metrics as m
from corral.evaluate import runs
from corral.evaluate.client import Generation, send_all
from corral.evaluate.items import EvalData, load_items
from corral.evaluate.outcome import Outcome
from corral.evaluate.runs import EvalRun
from corral.evaluate.summary import summarize
from corral.evaluate.target import Target, TargetSpec, open_target
from corral.registry import Registry


@dataclass(frozen=True)
class RunOptions:
    split: str = "test"
    concurrency: int = 16
    limit: int | None = None
    max_tokens: int = 128
    json_schema: dict[str, Any] | None = None
    judge: Any = None  # a judge.JudgeSpec for judge:<rubric> metrics
    bias_pairs: str | None = None  # a word-pair file extending the shipped list
    price_per_mtok: tuple[float, float] = (0.0, 0.0)  # USD per million prompt, completion tokens
    reuse: bool = False  # return a stored complete run of the same version and config instead
    progress: bool = True
    worker_timeout_s: float = 300.0
    config_path: str | None = None  # corral.yaml handed to a worker started for the run
    extra: dict[str, Any] = field(default_factory=dict)


def _check_needs(metrics: list[m.Metric], data: EvalData, spec: TargetSpec, options: RunOptions) -> None:
    """Refuse, before any request, a metric whose needs the data or target does not meet."""
    for metric in metrics:
        missing: list[str] = []
        if m.REFERENCE in metric.needs and not data.has_references:
            missing.append(
                "a reference answer on every row (chat rows ending in an assistant turn, a 'completion' or a 'label')"
            )
        if m.JSON_SCHEMA in metric.needs and options.json_schema is None:
            missing.append("a JSON schema (--json-schema FILE, or the dataset's metadata key 'json_schema')")
        if m.LOCAL_MODEL in metric.needs and not spec.model:
            missing.append("a local model's weights (--model REF of a version with weights)")
        if m.JUDGE in metric.needs and options.judge is None:
            missing.append("a judge (--judge-rubric, --judge-url and --judge-model)")
        elif m.JUDGE in metric.needs and options.judge.metric != metric.name:
            missing.append(f"a judge with its rubric (this judge's metric is {options.judge.metric})")
        if missing:
            raise InvalidInputError(
                f"metric '{metric.name}' cannot run on {data.dataset.ref} split '{data.split}': "
                f"it needs {'; '.join(missing)}"
            )


def _config(metrics: list[m.Metric], options: RunOptions) -> dict[str, Any]:
    """What makes two runs comparable: the metrics, the sampling, and each scorer's settings."""
    return {
        "metrics": [metric.name for metric in metrics],
        "max_tokens": options.max_tokens,
        "limit": options.limit,
        "json_schema": options.json_schema,
        "judge": options.judge.describe() if options.judge is not None else None,
        "bias_pairs": options.bias_pairs,
        "price_per_mtok": list(options.price_per_mtok),
        **options.extra,
    }


@contextmanager
def _progress(total: int, label: str, enabled: bool) -> Iterator[Callable[[Outcome], None]]:
    if not enabled:
        yield lambda _o: None
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(label, total=total, rate="")
        start = time.perf_counter()

        def advance(_outcome: Outcome) -> None:
            done = bar.tasks[0].completed + 1
            bar.update(task, advance=1, rate=f"{done / max(time.perf_counter() - start, 1e-9):.1f} items/s")

        yield advance


def _score(
    target: Target,
    data: EvalData,
    outcomes: list[Outcome],
    metrics: list[m.Metric],
    options: RunOptions,
    gen: Generation,
) -> None:
    """Scores that need more than the answer: perplexity, the judge, the counterfactual bias probe."""
    names = {metric.name for metric in metrics}
    if "perplexity" in names and target.model_dir is not None:
        from corral.evaluate.perplexity import score_perplexity

        score_perplexity(target.model_dir, outcomes)
    judged = [n for n in names if n.startswith("judge:")]
    if judged:
        from corral.evaluate.judge import judge_outcomes

        asyncio.run(judge_outcomes(options.judge, outcomes, judged, options.concurrency))
    biased = [n for n in names if n.startswith("bias_gap")]
    if biased:
        from corral.evaluate.bias import score_bias

        asyncio.run(
            score_bias(
                target.endpoint, gen, data.items, outcomes, biased, options.bias_pairs, options.concurrency
            )
        )


def run(
    target: TargetSpec | str,
    dataset: str,
    metrics: list[str] | str = "exact_match",
    *,
    registry: Registry | None = None,
    options: RunOptions | None = None,
    store: bool = True,
) -> EvalRun:
    """Evaluate `target` (a TargetSpec, or a registry reference) on `dataset`'s split and store the run."""
    options = options or RunOptions()
    spec = TargetSpec(model=target) if isinstance(target, str) else target
    spec.check()
    if registry is None:
        from corral.registry import open_registry

        registry = open_registry()
    names = metrics.split(",") if isinstance(metrics, str) else metrics
    chosen = m.resolve([*names, "error_rate"])
    data = load_items(registry, dataset, options.split, options.limit)
    if options.json_schema is None and "json_schema" in data.dataset.metadata:
        options = RunOptions(**{**options.__dict__, "json_schema": data.dataset.metadata["json_schema"]})
    _check_needs(chosen, data, spec, options)
    config = _config(chosen, options)
    label = registry.models.resolve(spec.model).ref if spec.model else spec.label
    if options.reuse and store:
        found = runs.reusable(registry.store, label, data.dataset.ref, data.split, config)
        if found:
            reused = runs.load(registry.store, found)
            reused.reused = True
            return reused
    gen = Generation(max_tokens=options.max_tokens)
    started = time.perf_counter()
    with open_target(spec, registry, options.config_path, options.worker_timeout_s) as opened:
        with _progress(len(data.items), f"eval {opened.label}", options.progress) as advance:
            sent = asyncio.run(
                send_all(opened.endpoint, data.items, gen, concurrency=options.concurrency, on_done=advance)
            )
        if not sent.interrupted:
            _score(opened, data, sent.outcomes, chosen, options, gen)
    if sent.outcomes and not any(o.ok for o in sent.outcomes):
        raise TargetUnreachableError(
            f"every request to {opened.label} failed ({len(sent.outcomes)} items); first: {sent.outcomes[0].error}"
        )
    _price(sent.outcomes, options.price_per_mtok)
    result = EvalRun(
        id=uuid.uuid4().hex,
        target=label,
        target_kind=spec.kind,
        dataset=data.dataset.ref,
        split=data.split,
        metrics=[metric.name for metric in chosen],
        config=config,
        summary=summarize(chosen, sent.outcomes, config),
        status="interrupted" if sent.interrupted else "complete",
        outcomes=sent.outcomes,
        duration_s=time.perf_counter() - started,
        created_by=getpass.getuser(),
    )
    result.count()
    if store:
        runs.save(registry.store, result)
    return result


def _price(outcomes: list[Outcome], price_per_mtok: tuple[float, float]) -> None:
    prompt_price, completion_price = price_per_mtok
    for o in outcomes:
        o.cost_usd = (o.prompt_tokens * prompt_price + o.completion_tokens * completion_price) / 1e6
