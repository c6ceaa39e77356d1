"""Tier 1: KL estimators (Schulman 2020) and KL controllers (Ziegler et al. 2019)."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhfkit.losses.kl import AdaptiveKLController, FixedKLController, kl_penalty


def test_estimators_by_hand():
    logp = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-2.0, -1.0]])
    # logr = ref - logp = [-1, 1].
    assert kl_penalty(logp, ref, "k1").tolist() == [[1.0, -1.0]]
    assert kl_penalty(logp, ref, "k2").tolist() == [[0.5, 0.5]]
    k3 = kl_penalty(logp, ref, "k3")
    expected = [(math.exp(-1) - 1) + 1, (math.e - 1) - 1]  # [e^-1, e - 2]
    assert torch.allclose(k3, torch.tensor([expected]))


def test_all_zero_when_policies_agree():
    x = torch.randn(3, 4)
    for est in ("k1", "k2", "k3"):
        assert torch.equal(kl_penalty(x, x, est), torch.zeros(3, 4))


def test_unknown_estimator_lists_options():
    with pytest.raises(ValueError, match="k1.*k2.*k3"):
        kl_penalty(torch.zeros(1, 1), torch.zeros(1, 1), "k4")


@settings(max_examples=200, deadline=None)
@given(
    st.floats(min_value=-50, max_value=0, allow_nan=False),
    st.floats(min_value=-50, max_value=0, allow_nan=False),
)
def test_k3_never_negative(logp, ref):
    out = kl_penalty(torch.tensor([[logp]]), torch.tensor([[ref]]), "k3")
    assert out.item() >= 0


def test_k1_and_k3_unbiased_for_samples_from_pi():
    # pi = (0.7, 0.3), ref = (0.4, 0.6): exact KL vs the mean over pi of each estimator.
    pi, ref = torch.tensor([0.7, 0.3]), torch.tensor([0.4, 0.6])
    exact = (pi * (pi / ref).log()).sum()
    for est in ("k1", "k3"):
        vals = kl_penalty(pi.log()[None], ref.log()[None], est)[0]
        assert (pi * vals).sum().item() == pytest.approx(exact.item(), rel=1e-5)


def test_fixed_controller():
    c = FixedKLController(0.02)
    c.update(100.0, 512)
    assert c.value == 0.02
    c2 = FixedKLController(1.0)
    c2.load_state_dict(c.state_dict())
    assert c2.value == 0.02


def test_adaptive_rule_by_hand():
    c = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    c.update(7.5, 1000)  # e = 7.5/6 - 1 = 0.25 -> clipped to 0.2; beta *= 1 + 0.2 * 0.1
    assert c.value == pytest.approx(0.1 * 1.02)
    c = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    c.update(6.6, 1000)  # e = 0.1 (inside the clip) -> beta *= 1.01
    assert c.value == pytest.approx(0.101)
    c = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    c.update(0.0, 1000)  # e = -1 -> clipped to -0.2 -> beta *= 0.98
    assert c.value == pytest.approx(0.098)
    c.update(6.0, 1000)  # on target: unchanged
    assert c.value == pytest.approx(0.098)


def test_adaptive_state_roundtrip():
    c = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    c.update(9.0, 512)
    state = c.state_dict()
    assert all(isinstance(v, float) for v in state.values())
    d = AdaptiveKLController(1.0, target=1.0, horizon=1.0)
    d.load_state_dict(state)
    assert (d.value, d.target, d.horizon) == (c.value, 6.0, 10_000.0)
