"""Padding, collators, sequence packing and length-grouped batching.

Shapes: B batch (prompts), K responses per prompt (Kmax the most in a batch),
N responses in a flattened batch, T tokens.

Position ids: always pass ``position_ids`` to the model. With left padding the
default positions (0..T-1) would shift every row by its padding;
`position_ids_from_mask` gives each row the positions it has unpadded.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from rlhfkit.data.errors import DataError
from rlhfkit.data.tokenize import EncodedExample

__all__ = [
    "pad_sequences",
    "position_ids_from_mask",
    "SFTCollator",
    "RankingCollator",
    "scatter_scores",
    "PackedExample",
    "pack_examples",
    "PackedCollator",
    "block_causal_mask",
    "length_grouped_indices",
]


def _round_up(n: int, multiple: int | None) -> int:
    if not multiple:
        return n
    return -(-n // multiple) * multiple


def pad_sequences(
    seqs: Sequence[Sequence[int]], pad_id: int, side: str = "right", pad_to_multiple_of: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to the longest sequence. Returns (ids [B,T], attention_mask [B,T]), both int64;
    the mask is 1 on real tokens."""
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    if not isinstance(pad_id, int) or isinstance(pad_id, bool):
        raise ValueError(f"pad_id must be an int, got {pad_id!r} (does the tokenizer have a pad token?)")
    if len(seqs) == 0:
        raise ValueError("cannot pad an empty batch")
    t = _round_up(max(len(s) for s in seqs), pad_to_multiple_of)
    ids = torch.full((len(seqs), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), t), dtype=torch.long)
    for i, s in enumerate(seqs):
        n = len(s)
        if n == 0:
            continue
        sl = slice(0, n) if side == "right" else slice(t - n, t)
        ids[i, sl] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask


def pad_prompt_response(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int,
                        side: str = "left") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(prompt ids, response ids) pairs -> (ids, attention_mask, target_mask), each [B,T];
    target_mask is 1 on the response tokens, as reward_scores reads it."""
    ids, mask = pad_sequences([list(p) + list(r) for p, r in pairs], pad_id, side)
    return ids, mask, _pad_like([[0] * len(p) + [1] * len(r) for p, r in pairs], mask, side)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B,T] positions counting real tokens only (cumsum - 1, clamped at 0), so a
    left-padded row gets the positions it would have unpadded."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _pad_like(values: Sequence[Sequence[int]], attention_mask: torch.Tensor, side: str) -> torch.Tensor:
    out = torch.zeros_like(attention_mask)
    t = attention_mask.shape[1]
    for i, v in enumerate(values):
        n = len(v)
        if n:
            out[i, slice(0, n) if side == "right" else slice(t - n, t)] = torch.as_tensor(list(v), dtype=torch.long)
    return out


class SFTCollator:
    """list[EncodedExample] -> dict(input_ids, attention_mask, loss_mask, position_ids),
    each [B,T] int64, right-padded (loss_mask is 0 on padding)."""

    def __init__(self, pad_id: int, pad_to_multiple_of: int | None = None, side: str = "right"):
        self.pad_id, self.pad_to_multiple_of, self.side = pad_id, pad_to_multiple_of, side

    def __call__(self, examples: Sequence[EncodedExample]) -> dict[str, torch.Tensor]:
        ids, mask = pad_sequences([e.input_ids for e in examples], self.pad_id, self.side, self.pad_to_multiple_of)
        return {
            "input_ids": ids,  # [B,T]
            "attention_mask": mask,  # [B,T]
            "loss_mask": _pad_like([e.loss_mask for e in examples], mask, self.side),  # [B,T]
            "position_ids": position_ids_from_mask(mask),  # [B,T]
        }


class RankingCollator:
    """Groups of responses (list[list[EncodedExample]], K_b responses of prompt b, best
    first) -> one flattened batch in which every response is forwarded once:

    - input_ids, attention_mask, loss_mask, position_ids: [N,T], N = sum_b K_b, rows in
      order (b=0,k=0), (0,1), ..., (1,0), ...
    - group_index [N]: the prompt b of each row; rank [N]: its position k (0 = best)
    - valid [B,Kmax] bool: which (b, k) exist

    `scatter_scores(scores [N], batch)` puts per-row scores into [B,Kmax]; for pairs
    (K = 2) column 0 is chosen and column 1 rejected.
    """

    def __init__(self, pad_id: int, pad_to_multiple_of: int | None = None, side: str = "right"):
        self.pad_id, self.pad_to_multiple_of, self.side = pad_id, pad_to_multiple_of, side

    def __call__(self, groups: Sequence[Sequence[EncodedExample]]) -> dict[str, torch.Tensor]:
        if not groups or any(len(g) == 0 for g in groups):
            raise ValueError("every group needs at least one response")
        flat = [e for g in groups for e in g]
        ids, mask = pad_sequences([e.input_ids for e in flat], self.pad_id, self.side, self.pad_to_multiple_of)
        sizes = torch.tensor([len(g) for g in groups])
        kmax = int(sizes.max())
        return {
            "input_ids": ids,  # [N,T]
            "attention_mask": mask,  # [N,T]
            "loss_mask": _pad_like([e.loss_mask for e in flat], mask, self.side),  # [N,T]
            "position_ids": position_ids_from_mask(mask),  # [N,T]
            "group_index": torch.repeat_interleave(torch.arange(len(groups)), sizes),  # [N]
            "rank": torch.cat([torch.arange(k) for k in sizes.tolist()]),  # [N]
            "valid": torch.arange(kmax)[None, :] < sizes[:, None],  # [B,Kmax]
        }


def scatter_scores(scores: torch.Tensor, batch: dict[str, torch.Tensor], fill: float = 0.0) -> torch.Tensor:
    """Per-row scores [N, ...] -> [B, Kmax, ...] (differentiable); entries where
    ``batch["valid"]`` is False hold `fill`."""
    valid = batch["valid"]
    out = scores.new_full((*valid.shape, *scores.shape[1:]), fill)
    out[batch["group_index"].to(scores.device), batch["rank"].to(scores.device)] = scores
    return out


# ----------------------------------------------------------------------------- packing


@dataclass
class PackedExample:
    """Several whole documents in one row. Positions restart at 0 per document."""

    input_ids: list[int] = field(default_factory=list)  # [T]
    loss_mask: list[int] = field(default_factory=list)  # [T]
    position_ids: list[int] = field(default_factory=list)  # [T]
    document_ids: list[int] = field(default_factory=list)  # [T] 0, 0, ..., 1, 1, ...: document within the row
    example_indices: list[int] = field(default_factory=list)  # the packed examples, in row order

    def __len__(self) -> int:
        return len(self.input_ids)

    def add(self, example: EncodedExample, index: int) -> None:
        n, doc = len(example.input_ids), len(self.example_indices)
        self.input_ids += example.input_ids
        self.loss_mask += example.loss_mask
        self.position_ids += range(n)
        self.document_ids += [doc] * n
        self.example_indices.append(index)


class _MaxTree:
    """Segment tree over bins' free space: find the first bin with room in O(log n)."""

    def __init__(self, n: int):
        self.size = 1
        while self.size < max(n, 1):
            self.size *= 2
        self.tree = [0] * (2 * self.size)

    def set(self, i: int, value: int) -> None:
        i += self.size
        self.tree[i] = value
        while i > 1:
            i //= 2
            self.tree[i] = max(self.tree[2 * i], self.tree[2 * i + 1])

    def first_at_least(self, need: int) -> int:
        if self.tree[1] < need:
            return -1
        i = 1
        while i < self.size:
            i = 2 * i if self.tree[2 * i] >= need else 2 * i + 1
        return i - self.size


def pack_examples(examples: Sequence[EncodedExample], max_length: int) -> list[PackedExample]:
    """Greedy first-fit packing in the given order: each example goes into the first row
    with room, else a new row. Documents are never split; one longer than
    `max_length` raises DataError."""
    tree, rows = _MaxTree(len(examples)), []
    for i, ex in enumerate(examples):
        n = len(ex.input_ids)
        if n > max_length:
            raise DataError(f"example {i} has {n} tokens, more than the packing length {max_length}",
                            reason="too_long")
        if n == 0:
            raise DataError(f"example {i} is empty", reason="empty")
        b = tree.first_at_least(n)
        if b < 0:
            b = len(rows)
            rows.append(PackedExample())
        rows[b].add(ex, i)
        tree.set(b, max_length - len(rows[b]))
    return rows


def block_causal_mask(document_ids: torch.Tensor, dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
    """[B,T] document ids -> [B,1,T,T] mask that is causal AND block-diagonal: token q
    attends to token k iff k <= q and both are in the same document. ``dtype=None``
    gives a bool mask (True = attend; sdpa only); a float dtype gives the additive form
    (0 / finfo(dtype).min) that eager and sdpa attention both accept."""
    t = document_ids.shape[-1]
    causal = torch.ones(t, t, dtype=torch.bool, device=document_ids.device).tril()
    allowed = (document_ids[:, :, None] == document_ids[:, None, :]) & causal
    allowed = allowed[:, None]
    if dtype is None or dtype == torch.bool:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=document_ids.device).masked_fill(
        ~allowed, torch.finfo(dtype).min
    )


class PackedCollator:
    """list[PackedExample] -> dict(input_ids, loss_mask, position_ids, attention_mask),
    right-padded; also `document_ids` [B,T] (-1 on padding) for bookkeeping (pop it
    before calling the model).

    `attention` chooses how documents are kept apart:

    - "additive" (default): attention_mask [B,1,T,T] of `dtype` (pass the model's dtype),
      0 where allowed, finfo(dtype).min elsewhere; works with eager and sdpa.
    - "bool": attention_mask [B,1,T,T] bool (True = attend); sdpa only.
    - "position_ids": no attention_mask; the model separates documents from the position
      ids restarting at 0 (flash-attention, and transformers >= 5 sdpa/eager) -- the model
      must then be called with ``use_cache=False``, otherwise transformers skips the
      packed-sequence detection and documents attend to each other.

    Padding is its own pseudo-document (positions 0, 1, ...; loss_mask 0), so no real
    token attends to it and no attention row is empty.
    """

    def __init__(self, pad_id: int, attention: str = "additive", dtype: torch.dtype = torch.float32,
                 pad_to_multiple_of: int | None = None):
        if attention not in ("additive", "bool", "position_ids"):
            raise ValueError(f"attention must be 'additive', 'bool' or 'position_ids', got {attention!r}")
        self.pad_id, self.attention, self.dtype, self.pad_to_multiple_of = pad_id, attention, dtype, pad_to_multiple_of

    def __call__(self, rows: Sequence[PackedExample]) -> dict[str, torch.Tensor]:
        ids, mask = pad_sequences([r.input_ids for r in rows], self.pad_id, "right", self.pad_to_multiple_of)
        t = ids.shape[1]
        loss_mask = _pad_like([r.loss_mask for r in rows], mask, "right")
        position_ids = torch.zeros_like(ids)
        document_ids = torch.full_like(ids, -1)
        for i, r in enumerate(rows):
            n = len(r)
            position_ids[i, :n] = torch.as_tensor(r.position_ids, dtype=torch.long)
            position_ids[i, n:] = torch.arange(t - n)
            document_ids[i, :n] = torch.as_tensor(r.document_ids, dtype=torch.long)
        batch = {"input_ids": ids, "loss_mask": loss_mask, "position_ids": position_ids, "document_ids": document_ids}
        if self.attention != "position_ids":
            blocks = torch.where(document_ids < 0, document_ids.max() + 1, document_ids)  # padding: own block
            batch["attention_mask"] = block_causal_mask(blocks, None if self.attention == "bool" else self.dtype)
        return batch


# ----------------------------------------------------------------------------- bucketing


def length_grouped_indices(
    lengths: Sequence[int], batch_size: int, seed: int = 0, mega_batch_mult: int | None = None,
    longest_first: bool = True,
) -> list[int]:
    """A permutation of range(len(lengths)) in which consecutive chunks of `batch_size`
    are batches of similar length: shuffle, cut into mega-batches of
    ``mega_batch_mult * batch_size``, sort each by length (descending), cut into
    batches, shuffle the batches. With `longest_first` the batch holding the longest
    example comes first (an out-of-memory shows up at step 1). Deterministic in `seed`."""
    n = len(lengths)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if n == 0:
        return []
    rng = random.Random(seed)
    if mega_batch_mult is None:
        mega_batch_mult = max(1, min(n // (batch_size * 4), 50))
    perm = list(range(n))
    rng.shuffle(perm)
    mega = mega_batch_mult * batch_size
    batches = []
    for s in range(0, n, mega):
        chunk = sorted(perm[s : s + mega], key=lambda i: -lengths[i])
        batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    if longest_first:
        longest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
        batches.insert(0, batches.pop(longest))
    # Keep a short last batch last, so that every chunk of batch_size is a real batch.
    short = [b for b in batches if len(b) < batch_size]
    full = [b for b in batches if len(b) == batch_size]
    return [i for b in full + short for i in b]
