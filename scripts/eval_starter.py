#!/usr/bin/env python
"""Greedy exact match of the packaged starter model on the corpus' test splits.

    python scripts/eval_starter.py              # known intents (must be >= 95%) and held-back intents
    python scripts/eval_starter.py --misses 5   # also show a few wrong answers

Exits 1 when the known intents score below 95%, so it can gate a rebuilt model.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

THRESHOLD = 0.95


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--misses", type=int, default=0, help="print up to this many wrong answers per set")
    parser.add_argument("--split", default="test", help="which split of each corpus file (default: test)")
    args = parser.parse_args()

    from corral.train import starter
    from corral.train.exact_match import exact_match

    if not (starter.MODEL_DIR / "model.safetensors").is_file():
        print(
            f"no packaged starter model in {starter.MODEL_DIR}; run scripts/make_starter_model.py",
            file=sys.stderr,
        )
        return 2
    print(f"starter model: {starter.MODEL_DIR}  (greedy, split={args.split})")
    print(f"{'set':<26}{'rows':>6}{'exact match':>14}")
    known_score = 0.0
    for label, path in (("known intents", starter.KNOWN_FILE), ("held-back (new) intents", starter.NEW_FILE)):
        result = exact_match(starter.MODEL_DIR, starter.rows(path, args.split))
        print(f"{label:<26}{result.total:>6}{result.score:>13.1%}")
        for question, expected, got in result.misses[: args.misses]:
            print(f"    Q: {question}\n    expected: {expected}\n    got:      {got}")
        if path == starter.KNOWN_FILE:
            known_score = result.score
    ok = known_score >= THRESHOLD
    print(f"known intents {'pass' if ok else 'FAIL'}: {known_score:.1%} (needs >= {THRESHOLD:.0%})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
