"""Human scores: export a run's items for raters as CSV, import their scores as the metric human:NAME."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from corral.errors import InvalidInputError
from corral.evaluate import metrics as m
from corral.evaluate import runs
from corral.evaluate.items import Item
from corral.evaluate.runs import EvalRun
from corral.evaluate.summary import summarize
from corral.store import Store

COLUMNS = ["position", "question", "prediction", "reference", "score", "comment"]


def export_items(run: EvalRun, path: Path) -> int:
    """One row per item: position, the question, the answer, the reference, and empty score/comment."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for o in run.outcomes:
            question = Item(o.position, o.request, o.reference).prompt_text if o.request else ""
            writer.writerow([o.position, question, o.prediction or "", o.reference or "", "", ""])
    return len(run.outcomes)


def _read_scores(path: Path, positions: set[int]) -> dict[int, float]:
    if not path.is_file():
        raise InvalidInputError(f"scores file {path} does not exist")
    scores: dict[int, float] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"position", "score"} <= set(reader.fieldnames):
            raise InvalidInputError(
                f"{path}: needs the columns 'position' and 'score' (as `corral eval export` writes)"
            )
        for line, row in enumerate(reader, start=2):
            if not (row.get("score") or "").strip():
                continue  # not rated
            try:
                position, score = int(row["position"]), float(row["score"])
            except ValueError:
                raise InvalidInputError(
                    f"{path}: line {line}: position must be an integer and score a number"
                ) from None
            if position not in positions:
                raise InvalidInputError(f"{path}: line {line}: the run has no item at position {position}")
            if not 0 <= score <= 1:
                raise InvalidInputError(f"{path}: line {line}: score {score} must be in [0, 1]")
            scores[position] = score
    if not scores:
        raise InvalidInputError(f"{path}: no item has a score")
    return scores


def import_scores(store: Store, run_id: str, path: Path, name: str = "rating") -> EvalRun:
    """Store the raters' scores on the run's items and add human:NAME to its summary."""
    if not name or ":" in name or json.dumps(name) != f'"{name}"':
        raise InvalidInputError(f"invalid metric name '{name}'")
    run = runs.load(store, run_id)
    scores = _read_scores(path, {o.position for o in run.outcomes})
    metric = f"human:{name}"
    for o in run.outcomes:
        o.scores[metric] = scores.get(o.position)
    run.summary[metric] = summarize([m.score_metric(metric)], run.outcomes, run.config)[metric]
    if metric not in run.metrics:
        run.metrics = [*run.metrics, metric]
    runs.update_scores(store, run)
    return run
