"""Several LoRA adapters in one batch vs one adapter merged at load, on a small random Llama.

Run: `python benchmarks/engine_lora.py` (about a minute on 2 CPU cores). A 6-layer, 512-wide
random Llama; `--adapters` random PEFT adapters (rank 16 on every attention and MLP projection).
Rows, alternating, as the median of `--repeats` runs each: the base model alone, one adapter
merged into the base at load (no per-step cost), and the adapters mixed round-robin in one batch
of `--requests` (corral.engine.lora: per-adapter row groups beside the shared base matmuls).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from engine_vs_hf import SMALL_LLAMA  # noqa: E402  (the decode-heavy case's model; benchmarks/ is on sys.path)

from corral.config import EngineSettings  # noqa: E402
from corral.engine import LLMEngine, SamplingParams  # noqa: E402
from corral.testing import make_tiny_model  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_adapter(base: Path, out: Path, seed: int, rank: int) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32),
        LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=TARGETS),
    )
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    model.save_pretrained(str(out))
    return out


def throughput(engine: LLMEngine, prompts: list[list[int]], new: int, adapters: list[str | None]) -> float:
    t0 = time.perf_counter()
    seqs = [
        engine.add_request(p, SamplingParams(max_tokens=new, temperature=0, ignore_eos=True, adapter=a))
        for p, a in zip(prompts, adapters, strict=True)
    ]
    while engine.has_unfinished():
        engine.step()
    return sum(s.num_output_tokens for s in seqs) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--adapters", type=int, default=4)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(0)
    prompts = [
        torch.randint(5, 4000, (int(torch.randint(16, 65, (1,), generator=gen)),), generator=gen).tolist()
        for _ in range(args.requests)
    ]
    settings = EngineSettings(kv_cache_gb=0.5, max_num_seqs=64, dtype="float32")
    with tempfile.TemporaryDirectory() as tmp:
        base = make_tiny_model(Path(tmp) / "llama", arch="llama", seed=0, **SMALL_LLAMA)
        dirs = {f"a{i}": make_adapter(base, Path(tmp) / f"a{i}", i, args.rank) for i in range(args.adapters)}
        engines = {
            "base model, no adapter": (LLMEngine(base, settings), [None] * len(prompts)),
            "1 adapter merged at load": (
                LLMEngine(base, settings, adapter=dirs["a0"]),
                [None] * len(prompts),
            ),
            f"{args.adapters} adapters mixed in the batch": (
                LLMEngine(base, settings, adapters=dirs),
                [f"a{i % args.adapters}" for i in range(len(prompts))],
            ),
        }
        if args.threads:
            torch.set_num_threads(args.threads)
        for engine, names in engines.values():
            throughput(engine, prompts[:4], 4, names[:4])  # warm-up, loads the adapters
        runs: dict[str, list[float]] = {name: [] for name in engines}
        for _ in range(args.repeats):  # alternating, so the machine's load falls on every row alike
            for name, (engine, names) in engines.items():
                runs[name].append(throughput(engine, prompts, args.new_tokens, names))
    merged = statistics.median(runs["1 adapter merged at load"])
    print(
        f"\nrandom Llama 6x512, fp32, {torch.get_num_threads()} threads; {len(prompts)} requests, "
        f"prompts 16-64 tokens, {args.new_tokens} new tokens, greedy; LoRA rank {args.rank} on every projection; "
        f"load average {os.getloadavg()[0]:.1f}\n"
    )
    print(f"| {'run':<32} | {'output tok/s (median)':>21} | {'runs':>30} | {'vs merged':>9} |")
    print(f"|{'-' * 34}|{'-' * 23}|{'-' * 32}|{'-' * 11}|")
    for name, rates in runs.items():
        med = statistics.median(rates)
        spread = ", ".join(f"{r:.0f}" for r in rates)
        print(f"| {name:<32} | {med:>21.1f} | {spread:>30} | {med / merged:>8.2f}x |")


if __name__ == "__main__":
    main()
