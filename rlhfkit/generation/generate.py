"""`rlhfkit generate`: sample a model's responses to a prompt file, batched with the
project's samplers, and with a reward model keep the best of N (best-of-n, Nakano et
al. 2021 / Stiennon et al. 2020: rerank N samples by the reward model's score).

One JSON line per prompt in `<output_dir>/generations.jsonl`:

    {"index": 0, "prompt": ..., "response": "...", "responses": [...N...], "terminated": [...N...],
     "scores": [...N...], "score": 1.3, "best": 2}

`response` is the best-scoring sample with a reward model (`score` its score, `best`
its index in `responses`), else the first sample; `scores`, `score` and `best` only
with a reward model. Scores are the reward model's with its stored normalisation
applied (mean 0 / std 1 on its normalisation texts), as PPO reads them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from rlhfkit.config import check_options, option, save_yaml
from rlhfkit.models.tokenizer import STRING_PROMPTS

DTYPE_NAMES = ("float32", "bfloat16", "float16")


@dataclass
class GenerateConfig:
    """Sample N responses per prompt; with a reward model keep the best of N (best-of-n)."""

    model: str = option("", "the model to sample: a Hugging Face causal LM directory or hub id")
    prompts: str = option("", "prompts: .jsonl/.json/.parquet/.csv, a saved datasets directory or a hub id, with a "
                          "prompt column (a string or a list of messages) or a messages column")
    output_dir: str = option("runs/generate", "directory for generations.jsonl and config.yaml")
    n: int = option(1, "responses sampled per prompt (best-of-n with --reward_model)")
    reward_model: str = option("", "reward model directory: score every response and keep the best of n")
    normalize_reward: bool = option(True, "apply the mean/std normalisation stored with the reward model to the "
                                    "scores written (the best is the same either way)")
    prompt_column: str = option("prompt", "column holding the prompt")
    dataset_train_split: str = option("train", "split to read when --prompts is a DatasetDict (saved directory or "
                                      "hub id)")
    chat_template: str = option("", "Jinja chat template to use instead of the tokenizer's (message prompts)")
    string_prompts: str = option("auto", "plain-string prompts: chat (as one user message through the chat "
                                 "template), text (verbatim), or auto (chat when the model's tokenizer has a chat "
                                 "template of its own: a model fine-tuned on chat prompts given a bare string often "
                                 "answers with nothing). Rows keep the prompt as the model saw it")
    max_prompts: int = option(0, "use the first N prompts (0: all)")
    max_new_tokens: int = option(128, "most tokens sampled per response")
    max_prompt_length: int = option(512, "longest prompt in tokens (longer ones are an error, or skipped with "
                                    "on_error=skip)")
    temperature: float = option(1.0, "sampling temperature (0: greedy; top-k 0, top-p 1 otherwise)")
    per_device_batch_size: int = option(16, "sequences generated (and scored) together")
    generation_backend: str = option("local", "sampler: 'local' (KV-cache loop) or 'hf' (model.generate)")
    seed: int = option(0, "sampling seed")
    dtype: str = option("float32", "model weights dtype: float32, bfloat16 or float16")
    on_error: str = option("raise", "bad prompt records: raise (default) or skip and report counts")
    trust_remote_code: bool = option(False, "allow model code from the checkpoint (off: safer)")
    num_threads: int = option(0, "torch CPU threads (0: torch's default)")

    RULES: ClassVar[dict] = {"n": ">= 1", "max_prompts": ">= 0", "max_new_tokens": ">= 1", "max_prompt_length": ">= 1",
                             "temperature": ">= 0", "per_device_batch_size": ">= 1", "num_threads": ">= 0",
                             "generation_backend": ("local", "hf"), "dtype": DTYPE_NAMES, "on_error": ("raise", "skip"),
                             "string_prompts": STRING_PROMPTS}

    def __post_init__(self) -> None:
        check_options(self)


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def sample(model, tokenizer, prompt_ids: list[list[int]], n: int, cfg: GenerateConfig) -> list[list[tuple[str, bool]]]:
    """n (text, ended with EOS) samples per prompt; rows sorted by length so batches carry little padding."""
    from rlhfkit.data.collate import pad_sequences
    from rlhfkit.generation.samplers import make_sampler

    rows = [i for i in range(len(prompt_ids)) for _ in range(n)]
    order = sorted(range(len(rows)), key=lambda r: len(prompt_ids[rows[r]]))
    sampler = make_sampler(cfg.generation_backend, model, eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id,
                           max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature)
    device = next(model.parameters()).device
    out: list[tuple[str, bool] | None] = [None] * len(rows)
    for start in range(0, len(order), cfg.per_device_batch_size):
        batch = order[start:start + cfg.per_device_batch_size]
        ids, mask = pad_sequences([prompt_ids[rows[r]] for r in batch], tokenizer.pad_token_id, side="left")
        gen = sampler.generate(ids.to(device), mask.to(device))
        for k, r in enumerate(batch):
            tokens = gen.response_ids[k, : int(gen.response_mask[k].sum())].tolist()
            out[r] = (tokenizer.decode(tokens, skip_special_tokens=True), bool(gen.eos[k]))
    return [out[i * n:(i + 1) * n] for i in range(len(prompt_ids))]


@torch.no_grad()
def score(reward_model, tokenizer, prompts: list, responses: list[str], terminated: list[bool], *,
          batch_size: int, normalise: bool = True) -> list[float]:
    """The reward model's score of each (prompt, response); a response that ran out of
    tokens is scored without EOS, as PPO scores it."""
    from rlhfkit.data.collate import pad_prompt_response
    from rlhfkit.data.tokenize import prompt_token_ids
    from rlhfkit.models.forward import reward_scores
    from rlhfkit.models.loading import reward_normalisation

    mean, std = reward_normalisation(reward_model) if normalise else (0.0, 1.0)
    device = next(reward_model.parameters()).device
    pairs = [(prompt_token_ids(tokenizer, p), tokenizer(y, add_special_tokens=False)["input_ids"]
              + ([tokenizer.eos_token_id] if ended else [])) for p, y, ended in zip(prompts, responses, terminated)]
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    scores = [0.0] * len(pairs)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        ids, mask, target = pad_prompt_response([pairs[i] for i in idx], tokenizer.pad_token_id)
        raw = reward_scores(reward_model, ids.to(device), mask.to(device), target.to(device))
        for i, v in zip(idx, ((raw - mean) / std).tolist()):
            scores[i] = v
    return scores


def generate(cfg: GenerateConfig) -> Path:
    """Sample, optionally rerank, and write `<output_dir>/generations.jsonl`; returns its path."""
    from rlhfkit.data.loading import ColumnMap, load_prompts
    from rlhfkit.data.tokenize import encode_prompts
    from rlhfkit.io import write_jsonl
    from rlhfkit.models.loading import load_causal_lm, load_reward_model, load_tokenizer
    from rlhfkit.models.tokenizer import as_user_message, string_prompts_as_chat

    if not cfg.model or not cfg.prompts:
        raise ValueError("generate needs --model and --prompts")
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    out = Path(cfg.output_dir)
    records = load_prompts(cfg.prompts, ColumnMap(prompt=cfg.prompt_column), cfg.on_error,
                           split=cfg.dataset_train_split)
    if cfg.max_prompts:
        records = records[: cfg.max_prompts]
    tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code,
                               chat_template=cfg.chat_template or None)
    if string_prompts_as_chat(tokenizer, cfg.string_prompts):
        for r in records:
            r.prompt = as_user_message(r.prompt)
    encoded = encode_prompts(tokenizer, records, cfg.max_prompt_length, on_error=cfg.on_error)
    kept = [records[i] for i in encoded.kept]
    if not kept:
        raise ValueError(f"no prompt of {cfg.prompts} could be encoded")
    device = _device()
    model = load_causal_lm(cfg.model, tokenizer, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
    model.to(device).eval()
    torch.manual_seed(cfg.seed)
    samples = sample(model, tokenizer, list(encoded), cfg.n, cfg)
    del model
    rows = [{"index": i, "prompt": r.prompt, "response": s[0][0], "responses": [t for t, _ in s],
             "terminated": [e for _, e in s]} for i, r, s in zip(encoded.kept, kept, samples)]
    if cfg.reward_model:
        rm_tokenizer = load_tokenizer(cfg.reward_model, trust_remote_code=cfg.trust_remote_code,
                                      chat_template=cfg.chat_template or None)
        rm = load_reward_model(cfg.reward_model, rm_tokenizer, dtype=cfg.dtype,
                               trust_remote_code=cfg.trust_remote_code).to(device).eval()
        flat = [(row["prompt"], y, e) for row in rows for y, e in zip(row["responses"], row["terminated"])]
        scores = score(rm, rm_tokenizer, *map(list, zip(*flat)), batch_size=cfg.per_device_batch_size,
                       normalise=cfg.normalize_reward)
        for i, row in enumerate(rows):
            row["scores"] = scores[i * cfg.n:(i + 1) * cfg.n]
            row["best"] = max(range(cfg.n), key=row["scores"].__getitem__)
            row["response"], row["score"] = row["responses"][row["best"]], row["scores"][row["best"]]
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, out / "config.yaml")
    return write_jsonl(out / "generations.jsonl", rows, ensure_ascii=False)
