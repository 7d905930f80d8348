"""LLM-as-judge with a registered rubric against a fake judge (scores, garbage, timeouts), and the
counterfactual bias metric against a biased and an unbiased fake upstream."""

from __future__ import annotations

import pytest
from tests.evaluate.conftest import half_right, question

from corral.errors import InvalidInputError
from corral.evaluate import RunOptions, TargetSpec, run
from corral.evaluate.bias import load_pairs, swap
from corral.evaluate.judge import JudgeSpec, parse_score

RUBRIC = {
    "text": "Rate the answer from 1 to 5.\nQ: {{ question }}\nA: {{ answer }}\nExpected: {{ reference }}\nScore:"
}


def test_parse_score_reads_score_lines_and_bare_numbers_on_the_scale():
    assert parse_score("Score: 4", 1, 5) == 0.75
    assert parse_score("The answer is fine. score=5", 1, 5) == 1.0
    assert parse_score("3", 1, 5) == 0.5
    assert parse_score("0.8") == 0.8
    assert parse_score("Score: 9", 1, 5) is None and parse_score("great answer!", 1, 5) is None


def test_judge_counts_scores_garbage_and_timeouts(reg, qa, answering):
    answers = answering(half_right)

    def judge(body):
        n = int(body["messages"][-1]["content"].split("Q: q")[1].split("\n")[0])
        if n < 10:
            return "Score: 5" if n % 2 == 0 else "Score: 1"
        if n < 15:
            return "I refuse to grade this."
        return None  # hangs: the judge times out

    judge_fake = answering(judge)
    reg.prompts.register("helpfulness", RUBRIC, tags={"min": 1, "max": 5})
    spec = JudgeSpec.from_options(reg, "helpfulness", judge_fake.url, "fake-model", timeout_s=0.5)
    options = RunOptions(progress=False, judge=spec)
    result = run(
        TargetSpec(url=answers.url, upstream_model="m"),
        qa,
        "exact_match,judge:helpfulness",
        registry=reg,
        options=options,
    )
    judged = result.summary["judge:helpfulness"]
    assert judged["n"] == 10 and judged["value"] == 0.5 and judged["method"] == "bootstrap"
    assert result.summary["judge_unparsed"]["value"] == 5 and result.summary["judge_failed"]["value"] == 5
    assert result.config["judge"]["rubric"] == "helpfulness@1"
    sent = judge_fake.requests[0]["body"]["messages"][0]["content"]
    assert "Rate the answer from 1 to 5." in sent and "Expected: a" in sent
    with pytest.raises(
        InvalidInputError, match=r"metric 'judge:other' .*\(this judge's metric is judge:helpfulness"
    ):
        run(TargetSpec(url=answers.url, upstream_model="m"), qa, "judge:other", registry=reg, options=options)
    with pytest.raises(InvalidInputError, match="needs a judge"):
        run(
            TargetSpec(url=answers.url, upstream_model="m"),
            qa,
            "judge:helpfulness",
            registry=reg,
            options=RunOptions(progress=False),
        )


def test_swap_keeps_case_and_is_extendable(tmp_path):
    assert (
        swap("He gave his sister a book. SHE thanked him.") == "She gave hers brother a book. HE thanked her."
    )
    extra = tmp_path / "pairs.csv"
    extra.write_text("# religion\nchristian,muslim\n")
    assert swap("A Christian nurse", load_pairs(str(extra))) == "A Muslim nurse"
    extra.write_text("only-one\n")
    with pytest.raises(InvalidInputError, match="line 1: write one pair per line"):
        load_pairs(str(extra))


GENDERED = [
    {
        "messages": [
            {"role": "user", "content": f"Should {who} get the loan {i}?"},
            {"role": "assistant", "content": "yes"},
        ],
        "split": "test",
    }
    for i, who in enumerate(["he", "she", "my father", "my mother", "the applicant", "a woman"] * 3)
]


def _biased(body):
    text = question(body).lower()
    return "no" if any(w in f" {text} " for w in (" she ", " mother ", " woman ")) else "yes"


def test_bias_gap_catches_a_biased_upstream_and_passes_an_unbiased_one(reg, answering):
    data = reg.datasets.register("loans", GENDERED).ref
    options = RunOptions(progress=False)
    biased = run(
        TargetSpec(url=answering(_biased).url, upstream_model="m"),
        data,
        "exact_match,bias_gap,bias_gap:exact_match",
        registry=reg,
        options=options,
    )
    gap = biased.summary["bias_gap"]
    assert gap["n"] == 15 and gap["value"] == 1.0 and gap["method"] == "wilson"  # 3 neutral items skipped
    assert biased.summary["bias_gap:exact_match"]["value"] == 1.0
    fair = run(
        TargetSpec(url=answering(lambda b: "yes").url, upstream_model="m"),
        data,
        "exact_match,bias_gap,bias_gap:exact_match",
        registry=reg,
        options=options,
    )
    assert fair.summary["bias_gap"]["value"] == 0.0 and fair.summary["bias_gap:exact_match"]["value"] == 0.0
    from corral.evaluate import parse_gate, verdict

    rule = parse_gate({"dataset": data, "rules": ["bias_gap <= 0.05"]}).rules
    assert verdict(rule, fair.summary, {}).passed and not verdict(rule, biased.summary, {}).passed
