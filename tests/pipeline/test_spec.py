"""Pipeline files are checked completely when loaded; errors name the file and the field. Cron syntax."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from corral.errors import ConfigError, CorralError, InvalidInputError, NotFoundError
from corral.pipeline import load_pipeline, parse_pipeline
from corral.pipeline.cron import parse_cron
from corral.pipeline.spec import gate_paths

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = {
    "name": "refresh",
    "model": "starter",
    "deployment": "support",
    "dataset": {"name": "support-refresh"},
    "evaluate": {"gates": ["gate.yaml"]},
}


def test_a_minimal_pipeline_takes_the_documented_defaults():
    spec = parse_pipeline(MINIMAL)
    assert spec.collect.window == "7d" and spec.collect.below == 0.5 and spec.collect.use_corrections
    assert spec.dataset.replay == 0.5 and spec.train.nproc == 1 and spec.schedule is None


def test_the_shipped_example_loads():
    spec = load_pipeline(ROOT / "examples" / "refresh.yaml")
    assert spec.model == "starter" and spec.schedule and spec.triggers.alerts
    assert all(path.is_file() for path in gate_paths(spec, ROOT / "examples" / "refresh.yaml"))


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"collect": {"window": "a week"}}, "'collect.window': 'a week' is not a span"),
        ({"collect": {"below": 2}}, "'collect.below'"),
        ({"dataset": {"name": "x", "replay": 1.0}}, "'dataset.replay'"),
        ({"dataset": {"name": "x", "split": "80/10"}}, "'dataset.split'"),
        ({"dataset": {}}, "missing key 'dataset.name'"),
        ({"evaluate": {"gates": []}}, "'evaluate.gates'"),
        ({"schedule": "every day"}, "'schedule': cron 'every day' has 2 fields, not 5"),
        ({"schedule": "61 * * * *"}, "cron minute '61' is outside 0-59"),
        ({"train": {"nproc": 0}}, "'train.nproc'"),
        ({"train": {"lr": "fast"}}, "'train.lr'"),
        ({"train": {"max_steps": 0}}, "'train.max_steps'"),
        ({"train": {"base": "other@1"}}, "'train.base' is set by the pipeline"),
        ({"triggers": {"alert": ["x"]}}, "unknown key 'triggers.alert'"),
        ({"retries": 3}, "unknown key 'retries'"),
        ({"canary": {"steps": [50, 5]}}, "'canary': canary field 'steps'"),
        ({"canary": {"margins": {"feedback": 2}}}, "'canary': canary field 'margins.feedback'"),
    ],
)
def test_a_bad_field_is_an_error_naming_the_file_and_the_field(change, named):
    with pytest.raises(ConfigError) as info:
        parse_pipeline({**MINIMAL, **change}, "refresh.yaml")
    assert str(info.value).startswith("refresh.yaml: ") and named in str(info.value)


def test_a_file_that_is_not_there_or_not_yaml_is_a_clear_error(tmp_path):
    with pytest.raises(NotFoundError, match="pipeline file .*nope.yaml does not exist"):
        load_pipeline(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: line 2.*malformed YAML"):
        load_pipeline(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="a pipeline file is a mapping"):
        load_pipeline(bad)


@pytest.mark.parametrize(
    ("expression", "after", "fires"),
    [
        ("0 3 * * 1", datetime(2026, 12, 3, 15, 58, tzinfo=UTC), datetime(2026, 12, 7, 3, 0, tzinfo=UTC)),
        ("*/15 * * * *", datetime(2026, 12, 3, 15, 58, tzinfo=UTC), datetime(2026, 12, 3, 16, 0, tzinfo=UTC)),
        ("@daily", datetime(2026, 12, 3, 0, 0, tzinfo=UTC), datetime(2026, 12, 4, 0, 0, tzinfo=UTC)),
        ("30 2 29 2 *", datetime(2026, 12, 3, tzinfo=UTC), datetime(2028, 2, 29, 2, 30, tzinfo=UTC)),
        (
            "0 0 1,15 * 5",
            datetime(2026, 12, 3, tzinfo=UTC),
            datetime(2026, 12, 4, tzinfo=UTC),
        ),  # or: a Friday
        ("0 9-17/4 * * 1-5", datetime(2026, 12, 5, 12, tzinfo=UTC), datetime(2026, 12, 7, 9, tzinfo=UTC)),
    ],
)
def test_cron_next_fire_time(expression, after, fires):
    assert parse_cron(expression).next_after(after) == fires


@pytest.mark.parametrize("expression", ["* * * *", "x * * * *", "0 24 * * *", "0 0 0 * *", "*/0 * * * *"])
def test_bad_cron_is_refused(expression):
    with pytest.raises(InvalidInputError):
        parse_cron(expression)


def test_a_cron_that_never_fires_says_so():
    with pytest.raises(CorralError, match="never fires"):
        parse_cron("0 0 31 2 *").next_after(datetime(2026, 1, 1, tzinfo=UTC))


def test_training_runs_as_corral_train_and_under_torchrun_for_more_than_one_process(tmp_path):
    from corral.pipeline.training import train_command

    one = train_command(tmp_path / "train.yaml", 1)
    assert one[1:] == [
        "-m",
        "corral.cli.main",
        "train",
        str(tmp_path / "train.yaml"),
        "--resume",
        "--json",
        "--no-progress",
    ]
    four = train_command(tmp_path / "train.yaml", 4)
    assert four[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m"]
    assert four[6:] == one[2:]
