"""`rlhfkit label sample`: K sampled responses per prompt, the items `label serve` shows
and `label ai` judges (InstructGPT's labelers ranked K = 4 to 9 samples per prompt)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from rlhfkit.config import check_options, option
from rlhfkit.data.loading import load_prompts
from rlhfkit.data.tokenize import encode_prompt
from rlhfkit.io import output_file, write_jsonl
from rlhfkit.label.lm import load_lm, sample_texts
from rlhfkit.models.tokenizer import STRING_PROMPTS, as_user_message, string_prompts_as_chat


@dataclass
class SampleConfig:
    """Sample K responses per prompt with a causal LM: the items to label."""

    model: str = option("", "the policy to sample from (a Hugging Face causal LM directory)")
    prompts: str = option("", "prompts (JSONL/parquet/...: a prompt or messages column)")
    out: str = option("items.jsonl", "items: id, prompt, responses (K distinct), terminated (ended with EOS); a "
                      "directory gets items.jsonl inside (--output_dir is the same option)")
    k: int = option(4, "responses sampled per prompt (duplicates and empty ones are dropped; an item keeps >= 2)")
    string_prompts: str = option("auto", "plain-string prompts: chat (as one user message through the chat "
                                 "template), text (verbatim), or auto (chat when the model's tokenizer has a chat "
                                 "template of its own: a model fine-tuned on chat prompts given a bare string often "
                                 "answers with nothing). Items keep the prompt as the model saw it")
    chat_template: str = option("", "Jinja chat template to use instead of the tokenizer's")
    max_prompts: int = option(0, "use the first N prompts (0: all)")
    max_new_tokens: int = option(128, "longest response in tokens")
    max_prompt_length: int = option(512, "longest prompt in tokens (longer ones are an error)")
    temperature: float = option(1.0, "sampling temperature (InstructGPT sampled at 1)")
    per_device_batch_size: int = option(16, "sequences generated together")
    seed: int = option(0, "sampling seed")
    dtype: str = option("float32", "model weights dtype: float32, bfloat16 or float16")
    trust_remote_code: bool = option(False, "allow model code from the checkpoint")
    num_threads: int = option(0, "torch CPU threads (0: torch's default)")

    # temperature > 0: greedy decoding would give K copies of one response
    RULES: ClassVar[dict] = {"k": ">= 2", "max_prompts": ">= 0", "max_new_tokens": ">= 1", "max_prompt_length": ">= 1",
                             "temperature": "> 0", "per_device_batch_size": ">= 1", "num_threads": ">= 0", "dtype": ("float32", "bfloat16", "float16"),
                             "string_prompts": STRING_PROMPTS}

    def __post_init__(self) -> None:
        check_options(self)


def sample_items(cfg: SampleConfig) -> Path:
    records = load_prompts(cfg.prompts)
    if cfg.max_prompts:
        records = records[: cfg.max_prompts]
    model, tokenizer = load_lm(cfg.model, cfg.dtype, cfg.trust_remote_code, cfg.num_threads, cfg.chat_template)
    torch.manual_seed(cfg.seed)
    chat = string_prompts_as_chat(tokenizer, cfg.string_prompts)
    prompts = [as_user_message(r.prompt) if chat else r.prompt for r in records]
    ids = [encode_prompt(tokenizer, p, cfg.max_prompt_length, r.source) for p, r in zip(prompts, records)]
    repeated = [x for x in ids for _ in range(cfg.k)]
    texts, eos = sample_texts(model, tokenizer, repeated, max_new_tokens=cfg.max_new_tokens,
                              temperature=cfg.temperature, batch_size=cfg.per_device_batch_size)
    rows, dropped, empty = [], 0, sum(not t.strip() for t in texts)
    for n, prompt in enumerate(prompts):
        kept: dict[str, bool] = {}
        for text, ended in zip(texts[n * cfg.k:(n + 1) * cfg.k], eos[n * cfg.k:(n + 1) * cfg.k]):
            if text.strip() and text not in kept:  # the rankings format needs distinct, non-empty responses
                kept[text] = ended
        if len(kept) < 2:
            dropped += 1
            continue
        rows.append({"id": str(n), "prompt": prompt, "responses": list(kept), "terminated": list(kept.values())})
    if not rows:
        hint = ("; plain-string prompts were used verbatim: try --string_prompts chat, so that a chat model sees "
                "its chat template" if not chat and any(isinstance(r.prompt, str) for r in records) else
                "; raise --temperature or --max_new_tokens")
        raise ValueError(f"no prompt of {cfg.prompts} got two distinct non-empty responses ({empty} of {len(texts)} "
                         f"responses were empty){hint}")
    if dropped:
        print(f"label sample: {dropped} prompt(s) dropped with fewer than 2 distinct non-empty responses")
    return write_jsonl(output_file(cfg.out, "items.jsonl"), rows, ensure_ascii=False)
