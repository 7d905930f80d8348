#!/usr/bin/env python
"""Regenerate the starter corpus, tokenizer and model, and write them into the package.

    python scripts/make_starter_model.py            # corpus + tokenizer + `corral train` + eval
    python scripts/make_starter_model.py --keep-corpus

Trains in a throwaway CORRAL_HOME, so your own registry is untouched.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keep-corpus", action="store_true", help="reuse the corpus files as they are")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="corral-starter-home-") as home:
        os.environ["CORRAL_HOME"] = home
        from rich.console import Console

        from corral.data.starter.generate import generate
        from corral.registry import open_registry
        from corral.train import starter
        from corral.train.exact_match import exact_match

        console = Console(stderr=True)
        if not args.keep_corpus:
            generate()
        starter.train_tokenizer()
        registry = open_registry(actor="starter-build")
        version = starter.build_starter_model(registry, console)
        model_dir = registry.models.materialize(version)
        known = exact_match(model_dir, starter.rows(starter.KNOWN_FILE, "test"))
        new = exact_match(model_dir, starter.rows(starter.NEW_FILE, "test"))
        metrics = {
            "exact_match_known_test": round(known.score, 4),
            "exact_match_new_test": round(new.score, 4),
        }
        out = starter.export(registry, version, metrics=metrics)
        size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
        console.print(f"wrote {out} ({size:.1f} MB): {metrics}")
        return 0 if known.score >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
