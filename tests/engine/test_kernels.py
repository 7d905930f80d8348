"""The numba row kernel for decode attention against torch's SDPA on the same values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from corral.engine import kernels


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.bfloat16, 0.03)])
@pytest.mark.parametrize("group", [1, 4])  # multi-head, and grouped-query (4 query heads per kv head)
def test_kernel_matches_sdpa_row_by_row_at_each_rows_length(
    dtype: torch.dtype, tol: float, group: int
) -> None:
    assert kernels.available(dtype, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    buf_k, buf_v = (torch.randn(2, 5, 3, 48, 16, generator=gen).to(dtype) for _ in range(2))
    k, v = buf_k[1, :, :, :40], buf_v[1, :, :, :40]  # strided views, as the kept rows are
    q = torch.randn(5, 3, group, 16, generator=gen).to(dtype)
    lengths = np.array([40, 1, 17, 0, 33])  # row 3 is free: neither written nor read
    new_k, new_v = (torch.randn(5, 3, 16, generator=gen).to(dtype) for _ in range(2))
    row3 = k[3].clone()
    out = kernels.attend(q, k, v, new_k, new_v, lengths, 0.25)
    assert out.dtype == dtype and out.shape == q.shape
    for row, n in enumerate(lengths):  # this step's K/V went to each row's last position first
        if n:
            assert torch.equal(k[row, :, n - 1], new_k[row]) and torch.equal(v[row, :, n - 1], new_v[row])
    assert torch.equal(k[3], row3)
    for row, n in enumerate(lengths):
        if n:
            want = F.scaled_dot_product_attention(
                q[row].float(), k[row, :, :n].float(), v[row, :, :n].float(), scale=0.25
            )
            assert (out[row].float() - want).abs().max() < tol, row


def test_other_dtypes_and_devices_are_not_served() -> None:
    assert not kernels.available(torch.float16, torch.device("cpu"))
    assert not kernels.available(torch.float32, torch.device("meta"))


def test_engine_greedy_output_is_the_same_with_and_without_the_kernel(tiny_model, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from corral.config import EngineSettings
    from corral.engine.llm_engine import LLMEngine
    from corral.engine.sequence import SamplingParams

    path = tiny_model("llama")
    outputs = []
    for kernel in (True, False):
        engine = LLMEngine(path, EngineSettings(block_size=4, dtype="float32"), num_blocks=64)
        assert engine.runner.decode_rows is not None
        engine.runner.decode_rows.kernel = kernel
        params = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
        seqs = [engine.add_request(list(range(3, 3 + n)), params) for n in (5, 11, 2)]
        while engine.has_unfinished():
            engine.step()
        outputs.append([s.output_token_ids for s in seqs])
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.bfloat16, 0.05)])
def test_gemv_matches_f_linear_and_serves_linear_layers_few_rows(dtype: torch.dtype, tol: float) -> None:
    from corral.engine.models.ops import GEMV_ROWS, Linear

    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(48, 40, generator=gen).to(dtype)
    bias = torch.randn(48, generator=gen).to(dtype)
    layer = Linear(weight, bias)
    for rows in (1, GEMV_ROWS, GEMV_ROWS + 3):  # the kernel, then oneDNN's packed matmul
        x = torch.randn(rows, 40, generator=gen).to(dtype)
        want = F.linear(x.float(), weight.float(), bias.float())
        got = layer(x)
        assert got.dtype == dtype and got.shape == (rows, 48)
        assert (got.float() - want).abs().max() < tol * want.abs().max(), rows
        gelu = layer.gelu(x)
        assert (gelu.float() - F.gelu(want, approximate="tanh")).abs().max() < tol * want.abs().max(), rows
    if layer.packed is not None:  # this CPU packs the dtype: the plain weight stays for the kernel
        assert layer.small is not None


def test_the_warm_up_compiles_what_the_engine_calls() -> None:
    """A call the warm-up did not foresee would compile in the middle of a request's step."""
    from corral.engine import kernels_numba
    from corral.engine.models.ops import Linear

    assert kernels.available(torch.float32, torch.device("cpu"))
    seen = {name: len(getattr(kernels_numba, name).signatures) for name in ("attend", "gemv")}
    for dtype in (torch.float32, torch.bfloat16):
        layer = Linear(torch.randn(8, 4).to(dtype))
        layer(torch.randn(1, 4).to(dtype))
        rows = torch.zeros(2, 3, 2, 6, 4, dtype=dtype)
        for k in (rows[0], rows[0, :, :, :5]):
            kernels.attend(
                torch.randn(3, 2, 1, 4).to(dtype), k, k, k[:, :, 0], k[:, :, 0], np.array([2, 1, 0]), 0.5
            )
    assert {name: len(getattr(kernels_numba, name).signatures) for name in seen} == seen
