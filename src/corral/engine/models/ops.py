"""Linear layers with weights prepacked for oneDNN on CPU.

`F.linear` on CPU goes to MKL, which on skinny batches (decode steps of a few to 64 tokens)
reaches a fraction of its peak, and on AMD CPUs runs its AVX2 kernels. oneDNN's matmul with the
weight reordered once at load ("packed" for its kernels) was 1.5-2.6x faster for decode batches
of 1-64 tokens on GPT-2's shapes (about 3x on the LM head at 32 rows) and 1.2x faster than MKL
at 2048 rows. bf16 weights are packed too where oneDNN has bf16 kernels: at 32 rows on the
decode-heavy Llama's shapes that was 1.2-1.3x faster than bf16 `F.linear` (one thread), with
the same results. A packed weight is an opaque tensor usable only by oneDNN; other devices and
dtypes, or a torch built without oneDNN, use `F.linear`.

Batches of one or two rows (batch-1 decode) go instead to `corral.engine.kernels.gemv`, which reads
the plain weight once at about 23-31 GB/s where oneDNN's packed kernels read it at 17-20 (the
decode-heavy Llama's 25 linear layers, 2 threads, AMD EPYC: fp32 3.7 against 4.9 ms at one row,
3.7 against 5.0 at two, 0.94x at four; bf16 1.36x and 1.15x, 1.03x at four). So where that kernel
serves the dtype the plain weight is kept beside the packed one: the weights take twice their
memory. In-process batch-1 decode went from 110 to 190 tok/s on that Llama (fp32, with the row
attention kernel), 183 to 233 in bf16, GPT-2 fp32 from 29-36 to 43-48.

oneDNN compiles and caches a kernel per input shape (up to 1024 per cache), so a worker that saw
every batch size from 1 to 4096 tokens would slowly grow by a hundred MB or more. Inputs are
padded to one of about 100 row counts up to 4096 instead, which keeps the caches small and memory
flat: up to 7 extra rows below 128 (where streaming the weights costs more than the rows) and
under 12.5% more rows above.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from corral.engine import kernels

if TYPE_CHECKING:
    from corral.engine.lora import LoraBatch

PACK_BATCH_HINT = 32  # the batch oneDNN picks its blocking for; every batch size still works
# batches of up to this many rows go through `corral.engine.kernels.gemv` on the plain weight,
# kept beside the packed one where the kernel serves the dtype (the weights' memory twice)
GEMV_ROWS = 2


def padded_rows(rows: int) -> int:
    """The row count a batch of `rows` is padded to: exact up to 8, then multiples of 8, 16, 64."""
    step = 1 if rows <= 8 else 8 if rows <= 128 else 16 if rows <= 512 else 64
    return -(-rows // step) * step


def _can_pack(weight: Tensor) -> bool:
    if weight.dtype == torch.bfloat16:  # only where oneDNN has real bf16 kernels (AVX-512 BF16, AMX)
        dtype_ok = torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    else:
        dtype_ok = weight.dtype == torch.float32
    return (
        weight.device.type == "cpu"
        and dtype_ok
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


class Linear:
    """`y = x @ weight^T + bias` for x of shape [tokens, in_features]."""

    def __init__(self, weight: Tensor, bias: Tensor | None = None) -> None:
        self.bias = bias
        self.out_features, self.in_features = weight.shape
        self.device, self.dtype = weight.device, weight.dtype
        self.weight: Tensor | None = weight
        self.packed: Tensor | None = None
        self.small: Tensor | None = None  # the plain weight for `kernels.gemv`, beside the packed one
        if _can_pack(weight):
            try:
                self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, PACK_BATCH_HINT)
                self.weight = None
            except RuntimeError:  # an op this build lacks after all: stay on F.linear
                self.packed = None
        if self.packed is not None and kernels.available(weight.dtype, weight.device):
            self.small = weight.contiguous()
            self.small_bias = (
                np.zeros(self.out_features, np.float32) if bias is None else bias.float().numpy().copy()
            )

    def to_device(self, tensor: Tensor) -> Tensor:
        """A tensor on this layer's device in its dtype (for LoRA pairs applied beside it)."""
        return tensor.to(device=self.device, dtype=self.dtype).contiguous()

    def __call__(self, x: Tensor, lora: LoraBatch | None = None) -> Tensor:
        """`lora`: this step's adapters, each adding its delta to its own rows (corral.engine.lora)."""
        y = self._base(x)
        return y if lora is None else lora.apply(self, x, y)

    def gelu(self, x: Tensor, lora: LoraBatch | None = None) -> Tensor:
        """`gelu(self(x))`, tanh approximation (GPT-2's), fused into oneDNN's matmul where the
        weight is packed and no adapter adds to the output first. torch's own tanh GELU is slow on
        CPU: 0.32 ms for GPT-2's [32, 3072] activations, the fused matmul + GELU 0.19 ms more than
        the matmul alone (1.08 against 1.75 ms for the two ops, 2 threads, AMD EPYC)."""
        if self.packed is not None and lora is None:
            return self._packed(x, "gelu", "tanh")
        return F.gelu(self(x, lora), approximate="tanh")

    def _base(self, x: Tensor) -> Tensor:
        if self.packed is not None:
            return self._packed(x, "none", "")
        assert self.weight is not None
        return F.linear(x, self.weight, self.bias)

    def _packed(self, x: Tensor, post_op: str, algorithm: str) -> Tensor:
        rows = x.shape[0]
        if self.small is not None and rows <= GEMV_ROWS:
            y = kernels.gemv(x, self.small, self.small_bias)
            return F.gelu(y, approximate=algorithm) if post_op == "gelu" else y
        pad = padded_rows(rows) - rows
        x = F.pad(x, (0, 0, 0, pad)) if pad else x.contiguous()
        y = torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, post_op, [], algorithm)
        return y[:rows] if pad else y
