"""Tier 1: masked reductions and log-prob helpers on hand-built tensors."""
import math
import subprocess
import sys

import pytest
import torch

from rlhfkit.losses.common import (
    check_same_shape,
    entropy_from_logits,
    gather_logprobs,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
    tie_half_accuracy,
)
from rlhfkit.trainers.distributed import step_share

X = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
M = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)


def test_masked_sum_and_mean_by_hand():
    # Kept values: 1, 2, 4 -> sum 7, mean 7/3.
    assert masked_sum(X, M).item() == 7.0
    assert masked_mean(X, M).item() == pytest.approx(7 / 3)
    # Per row: [1+2, 4] and [3/2, 4/1].
    assert masked_sum(X, M, dim=1).tolist() == [3.0, 4.0]
    assert masked_mean(X, M.float(), dim=1).tolist() == [1.5, 4.0]


def test_masked_mean_empty_mask_is_zero_with_finite_grad():
    x = torch.tensor([[1.0, float("nan")]], requires_grad=True)
    m = torch.zeros(1, 2)
    out = masked_mean(x, m)
    out.backward()
    assert out.item() == 0.0
    assert torch.equal(x.grad, torch.zeros(1, 2))
    # Per row: the empty row is 0, the other its mean.
    rows = masked_mean(torch.tensor([[1.0, 3.0], [5.0, 7.0]]), torch.tensor([[1, 1], [0, 0]]), dim=1)
    assert rows.tolist() == [2.0, 0.0]


def test_masked_mean_broadcast_mask():
    # A [B, 1] mask selects whole rows of a [B, A] tensor: mean of row 0 = 2.
    assert masked_mean(X, torch.tensor([[1.0], [0.0]])).item() == pytest.approx(2.0)


def test_masked_var_by_hand():
    # Values 1, 2, 4: mean 7/3; squared deviations 16/9, 1/9, 25/9 -> sum 42/9.
    assert masked_var(X, M, unbiased=False).item() == pytest.approx(42 / 9 / 3)
    assert masked_var(X, M, unbiased=True).item() == pytest.approx(42 / 9 / 2)
    # A single kept value has variance 0 rather than an error.
    assert masked_var(X, torch.tensor([[1, 0, 0], [0, 0, 0]])).item() == 0.0


def test_masked_whiten_statistics_and_zeroed_padding():
    w = masked_whiten(X, M)
    assert masked_mean(w, M).item() == pytest.approx(0.0, abs=1e-6)
    assert masked_var(w, M).item() == pytest.approx(1.0, abs=1e-5)
    assert w[~M].abs().sum().item() == 0.0
    # shift_mean=False keeps the mean (7/3) and rescales only.
    w2 = masked_whiten(X, M, shift_mean=False)
    assert masked_mean(w2, M).item() == pytest.approx(7 / 3, abs=1e-5)


def test_masked_whiten_ignores_masked_values():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 7, generator=g)
    mask = torch.rand(4, 7, generator=g) > 0.4
    y = x.clone()
    y[~mask] = torch.randn(int((~mask).sum()), generator=g) * 1e6
    y[0, ~mask[0]] = float("inf")
    assert torch.equal(masked_whiten(x, mask), masked_whiten(y, mask))
    assert torch.isfinite(masked_whiten(y, mask)).all()


def test_step_share_gives_accumulation_equivalence():
    # Micro-batches with 2 and 1 tokens; their means weighted by their share of the 3 equal the full token mean.
    full = masked_mean(X, M)
    parts = masked_mean(X[:1], M[:1]) * step_share(2, 3, 1) + masked_mean(X[1:], M[1:]) * step_share(1, 3, 1)
    assert parts.item() == pytest.approx(full.item())


def test_gather_logprobs_matches_log_softmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=g)
    tokens = torch.randint(0, 11, (2, 5), generator=g)
    expected = torch.log_softmax(logits, -1).gather(-1, tokens[..., None])[..., 0]
    assert torch.allclose(gather_logprobs(logits, tokens), expected, atol=1e-6)
    # bf16 logits are upcast row by row; the result is float32.
    out = gather_logprobs(logits.bfloat16(), tokens)
    assert out.dtype == torch.float32
    expected_bf = torch.log_softmax(logits.bfloat16().float(), -1).gather(-1, tokens[..., None])[..., 0]
    assert torch.allclose(out, expected_bf, atol=1e-5)


def test_gather_logprobs_by_hand():
    # Uniform logits over 4 tokens: log(1/4) everywhere.
    out = gather_logprobs(torch.zeros(1, 2, 4), torch.tensor([[0, 3]]))
    assert torch.allclose(out, torch.full((1, 2), -math.log(4)))


def test_entropy_by_hand_and_with_banned_tokens():
    # Uniform over 4 -> log 4; one-hot-ish (-inf elsewhere) -> 0.
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [5.0, -math.inf, -math.inf, -math.inf]]], requires_grad=True)
    h = entropy_from_logits(logits)
    assert torch.allclose(h, torch.tensor([[math.log(4), 0.0]]), atol=1e-6)
    h.sum().backward()
    assert torch.isfinite(logits.grad).all()
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, 3, 6, generator=g)
    p = torch.softmax(z, -1)
    assert torch.allclose(entropy_from_logits(z), -(p * p.log()).sum(-1), atol=1e-6)


def test_tie_half_accuracy():
    assert tie_half_accuracy(torch.tensor([1.0, 0.0, -2.0])).tolist() == [1.0, 0.5, 0.0]


def test_check_same_shape_catches_broadcast_bug():
    with pytest.raises(ValueError, match="shape mismatch"):
        check_same_shape(values=torch.zeros(2, 3, 1), returns=torch.zeros(2, 3))


def test_losses_import_torch_only():
    code = "import sys, rlhfkit.losses; sys.exit(int('transformers' in sys.modules or 'accelerate' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
