"""Evaluation of a policy in the instruction world (WORLD.md, "What a run of the
world must report").

A policy is the distribution it samples from: every figure below comes from
samples at temperature 1.0 (top-k 0, top-p 1, at most 48 new tokens), one per
evaluation prompt; greedy decoding (and other temperatures) are measured beside
it for the win rates.

Per model: params, gold (mean gold score), likert (1 + 6 gold), exact (first line
is an accepted answer), terminated (emitted EOS), polite, length (generated
tokens, EOS not counted), kl_to_sft (nats per response: the sum over sampled
tokens of log pi - log pi_sft on the model's own T=1 samples, both at
temperature 1; a Monte-Carlo estimate of KL(pi || pi_sft)), webtext_loss (mean
token NLL on held-out web text: the alignment tax) and per_family {gold, exact}.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch

from rlhfkit.world.judge import gold_score
from rlhfkit.world.stages import Samples, response_logprob_sums, sample_responses
from rlhfkit.world.tasks import Task

EVAL_TEMPERATURE = 1.0
MAX_NEW_TOKENS = 48

try:  # the pretraining module's held-out web text and loss, when present
    from rlhfkit.world.pretrain import webtext_eval_texts as _pretrain_texts
    from rlhfkit.world.pretrain import webtext_loss as _pretrain_webtext_loss
except ImportError:  # pragma: no cover - fallback while pretrain.py is absent
    _pretrain_texts = _pretrain_webtext_loss = None


def heldout_webtext(n: int) -> list[str]:
    """Held-out web-text documents (pretrain.webtext_eval_texts when available,
    else make_webtext with a seed no training stage uses)."""
    if _pretrain_texts is not None:
        return _pretrain_texts(n)
    from rlhfkit.world.webtext import make_webtext

    return make_webtext(n, seed=1_000_003)


@torch.no_grad()
def webtext_loss(model, tokenizer, texts: Sequence[str], batch_size: int = 32, max_length: int = 256) -> float:
    """Mean token NLL (nats) over held-out web text."""
    if _pretrain_webtext_loss is not None:
        return float(_pretrain_webtext_loss(model, tokenizer, list(texts), batch_size=batch_size,
                                            max_length=max_length))
    from rlhfkit.data.collate import pad_sequences

    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(texts), batch_size):
        ids = [tokenizer(t, add_special_tokens=False)["input_ids"][:max_length] for t in texts[start:start + batch_size]]
        x, mask = pad_sequences(ids, tokenizer.pad_token_id, side="right")
        logits = model(input_ids=x, attention_mask=mask).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none")
        m = mask[:, 1:].float()
        total += float((nll * m).sum())
        count += int(m.sum())
    return total / max(count, 1)


def judge_samples(tasks: Sequence[Task], samples: Samples) -> list:
    return [gold_score(y, t.accepted, e) for t, y, e in zip(tasks, samples.texts, samples.terminated)]


def summarise(tasks: Sequence[Task], samples: Samples) -> dict:
    """Judge figures of one set of samples (means over prompts)."""
    results = judge_samples(tasks, samples)
    n = max(len(results), 1)
    fam: dict[str, list] = defaultdict(list)
    for t, r in zip(tasks, results):
        fam[t.family].append(r)
    return {
        "gold": sum(r.gold for r in results) / n,
        "likert": sum(r.likert for r in results) / n,
        "exact": sum(r.exact for r in results) / n,
        "terminated": sum(r.terminated for r in results) / n,
        "polite": sum(r.polite for r in results) / n,
        "length": sum(samples.lengths()) / n,
        "per_family": {f: {"gold": sum(r.gold for r in rs) / len(rs), "exact": sum(r.exact for r in rs) / len(rs)}
                       for f, rs in sorted(fam.items())},
        "scores": [r.gold for r in results],
    }


def evaluate_policy(path: str, tasks: Sequence[Task], prompts: Sequence, *, sft_model=None, webtext: Sequence[str] = (),
                    temperatures: Sequence[float] = (EVAL_TEMPERATURE,), greedy: bool = False,
                    max_new_tokens: int = MAX_NEW_TOKENS, batch_size: int = 256, seed: int = 0,
                    samples_out: Path | None = None) -> dict:
    """Every figure of one model; `sft_model` (a loaded causal LM with the same
    vocabulary) gives kl_to_sft, else it is NaN (or 0 for the SFT model itself,
    measured the same way when sft_model is this model)."""
    from rlhfkit.models.loading import count_parameters, load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(path)
    model = load_causal_lm(path, tokenizer).eval()
    decodings: dict[str, Samples] = {}
    for temp in temperatures:
        decodings[f"t{temp:g}"] = sample_responses(model, tokenizer, prompts, temperature=temp,
                                                   max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed)
    if greedy:
        decodings["greedy"] = sample_responses(model, tokenizer, prompts, temperature=0,
                                               max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed)
    main_key = f"t{EVAL_TEMPERATURE:g}"
    if main_key not in decodings:
        raise ValueError(f"evaluation needs temperature {EVAL_TEMPERATURE}")
    main = summarise(tasks, decodings[main_key])
    kl = float("nan")
    same_vocab = sft_model is not None and (sft_model.get_input_embeddings().weight.shape[0]
                                            == model.get_input_embeddings().weight.shape[0])
    if same_vocab:
        s = decodings[main_key]
        # log pi of the sampled tokens: the sampler's own log-probs at T = 1 (KV-cache pass), no second forward
        own = s.logprob_sums if s.logprob_sums is not None and s.temperature == 1.0 else response_logprob_sums(model, s)
        ref = own if sft_model is model else response_logprob_sums(sft_model, decodings[main_key])
        kl = sum(a - b for a, b in zip(own, ref)) / max(len(own), 1)
    figures = {
        "path": str(path),
        "params": count_parameters(model),
        **{k: main[k] for k in ("gold", "likert", "exact", "terminated", "polite", "length")},
        "kl_to_sft": kl,
        "webtext_loss": webtext_loss(model, tokenizer, webtext) if webtext else float("nan"),
        "per_family": main["per_family"],
    }
    decoding_figures = {}
    for name, s in decodings.items():
        d = summarise(tasks, s)
        decoding_figures[name] = {k: d[k] for k in ("gold", "likert", "exact", "terminated", "polite", "length",
                                                    "scores")}
    if samples_out is not None:
        samples_out.parent.mkdir(parents=True, exist_ok=True)
        with open(samples_out, "w", encoding="utf-8") as f:
            for name, s in decodings.items():
                for t, y, e in zip(tasks, s.texts, s.terminated):
                    f.write(json.dumps({"decoding": name, "instruction": t.instruction, "family": t.family,
                                        "response": y, "terminated": e}) + "\n")
    return {"figures": figures, "decodings": decoding_figures, "model": model}


def best_temperature(decodings: dict[str, dict], temperatures: Sequence[float]) -> str:
    """The sampling temperature with the highest mean gold."""
    keys = [f"t{t:g}" for t in temperatures if f"t{t:g}" in decodings]
    return max(keys, key=lambda k: decodings[k]["gold"])


def finite(x: float) -> float | None:
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None
