"""Guard overhead per 1 KB prompt: the default policy's input + output checks, fast path vs Presidio.

Prompts are 1 KB of prose: half carry one record of the committed PII corpus (one to three PII
values, like a support message), half none; a "dense" row packs corpus records only (about 20
values per KB); an "everyday words" row uses prose full of words that contain the heuristics'
triggers ("act", "mode", "prompt", "audience"). The answer checked on the way out is the same text.
Prints p50/p99 per prompt for each engine and their span agreement.

    python benchmarks/guard_overhead.py [--prompts 400]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from pathlib import Path

from corral.config.sections import GuardPolicy
from corral.guard.pii import find_pii
from corral.guard.policy import check_input, check_output
from corral.guard.scoring import agreement, load_corpus, spans_of

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "guard" / "corpus" / "pii.jsonl"
FILLER = (
    "Our quarterly report covers revenue, churn and the roadmap for the next release. "
    "The team shipped the new onboarding flow and fixed the slow search page. "
)
# Everyday words that contain the moderation and injection heuristics' cheapest triggers ("die" in
# "audience", "act", "mode", "prompt", "instructions"): the check must stay cheap on them too.
EVERYDAY = (
    "Act as our reviewer: the audience studied the model's output in debug mode and the prompt asked "
    "for clear instructions, so repeat the summary above the fold and forget nothing important. "
)
DEFAULT = {
    "pii": "redact",
    "secrets": "block",
    "injection": "flag",
    "moderation": "flag",
    "max_input_tokens": 8000,
}


def prompts(n: int, size: int = 1024, dense: bool = False, filler: str = FILLER) -> list[str]:
    rng = random.Random(3)
    texts = [t for t, spans in load_corpus(CORPUS) if spans]
    out = []
    for i in range(n):
        parts: list[str] = [rng.choice(texts)] if i % 2 == 0 or dense else []
        while sum(len(p) + 1 for p in parts) < size:
            parts.append(rng.choice(texts) if dense else filler)
        rng.shuffle(parts)
        out.append(" ".join(parts)[:size])
    return out


def measure(policy: GuardPolicy, items: list[str]) -> list[float]:
    times = []
    for text in items:
        start = time.perf_counter()
        result = check_input([text], policy, tokens=len(text) // 4)
        check_output(text, policy, result.pseudonyms)
        times.append((time.perf_counter() - start) * 1000)
    return times


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=400)
    args = parser.parse_args()
    items = prompts(args.prompts)
    fast = GuardPolicy(**DEFAULT)
    thorough = GuardPolicy(**DEFAULT, pii_engine="presidio")
    measure(fast, items[:20])  # warm up: compile patterns
    measure(thorough, items[:5])  # warm up: build the analyzer
    rows = []
    dense = prompts(args.prompts // 4, dense=True)
    for name, policy, batch in (
        ("fast path (default)", fast, items),
        ("presidio", thorough, items),
        ("fast path, dense PII", fast, dense),
        ("fast path, everyday words", fast, prompts(args.prompts // 4, filler=EVERYDAY)),
        ("presidio, dense PII", thorough, dense),
    ):
        times = measure(policy, batch)
        rows.append((name, statistics.median(times), pct(times, 99)))
    from corral.guard.presidio import find_pii_presidio

    agree = agreement([spans_of(find_pii(t)) for t in items], [spans_of(find_pii_presidio(t)) for t in items])
    load = os.getloadavg()
    print(f"guard overhead, default policy input + output checks, {len(items)} prompts of 1 KB")
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    print(f"{'engine':<24}{'p50 ms':>10}{'p99 ms':>10}")
    for name, p50, p99 in rows:
        print(f"{name:<24}{p50:>10.3f}{p99:>10.3f}")
    print(f"presidio / fast p50: {rows[1][1] / rows[0][1]:.1f}x; span agreement {agree:.1%}")


if __name__ == "__main__":
    main()
