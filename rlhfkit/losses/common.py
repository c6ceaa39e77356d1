"""Masked reductions and log-prob helpers shared by every loss.

Masks are float or bool tensors of 0/1 weights that broadcast against the data.
Masked positions may hold anything (padding garbage, inf, nan): every reduction
selects with ``torch.where`` instead of multiplying, so they never leak into a
value or a gradient.
"""
from __future__ import annotations

import torch


def check_same_shape(**tensors: torch.Tensor) -> None:
    """Raise if the named tensors differ in shape.

    Broadcasting hides the classic bug of a ``[B, A, 1]`` value head meeting
    ``[B, A]`` returns and silently producing ``[B, A, A]``.
    """
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"shape mismatch: {shapes}")


def _weights(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mask as float weights with x's full (broadcast) shape."""
    w = mask.to(x.dtype if x.is_floating_point() else torch.float32)
    return torch.broadcast_to(w, torch.broadcast_shapes(w.shape, x.shape))


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``x * mask`` over ``dim`` (all elements when None).

    x: [...] values; mask: [...] 0/1 weights (float or bool), broadcastable to x.
    """
    w = _weights(x, mask)
    xw = torch.where(w != 0, x * w, torch.zeros((), dtype=w.dtype, device=x.device))
    return xw.sum() if dim is None else xw.sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over positions where ``mask`` is set; 0 where the mask is empty.

    x: [...] values; mask: [...] 0/1 weights (float or bool), broadcastable to x.
    """
    w = _weights(x, mask)
    count = w.sum() if dim is None else w.sum(dim)
    # Dividing by 1 where nothing counts keeps both value and gradient finite (0).
    safe = torch.where(count > 0, count, torch.ones_like(count))
    return masked_sum(x, w, dim) / safe


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True, reduce=None) -> torch.Tensor:
    """Variance of ``x`` over all positions where ``mask`` is set.

    x: [...] values; mask: [...] 0/1 weights. With ``unbiased`` the Bessel factor
    n / (n - 1) is applied when n > 1; with n <= 1 the (biased) variance 0 is
    returned rather than raising, so the call never syncs on data-dependent checks.
    ``reduce`` sums a tensor over processes: the statistics are then the global
    batch's, as one process holding it would compute them (None: one process).
    """
    return _masked_mean_var(x, mask, unbiased, reduce)[1]


def _masked_mean_var(x, mask, unbiased: bool, reduce):  # (mean, variance), as masked_var says
    total = reduce or (lambda t: t)
    w = _weights(x, mask)
    n = total(w.sum())
    count = torch.where(n > 0, n, torch.ones_like(n))  # as masked_mean: an empty mask divides by 1
    mean = total(masked_sum(x, w)) / count
    var = total(masked_sum((x - mean) ** 2, w)) / count
    if unbiased:
        var = torch.where(n > 1, var * n / (n - 1).clamp(min=1), var)
    return mean, var


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8, reduce=None
) -> torch.Tensor:
    """Normalise ``x`` to mean 0, std 1 (the unbiased variance) using statistics of the
    masked positions only, over processes with ``reduce`` (as ``masked_var``).

    x: [...] values (e.g. advantages [B, A]); mask: [...] 0/1 weights.
    With ``shift_mean=False`` the mean is added back (scale only), as
    lm-human-preferences does when whitening rewards. Masked positions of the
    output are 0, whatever the input held there.
    """
    mean, var = _masked_mean_var(x, mask, True, reduce)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(_weights(x, mask) != 0, whitened, torch.zeros_like(whitened))


def tie_half_accuracy(diff: torch.Tensor) -> torch.Tensor:
    """Per pair: 1 where diff > 0, 0.5 on a tie, 0 otherwise (a tie is a coin flip).

    diff: [...] score(better) - score(worse). Returns float [...].
    """
    return (diff > 0).float() + 0.5 * (diff == 0).float()


def gather_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token] for each position, in float32 (float64 stays float64).

    logits: [B, T, V]; tokens: [B, T] (long). Returns [B, T].
    ``log_softmax(l)[y] = l[y] - logsumexp(l)``: gathering first avoids keeping a
    second [B, T, V] log-prob tensor for backward. Low-precision logits are
    upcast one row at a time so the float32 copy is [T, V], never [B, T, V].
    """
    idx = tokens.unsqueeze(-1)
    if logits.dtype in (torch.float32, torch.float64):
        return logits.gather(-1, idx).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    rows = []
    for row_logits, row_idx in zip(logits, idx):
        row = row_logits.float()  # only low-precision dtypes reach this loop
        rows.append(row.gather(-1, row_idx).squeeze(-1) - torch.logsumexp(row, dim=-1))
    return torch.stack(rows)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) at each position, in float32.

    logits: [B, T, V]. Returns [B, T].
    H = -sum_v p_v log p_v, in float32 (float64 stays float64); low-precision logits
    are upcast one row at a time to bound the extra memory to [T, V]. Logits of -inf (banned tokens) have p = 0 and add 0:
    the clamp turns 0 * -inf into 0 * finfo.min, keeping value and gradient finite.
    """
    def entropy(x: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(x, dim=-1)
        return -(logp.exp() * logp.clamp(min=torch.finfo(logp.dtype).min)).sum(-1)

    if logits.dtype in (torch.float32, torch.float64):
        return entropy(logits)  # one vectorised pass; the row loop below only bounds upcast memory
    rows = []
    for row_logits in logits:
        rows.append(entropy(row_logits.float()))
    return torch.stack(rows)
