"""Importing JSONL, CSV and Parquet: valid rows in, bad rows to a rejects file with line and reason."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from corral.cli.main import main
from corral.data import load_file
from corral.errors import InvalidInputError, NotFoundError

CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def write_jsonl(path: Path, lines: list[object]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def test_bad_rows_go_to_the_rejects_file_with_line_numbers_and_reasons(tmp_path):
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [CHAT, "{not json", {"messages": [{"role": "robot", "content": "x"}]}, CHAT, {"messages": []}],
    )
    result = load_file(path)
    assert result.kind == "chat" and len(result.rows) == 2 and result.total == 5
    rejects = [json.loads(line) for line in result.rejects_path.read_text().splitlines()]
    assert [r["line"] for r in rejects] == [2, 3, 5]
    assert "not valid JSON" in rejects[0]["reason"] and "role" in rejects[1]["reason"]
    assert result.summary.startswith("5 rows read, 2 accepted, 3 rejected")


def test_csv_and_parquet_rows_import_like_jsonl(tmp_path):
    with open(tmp_path / "d.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", "completion", "split"])
        writer.writerow(["2+2=", "4", "test"])
        writer.writerow(["3+3=", "6", ""])
    result = load_file(tmp_path / "d.csv")
    assert result.kind == "prompt_completion"
    assert result.rows == [
        {"prompt": "2+2=", "completion": "4", "split": "test"},
        {"prompt": "3+3=", "completion": "6"},
    ]

    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([CHAT, CHAT]), tmp_path / "d.parquet")
    assert load_file(tmp_path / "d.parquet").rows == [CHAT, CHAT]


def test_chat_rows_in_csv_hold_messages_as_json(tmp_path):
    with open(tmp_path / "c.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["messages"])
        writer.writerow([json.dumps(CHAT["messages"])])
        writer.writerow(["[broken"])
    result = load_file(tmp_path / "c.csv")
    assert result.rows == [CHAT] and result.rejected[0].line == 3


def test_wrong_schema_and_empty_file_are_clear_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="no row matches a dataset schema"):
        load_file(write_jsonl(tmp_path / "w.jsonl", [{"question": "q", "answer": "a"}]))
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(InvalidInputError, match="is empty"):
        load_file(tmp_path / "e.jsonl")
    with pytest.raises(InvalidInputError, match="every row was rejected"):
        load_file(write_jsonl(tmp_path / "k.jsonl", [CHAT]), "classification")
    with pytest.raises(NotFoundError):
        load_file(tmp_path / "missing.csv")


def test_cli_import_reports_counts_and_writes_rejects(capsys, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [CHAT, {"messages": "nope"}])
    with pytest.raises(SystemExit) as info:
        main(["datasets", "import", "faq", str(path), "--rejects", str(tmp_path / "bad.jsonl")])
    out, err = capsys.readouterr()
    assert info.value.code == 0, err
    assert "2 rows read, 1 accepted, 1 rejected" in out and "faq@1" in out
    assert json.loads((tmp_path / "bad.jsonl").read_text())["line"] == 2

    (tmp_path / "w.jsonl").write_text('{"q": 1}\n')
    with pytest.raises(SystemExit) as info:
        main(["datasets", "import", "faq", str(tmp_path / "w.jsonl")])
    _, err = capsys.readouterr()
    assert info.value.code == 2 and "no row matches a dataset schema" in err and "Traceback" not in err


def test_a_chat_row_without_an_assistant_turn_is_rejected_with_its_line(tmp_path, registry):
    unanswered = {"messages": [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hi"}]}
    result = load_file(write_jsonl(tmp_path / "d.jsonl", [CHAT, unanswered, CHAT]))
    assert len(result.rows) == 2 and result.rejected[0].line == 2
    assert "no assistant message" in result.rejected[0].reason
    with pytest.raises(InvalidInputError, match="row 2: no assistant message"):
        registry.datasets.register("faq", [CHAT, unanswered])


def test_importing_a_directory_says_it_is_a_directory(capsys, tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(InvalidInputError, match=r"data is a directory; a dataset is one file"):
        load_file(tmp_path / "data")
    with pytest.raises(SystemExit) as info:
        main(["datasets", "import", "faq", str(tmp_path / "data")])
    _, err = capsys.readouterr()
    assert info.value.code == 2 and "is a directory" in err and ".jsonl" in err
