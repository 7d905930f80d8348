"""`corral worker`: start-up errors are one clear line; registry references resolve and pin a version."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from corral.cli.main import main
from corral.cli.worker import resolve_model
from corral.config import load_settings


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    return int(info.value.code or 0), capsys.readouterr().err


def test_missing_model_directory_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(["worker", "--model", "./no/such/dir"], capsys)
    assert code != 0
    assert "does not exist" in err and "Traceback" not in err


def test_malformed_model_directory_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    code, err = run_cli(["worker", "--model", str(tmp_path)], capsys)
    assert code != 0
    assert "safetensors" in err and "Traceback" not in err


def test_bad_option_value_is_rejected_before_loading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_cli(["worker", "--model", str(tmp_path), "--kv-cache-gb", "-1"], capsys)
    assert code != 0 and "kv-cache-gb" in err


def test_registry_reference_resolves_to_its_pinned_version(tiny_model: Callable) -> None:
    from corral.registry import open_registry

    settings = load_settings()
    reg = open_registry(settings)
    reg.models.register("support", str(tiny_model("gpt2")))
    reg.models.set_alias("support", "production", 1)
    path, adapter, names = resolve_model("support@production", settings)
    assert adapter is None
    assert names == ["support@1", str(path)]
    assert (path / "config.json").is_file()


def test_adapter_version_is_served_over_its_base(tiny_model: Callable, tmp_path: Path) -> None:
    """A registry adapter version resolves to its base's weights plus the adapter, merged at load."""
    pytest.importorskip("peft")
    import torch
    from tests.engine.conftest import TOL, make_lora_adapter

    from corral.engine.llm_engine import LLMEngine
    from corral.engine.sequence import SamplingParams
    from corral.registry import open_registry

    settings = load_settings()
    reg = open_registry(settings)
    reg.models.register("base", str(tiny_model("llama")))
    merged: Any = make_lora_adapter(tiny_model("llama"), tmp_path / "adapter")
    reg.models.register("support", str(tmp_path / "adapter"), base="base@1")
    reg.models.set_alias("support", "production", 1)
    path, adapter, names = resolve_model("support@production", settings)
    assert adapter is not None and (adapter / "adapter_config.json").is_file()
    assert (path / "config.json").is_file()
    assert names == ["support@1", str(adapter)]  # it answers to the adapter's reference, not the base's

    engine = LLMEngine(path, adapter=adapter, num_blocks=16)
    prompt = list(range(10, 30))
    seq = engine.add_request(prompt, SamplingParams(max_tokens=1, temperature=0))
    _, logits = engine.runner.run(engine.scheduler.schedule().seqs)
    with torch.no_grad():
        ref = merged(torch.tensor([prompt])).logits[0, -1]
    assert seq.num_prompt_tokens == 20 and float((logits[0] - ref).abs().max()) <= TOL


def test_a_base_versions_worker_finds_the_registry_adapters_over_that_base_only(
    tiny_model: Callable, tmp_path: Path
) -> None:
    pytest.importorskip("peft")
    from tests.engine.conftest import make_lora_adapter

    from corral.cli.worker import adapter_finder
    from corral.registry import open_registry

    settings = load_settings()
    reg = open_registry(settings)
    reg.models.register("base", str(tiny_model("llama")))
    reg.models.register("other", str(tiny_model("llama")))
    make_lora_adapter(tiny_model("llama"), tmp_path / "adapter")
    reg.models.register("cx", str(tmp_path / "adapter"), base="base@1")
    reg.models.register("elsewhere", str(tmp_path / "adapter"), base="other@1")
    reg.models.set_alias("cx", "production", 1)
    _, adapter, names = resolve_model("base@1", settings)
    find = adapter_finder(names, settings, {})
    found = find("cx@production")
    assert adapter is None and found is not None and found[0] == "cx@1"
    assert (found[1] / "adapter_config.json").is_file()
    assert find("elsewhere@1") is None and find("base@1") is None and find("nope@1") is None


def test_sigterm_drains_the_answer_in_flight_then_exits_0(tmp_path: Path) -> None:
    """A rollout's SIGTERM: the stream being answered ends with [DONE], then the worker exits cleanly."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import threading
    import time

    import httpx

    from corral.train.starter import MODEL_DIR

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "CORRAL_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "corral.cli.main", "worker", "--model", str(MODEL_DIR), "--port", str(port)]
    worker = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                name = httpx.get(base + "/v1/models").json()["data"][0]["id"]
                break
            except httpx.HTTPError:
                assert worker.poll() is None and time.monotonic() < deadline, "the worker did not start"
                time.sleep(0.3)
        seen: list[str] = []
        body = {"model": name, "prompt": "hello", "max_tokens": 250, "min_tokens": 250, "stream": True}

        def stream() -> None:
            with httpx.stream("POST", base + "/v1/completions", json=body, timeout=60) as answer:
                seen.extend(line for line in answer.iter_lines() if line.startswith("data:"))

        reader = threading.Thread(target=stream)
        reader.start()
        while not seen and reader.is_alive():
            time.sleep(0.005)  # the answer has begun
        worker.send_signal(signal.SIGTERM)
        reader.join(60)
        assert seen[-1] == "data: [DONE]" and len(seen) > 100
        assert worker.wait(60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
