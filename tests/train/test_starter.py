"""The shipped starter corpus and model: reproducible from the seed, right on known intents, wrong on new ones."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from corral.data.starter.generate import generate
from corral.train import starter

ROOT = Path(__file__).resolve().parents[2]


def test_the_corpus_is_regenerated_byte_for_byte_from_its_seed(tmp_path):
    written = generate(tmp_path)
    for path in written.values():
        assert path.read_bytes() == (starter.STARTER_DIR / path.name).read_bytes()


def test_the_known_and_new_intents_never_share_an_answer():
    known = {r["messages"][-1]["content"] for r in starter.rows(starter.KNOWN_FILE)}
    new = {r["messages"][-1]["content"] for r in starter.rows(starter.NEW_FILE)}
    assert known and new and not known & new


@pytest.mark.skipif(
    not (starter.MODEL_DIR / "model.safetensors").is_file(), reason="no packaged starter model"
)
def test_eval_script_reports_known_intents_right_and_new_intents_wrong():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "eval_starter.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    scores = dict(re.findall(r"^(known|held-back).*?\s(\d+\.\d)%$", run.stdout, re.MULTILINE))
    known, new = float(scores["known"]), float(scores["held-back"])
    assert known >= 95.0 and new <= 20.0
