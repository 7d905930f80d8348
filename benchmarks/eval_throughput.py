"""`corral eval run --model` (concurrent requests, engine batching) vs the evaluation loops people write by hand.

Run: `python benchmarks/eval_throughput.py` (a few minutes on 2 CPU cores). The same 256 items of the
starter corpus, answered greedily by the packaged starter model (64 new tokens at most) and scored with
exact match and ROUGE, three ways in one run:

  * corral: an engine worker serves the version, the runner sends every item with concurrency 32;
    the worker's start-up is measured separately, not inside the timing;
  * HF generate, one item at a time, then the same metric calls (the hand-written loop);
  * HF generate on left-padded batches of 32, then the same metric calls (the stronger peer).

It prints items/s for each and the ratios, plus `uptime` so the machine's load is on record.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _items(n: int) -> list[dict]:
    from corral.train import starter

    return starter.rows(starter.KNOWN_FILE)[:n]


def _score(predictions: list[str], rows: list[dict]) -> dict[str, float]:
    """The metric calls corral makes: normalised exact match and rouge-score's ROUGE-L."""
    from corral.evaluate.metrics import METRICS
    from corral.evaluate.outcome import Outcome

    outcomes = [
        Outcome(i, {}, r["messages"][-1]["content"], prediction=p)
        for i, (p, r) in enumerate(zip(predictions, rows, strict=True))
    ]
    return {
        name: METRICS[name].aggregate([METRICS[name].observe(o, {}) for o in outcomes])
        for name in ("exact_match", "rougeL")
    }


def hf_loop(rows: list[dict], batch_size: int, max_new_tokens: int) -> tuple[float, dict[str, float]]:
    from corral.train import starter
    from corral.train.exact_match import greedy_answers, load_for_generation

    model, tokenizer = load_for_generation(starter.MODEL_DIR)
    prompts = [r["messages"][:-1] for r in rows]
    start = time.perf_counter()
    answers = greedy_answers(model, tokenizer, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens)
    scores = _score(answers, rows)
    return time.perf_counter() - start, scores


def corral_run(
    rows: list[dict], concurrency: int, max_new_tokens: int
) -> tuple[float, float, dict[str, float]]:
    from corral import open_registry
    from corral.evaluate import RunOptions, TargetSpec, run
    from corral.evaluate.target import engine_worker
    from corral.train import starter

    registry = open_registry(actor="bench")
    version = starter.ensure_starter_model(registry)
    dataset = registry.datasets.register("bench", [{**r, "split": "test"} for r in rows], kind="chat")
    started = time.perf_counter()
    with engine_worker(version.ref, None) as url:
        startup = time.perf_counter() - started
        spec = TargetSpec(url=url, upstream_model=version.ref)
        options = RunOptions(concurrency=concurrency, max_tokens=max_new_tokens, progress=False)
        begin = time.perf_counter()
        result = run(spec, dataset.ref, "exact_match,rougeL", registry=registry, options=options)
        seconds = time.perf_counter() - begin
    assert result.error_count == 0, result.outcomes[0].error
    return startup, seconds, {k: result.summary[k]["value"] for k in ("exact_match", "rougeL")}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--one-at-a-time", type=int, default=64, help="items for the hand loop (it is slow)")
    args = parser.parse_args()
    rows = _items(args.items)
    with tempfile.TemporaryDirectory(prefix="corral-bench-eval-") as home:
        os.environ["CORRAL_HOME"] = home
        startup, corral_s, corral_scores = corral_run(rows, args.concurrency, args.max_new_tokens)
    single_rows = rows[: args.one_at_a_time]
    single_s, single_scores = hf_loop(single_rows, 1, args.max_new_tokens)
    padded_s, padded_scores = hf_loop(rows, 32, args.max_new_tokens)
    table = [
        ("corral eval run --model", len(rows) / corral_s, corral_scores),
        (
            f"HF generate, one at a time ({len(single_rows)} items)",
            len(single_rows) / single_s,
            single_scores,
        ),
        ("HF generate, padded batches of 32", len(rows) / padded_s, padded_scores),
    ]
    print(f"{'loop':<44}{'items/s':>10}{'corral is':>11}{'exact match':>13}{'ROUGE-L':>9}")
    corral_rate = table[0][1]
    for name, rate, scores in table:
        print(
            f"{name:<44}{rate:>10.2f}{corral_rate / rate:>10.2f}x{scores['exact_match']:>13.3f}{scores['rougeL']:>9.3f}"
        )
    print(f"engine worker start-up (not in the timing): {startup:.1f} s")
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
