"""corral engine vs HF transformers `generate` on random-weight models, plus the machine's rooflines.

Run: `python benchmarks/engine_vs_hf.py` (about 5 minutes on 2 CPU cores). It measures in one run:
HF generate one request at a time (on 8 of the 32 requests), HF generate on a left-padded batch of
32, and the corral engine with all 32 submitted at once; then batch-1 decode speed, the peak
matmul FLOPS (fp32: the faster of MKL and oneDNN) and memory bandwidth torch reaches here, and
RSS across 300 short requests.

`--case readme` (default): GPT-2 124M, prompts of 64-256 tokens, 128 new tokens.
`--case decode-heavy`: a 6-layer, 512-wide Llama, prompts of 8-32 tokens, 256 new tokens, where
per-step work around the forward pass shows most. `--dtype float32,bfloat16` runs every row in
each precision, HF in the same one (a fair pair); the roofline is that precision's matmul peak.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from transformers.generation.streamers import BaseStreamer  # noqa: E402

from corral.config import EngineSettings  # noqa: E402
from corral.engine import LLMEngine, SamplingParams  # noqa: E402
from corral.engine.model_runner import set_cpu_threads  # noqa: E402
from corral.engine.models.ops import Linear  # noqa: E402
from corral.testing import make_tiny_model  # noqa: E402

GPT2_124M = {"n_embd": 768, "n_layer": 12, "n_head": 12, "n_positions": 1024, "vocab_size": 50257}
SMALL_LLAMA = {
    "hidden_size": 512,
    "intermediate_size": 1376,
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "num_hidden_layers": 6,
    "max_position_embeddings": 512,
    "vocab_size": 4096,
}
# case: (arch, config, shortest and longest prompt, new tokens)
CASES: dict[str, tuple[str, dict[str, int], int, int, int]] = {
    "readme": ("gpt2", GPT2_124M, 64, 256, 128),
    "decode-heavy": ("llama", SMALL_LLAMA, 8, 32, 256),
}


@dataclass
class Result:
    name: str
    tokens: int
    seconds: float
    ttfts: list[float]

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class FirstToken(BaseStreamer):
    """Records when generate emits its first new token (the first `put` is the prompt)."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def put(self, value: Any) -> None:
        self.calls.append(time.perf_counter())

    def end(self) -> None:
        pass


def hf_sequential(hf: Any, prompts: list[list[int]], new: int) -> tuple[Result, list[float]]:
    """One request at a time; TTFT is the request's own (not counting the queue before it)."""
    ttfts, decode_rates, tokens, start = [], [], 0, time.perf_counter()
    for p in prompts:
        streamer, t0 = FirstToken(), time.perf_counter()
        out = hf.generate(
            torch.tensor([p]),
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            streamer=streamer,
            pad_token_id=0,
        )
        ttfts.append(streamer.calls[1] - t0)
        decode_rates.append((new - 1) / (streamer.calls[-1] - streamer.calls[1]))
        tokens += out.shape[1] - len(p)
    return Result("HF generate, one at a time", tokens, time.perf_counter() - start, ttfts), decode_rates


def hf_batch(hf: Any, prompts: list[list[int]], new: int) -> Result:
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    streamer, t0 = FirstToken(), time.perf_counter()
    out = hf.generate(
        ids,
        attention_mask=mask,
        max_new_tokens=new,
        min_new_tokens=new,
        do_sample=False,
        streamer=streamer,
        pad_token_id=0,
    )
    seconds = time.perf_counter() - t0
    return Result(
        f"HF generate, padded batch of {len(prompts)}",
        (out.shape[1] - width) * len(prompts),
        seconds,
        [streamer.calls[1] - t0] * len(prompts),
    )


def ours(engine: LLMEngine, prompts: list[list[int]], new: int) -> Result:
    params = SamplingParams(max_tokens=new, temperature=0, ignore_eos=True)
    t0 = time.perf_counter()
    m0 = time.monotonic()
    seqs = [engine.add_request(p, params) for p in prompts]
    while engine.has_unfinished():
        engine.step()
    seconds = time.perf_counter() - t0
    ttfts = [(s.first_token_time or 0) - m0 for s in seqs]
    tokens = sum(s.num_output_tokens for s in seqs)
    return Result(f"corral engine, {len(prompts)} at once", tokens, seconds, ttfts)


def ours_decode_rate(engine: LLMEngine, prompt: list[int], new: int) -> float:
    seq = engine.add_request(prompt, SamplingParams(max_tokens=new, temperature=0, ignore_eos=True))
    engine.step()  # prefill + first token
    t0 = time.perf_counter()
    while engine.has_unfinished():
        engine.step()
    return (seq.num_output_tokens - 1) / (time.perf_counter() - t0)


def peak_matmul_flops(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """FLOP/s of an n x n x n product through MKL (`torch.mm`) and through oneDNN with a packed
    weight (what the engine's linear layers use on CPU in fp32; other dtypes take `F.linear`, which
    goes to oneDNN for bf16); the roofline takes the faster."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    packed = Linear(b.t().contiguous())
    peaks = {}
    for name, fn in (("MKL", lambda: torch.mm(a, b)), ("oneDNN", lambda: packed(a))):
        fn()
        peaks[name] = 2 * n**3 / min(_timed(fn) for _ in range(repeats))
    return peaks


def bandwidth(gb: float = 1.0, repeats: int = 5) -> float:
    """Bytes/s of a large copy (read + write counted)."""
    x = torch.empty(int(gb * 2**30) // 4)
    y = torch.empty_like(x)
    y.copy_(x)
    best = min(_timed(lambda: y.copy_(x)) for _ in range(repeats))
    return 2 * x.numel() * 4 / best


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def layer_weights(hf: Any) -> int:
    """Weights of the transformer layers' matmuls (embeddings and LM head excluded)."""
    return sum(
        p.numel()
        for name, p in hf.named_parameters()
        if p.dim() == 2 and not any(k in name for k in ("wte", "wpe", "embed", "lm_head"))
    )


def workload_flops(prompts: list[list[int]], new: int, hf: Any) -> float:
    """Matmul FLOPs of prefill + decode: weights (2 per MAC), attention scores and values, LM head."""
    cfg = hf.config
    layers, d, vocab = cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size
    per_token = 2 * layer_weights(hf)
    total = 0.0
    for p in prompts:
        n = len(p)
        total += n * per_token + 2 * d * vocab  # prefill: logits only for the last prompt token
        total += layers * 4 * d * n * (n + 1) / 2
        for c in range(n + 1, n + new):  # the remaining new-1 decode steps
            total += per_token + 2 * d * vocab + layers * 4 * d * c
    return total


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def rss_run(engine: LLMEngine, gen: torch.Generator, count: int = 300) -> list[float]:
    vocab = engine.loaded.model.vocab_size
    samples = [rss_mb()]
    params = SamplingParams(max_tokens=16, temperature=0.8, ignore_eos=True)
    for wave in range(count // 50):
        for _ in range(50):
            n = int(torch.randint(8, 48, (1,), generator=gen))
            engine.add_request(torch.randint(0, vocab, (n,), generator=gen).tolist(), params)
        while engine.has_unfinished():
            engine.step()
        if wave % 2 == 1:
            samples.append(rss_mb())
    return samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--case", choices=sorted(CASES), default="readme")
    ap.add_argument("--dtype", default="float32", help="float32, bfloat16, or both comma-separated")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--sequential", type=int, default=8, help="requests HF runs one at a time")
    ap.add_argument("--new-tokens", type=int, default=None, help="default: the case's")
    ap.add_argument("--skip-rss", action="store_true")
    args = ap.parse_args()
    arch, config, shortest, longest, new = CASES[args.case]
    args.new_tokens = args.new_tokens or new
    set_cpu_threads()
    from transformers import AutoModelForCausalLM

    gen = torch.Generator().manual_seed(0)
    vocab = config["vocab_size"]
    prompts = [
        torch.randint(
            0, vocab, (int(torch.randint(shortest, longest + 1, (1,), generator=gen)),), generator=gen
        ).tolist()
        for _ in range(args.requests)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = make_tiny_model(Path(tmp) / args.case, arch=arch, seed=0, **config)
        for name in args.dtype.split(","):
            dtype = getattr(torch, name)
            hf = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).eval()
            engine = LLMEngine(
                path,
                EngineSettings(kv_cache_gb=2.0, max_num_seqs=64, max_num_batched_tokens=2048, dtype=name),
            )
            load = os.getloadavg()[0]
            with torch.inference_mode():
                ours(engine, prompts[:2], 4)  # warm-up
                peaks, bw = peak_matmul_flops(dtype), bandwidth()
                ours_res = ours(engine, prompts, args.new_tokens)
                our_decode = ours_decode_rate(engine, prompts[0], args.new_tokens)
                seq_res, hf_decode = hf_sequential(hf, prompts[: args.sequential], args.new_tokens)
                batch_res = hf_batch(hf, prompts, args.new_tokens)
                rss = [] if args.skip_rss else rss_run(engine, gen)
            rates = Rates(peaks, bw, our_decode, statistics.mean(hf_decode), load)
            report(args, hf, name, prompts, rates, seq_res, batch_res, ours_res, rss)


@dataclass
class Rates:
    peaks: dict[str, float]
    bandwidth: float
    our_decode: float
    hf_decode: float
    load: float  # 1-minute load average when the run started


def report(
    args: Any,
    hf: Any,
    dtype: str,
    prompts: list[list[int]],
    rates: Rates,
    seq_res: Result,
    batch_res: Result,
    ours_res: Result,
    rss: list[float],
) -> None:
    flops = workload_flops(prompts, args.new_tokens, hf)
    peak = max(rates.peaks.values())
    roofline_s = flops / peak
    weight_bytes = sum(p.numel() * p.element_size() for p in hf.parameters())
    print(
        f"\n{args.case}: {hf.config.model_type} {weight_bytes / 1e6:.0f} MB random weights, {dtype}, "
        f"{torch.get_num_threads()} threads, load average {rates.load:.1f}; {len(prompts)} requests, "
        f"prompts {min(map(len, prompts))}-{max(map(len, prompts))} tokens, {args.new_tokens} new tokens, greedy\n"
    )
    print(
        f"| {'run':<34} | {'output tok/s':>12} | {'TTFT p50 s':>10} | {'TTFT p99 s':>10} | {'vs HF one at a time':>19} |"
    )
    print(f"|{'-' * 36}|{'-' * 14}|{'-' * 12}|{'-' * 12}|{'-' * 21}|")
    for r in (seq_res, batch_res, ours_res):
        name = r.name + (f" ({len(r.ttfts)} of {len(prompts)})" if r is seq_res else "")
        print(
            f"| {name:<34} | {r.tok_s:>12.1f} | {percentile(r.ttfts, 50):>10.2f} | {percentile(r.ttfts, 99):>10.2f} | "
            f"{r.tok_s / seq_res.tok_s:>18.2f}x |"
        )
    print(f"\ncorral vs HF padded batch: {ours_res.tok_s / batch_res.tok_s:.2f}x")
    print(
        f"compute roofline: peak {dtype} matmul {peak / 1e9:.1f} GFLOP/s "
        f"({', '.join(f'{k} {v / 1e9:.1f}' for k, v in rates.peaks.items())}); workload {flops / 1e12:.2f} TFLOP "
        f"-> ideal {roofline_s:.1f} s; corral took {ours_res.seconds:.1f} s = {roofline_s / ours_res.seconds:.2f} of roofline "
        f"(HF batch {roofline_s / batch_res.seconds:.2f})"
    )
    bw = rates.bandwidth
    print(
        f"batch-1 decode: corral {rates.our_decode:.1f} tok/s, HF generate {rates.hf_decode:.1f} tok/s "
        f"({rates.our_decode / rates.hf_decode:.2f}x); memory roofline {bw / 1e9:.1f} GB/s / {weight_bytes / 1e6:.0f} MB per token "
        f"= {bw / weight_bytes:.1f} tok/s (corral at {rates.our_decode / (bw / weight_bytes):.2f})"
    )
    if rss:
        print(f"RSS over 300 short requests (MB, every 100): {' -> '.join(f'{x:.0f}' for x in rss)}")


if __name__ == "__main__":
    main()
