"""Training runs end to end on a tiny Llama: LoRA and full versions with lineage, and clear errors."""

from __future__ import annotations

import errno
import json
import sys
import types

import pytest
import yaml

from corral.cli.main import main
from corral.errors import ConfigError, CorralError, InvalidInputError, NotFoundError
from corral.train import parse_spec, train
from corral.train.checkpoint import read_pointer
from corral.train.loop import run_dir_for


def test_lora_run_registers_an_adapter_over_its_base_with_lineage(spec_data, setup):
    spec = parse_spec(
        spec_data(setup, lora={"r": 4, "target_modules": ["q_proj", "v_proj"]}, alias="staging")
    )
    result = train(spec, setup.registry, progress=False)
    version = result.version
    assert version.ref == "tuned@1" and version.kind == "adapter" and version.base_ref == setup.base
    assert version.aliases == ["staging"]
    assert version.lineage["dataset"] == setup.dataset and version.lineage["base"] == setup.base
    assert version.lineage["config"]["lora"]["r"] == 4
    assert {"train_loss", "val_loss", "val_perplexity", "tokens_per_s"} <= set(version.metrics)
    files = setup.registry.models.materialize(version)
    assert (files / "adapter_config.json").is_file() and (files / "tokenizer.json").is_file()
    assert read_pointer(result.run_dir) is None  # a finished run keeps no checkpoint


def test_full_run_learns_and_registers_loadable_weights(spec_data, setup):
    from transformers import AutoModelForCausalLM

    spec = parse_spec(spec_data(setup, method="full", max_steps=12, lr=3e-3, batch_size=8, grad_accum=2))
    losses: list[float] = []
    result = train(spec, setup.registry, progress=False, on_step=lambda s, m: losses.append(m["train_loss"]))
    assert losses[-1] < losses[0]
    assert result.version.kind == "weights" and result.version.lineage["base"] == setup.base
    model = AutoModelForCausalLM.from_pretrained(setup.registry.models.materialize(result.version))
    assert model.config.model_type == "llama"


def test_gradient_checkpointing_and_dropout_run(spec_data, setup):
    spec = parse_spec(spec_data(setup, max_steps=2, grad_checkpointing=True, dropout=0.1))
    assert train(spec, setup.registry, progress=False).version is not None


@pytest.mark.parametrize(
    ("overrides", "error", "needle"),
    [
        ({"base": "ghost@1"}, NotFoundError, "model 'ghost' does not exist"),
        ({"base": "/no/such/model", "method": "full"}, NotFoundError, "does not exist"),
        (
            {"lora": {"target_modules": ["q_proj", "wq"]}},
            InvalidInputError,
            "LoRA target modules wq do not exist",
        ),
        ({"dataset": "plus@7"}, NotFoundError, "has no version 7"),
    ],
)
def test_bad_inputs_fail_before_training_with_a_clear_error(spec_data, setup, overrides, error, needle):
    with pytest.raises(error, match=needle):
        train(parse_spec(spec_data(setup, **overrides)), setup.registry, progress=False)


def test_a_lora_run_on_an_unregistered_directory_says_to_register_it(spec_data, setup):
    with pytest.raises(InvalidInputError, match="needs a registered base"):
        train(parse_spec(spec_data(setup, base=str(setup.base_dir))), setup.registry, progress=False)


def test_spec_errors_name_the_file_and_key(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"output": "o", "base": "b", "dataset": "d", "max_stepz": 3}))
    from corral.train import load_spec

    with pytest.raises(ConfigError, match=r"spec.yaml: unknown key 'max_stepz'"):
        load_spec(path)
    path.write_text(yaml.safe_dump({"output": "o", "base": "b", "lora": {"r": 0}}))
    with pytest.raises(ConfigError, match=r"missing key 'dataset'.*'lora.r'"):
        load_spec(path)


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _full_for_writes(real):
    def open_(path, mode="rb", *args, **kwargs):
        if "w" in mode:
            _disk_full()
        return real(path, mode, *args, **kwargs)

    return open_


def test_a_full_disk_during_a_checkpoint_is_a_clear_error_and_nothing_is_registered(
    spec_data, setup, monkeypatch
):
    fs = setup.registry.artifacts.fs
    monkeypatch.setattr(fs, "put_file", _disk_full)
    monkeypatch.setattr(fs, "open", _full_for_writes(fs.open))
    spec = parse_spec(spec_data(setup))
    with pytest.raises(CorralError, match="cannot write the checkpoint at step 2: .*No space left on device"):
        train(spec, setup.registry, progress=False)
    assert read_pointer(run_dir_for(spec)) is None
    with pytest.raises(NotFoundError):
        setup.registry.models.get("tuned")


def test_a_full_disk_when_saving_the_result_registers_nothing(spec_data, setup, monkeypatch):
    spec = parse_spec(spec_data(setup, checkpoint_every=100))
    monkeypatch.setattr(setup.registry.artifacts.fs, "put_file", _disk_full)
    with pytest.raises(CorralError, match="No space left on device"):
        train(spec, setup.registry, progress=False)
    with pytest.raises(NotFoundError):
        setup.registry.models.get("tuned")


@pytest.mark.slow
def test_mlflow_gets_params_metrics_and_the_model_when_configured(spec_data, setup, monkeypatch, tmp_path):
    """A real MLflow tracking store (SQLite in a temporary directory), not a stand-in module."""
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    train(parse_spec(spec_data(setup, max_steps=2)), setup.registry, progress=False)
    client = mlflow.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs(["0"])
    assert run.info.status == "FINISHED" and run.data.tags["corral.version"] == "tuned@1"
    assert run.data.params["method"] == "lora" and run.data.params["lora.r"] == "8"
    steps = {m.step for key in run.data.metrics for m in client.get_metric_history(run.info.run_id, key)}
    assert steps == {1, 2}
    model_files = [a.path for a in client.list_artifacts(run.info.run_id, "model")]
    assert "model/adapter_config.json" in model_files


def test_the_mlflow_setting_wins_over_the_variable(spec_data, setup, monkeypatch):
    from corral.config import load_settings

    uris: list[str] = []
    fake = types.SimpleNamespace(
        set_tracking_uri=uris.append,
        start_run=lambda **k: None,
        log_params=lambda p: None,
        log_metrics=lambda m, step: None,
        log_artifacts=lambda path, artifact_path: None,
        set_tags=lambda t: None,
        end_run=lambda **k: None,
    )
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://from-the-variable.invalid")
    settings = load_settings(
        environ={"CORRAL_TRACING__MLFLOW_TRACKING_URI": "http://from-the-setting.invalid"}
    )
    train(parse_spec(spec_data(setup, max_steps=1)), setup.registry, progress=False, settings=settings)
    assert uris == ["http://from-the-setting.invalid"]


def test_max_seq_len_beyond_the_models_context_is_refused_and_the_default_fits_it(spec_data, setup):
    with pytest.raises(
        InvalidInputError, match=r"max_seq_len 4096 is longer than the context of base .* \(256 tokens\)"
    ):
        train(parse_spec(spec_data(setup, max_seq_len=4096)), setup.registry, progress=False)
    from corral.train.model import sequence_length

    default = parse_spec(spec_data(setup))
    assert default.max_seq_len == 512 and sequence_length(default, 256) == 256
    assert sequence_length(parse_spec(spec_data(setup, max_seq_len=128)), 256) == 128


def test_a_failed_run_still_leaves_the_process_group(spec_data, setup, monkeypatch):
    from corral.train import distributed

    stopped: list[object] = []
    monkeypatch.setattr(distributed, "stop", stopped.append)
    with pytest.raises(NotFoundError):
        train(parse_spec(spec_data(setup, base="ghost@1")), setup.registry, progress=False)
    assert len(stopped) == 1


def test_a_classification_dataset_trains_label_answers_and_says_so(spec_data, setup):
    from io import StringIO

    from rich.console import Console

    rows = [{"text": f"ticket {i}", "label": "billing" if i % 2 else "shipping"} for i in range(40)]
    dataset = setup.registry.datasets.register("intents", rows)
    out = StringIO()
    result = train(
        parse_spec(spec_data(setup, dataset=dataset.ref, max_steps=2)),
        setup.registry,
        console=Console(file=out, width=300),
    )
    assert result.version is not None
    assert (
        f"{dataset.ref} is a classification dataset: training the model to answer each text with its label"
        in out.getvalue()
    )


def test_cli_train_runs_a_spec_file_and_prints_the_version(spec_data, setup, capsys, tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_data(setup, max_steps=2)))
    with pytest.raises(SystemExit) as info:
        main(["train", str(path), "--json", "--set", "output=cli-tuned"])
    out, err = capsys.readouterr()
    assert info.value.code == 0, err
    assert json.loads(out)["name"] == "cli-tuned"
    with pytest.raises(SystemExit) as info:
        main(["train", str(path), "--set", "base=ghost@1"])
    _, err = capsys.readouterr()
    assert info.value.code == 3 and "model 'ghost' does not exist" in err and "Traceback" not in err


def test_a_full_disk_seen_by_torch_or_safetensors_is_still_a_clear_error(spec_data, setup, monkeypatch):
    """On a real full disk torch.save says 'unexpected pos' and safetensors raises its own error type."""
    import shutil as shutil_module

    from safetensors import SafetensorError

    from corral.train import checkpoint, loop

    def torch_full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    usage = shutil_module.disk_usage(".")
    monkeypatch.setattr(checkpoint.torch, "save", torch_full)
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda path: usage._replace(free=0))
    spec = parse_spec(spec_data(setup))
    with pytest.raises(CorralError, match="checkpoint at step 2: No space left on device") as info:
        train(spec, setup.registry, progress=False)
    assert str(run_dir_for(spec)) in str(info.value)
    monkeypatch.undo()

    def safetensors_full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(loop, "save_model", safetensors_full)
    with pytest.raises(CorralError, match="cannot save the trained model: No space left on device"):
        train(parse_spec(spec_data(setup, checkpoint_every=100)), setup.registry, progress=False)
    with pytest.raises(NotFoundError):
        setup.registry.models.get("tuned")


def test_a_base_without_weights_is_a_clear_error(spec_data, setup, tmp_path):
    empty = tmp_path / "no-weights"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(InvalidInputError, match="has no weights"):  # refused at register now
        setup.registry.models.register("hollow", empty)
    (empty / "notes.bin").write_bytes(b"not the weights")  # passes register's check, not the loader
    hollow = setup.registry.models.register("hollow", empty, tokenizer_required=False)
    with pytest.raises(InvalidInputError, match=r"cannot load base model hollow@1: .*no file named"):
        train(parse_spec(spec_data(setup, base=hollow.ref)), setup.registry, progress=False)


def test_resume_without_a_checkpoint_says_it_starts_over(spec_data, setup):
    import io

    from rich.console import Console

    buffer = io.StringIO()
    spec = parse_spec(spec_data(setup, max_steps=2))
    result = train(spec, setup.registry, resume=True, console=Console(file=buffer, width=200))
    assert result.resumed_from == 0 and "no checkpoint for" in buffer.getvalue()
    assert "loss" in buffer.getvalue() and "tok/s" in buffer.getvalue()
