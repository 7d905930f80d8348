"""The CPU linear layer (oneDNN-packed weights) against `F.linear`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from corral.engine.models.ops import Linear


@pytest.mark.parametrize("rows", [1, 3, 32, 100])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_matches_f_linear(rows: int, with_bias: bool) -> None:
    g = torch.Generator().manual_seed(rows)
    weight = torch.randn(48, 40, generator=g) * 0.2
    bias = torch.randn(48, generator=g) if with_bias else None
    x = torch.randn(rows, 40, generator=g)
    got = Linear(weight, bias)(x)
    assert got.shape == (rows, 48)
    torch.testing.assert_close(got, F.linear(x, weight, bias), rtol=1e-5, atol=1e-5)


def test_linear_takes_non_contiguous_input() -> None:
    weight, x = torch.randn(16, 8), torch.randn(8, 5).t()
    torch.testing.assert_close(Linear(weight)(x), F.linear(x, weight), rtol=1e-5, atol=1e-5)


def test_other_dtypes_use_f_linear() -> None:
    weight, x = torch.randn(16, 8, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64)
    layer = Linear(weight)
    assert layer.packed is None and layer.weight is weight
    assert torch.equal(layer(x), F.linear(x, weight))


@pytest.mark.parametrize("rows", [1, 32, 100])
def test_bf16_linear_is_packed_where_onednn_has_bf16_and_matches_f_linear(rows: int) -> None:
    g = torch.Generator().manual_seed(rows)
    weight = (torch.randn(48, 40, generator=g) * 0.2).bfloat16()
    bias = torch.randn(48, generator=g).bfloat16()
    x = torch.randn(rows, 40, generator=g).bfloat16()
    layer = Linear(weight, bias)
    onednn_bf16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert (layer.packed is not None) == bool(onednn_bf16)
    got = layer(x)
    assert got.dtype == torch.bfloat16 and got.shape == (rows, 48)
    # both accumulate in fp32 and round the output once to bf16: at most one bf16 step apart
    torch.testing.assert_close(got, F.linear(x, weight, bias), rtol=2**-7, atol=2**-7)
