"""Drift: known shifts are found, no shift is not, and false alarms stay near alpha."""

from __future__ import annotations

import random

import numpy as np
import pytest

from corral.monitor.drift import DriftPolicy, FeatureDrift, build_report, decide, mmd_test, numeric_drift, psi
from corral.monitor.windows import TextEmbedder

ALPHA = 0.05


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(0)
    ref = rng.lognormal(4, 0.5, 3000)
    assert psi(ref, rng.lognormal(4, 0.5, 3000)) < 0.02
    assert psi(ref, rng.lognormal(4.6, 0.5, 3000)) > 0.5


def test_ks_false_alarm_rate_over_repeated_no_shift_samples_is_near_alpha():
    rng = np.random.default_rng(1)
    alarms = sum(
        numeric_drift("x", rng.normal(size=200), rng.normal(size=200)).p_value < ALPHA for _ in range(300)
    )
    assert 0.02 <= alarms / 300 <= 0.09


def test_longer_prompts_drift_and_the_same_lengths_do_not():
    rng = np.random.default_rng(2)
    ref = rng.poisson(40, 1000).astype(float)
    longer = build_report({"prompt_tokens": (ref, rng.poisson(60, 1000).astype(float))}, None)
    same = build_report({"prompt_tokens": (ref, rng.poisson(40, 1000).astype(float))}, None)
    assert longer.drifted and longer.drifted_features == ["prompt_tokens"]
    assert not same.drifted
    assert "text drift unavailable" in same.notes[0]


def test_decision_needs_significance_after_bonferroni_and_a_psi_worth_acting_on():
    def f(name: str, p: float, effect: float) -> FeatureDrift:
        return FeatureDrift(name, "numeric", "ks", 0.1, p, effect, 500, 500)

    drifted, feats = decide([f("a", 0.03, 0.5), f("b", 0.5, 0.0)], None, DriftPolicy(alpha=0.05))
    assert not drifted  # 0.03 is not under 0.05 / 2
    drifted, feats = decide([f("a", 0.001, 0.05), f("b", 0.5, 0.0)], None, DriftPolicy())
    assert not drifted  # significant but a negligible PSI
    drifted, feats = decide([f("a", 0.001, 0.3)], None, DriftPolicy())
    assert drifted and feats[0].drifted
    drifted, _ = decide([], {"share": 0.3}, DriftPolicy(new_topic_share=0.1))
    assert drifted


def test_mmd_false_alarm_rate_stays_near_alpha():
    rng = np.random.default_rng(3)
    alarms = 0
    for i in range(60):
        _, p = mmd_test(rng.normal(size=(40, 8)), rng.normal(size=(40, 8)), permutations=99, seed=i)
        alarms += p < ALPHA
    assert alarms / 60 <= 0.12
    _, p = mmd_test(rng.normal(size=(40, 8)), rng.normal(0.6, 1, size=(40, 8)), permutations=99)
    assert p < ALPHA


# -- text, with the real sentence-embedding model ----------------------------------------------------

INTENTS = {
    "billing": ["update my billing address", "why was I charged twice", "send me an invoice", "change my credit card"],
    "shipping": ["where is my package", "how long does shipping take", "change my delivery address",
                 "my parcel arrived damaged"],
    "account": ["reset my password", "change the email on my account", "delete my account", "my account is locked"],
}  # fmt: skip
NEW_INTENT = ["what is the weather in Paris tomorrow", "will it rain this weekend", "forecast for Berlin on Monday",
              "is it going to snow tonight"]  # fmt: skip
OPENERS = ["Hi, ", "Hello, ", "Please, ", "Quick question: ", "", "Hey there, "]
ENDINGS = ["?", " please.", ", thanks!", " asap.", ".", " - can you help?"]
ANSWERS_EN = ["Sure, I can help with that.", "Here is what you need to do.", "Thanks, let me check that for you.",
              "You can do that from your settings page.", "I have sent you the details by email."]  # fmt: skip
ANSWERS_FR = ["Bien sûr, je peux vous aider.", "Voici ce que vous devez faire.", "Merci, je vérifie pour vous.",
              "Vous pouvez le faire depuis vos paramètres.", "Je vous ai envoyé les détails par e-mail."]  # fmt: skip


def _prompts(rng: random.Random, n: int, intents: list[str]) -> list[str]:
    return [f"{rng.choice(OPENERS)}{rng.choice(intents)}{rng.choice(ENDINGS)}" for _ in range(n)]


@pytest.fixture(scope="module")
def embed():  # type: ignore[no-untyped-def]
    if not TextEmbedder.available():
        pytest.skip("the embeddings extra is not installed")
    model = TextEmbedder()

    def run(texts: list[str]) -> np.ndarray:
        return model.embed(texts)  # keyed by text: repeats are embedded once

    return run


def _text_report(embed, ref_p, cur_p, ref_a, cur_a):  # type: ignore[no-untyped-def]
    text = {"prompt": (embed(ref_p), embed(cur_p), cur_p), "output": (embed(ref_a), embed(cur_a), cur_a)}
    return build_report({}, text, DriftPolicy(permutations=99))


@pytest.mark.slow
def test_a_new_intent_is_found_with_examples_and_no_shift_is_not(embed):
    rng = random.Random(4)
    known = [p for ps in INTENTS.values() for p in ps]
    ref = _prompts(rng, 120, known)
    answers = [rng.choice(ANSWERS_EN) for _ in range(120)]
    same = _text_report(
        embed, ref, _prompts(rng, 100, known), answers, [rng.choice(ANSWERS_EN) for _ in range(100)]
    )
    assert not same.drifted, same.to_json()
    assert same.new_topics is not None and same.new_topics["share"] < 0.1
    shifted = _prompts(rng, 70, known) + _prompts(rng, 30, NEW_INTENT)
    new = _text_report(embed, ref, shifted, answers, [rng.choice(ANSWERS_EN) for _ in range(100)])
    assert new.drifted and "prompt" in new.drifted_features
    assert new.new_topics is not None and new.new_topics["share"] >= 0.2
    assert all(
        any(w in ex for w in ("weather", "rain", "forecast", "snow")) for ex in new.new_topics["examples"]
    )


@pytest.mark.slow
def test_outputs_changing_language_is_output_drift(embed):
    rng = random.Random(5)
    known = [p for ps in INTENTS.values() for p in ps]
    ref_p, cur_p = _prompts(rng, 100, known), _prompts(rng, 100, known)
    report = _text_report(
        embed,
        ref_p,
        cur_p,
        [rng.choice(ANSWERS_EN) for _ in range(100)],
        [rng.choice(ANSWERS_FR) for _ in range(100)],
    )
    assert report.drifted_features == ["output"]


def test_text_false_alarm_rate_over_repeated_no_shift_samples_stays_near_alpha(embed):
    rng = random.Random(6)
    known = [p for ps in INTENTS.values() for p in ps]
    pool = _prompts(rng, 240, known)
    vectors = embed(pool)
    alarms, repeats = 0, 30
    for i in range(repeats):
        idx = np.random.default_rng(i).permutation(len(pool))
        _, p = mmd_test(vectors[idx[:60]], vectors[idx[60:120]], permutations=99, seed=i)
        alarms += p < ALPHA
    assert alarms / repeats <= 0.15
