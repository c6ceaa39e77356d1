"""PPO-ptx: mix the pretraining log-likelihood into the PPO objective
(Ouyang et al. 2022, eq. 2: objective + gamma * E_{x~D_pretrain}[log pi(x)])."""
from __future__ import annotations

import torch

from rlhfkit.data.collate import SFTCollator
from rlhfkit.data.loading import ColumnMap, load_records, load_sft
from rlhfkit.data.tokenize import encode_sft
from rlhfkit.losses.sft import masked_nll_loss


class PretrainingBatches:
    """Cycles through pretraining texts in a seeded order, one batch per call;
    the loss is the token-mean NLL over every token (completion_only=False)."""

    def __init__(self, cfg, tokenizer, device, accelerator=None):
        records = load_records(load_sft, cfg.ptx_data, ColumnMap(), cfg.on_error, accelerator)
        self.examples = list(encode_sft(tokenizer, records, cfg.max_length, completion_only=False,
                                        on_error=cfg.on_error))
        self.collator = SFTCollator(tokenizer.pad_token_id)
        self.batch_size, self.device = cfg.ptx_batch_size, device
        self.shuffle_rng = torch.Generator().manual_seed(cfg.seed + 17)
        self.order: list[int] = []

    def state_dict(self) -> dict:
        """Position in the pretraining stream, for bit-exact resume ("generator": the key
        checkpoints have always stored the shuffle RNG under)."""
        return {"generator": self.shuffle_rng.get_state(), "order": torch.tensor(self.order, dtype=torch.long)}

    def load_state_dict(self, state: dict) -> None:
        self.shuffle_rng.set_state(state["generator"])
        self.order = state["order"].tolist()

    def next_batch(self) -> dict:
        batch = []
        while len(batch) < self.batch_size:
            if not self.order:
                self.order = torch.randperm(len(self.examples), generator=self.shuffle_rng).tolist()
            batch.append(self.examples[self.order.pop()])
        return {k: v.to(self.device) for k, v in self.collator(batch).items()}

    def loss(self, policy) -> torch.Tensor:
        batch = self.next_batch()
        logits = policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        position_ids=batch["position_ids"], use_cache=False).logits
        loss, _ = masked_nll_loss(logits, batch["input_ids"], batch["loss_mask"])
        return loss
