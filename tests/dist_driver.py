"""Runs training stages from a JSON list of jobs, in this process or under
`accelerate launch` (tests/test_scale_out.py):

    python tests/dist_driver.py jobs.json
    ACCELERATE_USE_CPU=1 python -m accelerate.commands.launch --multi_gpu --num_processes 2 tests/dist_driver.py jobs.json

A job is {"stage": "sft" | "rm" | "dpo" | "ppo", "config": {...}, "sampler": "row_seeded"?}.

"row_seeded" replaces PPO's sampler with one whose randomness depends only on the step and
the row's place in the global batch, not on how the batch is split over processes: a
two-process run then samples the same responses as a one-process run, and everything
after sampling (scores, KL, advantages, whitening, the update) can be compared to float
tolerance. It is a test device, slow (no KV cache, one generator per row).
"""
from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

PAD = 1  # the tiny tokenizer's pad id (rlhfkit.testing)


def low_token_share(prompts, responses, response_ids):
    """Share of response tokens with id < 100: a programmatic reward a tiny policy can learn."""
    real = response_ids != PAD
    return ((response_ids < 100) & real).float().sum(1) / real.float().sum(1).clamp(min=1)


class RowSeededSampler:
    """The generation interface (rlhfkit.generation.samplers) with a torch.Generator per row,
    seeded by (call, global row): call n is PPO step n when one call covers the process's
    rollout (generation_batch_size >= the per-process rollout), and process r's rows are
    global rows r*B .. r*B+B-1, as PPO shards its prompts."""

    def __init__(self, model, eos_id, pad_id, max_new_tokens, temperature):
        self.model, self.eos_id, self.pad_id = model, eos_id, pad_id
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.calls = 0

    @torch.no_grad()
    def generate(self, prompt_ids, prompt_mask):
        from accelerate import PartialState

        from rlhfkit.models.forward import positions_from_mask
        from rlhfkit.generation.samplers import truncate_after_eos

        B = prompt_ids.shape[0]
        first = PartialState().process_index * B
        gens = [torch.Generator().manual_seed(100_003 * self.calls + first + i) for i in range(B)]
        self.calls += 1
        ids, mask = prompt_ids, prompt_mask.long()
        finished = torch.zeros(B, dtype=torch.bool)
        tokens = []
        for _ in range(self.max_new_tokens):
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask),
                                use_cache=False).logits[:, -1].float()
            probs = torch.softmax(logits / self.temperature, dim=-1)
            nxt = torch.cat([torch.multinomial(probs[i], 1, generator=gens[i]) for i in range(B)])
            nxt = nxt.masked_fill(finished, self.pad_id)
            tokens.append(nxt)
            ids = torch.cat([ids, nxt[:, None]], 1)
            mask = torch.cat([mask, (~finished).long()[:, None]], 1)
            finished = finished | (nxt == self.eos_id)
            if bool(finished.all()):
                break
        out = torch.stack(tokens, 1)
        if out.shape[1] < self.max_new_tokens:
            out = torch.cat([out, out.new_full((B, self.max_new_tokens - out.shape[1]), self.pad_id)], 1)
        return truncate_after_eos(out, self.eos_id, self.pad_id)


def run_job(job: dict) -> str:
    from rlhfkit.trainers.ppo import trainer as ppo
    from rlhfkit.trainers.dpo import DPOConfig, train_dpo
    from rlhfkit.trainers.ppo.config import PPOConfig
    from rlhfkit.trainers.reward import RewardConfig, train_reward_model
    from rlhfkit.trainers.sft import SFTConfig, train_sft

    stage, cfg = job["stage"], dict(job["config"], progress=False)
    if stage == "sft":
        return str(train_sft(SFTConfig(**cfg)))
    if stage == "rm":
        return str(train_reward_model(RewardConfig(**cfg)))
    if stage == "dpo":
        return str(train_dpo(DPOConfig(**cfg)))
    if stage == "ppo":
        original = ppo.make_sampler
        if job.get("sampler") == "row_seeded":
            ppo.make_sampler = lambda name, model, **kw: RowSeededSampler(model, **kw)
        try:
            return str(ppo.train_ppo(PPOConfig(**cfg), reward_fns=[low_token_share]))
        finally:
            ppo.make_sampler = original
    raise ValueError(f"unknown stage {stage!r}")


def main(path: str) -> None:
    torch.set_num_threads(1)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    for job in json.load(open(path, encoding="utf-8")):
        run_job(job)


if __name__ == "__main__":
    main(sys.argv[1])
