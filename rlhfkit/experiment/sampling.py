"""Batched sampling from a policy (one response per prompt, sorted by length for
little padding) and the log-likelihood of sampled responses: what the comparison
stage, the evaluation and best-of-n draw on."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from rlhfkit.data.collate import pad_sequences
from rlhfkit.data.tokenize import prompt_token_ids


class Samples:
    """Responses of one policy to a prompt list: token ids (EOS included when the
    model emitted it), decoded text (EOS and padding removed) and terminated flags."""

    def __init__(self, prompt_ids: list[list[int]], response_ids: list[list[int]], texts: list[str],
                 terminated: list[bool], temperature: float = 1.0, logprob_sums: list[float] | None = None):
        self.prompt_ids, self.response_ids, self.texts, self.terminated = prompt_ids, response_ids, texts, terminated
        self.temperature = temperature
        # sum of the sampler's log-probs per response (softmax(logits / temperature)); None when greedy
        self.logprob_sums = logprob_sums

    def lengths(self) -> list[int]:
        """Generated tokens per response, the EOS not counted."""
        return [len(r) - int(t) for r, t in zip(self.response_ids, self.terminated)]


@torch.no_grad()
def sample_responses(model, tokenizer, prompts: Sequence, *, temperature: float, max_new_tokens: int = 48,
                     batch_size: int = 256, seed: int = 0) -> Samples:
    """Sample one response per prompt (chat messages or strings), batched, with
    LocalSampler (top-k 0, top-p 1) at `temperature`, or greedily when
    temperature == 0. Prompts are sorted by length so batches carry little padding."""
    from rlhfkit.generation.samplers import LocalSampler

    model.eval()
    device = next(model.parameters()).device
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    prompt_ids = [prompt_token_ids(tokenizer, p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(prompt_ids[i]))
    responses: list[list[int] | None] = [None] * len(prompts)
    ended: list[bool] = [False] * len(prompts)
    logprob_sums: list[float] = [0.0] * len(prompts)
    torch.manual_seed(seed)
    sampler = LocalSampler(model, eos_id, pad_id, max_new_tokens, temperature)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        ids, mask = pad_sequences([prompt_ids[i] for i in idx], pad_id, side="left")
        ids, mask = ids.to(device), mask.to(device)
        gen = sampler.generate(ids, mask)
        for row, i in enumerate(idx):
            n = int(gen.response_mask[row].sum())
            responses[i] = gen.response_ids[row, :n].tolist()
            ended[i] = bool(gen.eos[row])
            logprob_sums[i] = float(gen.sampler_logprobs[row].sum())
    texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
    # greedy decodes are not samples of the policy: no log-probs for a KL estimate
    return Samples(prompt_ids, responses, texts, ended, temperature, None if temperature == 0 else logprob_sums)


@torch.no_grad()
def response_logprob_sums(model, samples: Samples, batch_size: int = 128, temperature: float = 1.0) -> list[float]:
    """sum_t log pi(y_t | x, y_<t) over each sampled response (EOS included)."""
    from rlhfkit.models.forward import response_logprobs

    model.eval()
    device = next(model.parameters()).device
    pad = 0
    out: list[float] = []
    for start in range(0, len(samples.texts), batch_size):
        p = samples.prompt_ids[start:start + batch_size]
        r = samples.response_ids[start:start + batch_size]
        pids, pmask = pad_sequences(p, pad, side="left")
        rids, rmask = pad_sequences([x or [pad] for x in r], pad, side="right")
        rmask = rmask * torch.tensor([[1] if x else [0] for x in r])  # empty responses contribute nothing
        ids, mask = torch.cat([pids, rids], 1).to(device), torch.cat([pmask, rmask], 1).to(device)
        lp = response_logprobs(model, ids, mask, pids.shape[1], temperature)
        out += (lp * mask[:, pids.shape[1]:].float()).sum(1).tolist()
    return out
