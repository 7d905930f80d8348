"""The CLI as a user meets it: commands succeed, and bad input is one line with a non-zero exit code."""

from __future__ import annotations

import importlib.resources
import json
import shutil
from pathlib import Path

import pytest

from corral.cli.main import main
from corral.errors import ArtifactIntegrityError
from corral.registry import open_registry

STARTER = Path(str(importlib.resources.files("corral.data") / "starter" / "model"))


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def one_line_error(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines and lines[0].startswith("error:"), err
    assert "Traceback" not in err
    return " ".join(lines)


def model_dir(path: Path, marker: str) -> str:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"marker": marker}))
    (path / "model.safetensors").write_bytes(marker.encode() * 16)
    shutil.copy(STARTER / "tokenizer.json", path / "tokenizer.json")
    return str(path)


def test_quickstart_walks_through_register_promote_and_rollback(capsys):
    code, out, err = run(capsys, "quickstart")
    assert code == 0, err
    assert "rolled back: demo@production → 1" in out
    assert "gateway stopped cleanly" in out and "traced requests" in out
    if "starter@production" in out:  # the train extra is installed: the starter model answered
        assert out.count("✓ right") == 4 and "✗ wrong" not in out
    code, out, _ = run(capsys, "models", "show", "demo@production", "--json")
    assert code == 0 and json.loads(out)["version"] == 1


def test_quickstart_again_changes_nothing_and_corral_serve_gets_its_deployment(capsys):
    import yaml

    from corral.config import load_settings

    code, first, err = run(capsys, "quickstart")
    assert code == 0, err
    assert "the key above" not in first  # the key is printed on its own line, before the curl line
    code, second, err = run(capsys, "quickstart")
    assert code == 0, err
    key_line = [line for line in first.splitlines() if line.startswith("Call it with this key")]
    assert key_line and key_line == [
        line for line in second.splitlines() if line.startswith("Call it with this key")
    ]
    assert run(capsys, "models", "show", "demo@2", "--json")[0] == 0
    assert run(capsys, "models", "show", "demo@3", "--json")[0] != 0  # no new versions on a re-run
    code, out, _ = run(capsys, "keys", "list", "--json")
    assert sum(k["name"] == "quickstart" for k in json.loads(out)) == 1
    text = Path("corral.yaml").read_text()
    assert sum(line.startswith("deployments:") for line in text.splitlines()) == 1
    if "starter@production" in first:  # a real model was served: `corral serve` serves the same
        assert yaml.safe_load(text)["deployments"]["support"]["routes"] == [{"target": "starter@production"}]
        assert "support" in load_settings(Path("corral.yaml")).deployments


def test_models_lifecycle_through_the_cli(capsys, tmp_path):
    assert (
        run(capsys, "models", "register", "support", model_dir(tmp_path / "a", "a"), "--tag", "team=cx")[0]
        == 0
    )
    assert run(capsys, "models", "register", "support", model_dir(tmp_path / "b", "b"))[0] == 0
    assert run(capsys, "models", "alias", "set", "support", "production", "1")[0] == 0
    assert run(capsys, "models", "alias", "set", "support", "production", "2", "--reason", "better")[0] == 0
    code, out, _ = run(capsys, "models", "rollback", "support")
    assert code == 0 and "→ version 1" in out
    code, out, _ = run(capsys, "models", "alias", "history", "support", "--json")
    assert [e["to_version"] for e in json.loads(out)] == [1, 2, 1]
    code, out, _ = run(capsys, "models", "list", "--json")
    assert json.loads(out)[0]["aliases"] == {"production": 1}
    code, out, _ = run(capsys, "models", "retire", "support@2")
    assert code == 0 and "retired" in out
    code, out, _ = run(capsys, "audit", "--json", "--limit", "3")
    assert json.loads(out)[0]["action"] == "version.retire"


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["models", "show", "ghost@1"], 3, "model 'ghost' does not exist"),
        (["models", "show", "bad name"], 2, "invalid model name"),
        (["models", "register", "support", "/no/such/dir"], 3, "does not exist"),
        (["models", "rollback", "ghost"], 3, "does not exist"),
        (["datasets", "import", "faq", "/no/such.jsonl"], 3, "does not exist"),
        (["prompts", "render", "ghost"], 3, "prompt 'ghost' does not exist"),
    ],
)
def test_bad_input_is_one_line_and_an_exit_code(capsys, args, code, needle):
    got, _, err = run(capsys, *args)
    assert got == code
    assert needle in one_line_error(err)


def test_bad_reference_retire_production_and_rollback_without_history(capsys, tmp_path):
    run(capsys, "models", "register", "support", model_dir(tmp_path / "a", "a"))
    run(capsys, "models", "alias", "set", "support", "production", "1")
    code, _, err = run(capsys, "models", "show", "support@9")
    assert code == 3 and "model 'support' has no version 9 (latest is 1)" in one_line_error(err)
    code, _, err = run(capsys, "models", "retire", "support@1")
    assert code == 4 and "alias production points at it" in one_line_error(err)
    code, _, err = run(capsys, "models", "rollback", "support")
    assert code == 4 and "no earlier version" in one_line_error(err)


def test_reimporting_identical_data_says_so(capsys, tmp_path):
    data = tmp_path / "faq.jsonl"
    data.write_text("".join(json.dumps({"text": f"t{i}", "label": i % 2}) + "\n" for i in range(10)))
    code, out, _ = run(capsys, "datasets", "import", "faq", str(data))
    assert code == 0 and "as faq@1" in out
    code, out, _ = run(capsys, "datasets", "import", "faq", str(data))
    assert code == 0 and "same content as faq@1" in out.replace("\n", " ")
    data.write_text(data.read_text() + json.dumps({"text": "new", "label": 1}) + "\n")
    run(capsys, "datasets", "import", "faq", str(data))
    code, out, _ = run(capsys, "datasets", "diff", "faq@1", "faq@2")
    assert code == 0 and "+1 added, -0 removed" in out


def test_malformed_and_unknown_config_keys_fail_with_exit_2(capsys, tmp_path):
    (tmp_path / "corral.yaml").write_text("store: [\n")
    code, _, err = run(capsys, "models", "list")
    assert code == 2 and "malformed YAML" in one_line_error(err)
    (tmp_path / "bad.yaml").write_text("gateway:\n  portt: 1\n")
    code, _, err = run(capsys, "--config", str(tmp_path / "bad.yaml"), "config", "show")
    assert code == 2 and "unknown key 'gateway.portt'" in one_line_error(err)


def test_config_is_accepted_before_and_after_the_command(capsys, tmp_path):
    (tmp_path / "a.yaml").write_text("gateway:\n  port: 7101\n")
    (tmp_path / "b.yaml").write_text("gateway:\n  port: 7102\n")
    code, out, err = run(capsys, "config", "show", "--json", "--config", str(tmp_path / "a.yaml"))
    assert code == 0, err
    assert json.loads(out)["gateway"]["port"] == 7101
    code, out, _ = run(
        capsys,
        "--config",
        str(tmp_path / "a.yaml"),
        "config",
        "show",
        "-c",
        str(tmp_path / "b.yaml"),
        "--json",
    )
    assert json.loads(out)["gateway"]["port"] == 7102  # the one nearer the command wins
    code, _, err = run(capsys, "models", "list", "--config", str(tmp_path / "missing.yaml"))
    assert code == 2 and "missing.yaml does not exist" in one_line_error(err)


def test_config_show_shows_every_section(capsys):
    code, out, _ = run(capsys, "config", "show", "--json")
    shown = json.loads(out)
    assert code == 0 and shown["pipeline"]["files"] == [] and "request_timeout_s" in shown["gateway"]


def test_config_show_masks_secrets(capsys, monkeypatch):
    monkeypatch.setenv("CORRAL_DATABASE_URL", "postgresql+psycopg://me:s3cret@127.0.0.1:9/x")
    code, out, _ = run(capsys, "config", "show", "--json")
    assert code == 0 and "s3cret" not in out and "me:***@" in out


def test_tampered_artifact_is_reported_by_name(capsys, tmp_path):
    run(capsys, "models", "register", "support", model_dir(tmp_path / "a", "a"))
    for blob in (tmp_path / "corral-home" / "artifacts" / "blobs").rglob("*"):
        if blob.is_file():
            blob.write_bytes(b"tampered")
    registry = open_registry()
    with pytest.raises(ArtifactIntegrityError, match="corrupted"):
        registry.models.materialize(registry.models.resolve("support@1"))


def test_prompts_through_the_cli(capsys, tmp_path):
    (tmp_path / "greet.yaml").write_text("messages:\n  - role: system\n    content: Hi {{ name }}\n")
    assert run(capsys, "prompts", "register", "greet", str(tmp_path / "greet.yaml"))[0] == 0
    code, out, _ = run(capsys, "prompts", "render", "greet", "--var", "name=Ada")
    assert code == 0 and "Hi Ada" in out
    code, _, err = run(capsys, "prompts", "render", "greet")
    assert code == 2 and "not given: name" in one_line_error(err)


def test_db_upgrade_is_idempotent(capsys):
    code, out, _ = run(capsys, "db", "upgrade")
    assert code == 0
    code, out, _ = run(capsys, "db", "upgrade")
    assert code == 0 and "up to date" in out


def test_keys_and_costs_through_the_cli(capsys):
    code, out, err = run(capsys, "keys", "create", "--name", "cx-bot", "--models", "support", "--rpm", "60")
    assert code == 0, err
    raw = out.strip().splitlines()[-1]
    assert raw.startswith("sk-")
    code, out, _ = run(capsys, "keys", "list", "--json")
    (listed,) = json.loads(out)
    assert listed["name"] == "cx-bot" and listed["models"] == ["support"] and listed["rpm"] == 60
    assert raw not in out  # only the prefix of a key is ever shown again
    code, out, err = run(capsys, "keys", "revoke", "cx-bot")
    assert code == 0 and "revoked" in out, err
    code, out, _ = run(capsys, "keys", "list", "--json")
    assert json.loads(out) == []
    code, out, _ = run(capsys, "keys", "list", "--revoked", "--json")
    assert json.loads(out)[0]["revoked_at"]

    code, _, err = run(capsys, "keys", "create", "--name", "x", "--rpm", "-3")
    assert code == 2 and "--rpm" in one_line_error(err)
    code, _, err = run(capsys, "keys", "revoke", "nobody")
    assert code == 3, err

    code, out, err = run(capsys, "costs", "--json")
    assert code == 0 and json.loads(out) == [], err
    code, _, err = run(capsys, "costs", "--by", "colour")
    assert code == 2 and "colour" in one_line_error(err)
    code, _, err = run(capsys, "costs", "--since", "yesterday")
    assert code == 2, err


def test_a_missing_argument_or_badly_typed_option_is_a_usage_error(capsys):
    code, _, err = run(capsys, "keys", "create", "--name", "x", "--rpm", "lots")
    assert code == 2 and "internal error" not in err and "--rpm" in err
    code, _, err = run(capsys, "models", "show")
    assert code == 2 and "internal error" not in err


def test_register_says_when_files_are_identical_and_refuses_a_model_without_tokenizer(capsys, tmp_path):
    path = model_dir(tmp_path / "a", "a")
    assert run(capsys, "models", "register", "support", path)[0] == 0
    code, out, _ = run(capsys, "models", "register", "support", path)
    assert code == 0 and "identical to support@1 (same files); no new version registered" in out
    (Path(path) / "tokenizer.json").unlink()
    code, _, err = run(capsys, "models", "register", "bare", path)
    assert code == 2 and "has no tokenizer" in one_line_error(err) and "--no-tokenizer" in err
    code, out, err = run(capsys, "models", "register", "bare", path, "--no-tokenizer")
    assert code == 0 and "registered bare@1" in out and "warning:" in err and "has no tokenizer" in err
