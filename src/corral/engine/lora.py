"""Several LoRA adapters over one base in one batch: per-row deltas, no merge per request.

An adapter (PEFT format) is loaded once into `LoraWeights`: for each of our linear layers it
touches, one pair (A `[rank, in]`, B `[out, rank]`, the scale folded into B). Our fused layers
(Llama's q/k/v and gate/up) take the adapter's per-projection pairs side by side: A stacked, B
placed at each projection's output rows, so one fused pair gives exactly the per-projection
deltas. Each step, `LoraBatch` groups the batch's rows by adapter (in the spirit of punica's and
S-LoRA's segmented kernels): a linear layer adds `B @ (A @ x)` for each adapter's rows, so rows
of different adapters and of the plain base share every base matmul. `AdapterBook` finds
adapters by name (a directory, or a registry version over this base), keeps at most
`max_loaded` resident and drops the least recently used.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from corral.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from corral.engine.models import CausalLM
    from corral.engine.models.ops import Linear


def read_adapter(adapter_dir: Path) -> tuple[dict[str, Any], dict[str, Tensor], float]:
    """A PEFT LoRA directory: its config, its tensors and the scale (alpha / r, or / sqrt(r) for rsLoRA)."""
    from safetensors.torch import load_file

    from corral.engine.loader import _read_json

    cfg = _read_json(adapter_dir / "adapter_config.json")
    file = adapter_dir / "adapter_model.safetensors"
    if not file.is_file():
        raise InvalidInputError(f"{adapter_dir} has no adapter_model.safetensors")
    rank, alpha = int(cfg.get("r", 8)), float(cfg.get("lora_alpha", 8))
    scale = alpha / (rank**0.5 if cfg.get("use_rslora") else rank)
    return cfg, load_file(str(file)), scale


def lora_pairs(tensors: dict[str, Tensor]) -> list[tuple[str, Tensor, Tensor]]:
    """(module name without PEFT's prefix, A, B) for each LoRA-adapted module."""
    out = []
    for key, a in tensors.items():
        if ".lora_A." in key:
            module = key.split(".lora_A.")[0].removeprefix("base_model.model.")
            out.append((module, a, tensors[key.replace(".lora_A.", ".lora_B.")]))
    return out


@dataclass(eq=False)
class LoraWeights:
    """One adapter, ready to apply: per linear layer of the base, (A, B) with B already scaled."""

    name: str
    pairs: dict[Linear, tuple[Tensor, Tensor]]
    salt: int  # seeds its sequences' block hashes: the same tokens under another adapter have other K/V


def cache_salt(name: str) -> int:
    digest = hashlib.blake2b(f"lora:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def load_adapter(name: str, adapter_dir: Path, model: CausalLM) -> LoraWeights:
    """Read a PEFT adapter and place its pairs on the base model's (possibly fused) linear layers."""
    _, tensors, scale = read_adapter(adapter_dir)
    parts: dict[Linear, list[tuple[int, Tensor, Tensor]]] = {}
    for module, a, b in lora_pairs(tensors):
        target = model.lora_target(module)
        if target is None:
            raise InvalidInputError(
                f"adapter {adapter_dir} targets '{module}', which the engine cannot apply per request",
                hint="LoRA on the attention and MLP projections is supported; serve others merged, alone",
            )
        linear, offset = target
        if a.shape[1] != linear.in_features or offset + b.shape[0] > linear.out_features:
            raise InvalidInputError(f"adapter {adapter_dir} does not fit its base at '{module}'")
        parts.setdefault(linear, []).append((offset, a.float(), b.float() * scale))
    if not parts:
        raise InvalidInputError(f"{adapter_dir} holds no LoRA weights")
    pairs = {}
    for linear, segments in parts.items():
        a_all = torch.cat([a for _, a, _ in segments])
        b_all = torch.zeros(linear.out_features, a_all.shape[0])
        start = 0
        for offset, a, b in segments:
            b_all[offset : offset + b.shape[0], start : start + a.shape[0]] = b
            start += a.shape[0]
        pairs[linear] = (linear.to_device(a_all), linear.to_device(b_all))
    return LoraWeights(name, pairs, cache_salt(name))


@dataclass
class LoraBatch:
    """This step's rows grouped by adapter: (weights, rows as a slice when contiguous, else indices)."""

    groups: list[tuple[LoraWeights, slice | Tensor]] = field(default_factory=list)

    @classmethod
    def build(
        cls, adapters: list[LoraWeights | None], counts: list[int], device: torch.device
    ) -> LoraBatch | None:
        """From each scheduled sequence's adapter and token count, in the batch's row order."""
        if not any(adapters):
            return None
        rows: dict[LoraWeights, list[int]] = {}
        start = 0
        for lora, n in zip(adapters, counts, strict=True):
            if lora is not None:
                rows.setdefault(lora, []).extend(range(start, start + n))
            start += n
        groups: list[tuple[LoraWeights, slice | Tensor]] = []
        for lora, r in rows.items():
            contiguous = r[-1] - r[0] + 1 == len(r)  # one prefill, or every row: a view, no gather
            groups.append((lora, slice(r[0], r[-1] + 1) if contiguous else torch.tensor(r, device=device)))
        return cls(groups)

    def apply(self, linear: Linear, x: Tensor, y: Tensor) -> Tensor:
        """y (the base layer's output for x) plus each adapter's delta on its own rows, in place."""
        for lora, rows in self.groups:
            pair = lora.pairs.get(linear)
            if pair is None:
                continue
            a, b = pair
            delta = (x[rows] @ a.t()) @ b.t()
            if isinstance(rows, slice):
                y[rows] += delta
            else:
                y.index_add_(0, rows, delta)
        return y


Finder = Callable[[str], "tuple[str, Path] | None"]


class AdapterBook:
    """The adapters a worker can serve, by name; loaded on first use, the least recently used dropped.

    `find(name)` gives (the adapter's canonical name, its directory) or None when `name` is not an
    adapter of this base. A dropped adapter stays alive for the sequences still using it.
    """

    def __init__(self, model: CausalLM, find: Finder | None = None, max_loaded: int = 8) -> None:
        self.model = model
        self.find = find or (lambda name: None)
        self.max_loaded = max_loaded
        self._loaded: OrderedDict[str, LoraWeights] = OrderedDict()
        self._lock = threading.Lock()  # loads run on the server's threads, lookups on the engine's
        self.loads = 0

    @classmethod
    def from_dirs(cls, model: CausalLM, dirs: dict[str, Path], max_loaded: int = 8) -> AdapterBook:
        def find(name: str) -> tuple[str, Path] | None:
            return (name, Path(dirs[name])) if name in dirs else None

        return cls(model, find, max_loaded)

    @property
    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._loaded)

    def get(self, name: str) -> LoraWeights:
        """The adapter called `name`, loading it if it is not resident; NotFoundError if there is none."""
        with self._lock:
            hit = self._hit(name)
        if hit is not None:
            return hit
        found = self.find(name)
        if found is None:
            raise NotFoundError(f"model '{name}' is not served here")
        canonical, directory = found
        with self._lock:
            hit = self._hit(canonical)
        if hit is not None:
            return hit
        weights = load_adapter(canonical, directory, self.model)
        with self._lock:
            self._loaded[canonical] = weights
            self.loads += 1
            while len(self._loaded) > self.max_loaded:
                self._loaded.popitem(last=False)
        return weights

    def _hit(self, name: str) -> LoraWeights | None:
        weights = self._loaded.get(name)
        if weights is not None:
            self._loaded.move_to_end(name)
        return weights
