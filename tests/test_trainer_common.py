"""The shared training-step helpers: gradient clipping that doubles as the
non-finite check, the fused Adam that must match the per-tensor one, and the
learning-rate schedule (and where it differs from transformers')."""
import math

import pytest
import torch
from accelerate import Accelerator

from rlhfkit.trainers.errors import DivergenceError
from rlhfkit.trainers.optim import NonFiniteGuard, clip_gradients, lr_schedule, make_adam


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def test_clip_gradients_returns_the_norm_before_clipping_and_clips():
    model = _model()
    model(torch.randn(16, 4)).pow(2).sum().backward()
    expected = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters()))
    norm = clip_gradients(Accelerator(cpu=True), model.parameters(), 0.5)
    assert float(norm) == pytest.approx(expected, rel=1e-5)
    after = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters()))
    assert after == pytest.approx(0.5, rel=1e-4)
    # max_grad_norm <= 0 measures without clipping
    model.zero_grad()
    model(torch.randn(16, 4)).pow(2).sum().backward()
    before = [p.grad.clone() for p in model.parameters()]
    norm = clip_gradients(Accelerator(cpu=True), model.parameters(), 0.0)
    assert float(norm) == pytest.approx(math.sqrt(sum(float(g.pow(2).sum()) for g in before)), rel=1e-5)
    assert all(torch.equal(a, p.grad) for a, p in zip(before, model.parameters()))


def test_guard_names_the_parameter_with_a_nan_gradient_from_the_norm():
    model = _model()
    model(torch.randn(16, 4)).pow(2).sum().backward()
    model[2].weight.grad[0, 3] = float("nan")
    logged = []
    guard = NonFiniteGuard(2, "test", log=logged.append)
    norm = clip_gradients(Accelerator(cpu=True), model.parameters(), 1.0)
    assert not math.isfinite(float(norm))
    assert not guard.step_ok(7, {"loss": 1.0}, model.named_parameters(), norm)
    assert "2.weight" in logged[0] and "step 7" in logged[0]
    model.zero_grad()
    model(torch.randn(16, 4)).pow(2).sum().backward()  # a finite step resets the count
    assert guard.step_ok(8, {"loss": 1.0}, model.named_parameters(),
                         clip_gradients(Accelerator(cpu=True), model.parameters(), 1.0))
    assert not guard.step_ok(9, {"loss": float("inf")}, model.named_parameters(), torch.tensor(1.0))
    with pytest.raises(DivergenceError, match="test diverged at step 10: non-finite loss"):
        guard.step_ok(10, {"loss": float("nan")}, model.named_parameters(), torch.tensor(1.0))


@pytest.mark.parametrize("decoupled,weight_decay", [(True, 0.01), (False, 0.0)])
def test_fused_adam_matches_the_per_tensor_update(decoupled, weight_decay):
    models = [_model(1), _model(1)]
    fused = make_adam(models[0].parameters(), lr=1e-2, eps=1e-5, weight_decay=weight_decay, decoupled=decoupled)
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    plain = cls(models[1].parameters(), lr=1e-2, eps=1e-5, weight_decay=weight_decay, foreach=False)
    assert fused.defaults.get("fused") is True  # CPU supports the fused kernel in the pinned torch
    x = torch.randn(32, 4)
    for _ in range(20):
        for m, opt in zip(models, (fused, plain)):
            opt.zero_grad()
            m(x).pow(2).mean().backward()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


SCHEDULE_SIZES = [(1, 0), (7, 0), (10, 0), (100, 0), (10, 1), (10, 3), (100, 10), (37, 5)]


@pytest.mark.parametrize("total,warmup", SCHEDULE_SIZES)
def test_lr_schedule_values_and_how_they_differ_from_transformers(total, warmup):
    from transformers import get_scheduler

    def theirs(kind):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        lam = get_scheduler(kind, opt, num_warmup_steps=warmup, num_training_steps=total).lr_lambdas[0]
        return [lam(s) for s in range(total + 1)]

    cosine, linear, constant = (lr_schedule(k, total, warmup) for k in ("cosine", "linear", "constant"))
    # warmup reaches the peak on its last step; the first step already trains (1 / warmup)
    assert [constant(s) for s in range(warmup)] == [(s + 1) / warmup for s in range(warmup)]
    assert cosine(warmup) == linear(warmup) == constant(total - 1) == 1.0
    assert linear(total) == 0.0 and cosine(total) == pytest.approx(0.0, abs=1e-16)
    for kind, ours in (("cosine", cosine), ("linear", linear), ("constant_with_warmup", constant)):
        ref = theirs(kind)
        # transformers' warmup is one step behind: its first step has learning rate 0
        assert [ours(s) for s in range(warmup)] == ref[1:warmup + 1]
        after = [ours(s) for s in range(warmup, total)]
        if kind == "linear":  # (total - step) / (total - warmup) vs 1 - progress: the last bit may differ
            assert after == pytest.approx(ref[warmup:total], rel=0, abs=2e-16)
        else:
            assert after == ref[warmup:total]


def test_step_plan_covers_each_example_once_per_epoch_and_grouping_cuts_padding():
    import random

    from rlhfkit.trainers.data_plan import step_plan

    rng = random.Random(0)
    lengths = [rng.randint(5, 120) for _ in range(1000)]
    for grouped in (None, lengths):
        plan = step_plan(1000, 16, 2, 2.0, seed=3, lengths=grouped)
        flat = [i for step in plan for micro in step for i in micro]
        assert sorted(flat[:1000]) == list(range(1000)) and sorted(flat[1000:]) == list(range(1000))
        assert plan == step_plan(1000, 16, 2, 2.0, seed=3, lengths=grouped)  # deterministic (resume)

    def padded_tokens(plan):
        return sum(len(m) * max(lengths[i] for i in m) for step in plan for m in step)

    plain = padded_tokens(step_plan(1000, 16, 1, 1.0, seed=3))
    grouped = padded_tokens(step_plan(1000, 16, 1, 1.0, seed=3, lengths=lengths))
    assert grouped < 0.7 * plain  # random batches of uniform lengths pad ~45%; grouped ones a few %
    maxima = [max(lengths[i] for i in m) for step in step_plan(1000, 16, 1, 1.0, seed=3, lengths=lengths) for m in step]
    assert maxima != sorted(maxima, reverse=True)  # batches are shuffled after grouping, not served longest first
