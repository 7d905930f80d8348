"""corral worker vs llama.cpp's server (llama-cpp-python[server]) on the same random Llama, over HTTP.

Needs llama-cpp-python built from PyPI (it compiles llama.cpp; keep the build outside the repo):

    pip install --target /opt/llamacpp "llama-cpp-python[server]" gguf
    tar -xzf llama_cpp_python-*.tar.gz   # the sdist ships llama.cpp's convert_hf_to_gguf.py
    python benchmarks/engine_vs_llamacpp.py --site /opt/llamacpp --converter .../vendor/llama.cpp

Skips with a message when either is missing. The random model is converted to GGUF (f32 and
bf16) by llama.cpp's own converter, told that our locally trained byte-level BPE tokenizer is
GPT-2's (its table of known tokenizers does not list ours). Each server runs as its own process;
rows alternate (`--repeats`, median): one request at a time and `--requests` at once, prompts
of 64-256 tokens, `--new-tokens` each, greedy, end-of-text masked so every answer is full length.
Every request opens a new connection (llama.cpp's server drops kept-alive ones after a stream).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from engine_vs_hf import SMALL_LLAMA

CONVERT = """
import importlib, importlib.machinery, sys, types
conv_dir, model_dir, out, outtype = sys.argv[1:5]
sys.path[:0] = [conv_dir, conv_dir + "/gguf-py"]
stubs = ["mistral_common", "mistral_common.tokens", "mistral_common.tokens.tokenizers"] + [
    "mistral_common.tokens.tokenizers." + m for m in ("base", "multimodal", "tekken", "sentencepiece")]
for name in stubs:  # imported for Mistral's own tokenizers, which a Llama does not use
    mod = sys.modules.setdefault(name, types.ModuleType(name))
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
    for attr in ("TokenizerVersion", "DATASET_MEAN", "DATASET_STD", "Tekkenizer", "SentencePieceTokenizer"):
        setattr(mod, attr, None)
import convert_hf_to_gguf as c
for name in stubs:
    del sys.modules[name]
# llama.cpp before 2026 kept the model classes in the script, later in its `conversion` package
text_model = getattr(c, "TextModel", None) or importlib.import_module("conversion.base").TextModel
llama_model = getattr(c, "LlamaModel", None) or importlib.import_module("conversion.llama").LlamaModel
text_model.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
llama_model.set_vocab = lambda self: self._set_vocab_gpt2()
sys.argv = ["convert_hf_to_gguf.py", model_dir, "--outfile", out, "--outtype", outtype]
c.main()
"""
PRECISIONS = {"f32": "float32", "bf16": "bfloat16"}  # GGUF type -> corral dtype


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(command: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "wb")  # noqa: SIM115 - the server's whole life
    process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{command[2:4]} exited: see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit(f"{command[2:4]} did not start: see {log}")


async def one(url: str, body: dict[str, Any]) -> int:
    async with httpx.AsyncClient(timeout=600) as client:  # a new connection per request
        reply = await client.post(url + "/v1/completions", json=body)
        reply.raise_for_status()
        return int(reply.json()["usage"]["completion_tokens"])


async def rate(url: str, bodies: list[dict[str, Any]], concurrent: bool) -> float:
    t0 = time.perf_counter()
    if concurrent:
        tokens = sum(await asyncio.gather(*(one(url, b) for b in bodies)))
    else:
        tokens = sum([await one(url, b) for b in bodies])
    return tokens / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--site", default=os.environ.get("CORRAL_LLAMACPP_SITE"), help="llama-cpp-python's --target"
    )
    ap.add_argument("--converter", default=os.environ.get("CORRAL_LLAMACPP_CONVERTER"))
    ap.add_argument("--precisions", default="f32,bf16")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--sequential", type=int, default=4, help="requests sent one at a time")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = ap.parse_args()
    site, conv = Path(args.site or "/nonexistent"), Path(args.converter or "/nonexistent")
    if not (site / "llama_cpp" / "server").is_dir() or not (conv / "convert_hf_to_gguf.py").is_file():
        print(
            "skipped: give --site (pip install --target DIR 'llama-cpp-python[server]' gguf) and --converter"
        )
        print("(the sdist's vendor/llama.cpp directory, with convert_hf_to_gguf.py)")
        return
    import torch

    from corral.testing import make_tiny_model

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        model = make_tiny_model(tmp / "llama", arch="llama", seed=0, **SMALL_LLAMA)
        from corral.engine.loader import load_tokenizer

        tok = load_tokenizer(model)
        gen = torch.Generator().manual_seed(0)
        prompts = [
            tok.decode(
                torch.randint(
                    5, SMALL_LLAMA["vocab_size"], (int(torch.randint(64, 257, (1,), generator=gen)),)
                )
            )
            for _ in range(args.requests)
        ]
        eos = int(tok.eos_token_id)
        for gguf_type in args.precisions.split(","):
            gguf = tmp / f"model-{gguf_type}.gguf"
            done = subprocess.run(
                [sys.executable, "-c", CONVERT, str(conv), str(model), str(gguf), gguf_type],
                capture_output=True,
                text=True,
            )
            if done.returncode:
                tail = "\n".join(done.stderr.strip().splitlines()[-8:])
                sys.exit(f"llama.cpp's converter failed on the {gguf_type} model:\n{tail}")
            compare(args, tmp, model, gguf, gguf_type, prompts, eos, site)


def compare(
    args: Any, tmp: Path, model: Path, gguf: Path, gguf_type: str, prompts: list[str], eos: int, site: Path
) -> None:
    corral_port, llama_port = free_port(), free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    corral = [
        sys.executable,
        "-m",
        "corral.cli.main",
        "worker",
        "--model",
        str(model),
        "--port",
        str(corral_port),
    ]
    corral += ["--dtype", PRECISIONS[gguf_type]]
    llama = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--port", str(llama_port)]
    llama += ["--n_ctx", "512", "--n_threads", str(args.threads), "--interrupt_requests", "False"]
    llama += ["--verbose", "False"]
    servers = [
        start(corral, env, corral_port, tmp / "corral.log"),
        start(llama, {**env, "PYTHONPATH": str(site)}, llama_port, tmp / "llama.log"),
    ]
    try:
        common = {"max_tokens": args.new_tokens, "temperature": 0}
        ours = {**common, "model": str(model), "ignore_eos": True}
        theirs = {**common, "model": str(gguf), "logit_bias": {str(eos): -100.0}}
        rows: dict[str, list[float]] = {}
        for url, body in (
            (f"http://127.0.0.1:{corral_port}", ours),
            (f"http://127.0.0.1:{llama_port}", theirs),
        ):
            asyncio.run(rate(url, [{**body, "prompt": prompts[0], "max_tokens": 4}], False))  # warm-up
        for _ in range(args.repeats):  # alternating, so load falls on both alike
            for name, url, body in (
                ("corral", f"http://127.0.0.1:{corral_port}", ours),
                ("llama.cpp", f"http://127.0.0.1:{llama_port}", theirs),
            ):
                bodies = [{**body, "prompt": p} for p in prompts]
                rows.setdefault(f"{name}, one at a time", []).append(
                    asyncio.run(rate(url, bodies[: args.sequential], False))
                )
                rows.setdefault(f"{name}, {len(prompts)} at once", []).append(
                    asyncio.run(rate(url, bodies, True))
                )
    finally:
        for server in servers:
            server.terminate()
            server.wait(30)
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(
        f"\nrandom Llama 6x512, {gguf_type} on both sides, {args.threads} threads, load average "
        f"{os.getloadavg()[0]:.1f}; prompts 64-256 tokens, {args.new_tokens} new tokens, greedy, over HTTP\n"
    )
    print(f"| {'run':<28} | {'output tok/s (median)':>21} | {'runs':>24} |")
    print(f"|{'-' * 30}|{'-' * 23}|{'-' * 26}|")
    for name, values in rows.items():
        print(f"| {name:<28} | {med[name]:>21.1f} | {', '.join(f'{v:.0f}' for v in values):>24} |")
    n = len(prompts)
    print(
        f"\ncorral / llama.cpp: one at a time {med['corral, one at a time'] / med['llama.cpp, one at a time']:.2f}x, "
        f"{n} at once {med[f'corral, {n} at once'] / med[f'llama.cpp, {n} at once']:.2f}x"
    )


if __name__ == "__main__":
    main()
