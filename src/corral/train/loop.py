"""The training loop, top to bottom: processes, data, model, optimizer, schedule, loop, eval, checkpoint, register.

Supervised fine-tuning of a causal LM (full or LoRA) with the loss on target tokens only. The
loss of one optimizer step is the sum over its target tokens divided by their count across all
micro-batches and processes, so gradient accumulation and DDP give the same update as one big batch.
"""

from __future__ import annotations

import math
import random
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console

from corral.config import Settings, corral_home, load_settings
from corral.errors import CorralError, InvalidInputError
from corral.registry import ModelVersion, Registry, open_registry
from corral.train import checkpoint, distributed
from corral.train.examples import IGNORE, Example, collate, encode_rows, micro_batch_indices, target_tokens
from corral.train.model import add_lora, context_length, find_base, load_model, save_model, sequence_length
from corral.train.progress import TrainProgress
from corral.train.spec import TrainSpec
from corral.train.tracking import MLflowRun

CLASSIFICATION_NOTE = (
    "{dataset} is a classification dataset: training the model to answer each text with its label, "
    "as a chat (the text as the user's turn, the label as the answer), which is how it is served"
)


@dataclass
class TrainResult:
    version: ModelVersion | None  # the registered version (None on DDP ranks other than 0)
    metrics: dict[str, float]
    run_dir: Path
    resumed_from: int = 0
    step_times: list[float] = field(default_factory=list)


def lr_at(step: int, spec: TrainSpec, total: int) -> float:
    """Linear warmup to `lr`, then cosine decay to `lr * min_lr_ratio` at the last step."""
    if step < spec.warmup_steps:
        return spec.lr * (step + 1) / spec.warmup_steps
    progress = (step - spec.warmup_steps) / max(1, total - spec.warmup_steps - 1)
    floor = spec.lr * spec.min_lr_ratio
    return floor + 0.5 * (spec.lr - floor) * (1 + math.cos(math.pi * min(1.0, progress)))


def token_loss_sum(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed cross-entropy of each target token given the ones before it.

    Position t predicts token t+1, and only positions followed by a target token are scored, so
    only those go through the LM head: prompt and padding positions never become logits. With a
    large vocabulary the logits are the step's largest activation (and the head its largest
    matmul), so this saves time and memory in proportion to the share of prompt tokens.
    """
    targets = F.pad(batch["labels"][:, 1:], (0, 1), value=IGNORE)
    scored = targets != IGNORE
    head = getattr(model, "module", model).get_output_embeddings()  # through DDP and PEFT wrappers
    if head is None:  # an architecture without a separate head: score every position
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logits, targets = logits.view(-1, logits.size(-1)), targets.view(-1)
    else:
        hook = head.register_forward_pre_hook(lambda _module, args: (args[0][scored], *args[1:]))
        try:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        finally:
            hook.remove()
        targets = targets[scored]
    return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE, reduction="sum")


@torch.no_grad()
def evaluate(
    model: Any, examples: list[Example], batch_size: int, pad_id: int, device: torch.device
) -> float:
    """Mean loss per target token over `examples`."""
    model.eval()
    total, tokens = 0.0, 0
    for i in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in collate(examples[i : i + batch_size], pad_id).items()}
        total += float(token_loss_sum(model, batch))
        tokens += target_tokens(batch)
    model.train()
    return total / max(1, tokens)


def optimizer_for(model: torch.nn.Module, spec: TrainSpec) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on norms and biases)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": spec.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    try:  # the fused kernel updates every tensor in one pass (CPU and CUDA, floating point)
        return torch.optim.AdamW(groups, lr=spec.lr, betas=spec.betas, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without it
        return torch.optim.AdamW(groups, lr=spec.lr, betas=spec.betas)


def run_dir_for(spec: TrainSpec) -> Path:
    return corral_home() / "runs" / f"{spec.output}-{spec.digest()}"


def train(
    spec: TrainSpec,
    registry: Registry | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    console: Console | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    settings: Settings | None = None,
) -> TrainResult:
    """Run `spec` to the end, checkpointing as it goes, and register the result as a new version.

    `settings` (default: corral.yaml and CORRAL_* variables) give the store, the artifacts and
    `tracing.mlflow_tracking_uri`; a given `registry` wins for the first two."""
    procs = distributed.start()
    try:
        settings = settings or load_settings()
        registry = registry or open_registry(settings)
        uri = settings.tracing.mlflow_tracking_uri
        return _train(spec, registry, procs, uri, resume, progress, console, on_step)
    finally:  # a failed rank leaves the group too, so the others do not wait on it forever
        distributed.stop(procs)


def _train(
    spec: TrainSpec,
    registry: Registry,
    procs: distributed.Processes,
    mlflow_uri: str | None,
    resume: bool,
    progress: bool,
    console: Console | None,
    on_step: Callable[[int, dict[str, float]], None] | None,
) -> TrainResult:
    # -- seeds ---------------------------------------------------------------------------------
    torch.manual_seed(spec.seed)
    random.seed(spec.seed)
    run_dir = run_dir_for(spec)
    run_dir.mkdir(parents=True, exist_ok=True)

    # -- data and model ----------------------------------------------------------------------
    dataset = registry.datasets.get(spec.dataset)
    with procs.main_first():  # rank 0 fills the artifact cache before the others read it
        base = find_base(spec, registry)
    model, tokenizer = load_model(base.path, spec)
    max_len = sequence_length(spec, context_length(model.config))
    if spec.method == "lora":
        model = add_lora(model, spec.lora)
    model.to(procs.device)
    train_set, skipped = encode_rows(
        registry.datasets.rows(dataset.ref, "train"), dataset.schema_kind, tokenizer, max_len
    )
    val_set, _ = encode_rows(
        registry.datasets.rows(dataset.ref, "validation")[: spec.eval_rows],
        dataset.schema_kind,
        tokenizer,
        max_len,
    )
    if not train_set:
        raise InvalidInputError(
            f"dataset {dataset.ref} has no train rows with target tokens within max_seq_len"
        )
    raw_model = model
    if procs.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    batch_tokens = spec.batch_size * spec.grad_accum * procs.world
    total = spec.max_steps or max(1, math.ceil(spec.epochs * len(train_set) / batch_tokens))

    # -- optimizer, and the checkpoint to resume from ---------------------------------------
    optimizer = optimizer_for(raw_model, spec)
    start = 0
    if resume:
        start = checkpoint.load_checkpoint(run_dir, registry.artifacts, raw_model, optimizer)
    elif procs.is_main:
        checkpoint.clear(run_dir, registry.artifacts)
    tracker = MLflowRun(
        f"{spec.output}-{spec.digest()}", spec.model_dump(mode="json"), enabled=procs.is_main, uri=mlflow_uri
    )
    bar = TrainProgress(total, start=start, enabled=progress and procs.is_main, console=console)
    if start:
        bar.note(f"resumed {run_dir.name} from its checkpoint at step {start}")
    elif resume:  # a changed spec is a different run, with checkpoints of its own
        bar.note(f"--resume: no checkpoint for {run_dir.name} (this exact spec); starting at step 0")
    if dataset.schema_kind == "classification":
        bar.note(CLASSIFICATION_NOTE.format(dataset=dataset.ref))
    if skipped:
        bar.note(f"skipped {skipped} train rows with no target tokens within max_seq_len={max_len}")

    # -- the loop ----------------------------------------------------------------------------
    autocast = torch.autocast(
        procs.device.type, dtype=torch.bfloat16, enabled=spec.bf16 and procs.device.type == "cuda"
    )
    pad_id = int(tokenizer.pad_token_id)
    metrics: dict[str, float] = {}
    step_times: list[float] = []
    model.train()
    try:
        for step in range(start, total):
            began = time.perf_counter()
            lr = lr_at(step, spec, total)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batches = [
                collate(
                    [
                        train_set[i]
                        for i in micro_batch_indices(
                            step * spec.grad_accum + m,
                            len(train_set),
                            spec.batch_size,
                            procs.world,
                            procs.rank,
                            spec.seed,
                        )
                    ],
                    pad_id,
                )
                for m in range(spec.grad_accum)
            ]
            step_tokens = procs.sum(sum(target_tokens(b) for b in batches))
            loss_sum = 0.0
            for m, batch in enumerate(batches):
                batch = {k: v.to(procs.device) for k, v in batch.items()}
                last = m == spec.grad_accum - 1
                with nullcontext() if last or procs.world == 1 else model.no_sync(), autocast:
                    loss = token_loss_sum(model, batch)
                # DDP averages gradients over processes; scale by world so the result is a global mean.
                (loss * procs.world / step_tokens).backward()
                loss_sum += float(loss.detach())
            if spec.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(raw_model.parameters(), spec.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

            seconds = time.perf_counter() - began
            step_times.append(seconds)
            seen = procs.sum(sum(int(b["attention_mask"].sum()) for b in batches))
            metrics.update(train_loss=procs.sum(loss_sum) / step_tokens, lr=lr, tokens_per_s=seen / seconds)
            done = step + 1
            if (done % spec.eval_every == 0 or done == total) and val_set:
                val_loss = evaluate(raw_model, val_set, spec.batch_size, pad_id, procs.device)
                metrics.update(val_loss=val_loss, val_perplexity=math.exp(min(val_loss, 50.0)))
                bar.note(f"step {done}: train loss {metrics['train_loss']:.4f}, val loss {val_loss:.4f}")
            bar.update(done, metrics["train_loss"], metrics["tokens_per_s"])
            tracker.log(metrics, done)
            if on_step is not None:
                on_step(done, dict(metrics))
            if done % spec.checkpoint_every == 0 and done < total:
                if procs.is_main:
                    checkpoint.save_checkpoint(run_dir, registry.artifacts, done, raw_model, optimizer)
                procs.barrier()
    except BaseException:
        tracker.fail()
        raise
    finally:
        bar.close()

    # -- save and register (the first process only) ----------------------------------------
    metrics = {k: round(v, 6) for k, v in metrics.items() if k != "lr"}
    metrics.update(steps=float(total), train_rows=float(len(train_set)))
    version = None
    if procs.is_main:
        version = _register(
            spec,
            registry,
            raw_model,
            tokenizer,
            run_dir,
            base.ref or str(base.path),
            dataset.ref,
            metrics,
            tracker,
        )
        checkpoint.clear(run_dir, registry.artifacts)
        bar.note(f"registered [bold]{version.ref}[/bold] ({version.kind})")
    procs.barrier()
    return TrainResult(version, metrics, run_dir, start, step_times)


def _register(
    spec: TrainSpec,
    registry: Registry,
    model: Any,
    tokenizer: Any,
    run_dir: Path,
    base: str,
    dataset: str,
    metrics: dict[str, float],
    tracker: MLflowRun,
) -> ModelVersion:
    """Save the final weights (or adapter), register them with their lineage, log them to MLflow."""
    final = run_dir / "final"
    shutil.rmtree(final, ignore_errors=True)
    if hasattr(model, "config"):
        model.config.use_cache = True
    try:
        save_model(model, tokenizer, final)
        version = registry.models.register(
            spec.output,
            final,
            base=base if spec.method == "lora" else None,
            lineage={
                "base": base,
                "dataset": dataset,
                "method": spec.method,
                "run": run_dir.name,
                "config": spec.model_dump(mode="json"),
            },
            metrics=metrics,
            tags=spec.tags,
            description=spec.description or f"{spec.method} fine-tune of {base} on {dataset}",
        )
        tracker.finish(final, {"corral.version": version.ref})
    except checkpoint.WRITE_ERRORS as exc:  # a full disk, whichever library noticed it
        raise CorralError(
            f"cannot save the trained model: {checkpoint.write_reason(exc, run_dir)}",
            hint=f"nothing was registered; free space for {run_dir} and the artifact store, "
            "then rerun with --resume",
        ) from None
    finally:
        shutil.rmtree(final, ignore_errors=True)
    if spec.alias:
        version = registry.models.set_alias(
            spec.output, spec.alias, version.version, reason=f"trained by run {run_dir.name}"
        )
    return version
