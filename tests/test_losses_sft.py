"""Tier 1: SFT next-token loss."""
import math

import pytest
import torch
import torch.nn.functional as F

from rlhfkit.losses.sft import masked_nll_loss
from rlhfkit.trainers.distributed import step_share


def test_matches_cross_entropy_unmasked():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 13, generator=g)
    ids = torch.randint(0, 13, (3, 6), generator=g)
    loss, metrics = masked_nll_loss(logits, ids, torch.ones(3, 6))
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 13), ids[:, 1:].reshape(-1))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert metrics["tokens"].item() == 3 * 5  # the first token of each row is never a target
    assert metrics["loss/nll"].item() == pytest.approx(loss.item())


def test_masked_targets_by_hand():
    # V = 2. Position 0 logits [0, 0] -> p(token) = 1/2; position 1 logits [ln 3, 0] -> p(0) = 3/4.
    logits = torch.tensor([[[0.0, 0.0], [math.log(3), 0.0], [9.0, -9.0]]], requires_grad=True)
    ids = torch.tensor([[1, 1, 0]])
    # Targets: ids[1] = 1 predicted by pos 0 (p = 1/2), ids[2] = 0 predicted by pos 1 (p = 3/4).
    # Mask the first target out: loss = -log(3/4). mask[0] is ignored by construction.
    loss, metrics = masked_nll_loss(logits, ids, torch.tensor([[1, 0, 1]]))
    assert loss.item() == pytest.approx(-math.log(0.75), rel=1e-6)
    assert metrics["tokens"].item() == 1
    loss.backward()
    assert logits.grad[0, 0].abs().sum() == 0  # masked target gets no gradient
    # Both targets: mean of -log(1/2) and -log(3/4).
    loss2, _ = masked_nll_loss(logits, ids, torch.ones(1, 3))
    assert loss2.item() == pytest.approx((math.log(2) - math.log(0.75)) / 2, rel=1e-6)


def test_step_share_gives_accumulation_equivalence():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 5, 7, generator=g)
    ids = torch.randint(0, 7, (4, 5), generator=g)
    mask = torch.tensor([[0, 1, 1, 1, 1], [0, 0, 0, 1, 0], [0, 1, 1, 0, 0], [0, 0, 1, 1, 1]])
    full, _ = masked_nll_loss(logits, ids, mask)
    total = int(mask[:, 1:].sum())
    halves = 0.0
    for s in (slice(0, 2), slice(2, 4)):
        loss, metrics = masked_nll_loss(logits[s], ids[s], mask[s])
        halves = halves + loss * step_share(float(metrics["tokens"]), total, 1)
    assert halves.item() == pytest.approx(full.item(), rel=1e-6)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        masked_nll_loss(torch.zeros(2, 4, 3), torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 5))
