"""Small helpers the model-driven label commands share: load a causal LM, sample
continuations of token-id prompts in batches, and write a prompt as plain text."""
from __future__ import annotations

import torch

from rlhfkit.data.records import Prompt


def load_lm(path: str, dtype: str = "float32", trust_remote_code: bool = False, num_threads: int = 0,
            chat_template: str = ""):
    """(model in eval mode, tokenizer) from a Hugging Face causal LM directory."""
    from rlhfkit.models.loading import load_causal_lm, load_tokenizer

    if num_threads > 0:
        torch.set_num_threads(num_threads)
    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code, chat_template=chat_template or None)
    model = load_causal_lm(path, tokenizer, dtype=dtype, trust_remote_code=trust_remote_code)
    return model.eval(), tokenizer


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def instruction_text(prompt: Prompt) -> str:
    """A prompt as plain text for a judge or critique template: a string as it is; a
    single user turn as its content; a longer conversation as "role: content" lines."""
    if isinstance(prompt, str):
        return prompt
    turns = [m for m in prompt if m["role"] != "system"]
    if len(turns) == 1:
        return turns[0]["content"]
    return "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in prompt)


def pad_left(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """token lists -> ids [B,P] and mask [B,P], left-padded (what generation wants)."""
    width = max(map(len, sequences))
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq):] = 1
    return ids, mask


@torch.no_grad()
def sample_texts(model, tokenizer, prompt_ids: list[list[int]], *, max_new_tokens: int, temperature: float,
                 batch_size: int = 16) -> tuple[list[str], list[bool]]:
    """One continuation per prompt (temperature 0: greedy): (decoded texts, ended with EOS)."""
    from rlhfkit.generation.samplers import LocalSampler

    gen = LocalSampler(model, tokenizer.eos_token_id, tokenizer.pad_token_id, max_new_tokens, temperature)
    device = model_device(model)
    texts, eos = [], []
    for start in range(0, len(prompt_ids), batch_size):
        ids, mask = pad_left(prompt_ids[start:start + batch_size], tokenizer.pad_token_id)
        out = gen.generate(ids.to(device), mask.to(device))
        for row in range(ids.shape[0]):
            tokens = out.response_ids[row][out.response_mask[row].bool()].tolist()
            if tokens and tokens[-1] == tokenizer.eos_token_id:
                tokens = tokens[:-1]
            texts.append(tokenizer.decode(tokens, skip_special_tokens=True))
            eos.append(bool(out.eos[row]))
    return texts, eos
