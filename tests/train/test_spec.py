"""The training spec: every field checked before anything loads, each error naming its key; the CLI says it in one line."""

from __future__ import annotations

import io

import pytest
import yaml

from corral.cli.main import main
from corral.errors import ConfigError
from corral.train import load_spec, parse_spec

GOOD = {"output": "tuned", "base": "tiny@1", "dataset": "plus@1"}


def test_a_minimal_spec_gets_the_documented_defaults():
    spec = parse_spec(GOOD)
    assert spec.method == "lora" and spec.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert parse_spec({**GOOD, "base": "./models/base", "method": "full"}).base == "./models/base"


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("output", "my model!", "'output': invalid model name"),
        ("output", "", "'output': invalid model name"),
        ("base", "", "'base': empty base"),
        ("base", "bad name", "'base': invalid name"),
        ("dataset", "", "'dataset': empty dataset"),
        ("dataset", "plus@production", "'dataset': datasets have no aliases"),
        ("method", "qlora", "'method': Input should be 'lora' or 'full'"),
        ("lora", {"r": 0}, "'lora.r'"),
        ("lora", {"alpha": 0}, "'lora.alpha'"),
        ("lora", {"dropout": 1.0}, "'lora.dropout'"),
        ("lora", {"target_modules": []}, "'lora.target_modules'"),
        ("lora", {"rank": 8}, "unknown key 'lora.rank'"),
        ("max_steps", 0, "'max_steps'"),
        ("max_steps", 2.5, "'max_steps'"),
        ("epochs", 0, "'epochs'"),
        ("batch_size", "eight", "'batch_size'"),
        ("grad_accum", 0, "'grad_accum'"),
        ("max_seq_len", 4, "'max_seq_len'"),
        ("lr", 0, "'lr'"),
        ("min_lr_ratio", 1.5, "'min_lr_ratio'"),
        ("warmup_steps", -1, "'warmup_steps'"),
        ("weight_decay", -0.1, "'weight_decay'"),
        ("betas", [0.9], "'betas.1'"),
        ("betas", [0.9, 1.5], "'betas': AdamW betas must each be in"),
        ("max_grad_norm", 0, "'max_grad_norm'"),
        ("dropout", 1.0, "'dropout'"),
        ("grad_checkpointing", "maybe", "'grad_checkpointing'"),
        ("bf16", "maybe", "'bf16'"),
        ("seed", -1, "'seed'"),
        ("seed", 2**70, "'seed'"),
        ("eval_every", 0, "'eval_every'"),
        ("eval_rows", 0, "'eval_rows'"),
        ("checkpoint_every", 0, "'checkpoint_every'"),
        ("alias", "latest", "'alias': invalid alias"),
        ("alias", "1st", "'alias': invalid alias"),
        ("tags", ["a"], "'tags'"),
        ("description", 3, "'description'"),
    ],
)
def test_every_field_is_checked_with_an_error_naming_it(field, value, needle):
    with pytest.raises(ConfigError, match="training spec: ") as info:
        parse_spec({**GOOD, field: value})
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_malformed_yaml_is_one_line_with_its_position(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("output: o\nbase: [\n")
    with pytest.raises(ConfigError, match=r"spec.yaml: line 3, column 1: malformed YAML") as info:
        load_spec(path)
    assert "\n" not in str(info.value)


def test_a_key_set_twice_in_a_spec_is_refused_with_its_line(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("output: a\nbase: tiny@1\ndataset: plus@1\nlr: 0.1\nlr: 0.001\n")
    with pytest.raises(
        ConfigError, match=r"spec.yaml: line 5, column 1: duplicate key 'lr' \(first set on line 4\)"
    ):
        load_spec(path)


def test_overrides_are_checked_like_the_file(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    assert load_spec(path, {"max_steps": 3}).max_steps == 3
    with pytest.raises(ConfigError, match="'max_steps'"):
        load_spec(path, {"max_steps": -3})


@pytest.mark.parametrize(
    ("content", "args", "needle", "code"),
    [
        (None, [], "does not exist", 3),
        ("output: o\nbase: [\n", [], "line 3, column 1: malformed YAML", 2),
        ("- 1\n- 2\n", [], "expected a mapping", 2),
        ("output: o\n", [], "missing key 'base'; missing key 'dataset'", 2),
        (yaml.safe_dump(GOOD), ["--set", "output=bad name"], "invalid model name 'bad name'", 2),
        (yaml.safe_dump(GOOD), ["--set", "nope"], "invalid --set 'nope'", 2),
        (yaml.safe_dump(GOOD), [], "dataset 'plus' does not exist", 3),
    ],
)
def test_cli_train_bad_input_is_one_line_never_a_traceback(tmp_path, capsys, content, args, needle, code):
    path = tmp_path / "spec.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit) as info:
        main(["train", str(path), *args])
    out, err = capsys.readouterr()
    assert info.value.code == code, err
    assert needle in err and "Traceback" not in out + err
    assert len(err.strip().splitlines()) == 1, err


def test_the_progress_bar_shows_step_loss_tokens_per_second_and_eta():
    from rich.console import Console

    from corral.train.progress import TrainProgress

    buffer = io.StringIO()
    bar = TrainProgress(10, console=Console(file=buffer, width=120))
    bar.update(4, 1.23456, 12345.6)
    bar.close()
    line = buffer.getvalue()
    assert "4/10" in line and "loss 1.2346" in line and "12,346 tok/s" in line and "eta" in line
    silent = io.StringIO()
    TrainProgress(10, enabled=False, console=Console(file=silent)).close()
    assert silent.getvalue() == ""
