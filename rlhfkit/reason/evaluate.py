"""Sampling evaluation of a policy in the reasoning world: pass@k from n samples per
problem (the unbiased estimator of Chen et al. 2021, eq. 1), greedy accuracy, and
faithfulness of the working (tasks.check); and pass@k curves for k up to 256 on a
small fixed subset, per family, to see whether RL teaches or only sharpens."""
from __future__ import annotations

import torch

from rlhfkit.reason.tasks import Problem, check


def pass_at_k(n: int, c: int, k: int) -> float:
    """1 - C(n-c, k) / C(n, k): the chance that k of the n samples, drawn without
    replacement, hold at least one of the c right ones (Chen et al. 2021, eq. 1)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    # the ratio as a product, C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k/i) (Chen et al. 2021,
    # fig. 3): no binomials of hundreds of digits, and each factor lies in [0, 1]
    ratio = 1.0
    for i in range(n - c + 1, n + 1):
        ratio *= 1.0 - k / i
    return 1.0 - ratio


def pass_at_k_curve(counts: list[int], n: int, ks: list[int]) -> dict[str, float]:
    """Mean pass@k over problems for each k, from c right of n samples per problem: {k: rate}."""
    return {str(k): sum(pass_at_k(n, c, k) for c in counts) / len(counts) for k in ks if k <= n}


def crossing_k(curves: dict[str, dict[str, float]], target: str = "rl",
               others: tuple[str, ...] = ("base", "sft")) -> int | None:
    """The smallest k where another model's pass@k reaches the target's (the base overtaking
    the RL model at large k: Yue et al. 2025), or None when it never does within the curve.
    Where the target's curve has reached 1 every curve can only meet it, which says nothing
    of either model: such k are passed over."""
    for k in sorted(curves[target], key=int):
        if curves[target][k] < 1.0 - 1e-9 and any(curves[o][k] >= curves[target][k] for o in others if o in curves):
            return int(k)
    return None


def fixed_subset(problems: list[Problem], per_family: int) -> list[Problem]:
    """The first per_family problems of each family, in the order given: the same subset for
    every model of a run, so that their curves differ only by the model."""
    out = []
    for op in sorted({p.op for p in problems}):
        out += [p for p in problems if p.op == op][:per_family]
    return out


def pass_at_k_curves(model_dir: str, problems: list[Problem], n: int, max_new_tokens: int,
                     batch_size: int = 512, seed: int = 0) -> dict:
    """pass@k for every k = 1..n from n samples per problem at temperature 1, over all the
    problems and per family: {"all": {k: rate}, "<op>": {k: rate}, "counts": {op: [c, ...]}}."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    sampled = sample(model, tokenizer, [p.prompt for p in problems], n, 1.0, max_new_tokens, batch_size, seed)
    counts = [sum(check(p, r).answer_right for r in responses) for p, responses in zip(problems, sampled)]
    ks = list(range(1, n + 1))
    result = {"all": pass_at_k_curve(counts, n, ks), "samples_per_problem": n, "counts": {}}
    for op in sorted({p.op for p in problems}):
        op_counts = [c for p, c in zip(problems, counts) if p.op == op]
        result[op] = pass_at_k_curve(op_counts, n, ks)
        result["counts"][op] = op_counts
    return result


@torch.no_grad()
def sample(model, tokenizer, prompts: list[str], n: int, temperature: float, max_new_tokens: int,
           batch_size: int, seed: int) -> list[list[str]]:
    """n responses per prompt (temperature 0: one greedy response, repeated n times)."""
    from rlhfkit.data.collate import pad_sequences
    from rlhfkit.generation.samplers import make_sampler

    torch.manual_seed(seed)
    model.eval()
    sampler = make_sampler("local", model, eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id,
                           max_new_tokens=max_new_tokens, temperature=temperature)
    draws = 1 if temperature == 0 else n
    rows = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts for _ in range(draws)]
    texts = []
    for s in range(0, len(rows), batch_size):
        ids, mask = pad_sequences(rows[s:s + batch_size], tokenizer.pad_token_id, side="left")
        out = sampler.generate(ids, mask)
        texts += tokenizer.batch_decode(out.response_ids, skip_special_tokens=True)
    per_prompt = [texts[i * draws:(i + 1) * draws] for i in range(len(prompts))]
    return [r * n if draws == 1 else r for r in per_prompt]


def score_samples(problems: list[Problem], samples: list[list[str]], ks: tuple[int, ...]) -> dict:
    """pass@k, faithfulness and format over n samples per problem."""
    n = len(samples[0])
    right = wrong = right_bad_working = wrong_good_working = well_formed = working_right = 0
    counts, by_op = [], {}
    for p, responses in zip(problems, samples):
        verdicts = [check(p, r) for r in responses]
        c = sum(v.answer_right for v in verdicts)
        counts.append(c)
        by_op.setdefault(p.op, []).append(c / n)
        for v in verdicts:
            right += v.answer_right
            wrong += not v.answer_right
            right_bad_working += v.answer_right and not v.working_right
            wrong_good_working += (not v.answer_right) and v.working_right
            well_formed += v.well_formed
            working_right += v.working_right
    return {
        "pass_at_1": sum(c / n for c in counts) / len(counts),
        "pass_at_k": {str(k): sum(pass_at_k(n, c, k) for c in counts) / len(counts) for k in ks if k <= n},
        "pass_at_1_by_op": {op: sum(v) / len(v) for op, v in sorted(by_op.items())},
        "right_answer_wrong_working": right_bad_working / right if right else 0.0,
        "wrong_answer_right_working": wrong_good_working / wrong if wrong else 0.0,
        "working_right": working_right / (n * len(problems)),
        "well_formed": well_formed / (n * len(problems)),
        "samples_per_problem": n,
        "problems": len(problems),
    }


def evaluate_policy(model_dir: str, problems: list[Problem], n: int, ks: tuple[int, ...], max_new_tokens: int,
                    batch_size: int = 256, seed: int = 0) -> dict:
    """Sample n responses per problem at temperature 1 and one greedy; score them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    prompts = [p.prompt for p in problems]
    sampled = sample(model, tokenizer, prompts, n, 1.0, max_new_tokens, batch_size, seed)
    result = score_samples(problems, sampled, ks)
    greedy = sample(model, tokenizer, prompts, 1, 0.0, max_new_tokens, batch_size, seed)
    result["greedy_accuracy"] = sum(check(p, g[0]).answer_right for p, g in zip(problems, greedy)) / len(problems)
    result["response_chars"] = sum(len(r) for rs in sampled for r in rs) / (n * len(problems))
    result["examples"] = [{"prompt": p.prompt, "response": rs[0], "answer": p.answer}
                          for p, rs in list(zip(problems, sampled))[:4]]
    return result
