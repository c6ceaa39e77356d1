"""Data and forward passes of the DPO-family trainer.

Items are either pairs (prompt, chosen, rejected) -- rankings expanded to all their
C(K, 2) pairs -- or, for KTO, unpaired judgements (prompt, completion, label).
Every item keeps its encoded sequences (chosen first) so that a micro-batch is one
right-padded forward pass over [chosen rows; rejected rows], and the reference
log-probs are a table [n_items, k] computed once, indexed by item.

Shapes: B items, N = k * B sequences, T tokens, V vocab.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from rlhfkit.data.collate import SFTCollator
from rlhfkit.data.errors import DataError
from rlhfkit.data.loading import as_pairs, load_labeled, load_preferences, load_records, read_rows
from rlhfkit.data.tokenize import EncodedExample, encode_labeled, encode_rankings
from rlhfkit.losses.common import gather_logprobs


@dataclass
class PreferenceItems:
    """Encoded training or evaluation items."""

    sequences: list[list[EncodedExample]]  # per item: [chosen, rejected] (pairs) or [completion] (unpaired)
    desirable: list[bool] | None = None  # unpaired KTO labels; None for pairs

    @property
    def paired(self) -> bool:
        return self.desirable is None

    def __len__(self) -> int:
        return len(self.sequences)


def has_label_column(path: str, label_column: str, split: str | None = None) -> bool:
    """Whether the first record of the data (of `split`) has the KTO label column."""
    try:
        _, _, row = next(iter(read_rows(path, split or None)))
    except (StopIteration, DataError):
        return False
    return label_column in row


def load_dpo_records(path: str, columns, cfg, unpaired: bool, accelerator=None) -> list:
    """Records as loaded: pairs and rankings (not yet expanded), or unpaired KTO labels."""
    return load_records(load_labeled if unpaired else load_preferences, path, columns, cfg.on_error, accelerator)


def encode_items(records, tokenizer, cfg, unpaired: bool) -> PreferenceItems:
    """Encode records; a K-way ranking becomes its C(K, 2) pairs."""
    if unpaired:
        encoded = encode_labeled(tokenizer, records, cfg.max_length, on_error=cfg.on_error)
        return PreferenceItems([[e] for e in encoded], [bool(records[i].desirable) for i in encoded.kept])
    encoded = encode_rankings(tokenizer, as_pairs(records), cfg.max_length, on_error=cfg.on_error)
    return PreferenceItems([list(group) for group in encoded])


def load_items(path: str, columns, cfg, tokenizer, unpaired: bool, accelerator=None) -> PreferenceItems:
    """Load and encode pairs (rankings expanded to pairs) or unpaired KTO labels."""
    return encode_items(load_dpo_records(path, columns, cfg, unpaired, accelerator), tokenizer, cfg, unpaired)


def sequence_logps(model, examples: Sequence[EncodedExample], pad_id: int,
                   device) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of each example's target tokens (completion + EOS) and their count.

    One right-padded forward pass. Returns logps [N] float32 and tokens [N] float.
    """
    batch = {k: v.to(device) for k, v in SFTCollator(pad_id)(examples).items()}
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=batch["position_ids"], use_cache=False).logits  # [N,T,V]
    token_logps = gather_logprobs(logits[:, :-1], batch["input_ids"][:, 1:])  # [N,T-1] predicts tokens 1..T-1
    mask = batch["loss_mask"][:, 1:].to(token_logps.dtype)  # [N,T-1]
    return (token_logps * mask).sum(-1), mask.sum(-1)


def item_rows(items: PreferenceItems, indices: Sequence[int]) -> list[EncodedExample]:
    """The sequences of `indices`, column-major: all chosen rows, then all rejected rows."""
    k = len(items.sequences[indices[0]]) if indices else 0
    return [items.sequences[i][j] for j in range(k) for i in indices]


@torch.no_grad()
def reference_table(ref_logps_fn: Callable[[list[EncodedExample]], torch.Tensor], items: PreferenceItems,
                    batch_size: int) -> torch.Tensor:
    """Reference log-probs of every item, computed once: [n_items, k] float32 on the CPU
    (k = 2, chosen then rejected, for pairs; k = 1 for unpaired)."""
    k = len(items.sequences[0]) if len(items) else 2
    out = torch.zeros(len(items), k)
    for start in range(0, len(items), batch_size):
        idx = list(range(start, min(start + batch_size, len(items))))
        out[idx] = ref_logps_fn(item_rows(items, idx)).float().cpu().view(k, len(idx)).T
    return out
