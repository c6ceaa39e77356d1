"""Tier 1: the DPO family on hand-built sequence log-probs."""
import math

import pytest
import torch

from rlhfkit.losses.dpo import DPO_LOSSES, DPOLossConfig, PreferenceLogps, dpo_loss

KEYS = {"loss/dpo", "rewards/chosen", "rewards/rejected", "rewards/accuracy", "rewards/margin"}


def make(pc, pr, rc=None, rr=None, tc=None, tr=None, **kw):
    t = lambda x: None if x is None else torch.tensor(x, dtype=torch.float64)  # noqa: E731
    return PreferenceLogps(
        policy_chosen=t(pc), policy_rejected=t(pr), ref_chosen=t(rc), ref_rejected=t(rr),
        chosen_tokens=t(tc), rejected_tokens=t(tr), **kw,
    )


def test_policy_equals_reference_gives_log2():
    lp = make([-5.0, -7.0], [-6.0, -3.0], [-5.0, -7.0], [-6.0, -3.0])
    loss, m = dpo_loss("sigmoid", lp, DPOLossConfig())
    assert loss.item() == pytest.approx(math.log(2))
    assert m["rewards/chosen"].item() == 0 and m["rewards/margin"].item() == 0
    assert m["rewards/accuracy"].item() == 0.5  # ties count half
    assert KEYS <= m.keys()


def test_sigmoid_by_hand():
    # h = (-4 - -5) - (-6 - -5) = 1 - (-1) = 2; beta 0.5 -> -log sigmoid(1).
    lp = make([-4.0], [-6.0], [-5.0], [-5.0])
    loss, m = dpo_loss("sigmoid", lp, DPOLossConfig(beta=0.5))
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1)))
    assert m["rewards/chosen"].item() == pytest.approx(0.5)
    assert m["rewards/rejected"].item() == pytest.approx(-0.5)
    assert m["rewards/margin"].item() == pytest.approx(1.0)
    assert m["rewards/accuracy"].item() == 1.0


def test_cdpo_and_robust():
    lp = make([-4.0], [-6.0], [-5.0], [-5.0])  # h = 2; beta 0.5 -> beta h = 1
    ls = lambda x: -math.log1p(math.exp(-x))  # noqa: E731  log sigmoid
    base, _ = dpo_loss("sigmoid", lp, DPOLossConfig(beta=0.5))
    assert dpo_loss("cdpo", lp, DPOLossConfig(beta=0.5, label_smoothing=0.0))[0].item() == base.item()
    assert dpo_loss("robust", lp, DPOLossConfig(beta=0.5))[0].item() == pytest.approx(base.item())
    cdpo, _ = dpo_loss("cdpo", lp, DPOLossConfig(beta=0.5, label_smoothing=0.1))
    assert cdpo.item() == pytest.approx(-0.9 * ls(1) - 0.1 * ls(-1))
    robust, _ = dpo_loss("robust", lp, DPOLossConfig(beta=0.5, label_smoothing=0.1))
    assert robust.item() == pytest.approx((-0.9 * ls(1) + 0.1 * ls(-1)) / 0.8)
    with pytest.raises(ValueError):
        dpo_loss("robust", lp, DPOLossConfig(label_smoothing=0.5))


def test_ipo():
    cfg = DPOLossConfig(beta=0.1)  # target h = 1/(2 * 0.1) = 5
    at_target = make([0.0], [-5.0], [0.0], [0.0])
    assert dpo_loss("ipo", at_target, cfg)[0].item() == pytest.approx(0.0)
    at_zero = make([-1.0], [-1.0], [-1.0], [-1.0])
    assert dpo_loss("ipo", at_zero, cfg)[0].item() == pytest.approx(25.0)
    # Overshooting is penalised too: h = 7 -> (7 - 5)^2.
    assert dpo_loss("ipo", make([2.0], [-5.0], [0.0], [0.0]), cfg)[0].item() == pytest.approx(4.0)


def test_hinge():
    cfg = DPOLossConfig(beta=0.1)
    assert dpo_loss("hinge", make([0.0], [-5.0], [0.0], [0.0]), cfg)[0].item() == pytest.approx(0.5)
    assert dpo_loss("hinge", make([0.0], [-20.0], [0.0], [0.0]), cfg)[0].item() == 0.0


def test_simpo_by_hand_and_ignores_reference():
    # m_w = -10/5 = -2, m_l = -12/4 = -3; beta 2, gamma = 0.5 * 2 = 1: logits = -4 + 6 - 1 = 1.
    cfg = DPOLossConfig(beta=2.0, simpo_gamma_beta_ratio=0.5)
    lp = make([-10.0], [-12.0], tc=[5.0], tr=[4.0])
    loss, m = dpo_loss("simpo", lp, cfg)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1)))
    assert m["rewards/chosen"].item() == pytest.approx(-4.0)
    with_ref, _ = dpo_loss("simpo", make([-10.0], [-12.0], [-1.0], [-50.0], [5.0], [4.0]), cfg)
    assert with_ref.item() == loss.item()


def test_orpo_by_hand_and_ignores_reference():
    # m_w = log 0.5 -> odds 1, log odds 0; m_l = log 0.25 -> odds 1/3, log odds -log 3.
    # L = -log 0.5 - 0.1 * log sigmoid(log 3) = log 2 - 0.1 * log(3/4).
    lp = make([2 * math.log(0.5)], [3 * math.log(0.25)], tc=[2.0], tr=[3.0])
    loss, m = dpo_loss("orpo", lp, DPOLossConfig(orpo_lambda=0.1))
    assert loss.item() == pytest.approx(math.log(2) - 0.1 * math.log(0.75))
    assert m["loss/nll"].item() == pytest.approx(math.log(2))
    assert m["orpo/log_odds_ratio"].item() == pytest.approx(math.log(3))
    lp_ref = make([2 * math.log(0.5)], [3 * math.log(0.25)], [0.0], [-9.0], [2.0], [3.0])
    assert dpo_loss("orpo", lp_ref, DPOLossConfig())[0].item() == loss.item()


def test_orpo_log_odds_stable_near_certainty():
    # p = exp(-1e-4): log odds = log p - log(1 - p), exact in float64 via the closed form.
    m = -1e-4
    expected = m - math.log(-math.expm1(m))
    lp = PreferenceLogps(
        policy_chosen=torch.tensor([m], dtype=torch.float32), policy_rejected=torch.tensor([math.log(0.5)]),
        chosen_tokens=torch.ones(1), rejected_tokens=torch.ones(1),
    )
    _, metrics = dpo_loss("orpo", lp, DPOLossConfig())
    assert metrics["orpo/log_odds_ratio"].item() == pytest.approx(expected, rel=1e-4)
    certain = PreferenceLogps(
        policy_chosen=torch.zeros(1, requires_grad=True), policy_rejected=torch.zeros(1),
        chosen_tokens=torch.ones(1), rejected_tokens=torch.ones(1),
    )
    loss, _ = dpo_loss("orpo", certain, DPOLossConfig())
    assert torch.isfinite(loss)


def test_kto_symmetric_and_reference_point():
    beta = 0.1
    cfg = DPOLossConfig(beta=beta)
    # Log-ratios +3 and -3: z0 = 0; both halves lose 1 - sigmoid(0.3).
    loss, m = dpo_loss("kto", make([0.0], [-3.0], [-3.0], [0.0]), cfg)
    assert loss.item() == pytest.approx(1 - 1 / (1 + math.exp(-0.3)))
    assert m["kto/reference_point"].item() == 0.0
    # Log-ratios 3 and 1: z0 = 2; desirable 1 - sig(0.1), undesirable 1 - sig(0.1); weights 2 and 1.
    cfg_w = DPOLossConfig(beta=beta, kto_desirable_weight=2.0, kto_undesirable_weight=1.0)
    loss, m = dpo_loss("kto", make([3.0], [1.0], [0.0], [0.0]), cfg_w)
    assert m["kto/reference_point"].item() == pytest.approx(2.0)
    assert loss.item() == pytest.approx((2 + 1) / 2 * (1 - 1 / (1 + math.exp(-0.1))))
    # Negative batch KL is clamped to 0.
    _, m = dpo_loss("kto", make([-1.0], [-1.0], [0.0], [0.0]), cfg)
    assert m["kto/reference_point"].item() == 0.0


def test_kto_unpaired_labels_and_given_reference():
    cfg = DPOLossConfig(beta=1.0)
    # Both slots desirable, z0 given as 0: losses 1 - sig(1) and 1 - sig(-1).
    lp = make([1.0], [-1.0], [0.0], [0.0], rejected_desirable=torch.tensor([True]), kl_reference=torch.tensor(0.0))
    loss, _ = dpo_loss("kto", lp, cfg)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert loss.item() == pytest.approx(((1 - sig(1)) + (1 - sig(-1))) / 2)


def test_all_variants_backprop_and_report():
    for name in DPO_LOSSES:
        g = torch.Generator().manual_seed(0)
        pc = (-torch.rand(4, generator=g, dtype=torch.float64) * 5).requires_grad_()
        pr = (-torch.rand(4, generator=g, dtype=torch.float64) * 5).requires_grad_()
        lp = PreferenceLogps(
            policy_chosen=pc, policy_rejected=pr,
            ref_chosen=pc.detach() - 0.1, ref_rejected=pr.detach() + 0.1,
            chosen_tokens=torch.full((4,), 3.0), rejected_tokens=torch.full((4,), 4.0),
        )
        loss, m = dpo_loss(name, lp, DPOLossConfig(label_smoothing=0.1))
        loss.backward()
        assert torch.isfinite(loss), name
        assert pc.grad is not None and pc.grad.abs().sum() > 0, name
        assert torch.isfinite(pr.grad).all(), name
        assert KEYS <= m.keys(), name
        assert all(not v.requires_grad and v.dim() == 0 for v in m.values()), name


def test_sigmoid_gradient_direction():
    pc = torch.tensor([-3.0], requires_grad=True)
    pr = torch.tensor([-3.0], requires_grad=True)
    loss, _ = dpo_loss("sigmoid", PreferenceLogps(pc, pr, torch.tensor([-3.0]), torch.tensor([-3.0])), DPOLossConfig())
    loss.backward()
    # At h = 0: dL/dpc = -beta * sigmoid(0) = -0.05; descent raises chosen, lowers rejected.
    assert pc.grad.item() == pytest.approx(-0.05)
    assert pr.grad.item() == pytest.approx(0.05)


def test_errors_name_the_options_and_missing_inputs():
    lp = make([-1.0], [-2.0])
    with pytest.raises(ValueError, match="sigmoid"):
        dpo_loss("nope", lp, DPOLossConfig())
    for name in ("sigmoid", "ipo", "hinge", "robust", "kto"):
        with pytest.raises(ValueError, match="reference"):
            dpo_loss(name, lp, DPOLossConfig())
    with pytest.raises(ValueError, match="tokens"):
        dpo_loss("simpo", lp, DPOLossConfig())
