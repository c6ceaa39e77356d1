"""`rlhfkit label revise`: Constitutional AI's supervised stage (Bai et al. 2022, sec. 3).

The model answers a prompt (or a given response is taken), then, under a principle
drawn from the constitution, writes a critique of that response and a revision of it,
continuing one plain-text document::

    {instruction}
    Response: {response}
    Critique request: {critique_request}
    Critique: <generated, up to the next field>
    Revision request: {revision_request}
    Revision: <generated>

Each round revises the last revision under a freshly drawn principle; the final
revision becomes an SFT record ``{"prompt", "completion"}`` (with the original response,
the critiques and the principles beside it), which `rlhfkit sft` reads.

A constitution line ``critique request | revision request`` gives both requests;
a line without ``|`` is a principle P, asked as "Identify specific ways in which the
response does not follow this principle: P" and "Rewrite the response so that it follows
this principle: P".
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from rlhfkit.config import check_options, option
from rlhfkit.data.loading import load_prompts
from rlhfkit.data.tokenize import encode_prompt
from rlhfkit.io import output_file, write_jsonl
from rlhfkit.label.ai import read_principles
from rlhfkit.label.lm import instruction_text, load_lm, sample_texts

CHAIN = "{instruction}\nResponse: {response}\nCritique request: {critique_request}\nCritique:"
REVISION = " {critique}\nRevision request: {revision_request}\nRevision:"
FIELDS = ("\nResponse:", "\nCritique request:", "\nCritique:", "\nRevision request:", "\nRevision:")


def requests(principle: str) -> tuple[str, str]:
    """(critique request, revision request) of one constitution line."""
    if "|" in principle:
        critique, revision = (part.strip() for part in principle.split("|", 1))
        return critique, revision
    return (f"Identify specific ways in which the response does not follow this principle: {principle}",
            f"Rewrite the response so that it follows this principle: {principle}")


def cut_at_field(text: str) -> str:
    """A generated field ends where the model starts another field of the document."""
    ends = [i for i in (text.find(f) for f in FIELDS) if i >= 0]
    return (text[: min(ends)] if ends else text).strip()


def critique_and_revise(model, tokenizer, prompts: list, responses: list[str], principles: list[str], *,
                        rounds: int = 1, max_new_tokens: int = 128, temperature: float = 0.0, seed: int = 0,
                        batch_size: int = 16) -> list[dict]:
    """For each (prompt, response): `rounds` of critique then revision, each under a principle
    drawn with `seed`. Returns dicts: revision, critiques, principles (one per round)."""
    rng = random.Random(seed)
    current = list(responses)
    history = [{"critiques": [], "principles": []} for _ in prompts]
    for _ in range(rounds):
        drawn = [rng.choice(principles) for _ in prompts]
        docs = []
        for prompt, response, principle in zip(prompts, current, drawn):
            critique_request, _ = requests(principle)
            docs.append(CHAIN.format(instruction=instruction_text(prompt), response=response,
                                     critique_request=critique_request))
        critiques = _continue(model, tokenizer, docs, max_new_tokens, temperature, batch_size)
        docs = [doc + REVISION.format(critique=c, revision_request=requests(p)[1])
                for doc, c, p in zip(docs, critiques, drawn)]
        current = _continue(model, tokenizer, docs, max_new_tokens, temperature, batch_size)
        for h, c, p in zip(history, critiques, drawn):
            h["critiques"].append(c)
            h["principles"].append(p)
    return [{"revision": r, **h} for r, h in zip(current, history)]


def _continue(model, tokenizer, docs: list[str], max_new_tokens: int, temperature: float, batch_size: int) -> list[str]:
    ids = [encode_prompt(tokenizer, doc, None) for doc in docs]
    texts, _ = sample_texts(model, tokenizer, ids, max_new_tokens=max_new_tokens, temperature=temperature,
                            batch_size=batch_size)
    return [cut_at_field(t) for t in texts]


@dataclass
class ReviseConfig:
    """Critique and revise responses under a constitution (Constitutional AI's SL stage): SFT data."""

    model: str = option("", "the model that answers, critiques and revises (a causal LM directory)")
    data: str = option("", "prompts (JSONL: prompt or messages); a `response` column is revised as given, "
                       "otherwise the model answers first")
    principles: str = option("", "the constitution: one principle a line, or 'critique request | revision request'")
    out: str = option("revisions.jsonl", "SFT records: prompt, completion (the final revision), original, critiques, "
                      "principles; a directory gets revisions.jsonl inside (--output_dir is the same option)")
    rounds: int = option(1, "critique-revision rounds, each under a freshly drawn principle")
    max_new_tokens: int = option(128, "longest response, critique or revision in tokens")
    temperature: float = option(0.0, "sampling temperature of every generation (0: greedy)")
    per_device_batch_size: int = option(16, "sequences generated together")
    seed: int = option(0, "seed for drawing principles and sampling")
    dtype: str = option("float32", "model weights dtype: float32, bfloat16 or float16")
    trust_remote_code: bool = option(False, "allow model code from the checkpoint")
    num_threads: int = option(0, "torch CPU threads (0: torch's default)")

    RULES: ClassVar[dict] = {"rounds": ">= 1", "max_new_tokens": ">= 1", "temperature": ">= 0", "per_device_batch_size": ">= 1",
                             "num_threads": ">= 0", "dtype": ("float32", "bfloat16", "float16")}

    def __post_init__(self) -> None:
        check_options(self)


def revise(cfg: ReviseConfig) -> Path:
    principles = read_principles(cfg.principles)
    records = load_prompts(cfg.data)
    model, tokenizer = load_lm(cfg.model, cfg.dtype, cfg.trust_remote_code, cfg.num_threads)
    torch.manual_seed(cfg.seed)
    prompts = [r.prompt for r in records]
    responses = [r.metadata.get("response") for r in records]
    missing = [i for i, r in enumerate(responses) if not isinstance(r, str) or not r.strip()]
    if missing:
        ids = [encode_prompt(tokenizer, prompts[i], None) for i in missing]
        texts, _ = sample_texts(model, tokenizer, ids, max_new_tokens=cfg.max_new_tokens,
                                temperature=cfg.temperature, batch_size=cfg.per_device_batch_size)
        for i, text in zip(missing, texts):
            responses[i] = text.strip()
    results = critique_and_revise(model, tokenizer, prompts, responses, principles, rounds=cfg.rounds,
                                  max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=cfg.seed,
                                  batch_size=cfg.per_device_batch_size)
    rows = [{"prompt": p, "completion": r["revision"], "original": o, "critiques": r["critiques"],
             "principles": r["principles"]} for p, o, r in zip(prompts, responses, results) if r["revision"]]
    if len(rows) < len(results):
        print(f"label revise: {len(results) - len(rows)} empty revision(s) dropped")
    if not rows:
        raise ValueError("every revision came out empty")
    return write_jsonl(output_file(cfg.out, "revisions.jsonl"), rows, ensure_ascii=False)
