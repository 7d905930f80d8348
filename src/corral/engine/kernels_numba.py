"""numba kernels for `corral.engine.kernels` (imported only where numba is installed).

Module-level, so numba's on-disk cache (`cache=True`) finds them again in the next process: the
first compile takes about 6 s on 2 cores, a cached load well under one.
"""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic, overload


@intrinsic
def _widen(typingctx: Any, word: Any) -> Any:
    """A bf16's 16 bits (as uint16) -> the fp32 whose high half they are: a shift, no rounding."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        wide = builder.shl(builder.zext(args[0], ir.IntType(32)), ir.Constant(ir.IntType(32), 16))
        return builder.bitcast(wide, ir.FloatType())

    return nb.float32(nb.uint16), codegen


@intrinsic
def _narrow(typingctx: Any, value: Any) -> Any:
    """An fp32 -> the bf16 nearest to it (ties to even), as its 16 bits: what torch's cast does."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        i32 = ir.IntType(32)
        bits = builder.bitcast(args[0], i32)
        odd = builder.and_(builder.lshr(bits, ir.Constant(i32, 16)), ir.Constant(i32, 1))
        rounded = builder.add(bits, builder.add(odd, ir.Constant(i32, 0x7FFF)))
        return builder.trunc(builder.lshr(rounded, ir.Constant(i32, 16)), ir.IntType(16))

    return nb.uint16(nb.float32), codegen


def like(out: Any, value: Any) -> Any:
    """An fp32 value as an element of `out`: itself, or narrowed to bf16 words."""
    raise NotImplementedError  # only called from compiled code


@overload(like, inline="always")
def _like(out: Any, value: Any) -> Any:
    def narrowed(out: Any, value: Any) -> Any:
        return _narrow(value)  # type: ignore[call-arg]  # an intrinsic: its typing context is numba's

    def as_is(out: Any, value: Any) -> Any:
        return value

    return {types.uint16: narrowed, types.float32: as_is}.get(out.dtype)


def load(x: Any) -> Any:
    """An element of K or V as fp32 (fp32 as it is; bf16 stored as uint16 words, widened)."""
    raise NotImplementedError  # only called from compiled code


@overload(load, inline="always")
def _load(x: Any) -> Any:
    def widened(x: Any) -> Any:
        return _widen(x)  # type: ignore[call-arg]  # an intrinsic: its typing context is numba's

    def as_is(x: Any) -> Any:
        return x

    return {types.uint16: widened, types.float32: as_is}.get(x)


@nb.njit(inline="always", fastmath=True)
def _exp_in_place(s: Any, n: int) -> Any:
    """s: [group, n] scores -> exp(s - max) in place; returns each group's sum."""
    groups = s.shape[0]
    totals = np.empty(groups, dtype=np.float32)
    for g in range(groups):
        top = s[g, 0]
        for c in range(1, n):
            top = max(top, s[g, c])
        total = np.float32(0.0)
        for c in range(n):
            e = np.exp(s[g, c] - top)
            s[g, c] = e
            total += e
        totals[g] = total
    return totals


@nb.njit(parallel=True, fastmath=True, nogil=True, cache=True)
def attend(q: Any, k: Any, v: Any, new_k: Any, new_v: Any, lengths: Any, scale: Any, out: Any) -> None:
    """q, out: [rows, kv_heads, group, dim] fp32; k, v: [rows, kv_heads, context, dim] fp32 or
    bf16 words; new_k, new_v: [rows, kv_heads, dim], this step's K/V in k's dtype, written at each
    row's last position (length - 1) first; lengths: [rows]. Each (row, kv head) reads its
    context's K, then its V, once."""
    rows, heads, groups, dim = q.shape
    # head-major order: prange splits it in even halves, and rows (sorted longest first) would
    # otherwise put all the long contexts on the first thread
    for i in nb.prange(rows * heads):
        h = i // rows
        b = i - h * rows
        n = lengths[b]
        if n == 0:
            continue
        kb, vb, qb = k[b, h], v[b, h], q[b, h]
        kb[n - 1, :] = new_k[b, h]
        vb[n - 1, :] = new_v[b, h]
        s = np.empty((groups, n), dtype=np.float32)
        for c in range(n):
            for g in range(groups):
                dot = np.float32(0.0)
                for d in range(dim):
                    dot += load(kb[c, d]) * qb[g, d]
                s[g, c] = dot * scale
        totals = _exp_in_place(s, n)
        acc = np.zeros((groups, dim), dtype=np.float32)
        for c in range(n):
            for g in range(groups):
                p = s[g, c]
                for d in range(dim):
                    acc[g, d] += p * load(vb[c, d])
        for g in range(groups):
            inv = np.float32(1.0) / totals[g]
            for d in range(dim):
                out[b, h, g, d] = acc[g, d] * inv


@nb.njit(parallel=True, fastmath=True, nogil=True, cache=True)
def gemv(x: Any, w: Any, bias: Any, out: Any) -> None:
    """out[r] = w @ x[r] + bias for the few rows of x: x [rows, in], w [out, in] and out [rows, out]
    fp32 or bf16 words, bias [out] fp32. Each weight row is read from memory once."""
    rows, size = x.shape
    for o in nb.prange(w.shape[0]):
        wo = w[o]
        for r in range(rows):
            acc = np.float32(0.0)
            for i in range(size):
                acc += load(wo[i]) * load(x[r, i])
            out[r, o] = like(out, acc + bias[o])
