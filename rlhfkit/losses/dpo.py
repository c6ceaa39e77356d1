"""Direct preference losses: DPO and its successors, one function per variant.

Every variant has the signature ``fn(logps: PreferenceLogps, cfg: DPOLossConfig)
-> (loss, metrics)`` and is chosen by name through ``DPO_LOSSES``. Losses are
means over the batch. Throughout, with summed response-token log-probs,

    h = (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l)).

Metrics for all: ``loss/dpo``; ``rewards/chosen`` and ``rewards/rejected`` (batch
means of the variant's implicit reward, beta * log(pi / pi_ref) unless stated);
``rewards/accuracy`` (chosen reward > rejected, ties 0.5); ``rewards/margin``
(mean chosen - rejected reward); ``logps/chosen`` and ``logps/rejected`` (mean
summed policy log-probs).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rlhfkit.losses.common import tie_half_accuracy

Metrics = dict[str, torch.Tensor]


@dataclass
class PreferenceLogps:
    """Sequence log-probs of a batch of (chosen, rejected) responses."""

    policy_chosen: torch.Tensor  # [B] sum over response tokens of log pi(y_w | x)
    policy_rejected: torch.Tensor  # [B] sum over response tokens of log pi(y_l | x)
    ref_chosen: torch.Tensor | None = None  # [B] same under pi_ref; None for SimPO / ORPO
    ref_rejected: torch.Tensor | None = None  # [B] same under pi_ref; None for SimPO / ORPO
    chosen_tokens: torch.Tensor | None = None  # [B] float, |y_w|; needed by SimPO / ORPO
    rejected_tokens: torch.Tensor | None = None  # [B] float, |y_l|; needed by SimPO / ORPO
    chosen_desirable: torch.Tensor | None = None  # [B] bool, KTO label; None: all desirable
    rejected_desirable: torch.Tensor | None = None  # [B] bool, KTO label; None: all undesirable
    kl_reference: torch.Tensor | None = None  # [] KTO's z0; None: estimated from this batch


@dataclass
class DPOLossConfig:
    """Hyperparameters of the preference losses (each variant reads its own)."""

    beta: float = 0.1
    """Inverse temperature on the log-ratio (DPO beta; IPO tau; SimPO beta, about 2)."""
    label_smoothing: float = 0.0
    """Probability epsilon that a label is flipped (cDPO, robust DPO); robust needs < 0.5."""
    simpo_gamma_beta_ratio: float = 0.5
    """SimPO target margin gamma as a fraction of beta (gamma = ratio * beta)."""
    orpo_lambda: float = 0.1
    """ORPO weight of the odds-ratio term against the chosen NLL."""
    kto_desirable_weight: float = 1.0
    """KTO lambda_D, weight of desirable examples."""
    kto_undesirable_weight: float = 1.0
    """KTO lambda_U, weight of undesirable examples."""


def _logratios(logps: PreferenceLogps, variant: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(log pi/pi_ref)(y_w), (log pi/pi_ref)(y_l), each [B]."""
    if logps.ref_chosen is None or logps.ref_rejected is None:
        raise ValueError(f"{variant!r} loss needs reference log-probs (ref_chosen, ref_rejected)")
    return logps.policy_chosen - logps.ref_chosen, logps.policy_rejected - logps.ref_rejected


def _mean_logps(logps: PreferenceLogps, variant: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Length-normalised log-probs log pi(y) / |y|, each [B]."""
    if logps.chosen_tokens is None or logps.rejected_tokens is None:
        raise ValueError(f"{variant!r} loss needs chosen_tokens and rejected_tokens")
    # A response of 0 tokens has log-prob 0; dividing by 1 keeps it 0 instead of nan.
    return (
        logps.policy_chosen / logps.chosen_tokens.to(logps.policy_chosen.dtype).clamp(min=1),
        logps.policy_rejected / logps.rejected_tokens.to(logps.policy_rejected.dtype).clamp(min=1),
    )


def _metrics(loss: torch.Tensor, logps: PreferenceLogps, chosen: torch.Tensor, rejected: torch.Tensor) -> Metrics:
    chosen, rejected = chosen.detach(), rejected.detach()
    return {
        "loss/dpo": loss.detach(),
        "rewards/chosen": chosen.mean(),
        "rewards/rejected": rejected.mean(),
        "rewards/accuracy": tie_half_accuracy(chosen - rejected).mean(),
        "rewards/margin": (chosen - rejected).mean(),
        "logps/chosen": logps.policy_chosen.detach().mean(),
        "logps/rejected": logps.policy_rejected.detach().mean(),
    }


def sigmoid_loss(logps: PreferenceLogps, cfg: DPOLossConfig) -> tuple[torch.Tensor, Metrics]:
    """DPO (Rafailov et al. 2023, eq. 7): -log sigmoid(beta h).

    With label smoothing eps (conservative DPO, Mitchell 2023, "A note on DPO with
    noisy preferences"): -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h),
    the expected loss when each label is flipped with probability eps.
    """
    lc, lr = _logratios(logps, "sigmoid")
    logits = cfg.beta * (lc - lr)
    eps = cfg.label_smoothing
    loss = (-(1 - eps) * F.logsigmoid(logits) - eps * F.logsigmoid(-logits)).mean()
    return loss, _metrics(loss, logps, cfg.beta * lc, cfg.beta * lr)


def robust_loss(logps: PreferenceLogps, cfg: DPOLossConfig) -> tuple[torch.Tensor, Metrics]:
    """Robust DPO (Chowdhury et al. 2024, "Provably robust DPO"), unbiased under label-flip rate eps:

    (-(1 - eps) log sigmoid(beta h) + eps log sigmoid(-beta h)) / (1 - 2 eps).
    """
    eps = cfg.label_smoothing
    if not 0 <= eps < 0.5:
        raise ValueError(f"robust DPO needs 0 <= label_smoothing < 0.5, got {eps}")
    lc, lr = _logratios(logps, "robust")
    logits = cfg.beta * (lc - lr)
    loss = ((-(1 - eps) * F.logsigmoid(logits) + eps * F.logsigmoid(-logits)) / (1 - 2 * eps)).mean()
    return loss, _metrics(loss, logps, cfg.beta * lc, cfg.beta * lr)


def ipo_loss(logps: PreferenceLogps, cfg: DPOLossConfig) -> tuple[torch.Tensor, Metrics]:
    """IPO (Azar et al. 2023, eq. 17): (h - 1/(2 tau))^2 with tau = cfg.beta.

    h uses *summed* response log-probs, as in the paper's derivation (some
    implementations average per token instead; that changes the scale of tau).
    The square regresses h to a finite target instead of pushing it to infinity.
    """
    if cfg.beta <= 0:
        raise ValueError(f"IPO needs beta (tau) > 0, got {cfg.beta}")
    lc, lr = _logratios(logps, "ipo")
    loss = ((lc - lr) - 1 / (2 * cfg.beta)).pow(2).mean()
    return loss, _metrics(loss, logps, cfg.beta * lc, cfg.beta * lr)


def hinge_loss(logps: PreferenceLogps, cfg: DPOLossConfig) -> tuple[torch.Tensor, Metrics]:
    """SLiC-HF hinge (Zhao et al. 2023) on the reference log-ratio: relu(1 - beta h)."""
    lc, lr = _logratios(logps, "hinge")
    loss = F.relu(1 - cfg.beta * (lc - lr)).mean()
    return loss, _metrics(loss, logps, cfg.beta * lc, cfg.beta * lr)


def simpo_loss(logps: PreferenceLogps, cfg: DPOLossConfig) -> tuple[torch.Tensor, Metrics]:
    """SimPO (Meng et al. 2024, eq. 6); reference-free, length-normalised:

    -log sigmoid(beta/|y_w| log pi(y_w) - beta/|y_l| log pi(y_l) - gamma),
    gamma = simpo_gamma_beta_ratio * beta. Implicit reward: beta/|y| log pi(y).
    """
    mc, mr = _mean_logps(logps, "simpo")
    gamma = cfg.simpo_gamma_beta_ratio * cfg.beta
    loss = -F.logsigmoid(cfg.beta * mc - cfg.beta * mr - gamma).mean()
    return loss, _metrics(loss, logps, cfg.beta * mc, cfg.beta * mr)


def _log_odds(mean_logp: torch.Tensor) -> torch.Tensor:
    """log(p / (1 - p)) from log p, with log(1 - p) computed stably (Maechler 2012).

    -expm1 is accurate for p near 1 (log p > -log 2), log1p(-exp) for small p.
    log p is kept below -1e-6 so p = 1 gives a large finite odds, not inf - inf.
    """
    m = mean_logp.clamp(max=-1e-6)
    log1m = torch.where(m > -math.log(2), torch.log(-torch.expm1(m)), torch.log1p(-torch.exp(m)))
    return m - log1m


def orpo_loss(logps: PreferenceLogps, cfg: DPOLossConfig) -> tuple[torch.Tensor, Metrics]:
    """ORPO (Hong et al. 2024, eqs. 6-7); reference-free.

    With m = log pi(y) / |y| (mean token log-prob) and odds(y) = p / (1 - p), p = e^m:
        L = -m_w - lambda * log sigmoid(log odds(y_w) - log odds(y_l)).
    The NLL term is a per-sequence token mean, then a batch mean. Implicit
    reward in the metrics: m (its order matches the log odds). Extra metrics:
    ``loss/nll``, ``orpo/log_odds_ratio``.
    """
    mc, mr = _mean_logps(logps, "orpo")
    log_odds_ratio = _log_odds(mc) - _log_odds(mr)
    nll = -mc.mean()
    loss = nll - cfg.orpo_lambda * F.logsigmoid(log_odds_ratio).mean()
    metrics = _metrics(loss, logps, mc, mr)
    metrics["loss/nll"] = nll.detach()
    metrics["orpo/log_odds_ratio"] = log_odds_ratio.detach().mean()
    return loss, metrics


def kto_loss(logps: PreferenceLogps, cfg: DPOLossConfig) -> tuple[torch.Tensor, Metrics]:
    """KTO (Ethayarajh et al. 2024, eq. 8), each response scored alone; mean over 2B.

    With r = log pi(y)/pi_ref(y) and reference point z0:
        desirable:   lambda_D (1 - sigmoid(beta (r - z0)))
        undesirable: lambda_U (1 - sigmoid(beta (z0 - r)))
    z0 estimates KL(pi || pi_ref); the paper uses mismatched (x', y) pairs, here
    it is the batch mean of all 2B log-ratios, detached and clamped at 0. Pass
    ``logps.kl_reference`` to supply it instead (e.g. all-reduced across ranks).
    Extra metric: ``kto/reference_point``.
    """
    lc, lr = _logratios(logps, "kto")
    ratios = torch.cat([lc, lr])
    if logps.kl_reference is not None:
        z0 = logps.kl_reference.detach().to(ratios.dtype)
    else:
        z0 = ratios.detach().mean().clamp(min=0)
    cd = logps.chosen_desirable
    rd = logps.rejected_desirable
    desirable = torch.cat([
        torch.ones_like(lc, dtype=torch.bool) if cd is None else cd.bool(),
        torch.zeros_like(lr, dtype=torch.bool) if rd is None else rd.bool(),
    ])
    loss_d = cfg.kto_desirable_weight * (1 - torch.sigmoid(cfg.beta * (ratios - z0)))
    loss_u = cfg.kto_undesirable_weight * (1 - torch.sigmoid(cfg.beta * (z0 - ratios)))
    loss = torch.where(desirable, loss_d, loss_u).mean()
    metrics = _metrics(loss, logps, cfg.beta * lc, cfg.beta * lr)
    metrics["kto/reference_point"] = z0.detach()
    return loss, metrics


DPO_LOSSES = {
    "sigmoid": sigmoid_loss,
    "cdpo": sigmoid_loss,  # the same loss; set cfg.label_smoothing
    "robust": robust_loss,
    "ipo": ipo_loss,
    "hinge": hinge_loss,
    "simpo": simpo_loss,
    "orpo": orpo_loss,
    "kto": kto_loss,
}


def dpo_loss(name: str, logps: PreferenceLogps, cfg: DPOLossConfig) -> tuple[torch.Tensor, Metrics]:
    """Apply the preference loss ``name`` (a key of ``DPO_LOSSES``)."""
    if name not in DPO_LOSSES:
        raise ValueError(f"unknown preference loss {name!r}; options: {sorted(DPO_LOSSES)}")
    return DPO_LOSSES[name](logps, cfg)
