"""CPU kernels compiled by numba where torch's ops leave memory bandwidth unused.

**Decode attention over the kept rows** (`corral.engine.decode_rows`, `attend`).

A decode query reads its whole context once for the scores and once for the values, two
multiply-adds per element loaded: decode attention is a stream through memory and nothing else.
torch's fused SDPA took these one-row queries at about 11 GB/s on a 2-core AMD EPYC, where a plain
read of the same K/V runs at 24 (GPT-2, 32 rows x 12 heads x 280 context, 12 layers, fp32): its
flash kernel blocks the context for queries of many rows, and the padded groups read every row to
its group's longest. This kernel (numba, compiled on first use and cached on disk) walks each
(row, kv head) context to that row's own length, K then V, the head's query group sharing each
key and value: 26 GB/s there, and no padding or masks to build. The README workload's batch-32
decode spent 7.0 s of 16.7 in attention with SDPA, 4.0 with this.

**Matrix-vector products for batches of a few rows** (`gemv`, used by `models.ops.Linear`).
At one row a linear layer is a read of its weight; oneDNN's packed kernels read it at about 17 GB/s
here, and this kernel streams each weight row once for all the batch's rows.

fp32 and bf16 (read as raw 16-bit words and widened to fp32 in registers; sums in fp32, as oneDNN
and SDPA's math path accumulate). Without numba (not installed, or it fails to compile) the engine
uses torch's ops throughout (`available()` is False); `CORRAL_CPU_KERNELS=0` turns them off.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)

_numba: Any = None  # corral.engine.kernels_numba once loaded
_failed = False


def available(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether the kernels serve this dtype and device (numba installed, compiled without error)."""
    global _numba, _failed
    if device.type != "cpu" or dtype not in (torch.float32, torch.bfloat16) or _failed:
        return False
    if os.environ.get("CORRAL_CPU_KERNELS", "1") == "0":
        return False
    if _numba is None:
        try:
            import numba

            from corral.engine import kernels_numba

            numba.set_num_threads(min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
            _warm_up(kernels_numba)
            _numba = kernels_numba
        except Exception as exc:  # an old numba, a broken LLVM: torch's ops still work
            log.warning(
                "the engine uses torch's ops only: its numba CPU kernels are unavailable (%s)",
                str(exc).strip().splitlines()[0],
            )
            _failed = True
            return False
    return True


def _warm_up(kernels: Any) -> None:
    """Compile (or load from numba's cache) the kernels for the layouts the engine passes: attention
    over one layer of the rows (contiguous) and over a strided view; a product with a contiguous
    weight. The first compile takes about 6 s on 2 cores, a load from the cache well under one."""
    q, out = np.zeros((1, 1, 1, 4), dtype=np.float32), np.empty((1, 1, 1, 4), dtype=np.float32)
    for dtype in (torch.float32, torch.bfloat16):
        rows = torch.zeros((1, 1, 1, 2, 4), dtype=dtype)
        new = _words(torch.zeros((1, 1, 4), dtype=dtype))
        for k in (_words(rows[0]), _words(rows[0, :, :, :1])):
            kernels.attend(q, k, k, new, new, np.ones(1, dtype=np.int64), np.float32(1.0), out)
        x, y = _words(torch.zeros((1, 4), dtype=dtype)), _words(torch.empty((1, 2), dtype=dtype))
        kernels.gemv(x, _words(rows[0, 0, 0]), np.zeros(2, dtype=np.float32), y)  # x, w, out: one dtype


def _words(x: Tensor) -> np.ndarray:
    return x.view(torch.uint16).numpy() if x.dtype == torch.bfloat16 else x.numpy()


def attend(
    q: Tensor, k: Tensor, v: Tensor, new_k: Tensor, new_v: Tensor, lengths: np.ndarray, scale: float
) -> Tensor:
    """q: [rows, kv_heads, group, dim]; k, v: [rows, kv_heads, context, dim] (strided views of the
    rows); new_k, new_v: [rows, kv_heads, dim], this step's K/V, stored at position length - 1 of
    each row before it is read (one pass instead of an index_put per layer); lengths: [rows] int64,
    each row's context with the new token (0: a free row, neither written nor read, its output
    left unset). Returns [rows, kv_heads, group, dim] in q's dtype."""
    assert _numba is not None
    qf = q.float().contiguous()
    out = torch.empty_like(qf)
    new_k, new_v = new_k.to(k.dtype).contiguous(), new_v.to(k.dtype).contiguous()
    _numba.attend(
        qf.numpy(),
        _words(k),
        _words(v),
        _words(new_k),
        _words(new_v),
        lengths,
        np.float32(scale),
        out.numpy(),
    )
    return out if q.dtype == torch.float32 else out.to(q.dtype)


def gemv(x: Tensor, weight: Tensor, bias: np.ndarray) -> Tensor:
    """`x @ weight.T + bias` for a few rows: x [rows, in]; weight [out, in], contiguous, fp32 or bf16;
    bias [out] fp32 (zeros for none). Returns [rows, out] in the weight's dtype, computed in fp32."""
    assert _numba is not None
    x = x.to(weight.dtype).contiguous()
    out = torch.empty((x.shape[0], weight.shape[0]), dtype=weight.dtype)
    _numba.gemv(_words(x), _words(weight), bias, _words(out))
    return out
