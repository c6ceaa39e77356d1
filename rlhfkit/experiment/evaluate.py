"""Evaluation of a policy in the instruction world (docs/world.md, "What a run of the
world must report").

A policy is the distribution it samples from: every figure below comes from
samples at temperature 1.0 (top-k 0, top-p 1, at most 48 new tokens), one per
evaluation prompt; greedy decoding (and other temperatures) are measured beside
it for the win rates.

Per model: params, gold (mean gold score), likert (1 + 6 gold), exact (the
content of the first line is an accepted answer), follows (exactly the asked
formats present: over all prompts), follows_constrained (the same over the
prompts that carry a constraint), terminated (emitted EOS), polite, length
(generated tokens, EOS not counted), per_constraint {none | caps | brackets |
prefix | no_period: prompts, gold, follows}, kl_to_sft (nats per response: the sum over sampled
tokens of log pi - log pi_sft on the model's own T=1 samples, both at
temperature 1; a Monte-Carlo estimate of KL(pi || pi_sft)), webtext_loss (mean
token NLL on held-out web text: the alignment tax) and per_family {gold, exact}.

Decodings: T = 1 ("t1"), greedy, and the model's best temperature among
0.5 / 0.7 / 1.0, chosen by mean gold on a separate validation prompt set (never
the evaluation prompts) and then sampled on the evaluation prompts ("best").
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from rlhfkit.experiment.pretrain import webtext_loss
from rlhfkit.experiment.sampling import Samples, response_logprob_sums, sample_responses
from rlhfkit.world.judge import judge_task
from rlhfkit.world.tasks import CONSTRAINTS, Task

CONSTRAINT_ORDER = ("none", *CONSTRAINTS)

EVAL_TEMPERATURE = 1.0
MAX_NEW_TOKENS = 48


DECODING_KEYS = ("gold", "likert", "exact", "follows", "follows_constrained", "terminated", "polite", "length",
                 "scores", "per_prompt")
# the per-prompt values behind each mean, kept so that the report can give every figure its interval
PER_PROMPT_KEYS = ("exact", "follows", "terminated", "polite")


def judge_samples(tasks: Sequence[Task], texts: Sequence[str], terminated: Sequence[bool]) -> list:
    return [judge_task(t, y, e) for t, y, e in zip(tasks, texts, terminated)]


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def summarise_judged(tasks: Sequence[Task], results: Sequence, lengths: Sequence[int]) -> dict:
    """Judge figures of one set of judged responses (means over prompts)."""
    fam: dict[str, list] = defaultdict(list)
    by_constraint: dict[str, list] = defaultdict(list)
    for t, r in zip(tasks, results):
        fam[t.family].append(r)
        by_constraint[t.constraint or "none"].append(r)
    constrained = [r for t, r in zip(tasks, results) if t.constraint]
    return {
        "gold": _mean(r.gold for r in results),
        "likert": _mean(r.likert for r in results),
        "exact": _mean(r.exact for r in results),
        "follows": _mean(r.follows for r in results),
        "follows_constrained": _mean(r.follows for r in constrained),
        "terminated": _mean(r.terminated for r in results),
        "polite": _mean(r.polite for r in results),
        "length": _mean(lengths),
        "per_family": {f: {"gold": _mean(r.gold for r in rs), "exact": _mean(r.exact for r in rs),
                           "follows": _mean(r.follows for r in rs)} for f, rs in sorted(fam.items())},
        "per_constraint": {c: {"prompts": len(rs), "gold": _mean(r.gold for r in rs),
                               "follows": _mean(r.follows for r in rs)}
                           for c, rs in sorted(by_constraint.items(), key=lambda kv: CONSTRAINT_ORDER.index(kv[0]))},
        "scores": [r.gold for r in results],
        "per_prompt": {**{k: [int(getattr(r, k)) for r in results] for k in PER_PROMPT_KEYS},
                       "length": list(lengths)},
    }


def summarise(tasks: Sequence[Task], samples: Samples) -> dict:
    """Judge figures of one set of samples (means over prompts)."""
    return summarise_judged(tasks, judge_samples(tasks, samples.texts, samples.terminated), samples.lengths())


def choose_temperature(model, tokenizer, tasks: Sequence[Task], prompts: Sequence, temperatures: Sequence[float], *,
                       max_new_tokens: int, batch_size: int, seed: int) -> tuple[float, dict[str, float]]:
    """The sampling temperature with the highest mean gold on a validation prompt
    set (not the evaluation prompts): (best, {"t<T>": gold})."""
    golds = {}
    for temp in temperatures:
        s = sample_responses(model, tokenizer, prompts, temperature=temp, max_new_tokens=max_new_tokens,
                             batch_size=batch_size, seed=seed)
        golds[f"t{temp:g}"] = _mean(r.gold for r in judge_samples(tasks, s.texts, s.terminated))
    best = max(temperatures, key=lambda t: golds[f"t{t:g}"])
    return best, golds


def evaluate_policy(path: str, tasks: Sequence[Task], prompts: Sequence, *, sft_model=None, webtext: Sequence[str] = (),
                    temperatures: Sequence[float] = (EVAL_TEMPERATURE,), greedy: bool = False,
                    validation: tuple[Sequence[Task], Sequence] | None = None,
                    max_new_tokens: int = MAX_NEW_TOKENS, batch_size: int = 256, seed: int = 0,
                    samples_out: Path | None = None) -> dict:
    """Every figure of one model; `sft_model` (a loaded causal LM with the same
    vocabulary) gives kl_to_sft, else it is NaN (or 0 for the SFT model itself,
    measured the same way when sft_model is this model).

    With `validation` (tasks, prompts), the best of `temperatures` is chosen on
    those prompts and sampled on the evaluation prompts as decoding "best";
    without it, every temperature is sampled on the evaluation prompts."""
    from rlhfkit.models.loading import count_parameters, load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(path)
    model = load_causal_lm(path, tokenizer).eval()
    decodings: dict[str, Samples] = {}
    sample = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed)
    chosen, validation_gold = None, {}
    if validation is not None:
        chosen, validation_gold = choose_temperature(model, tokenizer, *validation, temperatures, **sample)
        temperatures = sorted({EVAL_TEMPERATURE, chosen})
    for temp in temperatures:
        decodings[f"t{temp:g}"] = sample_responses(model, tokenizer, prompts, temperature=temp, **sample)
    if greedy:
        decodings["greedy"] = sample_responses(model, tokenizer, prompts, temperature=0,
                                               max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed)
    main_key = f"t{EVAL_TEMPERATURE:g}"
    if main_key not in decodings:
        raise ValueError(f"evaluation needs temperature {EVAL_TEMPERATURE}")
    main = summarise(tasks, decodings[main_key])
    kl, kl_per_prompt = float("nan"), None
    same_vocab = sft_model is not None and (sft_model.get_input_embeddings().weight.shape[0]
                                            == model.get_input_embeddings().weight.shape[0])
    if same_vocab:
        s = decodings[main_key]
        # log pi of the sampled tokens: the sampler's own log-probs at T = 1 (KV-cache pass), no second forward
        own = s.logprob_sums if s.logprob_sums is not None and s.temperature == 1.0 else response_logprob_sums(model, s)
        ref = own if sft_model is model else response_logprob_sums(sft_model, decodings[main_key])
        kl_per_prompt = [a - b for a, b in zip(own, ref)]
        kl = sum(kl_per_prompt) / max(len(own), 1)
    figures = {
        "path": str(path),
        "params": count_parameters(model),
        **{k: main[k] for k in DECODING_KEYS if k not in ("scores", "per_prompt")},
        "kl_to_sft": kl,
        "webtext_loss": webtext_loss(model, tokenizer, webtext) if webtext else float("nan"),
        "per_family": main["per_family"],
        "per_constraint": main["per_constraint"],
        "best_temperature": chosen,
        "validation_gold": validation_gold,
    }
    decoding_figures = {}
    for name, s in decodings.items():
        d = summarise(tasks, s)
        decoding_figures[name] = {k: d[k] for k in DECODING_KEYS}
    if kl_per_prompt is not None:
        decoding_figures[main_key]["per_prompt"]["kl_to_sft"] = kl_per_prompt
    if chosen is not None:
        decoding_figures["best"] = {**decoding_figures[f"t{chosen:g}"], "temperature": chosen}
    if samples_out is not None:
        samples_out.parent.mkdir(parents=True, exist_ok=True)
        with open(samples_out, "w", encoding="utf-8") as f:
            for name, s in decodings.items():
                for t, y, e in zip(tasks, s.texts, s.terminated):
                    f.write(json.dumps({"decoding": name, "instruction": t.instruction, "family": t.family,
                                        "response": y, "terminated": e}) + "\n")
    return {"figures": figures, "decodings": decoding_figures, "model": model}


def best_of_n_kl(n: int) -> float:
    """KL(best-of-n || base) = log n - (n - 1) / n nats, the analytic value for
    distinct samples (Stiennon et al. 2020, Appendix G.3; Gao et al. 2022)."""
    return math.log(n) - (n - 1) / n


def evaluate_best_of_n(sft_path: str, rm_path: str, tasks: Sequence[Task], prompts: Sequence, ns: Sequence[int], *,
                       sft_figures: dict, max_new_tokens: int = MAX_NEW_TOKENS, batch_size: int = 256, seed: int = 0,
                       samples_out: Path | None = None) -> dict[int, dict]:
    """Best-of-n with the reward model: max(ns) SFT samples per prompt at T = 1,
    each scored by the RM; best-of-n keeps the highest-scoring of the first n
    (nested, so best-of-16 sees best-of-4's candidates). Returns {n: {"figures",
    "decodings"}} like evaluate_policy: one decoding ("t1", also "best": best-of-n
    samples at T = 1 only, so it has no greedy decoding). params, webtext_loss
    are SFT's (the same weights); kl_to_sft the analytic log n - (n-1)/n."""
    from rlhfkit.experiment.reward_figures import reward_model_scores
    from rlhfkit.models.loading import load_causal_lm, load_reward_model, load_tokenizer

    n_max = max(ns)
    tokenizer = load_tokenizer(sft_path)
    policy = load_causal_lm(sft_path, tokenizer).eval()
    # sample j of every prompt comes from one pass over the prompt list with its own seed
    draws = [sample_responses(policy, tokenizer, prompts, temperature=EVAL_TEMPERATURE, max_new_tokens=max_new_tokens,
                              batch_size=batch_size, seed=seed + 1000 * j) for j in range(n_max)]
    del policy
    rm_tokenizer = load_tokenizer(rm_path)
    rm = load_reward_model(rm_path, rm_tokenizer).eval()
    scores = [reward_model_scores(rm, rm_tokenizer, prompts, d.texts, d.terminated, batch_size=batch_size)
              for d in draws]
    draw_lengths = [d.lengths() for d in draws]  # once per draw, not once per prompt
    out = {}
    rows_out = []
    for n in ns:
        pick = [max(range(n), key=lambda j: scores[j][i]) for i in range(len(prompts))]
        texts = [draws[j].texts[i] for i, j in enumerate(pick)]
        ended = [draws[j].terminated[i] for i, j in enumerate(pick)]
        lengths = [draw_lengths[j][i] for i, j in enumerate(pick)]
        d = summarise_judged(tasks, judge_samples(tasks, texts, ended), lengths)
        decoding = {k: d[k] for k in DECODING_KEYS}
        figures = {"path": f"best-of-{n} of {sft_path} by {rm_path}", "params": sft_figures["params"],
                   **{k: d[k] for k in DECODING_KEYS if k not in ("scores", "per_prompt")}, "kl_to_sft": best_of_n_kl(n),
                   "webtext_loss": sft_figures["webtext_loss"], "per_family": d["per_family"],
                   "per_constraint": d["per_constraint"], "best_temperature": EVAL_TEMPERATURE, "validation_gold": {},
                   "mean_rm_score": _mean(scores[j][i] for i, j in enumerate(pick))}
        out[n] = {"figures": figures, "decodings": {"t1": decoding, "best": {**decoding, "temperature": 1.0}}}
        rows_out += [{"decoding": f"bon{n}", "instruction": t.instruction, "family": t.family, "response": y,
                      "terminated": e} for t, y, e in zip(tasks, texts, ended)]
    if samples_out is not None:
        samples_out.parent.mkdir(parents=True, exist_ok=True)
        with open(samples_out, "w", encoding="utf-8") as f:
            for row in rows_out:
                f.write(json.dumps(row) + "\n")
    return out


def finite(x: float) -> float | None:
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None
