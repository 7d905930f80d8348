"""corral's LoRA training loop vs a plain Hugging Face `Trainer` + PEFT, same model, data and settings.

Run: `python benchmarks/train_step.py` (about 8 minutes on 2 CPU cores). Each side runs in its own
process (so neither inherits the other's allocator state or thread pools) on:

- the same base: a randomly initialised Llama with the starter tokenizer, at three sizes — the
  starter's own architecture (hidden 128, 4 layers), a larger one (hidden 512, 6 layers), and that
  one with a 32,000-token vocabulary as real models have;
- the same data: the starter corpus's train split (support-desk chats), encoded by the same
  code (chat template, loss on assistant tokens only), cut to 128 tokens;
- the same settings: LoRA r=8, alpha 16 on q/k/v/o, batch 16, AdamW, warmup + cosine, clipping
  at 1.0, fp32 on CPU, the same torch thread count.

Both sides train on exactly the same batches in the same order (the Trainer is given our loop's
batch order and reads it in sequence instead of shuffling). It reports the median step time over
the steps after a warm-up, tokens/s (non-padding tokens per second of step time) and the
process's peak RSS. HF's step time is measured from `on_step_begin` to `on_step_end`
and includes its data loading, as ours does.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SIZES: dict[str, dict[str, Any]] = {
    "starter (h128, 4 layers)": {},  # the starter's ARCHITECTURE
    "small (h512, 6 layers)": {
        "hidden_size": 512,
        "intermediate_size": 1376,
        "num_hidden_layers": 6,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
    },
    # a Llama-2-sized vocabulary (the tokenizer uses the first 1,024 ids): the LM head and logits
    # then weigh as they do in real models
    "small, 32k vocab": {
        "hidden_size": 512,
        "intermediate_size": 1376,
        "num_hidden_layers": 6,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "vocab_size": 32000,
    },
}
SETTINGS: dict[str, Any] = {
    "batch_size": 16,
    "max_seq_len": 128,
    "lr": 2e-4,
    "warmup_steps": 2,
    "max_grad_norm": 1.0,
    "seed": 0,
    "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def make_base(out_dir: Path, overrides: dict[str, Any]) -> Path:
    """A randomly initialised Llama with the starter tokenizer, saved in Hugging Face format."""
    import torch
    import transformers

    from corral.train import starter

    tokenizer = transformers.AutoTokenizer.from_pretrained(starter.TOKENIZER_DIR)
    config = transformers.LlamaConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **{"vocab_size": len(tokenizer), **starter.ARCHITECTURE, **overrides},
    )
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


def run_corral(base_dir: Path, steps: int, warmup: int) -> dict[str, Any]:
    """Our loop, as `corral train` runs it: registry, spec, train() (no eval or checkpoint inside the run)."""
    from corral.registry import open_registry
    from corral.train import parse_spec, starter, train

    registry = open_registry()
    base = registry.models.register("bench-base", base_dir)
    dataset = registry.datasets.register("bench-data", starter.rows(starter.KNOWN_FILE), kind="chat")
    spec = parse_spec(
        {
            **SETTINGS,
            "output": "bench-tuned",
            "base": base.ref,
            "dataset": dataset.ref,
            "method": "lora",
            "max_steps": steps,
            "eval_every": steps + 1,
            "checkpoint_every": steps + 1,
            "eval_rows": 1,
        }
    )
    seen: list[float] = []
    result = train(spec, registry, progress=False, on_step=lambda _step, m: seen.append(m["tokens_per_s"]))
    times = result.step_times[warmup:]
    tokens = sum(t * s for t, s in zip(seen[warmup:], times, strict=True))
    return {
        "step_s": statistics.median(times),
        "tokens_per_s": tokens / sum(times),
        "peak_rss_mb": peak_rss_mb(),
    }


def run_hf(base_dir: Path, steps: int, warmup: int) -> dict[str, Any]:
    """A plain Trainer + PEFT script, as its documentation writes one, on the same encoded examples."""
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model

    from corral.train import starter
    from corral.train.examples import encode_rows, micro_batch_indices

    transformers.utils.logging.set_verbosity_error()
    tokenizer = transformers.AutoTokenizer.from_pretrained(base_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    lora = SETTINGS["lora"]
    model = get_peft_model(
        model,
        LoraConfig(
            r=lora["r"],
            lora_alpha=lora["alpha"],
            lora_dropout=lora["dropout"],
            target_modules=lora["target_modules"],
            task_type="CAUSAL_LM",
        ),
    )
    examples, _ = encode_rows(
        starter.rows(starter.KNOWN_FILE, "train"), "chat", tokenizer, SETTINGS["max_seq_len"]
    )
    # The batches our loop draws, in its order; the Trainer reads them in sequence (below), so both
    # sides run exactly the same batches and their step times compare directly.
    order = [
        i
        for step in range(steps)
        for i in micro_batch_indices(step, len(examples), SETTINGS["batch_size"], 1, 0, SETTINGS["seed"])
    ]
    train_set = [{"input_ids": examples[i].input_ids, "labels": examples[i].labels} for i in order]
    padder = transformers.DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    batch_tokens: list[int] = []

    def collate(features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = padder(features)
        batch_tokens.append(int(batch["attention_mask"].sum()))  # the i-th call builds step i's batch
        return batch

    times: list[float] = []

    class StepTimer(transformers.TrainerCallback):
        began = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.began = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            times.append(time.perf_counter() - self.began)

    class InOrderTrainer(transformers.Trainer):
        def _get_train_sampler(self, *args: Any, **kwargs: Any) -> Any:
            return torch.utils.data.SequentialSampler(self.train_dataset)

    with tempfile.TemporaryDirectory() as out:
        args = transformers.TrainingArguments(
            output_dir=out,
            max_steps=steps,
            per_device_train_batch_size=SETTINGS["batch_size"],
            learning_rate=SETTINGS["lr"],
            warmup_steps=SETTINGS["warmup_steps"],
            lr_scheduler_type="cosine",
            max_grad_norm=SETTINGS["max_grad_norm"],
            adam_beta2=0.95,
            weight_decay=0.0,
            seed=SETTINGS["seed"],
            use_cpu=not torch.cuda.is_available(),
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="no",
            report_to=[],
            disable_tqdm=True,
            dataloader_num_workers=0,
            remove_unused_columns=False,
        )
        trainer = InOrderTrainer(
            model=model, args=args, train_dataset=train_set, data_collator=collate, callbacks=[StepTimer()]
        )
        trainer.train()
    measured = times[warmup:]
    tokens = sum(batch_tokens[warmup : len(times)])
    return {
        "step_s": statistics.median(measured),
        "tokens_per_s": tokens / sum(measured),
        "peak_rss_mb": peak_rss_mb(),
    }


def child(side: str, size: str, steps: int, warmup: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="corral-train-bench-") as tmp:
        os.environ["CORRAL_HOME"] = str(Path(tmp) / "home")
        base_dir = make_base(Path(tmp) / "base", SIZES[size])
        result = (run_corral if side == "corral" else run_hf)(base_dir, steps, warmup)
    print("RESULT " + json.dumps(result), flush=True)


def spawn(side: str, size: str, steps: int, warmup: int, threads: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", side, "--size", size, "--steps", str(steps)]
    command += ["--warmup", str(warmup), "--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT ") :]))
    raise SystemExit(f"{side} run on {size} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out of the timing")
    parser.add_argument("--rounds", type=int, default=2, help="runs per side, alternating; the best counts")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--size", choices=sorted(SIZES), action="append", help="model size(s) to run")
    parser.add_argument("--child", choices=["corral", "hf"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.warmup >= args.steps:
        parser.error("--warmup must be smaller than --steps")
    if args.child:
        child(args.child, args.size[0], args.steps, args.warmup, args.threads)
        return

    print(
        f"LoRA r=8 on q/k/v/o, batch {SETTINGS['batch_size']}, max {SETTINGS['max_seq_len']} tokens, "
        f"{args.steps} steps ({args.warmup} warm-up not timed), {args.threads} threads, "
        f"best of {args.rounds} alternating rounds per side\n"
    )
    print("| model | loop | step ms (median) | tokens/s | peak RSS MB | tokens/s vs HF |")
    print("|---|---|---|---|---|---|")
    for size in args.size or list(SIZES):
        # Alternate the sides over the rounds and keep each side's fastest round: other load on a
        # shared machine only ever slows a round down.
        runs: dict[str, list[dict[str, Any]]] = {"hf": [], "corral": []}
        for _ in range(args.rounds):
            for side in runs:
                runs[side].append(spawn(side, size, args.steps, args.warmup, args.threads))
        best = {side: max(results, key=lambda r: r["tokens_per_s"]) for side, results in runs.items()}
        for side, name in (("hf", "HF Trainer + PEFT"), ("corral", "corral train")):
            r = best[side]
            ratio = r["tokens_per_s"] / best["hf"]["tokens_per_s"]
            print(
                f"| {size} | {name} | {r['step_s'] * 1000:.1f} | {r['tokens_per_s']:,.0f} | "
                f"{r['peak_rss_mb']:,.0f} | {ratio:.2f}x |",
                flush=True,
            )


if __name__ == "__main__":
    main()
