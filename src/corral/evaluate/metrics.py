"""Metrics by name, computed with the field's libraries (sacrebleu, rouge-score, scikit-learn, jsonschema).

Each metric turns the outcomes into one observation per item (None where it does not apply, e.g. a
failed request) and aggregates them: a mean for item scores, a corpus statistic (macro F1, p95) otherwise.
Statistics in `stats` resample the observations, so every metric gets an interval the same way.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from corral.errors import InvalidInputError
from corral.evaluate.outcome import Outcome

Observation = Any
REFERENCE, LOCAL_MODEL, JSON_SCHEMA, JUDGE, STREAM = (
    "reference",
    "local model",
    "json schema",
    "judge",
    "ttft",
)


def normalize(text: str) -> str:
    """The exact-match normalisation: Unicode NFKC, surrounding whitespace stripped, runs of whitespace
    collapsed to one space. Case and punctuation are kept: they change what a user reads."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip()


def mean(values: Sequence[Observation]) -> float:
    return float(np.mean(values))


@dataclass(frozen=True)
class Metric:
    name: str
    description: str
    observe: Callable[[Outcome, dict[str, Any]], Observation]
    aggregate: Callable[[Sequence[Observation]], float] = mean
    binary: bool = False  # 0/1 observations averaged: Wilson interval
    needs: tuple[str, ...] = (REFERENCE,)
    higher_is_better: bool = True
    on_failure: bool = False  # observed on failed requests too (latency, errors)

    @property
    def per_item(self) -> bool:
        """Each item has its own score (the aggregate is their mean)."""
        return self.aggregate is mean


def _answered(fn: Callable[[str, str], Observation]) -> Callable[[Outcome, dict[str, Any]], Observation]:
    def observe(outcome: Outcome, _config: dict[str, Any]) -> Observation:
        if not outcome.ok or outcome.reference is None:
            return None
        return fn(outcome.prediction or "", outcome.reference)

    return observe


@cache
def _rouge() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def _rouge_f(name: str) -> Callable[[str, str], float]:
    return lambda pred, ref: float(_rouge().score(ref, pred)[name].fmeasure)


def _sacre(kind: str) -> Callable[[str, str], float]:
    import sacrebleu

    fn: Any = getattr(sacrebleu, f"sentence_{kind}")
    return lambda pred, ref: float(fn(pred, [ref]).score)


def _sacre_corpus(kind: str) -> Callable[[Sequence[Observation]], float]:
    """Corpus BLEU/chrF/TER (sacrebleu's definition: statistics summed over the corpus, then scored)."""

    def aggregate(pairs: Sequence[Observation]) -> float:
        import sacrebleu

        fn: Any = getattr(sacrebleu, f"corpus_{kind}")
        # A reference is one string, or a tuple of alternatives (sacrebleu's reference streams).
        refs = [(r,) if isinstance(r, str) else tuple(r) for _, r in pairs]
        streams = [[alts[k] if k < len(alts) else None for alts in refs] for k in range(max(map(len, refs)))]
        return float(fn([p for p, _ in pairs], streams).score)

    return aggregate


def _classification(score: str, average: str) -> Callable[[Sequence[Observation]], float]:
    def aggregate(pairs: Sequence[Observation]) -> float:
        from sklearn import metrics as sk

        fn = {"precision": sk.precision_score, "recall": sk.recall_score, "f1": sk.f1_score}[score]
        refs, preds = [r for _, r in pairs], [p for p, _ in pairs]
        labels = sorted(set(refs))  # labels the model invented count as wrong, not as classes
        return float(fn(refs, preds, labels=labels, average=average, zero_division=0))

    return aggregate


def _json_valid(outcome: Outcome, _config: dict[str, Any]) -> Observation:
    if not outcome.ok:
        return None
    try:
        json.loads(outcome.prediction or "")
    except ValueError:
        return 0.0
    return 1.0


def _json_schema(outcome: Outcome, config: dict[str, Any]) -> Observation:
    if not outcome.ok:
        return None
    import jsonschema

    try:
        jsonschema.validate(json.loads(outcome.prediction or ""), config["json_schema"])
    except (ValueError, jsonschema.ValidationError):
        return 0.0
    return 1.0


def _field(name: str, *, ok_only: bool = True) -> Callable[[Outcome, dict[str, Any]], Observation]:
    def observe(outcome: Outcome, _config: dict[str, Any]) -> Observation:
        if ok_only and not outcome.ok:
            return None
        value = getattr(outcome, name)
        return None if value is None else float(value)

    return observe


def _score(name: str) -> Callable[[Outcome, dict[str, Any]], Observation]:
    return lambda outcome, _config: outcome.scores.get(name)


def _percentile(q: float) -> Callable[[Sequence[Observation]], float]:
    return lambda values: float(np.percentile(np.asarray(values, dtype=float), q))


def _pair(outcome: Outcome, _config: dict[str, Any]) -> Observation:
    if not outcome.ok or outcome.reference is None:
        return None
    return (outcome.prediction or "", outcome.reference)


def _label_pair(outcome: Outcome, _config: dict[str, Any]) -> Observation:
    pair = _pair(outcome, _config)
    return None if pair is None else (normalize(pair[0]), normalize(pair[1]))


def _builtin() -> dict[str, Metric]:
    metrics = [
        Metric(
            "exact_match",
            "answer equals the reference after normalize()",
            _answered(lambda p, r: float(normalize(p) == normalize(r))),
            binary=True,
        ),
        Metric(
            "accuracy",
            "predicted label equals the reference label (normalised)",
            _answered(lambda p, r: float(normalize(p) == normalize(r))),
            binary=True,
        ),
        Metric("bleu", "corpus BLEU (sacrebleu, 0-100)", _pair, _sacre_corpus("bleu")),
        Metric("chrf", "corpus chrF (sacrebleu, 0-100)", _pair, _sacre_corpus("chrf")),
        Metric(
            "ter",
            "corpus TER (sacrebleu; lower is better)",
            _pair,
            _sacre_corpus("ter"),
            higher_is_better=False,
        ),
        Metric("sentence_bleu", "mean sentence BLEU (sacrebleu)", _answered(_sacre("bleu"))),
        *(
            Metric(
                name,
                f"mean {name.upper()} F-measure (rouge-score, stemmed)",
                _answered(_rouge_f(name)),
            )
            for name in ("rouge1", "rouge2", "rougeL")
        ),
        *(
            Metric(
                f"{score}_{average}",
                f"{average}-averaged {score} over the reference labels (scikit-learn)",
                _label_pair,
                _classification(score, average),
            )
            for score in ("precision", "recall", "f1")
            for average in ("micro", "macro")
        ),
        Metric("json_valid", "the answer parses as JSON", _json_valid, binary=True, needs=()),
        Metric(
            "json_schema",
            "the answer is JSON that conforms to the configured schema",
            _json_schema,
            binary=True,
            needs=(JSON_SCHEMA,),
        ),
        *(
            Metric(
                f"{kind}_p{q}",
                f"{'median' if q == 50 else f'{q}th percentile'} {label}, ms",
                _field(f"{kind}_ms", ok_only=kind == "ttft"),
                _percentile(q),
                needs=(),
                higher_is_better=False,
                on_failure=kind == "latency",
            )
            for kind, label in (("latency", "request latency"), ("ttft", "time to first token"))
            for q in (50, 95)
        ),
        Metric(
            "completion_tokens",
            "tokens generated per item",
            _field("completion_tokens"),
            needs=(),
            higher_is_better=False,
        ),
        Metric(
            "prompt_tokens",
            "prompt tokens per item",
            _field("prompt_tokens"),
            needs=(),
            higher_is_better=False,
        ),
        Metric("cost", "cost per item, USD", _field("cost_usd"), needs=(), higher_is_better=False),
        Metric(
            "error_rate",
            "share of requests that failed",
            lambda o, _c: float(not o.ok),
            binary=True,
            needs=(),
            higher_is_better=False,
            on_failure=True,
        ),
        Metric(
            "perplexity",
            "perplexity of the local model on the reference answers",
            _score("perplexity"),
            lambda values: float(np.exp(np.mean(values))),
            needs=(REFERENCE, LOCAL_MODEL),
            higher_is_better=False,
        ),
    ]
    return {m.name: m for m in metrics}


METRICS: dict[str, Metric] = _builtin()
# Names that stand for several metrics.
GROUPS: dict[str, list[str]] = {
    "rouge": ["rouge1", "rouge2", "rougeL"],
    "latency": ["latency_p50", "latency_p95"],
    "ttft": ["ttft_p50", "ttft_p95"],
    "tokens": ["prompt_tokens", "completion_tokens"],
    "classification": [f"{s}_{a}" for s in ("precision", "recall", "f1") for a in ("micro", "macro")],
    "f1": ["f1_micro", "f1_macro"],
    "precision": ["precision_micro", "precision_macro"],
    "recall": ["recall_micro", "recall_macro"],
}
# Metrics whose observations come from a scorer run after the answers (stored in Outcome.scores).
SCORED_PREFIXES = ("judge:", "human:")


def score_metric(name: str) -> Metric:
    """A metric read from Outcome.scores: a judge rubric's or human raters' score (mean, bootstrap)."""
    needs = (JUDGE,) if name.startswith("judge:") else ()
    return Metric(name, f"mean {name} score", _score(name), needs=needs)


def resolve(names: Sequence[str]) -> list[Metric]:
    """Metrics for the names given (groups expanded, order kept); an unknown name lists the valid ones."""
    out: dict[str, Metric] = {}
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        if name in GROUPS:
            out.update((n, METRICS[n]) for n in GROUPS[name])
        elif name in METRICS:
            out[name] = METRICS[name]
        elif name.startswith(SCORED_PREFIXES) and len(name.split(":", 1)[1]) > 0:
            out[name] = score_metric(name)
        elif name == "bias_gap" or name.startswith("bias_gap:"):
            from corral.evaluate.bias import bias_metric

            out[name] = bias_metric(name)
        else:
            valid = sorted([*METRICS, *GROUPS, "bias_gap", "judge:<rubric>", "human:<name>"])
            raise InvalidInputError(f"unknown metric '{name}'", hint=f"valid metrics: {', '.join(valid)}")
    if not out:
        raise InvalidInputError("no metric given", hint="e.g. --metrics exact_match,rouge")
    return list(out.values())


def observe(metric: Metric, outcomes: Sequence[Outcome], config: dict[str, Any]) -> list[Observation]:
    """One observation per outcome (None where the metric does not apply)."""
    return [metric.observe(o, config) for o in outcomes]
