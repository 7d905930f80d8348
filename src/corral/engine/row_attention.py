"""Decode attention over the kept rows (`corral.engine.decode_rows`) in one compiled CPU kernel.

A decode query reads its whole context once for the scores and once for the values, two
multiply-adds per element loaded: decode attention is a stream through memory and nothing else.
torch's fused SDPA took these one-row queries at about 11 GB/s on a 2-core AMD EPYC, where a plain
read of the same K/V runs at 24 (GPT-2, 32 rows x 12 heads x 280 context, 12 layers, fp32): its
flash kernel blocks the context for queries of many rows, and the padded groups read every row to
its group's longest. This kernel (numba, compiled on first use and cached on disk) walks each
(row, kv head) context to that row's own length, K then V, the head's query group sharing each
key and value: 26 GB/s there, and no padding or masks to build. The README workload's batch-32
decode spent 7.0 s of 16.7 in attention with SDPA, 4.0 with this.

fp32 and bf16 (read as raw 16-bit words and widened to fp32 in registers; scores, softmax and sums in
fp32, as SDPA's math path does). Without numba (not installed, or it fails to compile) the
engine attends through torch's SDPA in padded groups as before (`available()` is False).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)

_kernel: Any = None  # corral.engine.row_kernels.attend once loaded
_failed = False


def available(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether the kernel serves this dtype and device (numba installed, compiled without error)."""
    global _kernel, _failed
    if device.type != "cpu" or dtype not in (torch.float32, torch.bfloat16) or _failed:
        return False
    if os.environ.get("CORRAL_ROW_ATTENTION", "1") == "0":
        return False
    if _kernel is None:
        try:
            import numba

            from corral.engine.row_kernels import attend as kernel

            numba.set_num_threads(min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
            _warm_up(kernel)
            _kernel = kernel
        except Exception as exc:  # an old numba, a broken LLVM: the SDPA path still works
            log.warning(
                "decode attention falls back to torch SDPA: numba kernel unavailable (%s)",
                str(exc).strip().splitlines()[0],
            )
            _failed = True
            return False
    return True


def _warm_up(kernel: Any) -> None:
    """Compile (or load from numba's cache) the kernel for the layouts the engine passes: one layer
    of the rows (contiguous) and a strided view. The first compile takes ~10 s on 2 cores."""
    q, out = np.zeros((1, 1, 1, 4), dtype=np.float32), np.empty((1, 1, 1, 4), dtype=np.float32)
    for dtype in (torch.float32, torch.bfloat16):
        rows = torch.zeros((1, 1, 1, 2, 4), dtype=dtype)
        for k in (_words(rows[0]), _words(rows[0, :, :, :1])):
            kernel(q, k, k, np.ones(1, dtype=np.int64), np.float32(1.0), out)


def _words(x: Tensor) -> np.ndarray:
    return x.view(torch.uint16).numpy() if x.dtype == torch.bfloat16 else x.numpy()


def attend(q: Tensor, k: Tensor, v: Tensor, lengths: np.ndarray, scale: float) -> Tensor:
    """q: [rows, kv_heads, group, dim]; k, v: [rows, kv_heads, context, dim] (strided views of the
    rows); lengths: [rows] int64, each row's context (0: a free row, its output left unset).
    Returns [rows, kv_heads, group, dim] in q's dtype."""
    assert _kernel is not None
    qf = q.float().contiguous()
    out = torch.empty_like(qf)
    _kernel(qf.numpy(), _words(k), _words(v), lengths, np.float32(scale), out.numpy())
    return out if q.dtype == torch.float32 else out.to(q.dtype)
