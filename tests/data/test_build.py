"""Dataset builds: cleaning, dedupe, redaction and hash splits, step by step and through the CLI."""

from __future__ import annotations

import json

import pytest

from corral.cli.main import main
from corral.data import BuildOptions, build_rows, clean_rows, dedupe_rows, normalize_whitespace
from corral.errors import InvalidInputError


def chat(user: str, answer: str = "ok") -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def test_whitespace_is_normalized_and_empty_or_long_rows_dropped():
    assert normalize_whitespace("  a \t b  \n\n\n\n c  ") == "a b\n\nc"
    rows = [chat("  hi  "), chat("   "), chat("x" * 50), chat("fine")]
    kept, report = clean_rows(rows, "chat", max_chars=20)
    assert [r["messages"][0]["content"] for r in kept] == ["hi", "fine"]
    assert report == {"empty": 1, "too_short": 0, "too_long": 1}


def test_exact_and_near_duplicates_are_removed_keeping_the_first():
    base = "where is my order, it was placed last week and has not arrived yet at my address"
    rows = [chat(base), chat(base), chat(base + " please"), chat("how do I reset my password")]
    kept, report = dedupe_rows(rows, "chat", near=0.8)
    assert kept == [rows[0], rows[3]] and report == {"exact": 1, "near": 1}
    kept, report = dedupe_rows(rows, "chat", near=None)
    assert len(kept) == 3 and report == {"exact": 1, "near": 0}


def test_splits_are_deterministic_and_keep_one_prompt_in_one_split():
    rows = [chat(f"question {i}", f"answer {i % 3}") for i in range(300)]
    first = build_rows(rows, BuildOptions(dedupe=False))
    again = build_rows(list(reversed(rows)), BuildOptions(dedupe=False))
    assert {json.dumps(r, sort_keys=True) for r in first.rows} == {
        json.dumps(r, sort_keys=True) for r in again.rows
    }
    counts = {s: sum(r["split"] == s for r in first.rows) for s in ("train", "validation", "test")}
    assert 200 < counts["train"] < 280 and counts["validation"] > 10 and counts["test"] > 10
    same_prompt = build_rows([chat("same", "a"), chat("same", "b")], BuildOptions(dedupe=False)).rows
    assert same_prompt[0]["split"] == same_prompt[1]["split"]


def test_build_redacts_pii_then_dedupes_what_became_identical():
    rows = [chat("mail me at a@x.io"), chat("mail me at b@y.io"), chat("call 555-123-4567", "sure")]
    result = build_rows(rows, BuildOptions())
    assert [r["messages"][0]["content"] for r in result.rows] == ["mail me at [EMAIL]", "call [PHONE]"]
    assert result.report["redacted"] == {"email": 2, "phone": 1}
    assert result.report["duplicates"]["exact"] == 1


def test_bad_build_options_are_clear_errors():
    with pytest.raises(InvalidInputError, match="add up to 100"):
        build_rows([chat("a")], BuildOptions(split_ratios={"train": 50, "test": 10}))
    with pytest.raises(InvalidInputError, match="removed every row"):
        build_rows([chat("a")], BuildOptions(min_chars=100))


def test_cli_build_registers_a_version_with_its_lineage(capsys, tmp_path):
    path = tmp_path / "raw.jsonl"
    path.write_text("".join(json.dumps(chat(f"q{i} from x{i}@mail.com", "a")) + "\n" for i in range(20)))

    def run(*args: str) -> str:
        with pytest.raises(SystemExit) as info:
            main(list(args))
        out, err = capsys.readouterr()
        assert info.value.code == 0, err
        return out

    run("datasets", "import", "raw", str(path))
    out = run("datasets", "build", "clean", "--from", "raw@1", "--split", "70/15/15", "--json")
    version = json.loads(out)
    assert version["name"] == "clean" and version["row_count"] == 20
    assert version["lineage"]["parent"] == "raw@1"
    assert version["lineage"]["report"]["redacted"] == {"email": 20}
    assert version["lineage"]["build"]["split_ratios"] == {"train": 70, "validation": 15, "test": 15}


@pytest.mark.parametrize(
    ("args", "needle", "code"),
    [
        (["datasets", "build", "x", "--from", "nosuch@1"], "dataset 'nosuch' does not exist", 3),
        (
            ["datasets", "build", "x", "--from", "missing.jsonl"],
            "'missing.jsonl' is neither a file nor a dataset",
            3,
        ),
        (["datasets", "build", "x", "--from", "data/missing.csv"], "is neither a file nor a dataset", 3),
        (["datasets", "build", "x", "--from", "FILE", "--split", "1/2"], "must be three numbers", 2),
        (["datasets", "build", "x", "--from", "FILE", "--split", "50/50/50"], "add up to 100", 2),
        (["datasets", "build", "x", "--from", "FILE", "--near", "3"], "threshold must be in (0, 1]", 2),
        (["datasets", "build", "x", "--from", "FILE", "--min-chars", "999"], "removed every row", 2),
        (["datasets", "build", "x", "--from", "WRONG"], "no row matches a dataset schema", 2),
        (["datasets", "build", "x", "--from", "EMPTY"], "is empty", 2),
        (["datasets", "from-traces", "x", "--min-score", "3"], "min_score 3.0 must be in [0, 1]", 2),
        (
            ["datasets", "from-traces", "x", "--since", "2026-11-05", "--until", "2026-11-01"],
            "is not before",
            2,
        ),
        (["datasets", "from-traces", "x", "--model", "ghost"], "model 'ghost' does not exist", 3),
        (["datasets", "from-traces", "x"], "no trace matches any query", 2),
    ],
)
def test_cli_build_and_from_traces_bad_input_is_one_line_never_a_traceback(
    capsys, tmp_path, args, needle, code
):
    files = {"FILE": "good.jsonl", "WRONG": "wrong.jsonl", "EMPTY": "empty.jsonl"}
    (tmp_path / "good.jsonl").write_text(json.dumps(chat("hello there")) + "\n")
    (tmp_path / "wrong.jsonl").write_text('{"question": "q"}\n')
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path / files[a]) if a in files else a for a in args])
    out, err = capsys.readouterr()
    assert info.value.code == code, out + err
    assert needle in err and "Traceback" not in out + err
    assert len(err.strip().splitlines()) == 1, err


def test_cli_a_badly_typed_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["datasets", "from-traces", "x", "--since", "yesterday"])
    _, err = capsys.readouterr()
    assert info.value.code == 2 and "internal error" not in err
