"""Building blocks of `rlhfkit run` (rlhfkit.world.run): the world's datasets
written as JSONL, batched sampling from a policy, the comparison stage (K SFT
samples per prompt ranked by recalibrated simulated labelers) and the reward
model's held-out figures.

Everything here is deterministic in its seed, so a resumed run rebuilds the
same files.
"""
from __future__ import annotations

import json
import random
import statistics
from collections.abc import Sequence
from pathlib import Path

import torch

from rlhfkit.data.collate import pad_prompt_response, pad_sequences
from rlhfkit.data.tokenize import prompt_token_ids
from rlhfkit.world.demonstrators import make_demonstrations
from rlhfkit.world.judge import gold_rewards, judge_task
from rlhfkit.world.labelers import (
    LabelerConfig,
    calibrate_noise,
    labeler_agreement,
    make_comparisons,
    oracle_agreement,
    rank,
)
from rlhfkit.world.splits import iter_split, make_split
from rlhfkit.world.tasks import Task, parse_instruction

# Offset of the second, independent labeler (never in the pool) used for the
# labelers' own agreement on the reward model's held-out pairs.
SECOND_LABELER_OFFSET = 1_000_003


# ----------------------------------------------------------------------------- files

def write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    tmp.replace(path)


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def chat(instruction: str) -> list[dict]:
    """The world's prompt: one user message."""
    return [{"role": "user", "content": instruction}]


def tasks_of(rows: Sequence[dict]) -> list[Task]:
    return [parse_instruction(r["instruction"]) for r in rows]


# ----------------------------------------------------------------------------- stage 1: data

def validation_tasks(n_eval: int, n_validation: int, seed: int) -> list[Task]:
    """Validation prompts for choosing a sampling temperature: the eval split's
    stream after its first `n_eval` tasks, so none is an evaluation prompt (the
    split's instances are unique; only the three `name` instructions recur)."""
    stream = iter_split("eval", seed)
    tasks = [next(stream) for _ in range(n_eval + n_validation)]
    return tasks[n_eval:]


def make_world_data(data_dir: Path, *, n_demonstrations: int, n_comparison_prompts: int, n_ppo_prompts: int,
                    n_eval_prompts: int, n_validation_prompts: int = 0, seed: int) -> dict[str, int]:
    """demonstrations.jsonl (prompt messages + completion), comparison_prompts,
    ppo_prompts, eval_prompts and validation_prompts (prompt messages +
    instruction + family + constraint) from the world's disjoint splits."""
    demos = make_demonstrations(n_demonstrations, seed)
    write_jsonl(data_dir / "demonstrations.jsonl",
                [{"prompt": chat(d["prompt"]), "completion": d["completion"], "family": d["family"],
                  "kind": d["kind"], "constraint": d["constraint"], "formatted": d["formatted"]} for d in demos])
    counts = {"demonstrations": len(demos)}
    splits = {"comparison_prompts": make_split("comparisons", n_comparison_prompts, seed),
              "ppo_prompts": make_split("ppo", n_ppo_prompts, seed),
              "eval_prompts": make_split("eval", n_eval_prompts, seed),
              "validation_prompts": validation_tasks(n_eval_prompts, n_validation_prompts, seed)}
    for name, tasks in splits.items():
        write_jsonl(data_dir / f"{name}.jsonl",
                    [{"prompt": chat(t.instruction), "instruction": t.instruction, "family": t.family,
                      "constraint": t.constraint} for t in tasks])
        counts[name] = len(tasks)
    return counts


def ptx_texts(n_docs: int, seed: int, max_chars: int = 250) -> list[str]:
    """Web text for PPO-ptx, cut at line boundaries into pieces of at most
    `max_chars` characters, so that every piece fits the PPO max_length (a
    byte-level BPE never makes more tokens than bytes) and none is an error."""
    from rlhfkit.world.webtext import make_webtext

    pieces = []
    for doc in make_webtext(n_docs, seed):
        current = ""
        for line in doc.split("\n"):
            line = line[:max_chars]
            if current and len(current) + 1 + len(line) > max_chars:
                pieces.append(current)
                current = line
            else:
                current = f"{current}\n{line}" if current else line
        if current.strip():
            pieces.append(current)
    return [p for p in pieces if p.strip()]


# ----------------------------------------------------------------------------- sampling

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
    LocalGenerator (top-k 0, top-p 1) at `temperature`, or greedily when
    temperature == 0. Prompts are sorted by length so batches carry little padding."""
    from rlhfkit.rollout.generate import LocalGenerator

    model.eval()
    device = next(model.parameters()).device
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    prompt_ids = [prompt_token_ids(tokenizer, p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(prompt_ids[i]))
    responses: list[list[int] | None] = [None] * len(prompts)
    ended: list[bool] = [False] * len(prompts)
    logprob_sums: list[float] = [0.0] * len(prompts)
    torch.manual_seed(seed)
    generator = LocalGenerator(model, eos_id, pad_id, max_new_tokens, temperature)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        ids, mask = pad_sequences([prompt_ids[i] for i in idx], pad_id, side="left")
        ids, mask = ids.to(device), mask.to(device)
        gen = generator.generate(ids, mask)
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


# ----------------------------------------------------------------------------- stage 3: comparisons

def gold(prompts, responses, terminated) -> list[float]:
    """The gold judge as a PPO reward function, added with weight 0 so that
    metrics.jsonl records `objective/scores_gold` beside the proxy reward."""
    return gold_rewards(prompts, responses, terminated)


def filter_ranking(row: dict) -> dict | None:
    """Make a labeled K-way ranking loadable by the reward trainer: empty responses
    are dropped (the loader refuses them), then duplicate texts (the trainer refuses
    them; the best-ranked copy stays). Responses that ran out of tokens stay, marked
    `terminated: false`, so they are encoded without EOS, as PPO's reward model will
    see them. None when fewer than two responses remain."""
    keep = [r for r in range(len(row["responses"])) if row["responses"][r].strip()]
    seen, unique = set(), []
    for r in keep:
        if row["responses"][r] not in seen:
            seen.add(row["responses"][r])
            unique.append(r)
    if len(unique) < 2:
        return None
    return {
        "prompt": chat(row["prompt"]),
        "responses": [row["responses"][r] for r in unique],
        "ranking": list(range(len(unique))),  # responses are stored best first
        "terminated": [bool(row["terminated"][r]) for r in unique],
        "original_order": [row["order"][r] for r in unique],
        "labeler": row["labeler"], "seed": row["seed"], "index": row["index"], "family": row["family"],
    }


def label_comparisons(tasks: Sequence[Task], responses: Sequence[Sequence[str]], terminated: Sequence[Sequence[bool]],
                      *, seed: int, labeler: LabelerConfig, target_agreement: float,
                      calibrate: bool) -> tuple[list[dict], dict, LabelerConfig]:
    """Recalibrate the labelers' noise on these samples, rank, and filter.
    Returns (rows for the reward trainer, figures, the labeler config used)."""
    samples = list(zip(tasks, responses, terminated))
    figures: dict = {"noise_std_default": labeler.noise_std}
    if calibrate:
        try:
            labeler = LabelerConfig(**{**labeler.__dict__, "noise_std": calibrate_noise(
                samples, target_agreement, config=labeler, seed=seed)})
        except ValueError as e:  # e.g. too few distinct pairs in a micro run
            figures["calibration_error"] = str(e)
    figures["noise_std"] = labeler.noise_std
    try:
        figures["labeler_agreement"] = labeler_agreement(samples, labeler, seed)
        figures["oracle_agreement"] = oracle_agreement(samples, labeler, seed)
    except ValueError:
        figures["labeler_agreement"] = figures["oracle_agreement"] = float("nan")
    raw = make_comparisons(tasks, responses, terminated, seed, labeler)
    rows = [r for r in (filter_ranking(x) for x in raw) if r is not None]
    k = len(responses[0]) if responses else 0
    figures.update({
        "prompts": len(raw), "rankings_kept": len(rows),
        "responses_sampled": sum(len(r) for r in responses),
        "responses_unterminated": sum(not t for ts in terminated for t in ts),
        "responses_kept": sum(len(r["responses"]) for r in rows),
        "pairs_kept": sum(len(r["responses"]) * (len(r["responses"]) - 1) // 2 for r in rows),
        "k": k,
    })
    return rows, figures, labeler


# ----------------------------------------------------------------------------- stage 4: reward-model figures

@torch.no_grad()
def reward_model_figures(rm_dir: str, rows: Sequence[dict], labeler: LabelerConfig, batch_size: int = 64) -> dict:
    """Held-out pairwise figures on the same pairs (different texts, labeler order):
    val_accuracy (RM vs the labeler who ranked them), val_accuracy_vs_gold (RM vs
    the gold judge, gold ties count one half), labeler_agreement (a second,
    independent labeler vs the first), oracle_agreement (gold vs the first labeler:
    the ceiling a reward model that learned the labeler could reach against gold)."""
    from rlhfkit.models.loading import load_reward_model, load_tokenizer

    tokenizer = load_tokenizer(rm_dir)
    model = load_reward_model(rm_dir, tokenizer).eval()
    prompts = [row["prompt"] for row in rows for _ in row["responses"]]
    responses = [y for row in rows for y in row["responses"]]
    terminated = [t for row in rows for t in row["terminated"]]
    scores = reward_model_scores(model, tokenizer, prompts, responses, terminated, batch_size=batch_size)
    return heldout_pair_figures(rows, scores, labeler)


@torch.no_grad()
def reward_model_scores(model, tokenizer, prompts: Sequence, responses: Sequence[str], terminated: Sequence[bool],
                        *, batch_size: int = 64) -> list[float]:
    """The reward model's (normalised) score of each response to its prompt; a
    response that ran out of tokens is encoded without EOS, as PPO scores it."""
    from rlhfkit.models.forward import reward_scores

    pairs = []
    for p, y, ended in zip(prompts, responses, terminated):
        eos = [tokenizer.eos_token_id] if ended else []
        pairs.append((prompt_token_ids(tokenizer, p), tokenizer(y, add_special_tokens=False)["input_ids"] + eos))
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))  # less padding
    scores = [0.0] * len(pairs)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        ids, mask, target = pad_prompt_response([pairs[i] for i in idx], tokenizer.pad_token_id)
        for i, v in zip(idx, reward_scores(model, ids, mask, target).tolist()):
            scores[i] = v
    return scores


# gold scores closer than this are a tie: the pair counts one half (RM, labeler and AI judge figures alike)
GOLD_TIE = 1e-9


def heldout_pair_figures(rows: Sequence[dict], scores: Sequence[float], labeler: LabelerConfig) -> dict:
    """reward_model_figures from given scores: `scores` holds one score per response of
    `rows`, in order (responses of a row best first in the labeler's ranking)."""
    acc = acc_gold = agree = oracle = 0.0
    pairs = 0
    pos = 0
    exact_pairs: dict[str, list[float]] = {}  # family -> [pairs differing in exactness, RM prefers the exact one]
    follows_pairs = [0, 0.0]  # [pairs where only one response follows the asked format, RM prefers that one]
    all_scores, all_gold, all_length = [], [], []
    for row in rows:
        ys = row["responses"]
        k = len(ys)
        s = scores[pos:pos + k]
        pos += k
        task = parse_instruction(row["prompt"][-1]["content"])
        ended = row["terminated"]
        judged = [judge_task(task, y, t) for y, t in zip(ys, ended)]
        g = [j.gold for j in judged]
        all_scores += s
        all_gold += g
        all_length += [len(y) for y in ys]
        fam = exact_pairs.setdefault(row.get("family", task.family), [0, 0])
        for i in range(k):
            for j in range(i + 1, k):
                if judged[i].exact != judged[j].exact:  # score ties count one half
                    fam[0] += 1
                    fam[1] += 0.5 if s[i] == s[j] else float((s[i] > s[j]) == judged[i].exact)
                if judged[i].follows != judged[j].follows:
                    follows_pairs[0] += 1
                    follows_pairs[1] += 0.5 if s[i] == s[j] else float((s[i] > s[j]) == judged[i].follows)
        other = rank(task, ys, ended, row["labeler"] + SECOND_LABELER_OFFSET, row["seed"],
                     prompt_index=row["index"], config=labeler)
        other_pos = {idx: r for r, idx in enumerate(other)}
        for i in range(k):
            for j in range(i + 1, k):  # the labeler preferred i to j
                pairs += 1
                acc += 1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0
                if abs(g[i] - g[j]) <= GOLD_TIE:
                    acc_gold += 0.5
                    oracle += 0.5
                else:
                    acc_gold += float((s[i] > s[j]) == (g[i] > g[j]))
                    oracle += float(g[i] > g[j])
                agree += float(other_pos[i] < other_pos[j])
    if not pairs:
        return {"val_accuracy": float("nan"), "labeler_agreement": float("nan"),
                "val_accuracy_vs_gold": float("nan"), "oracle_agreement": float("nan"), "pairs": 0}
    n_exact = sum(n for n, _ in exact_pairs.values())
    return {"val_accuracy": acc / pairs, "labeler_agreement": agree / pairs,
            "val_accuracy_vs_gold": acc_gold / pairs, "oracle_agreement": oracle / pairs, "pairs": pairs,
            "prompts": len(rows),
            # what the RM learned: does it prefer the exactly-right response when only one of a
            # pair is, and does its score follow gold or merely length (characters)?
            "exact_pairs": n_exact,
            "exact_pair_accuracy": sum(r for _, r in exact_pairs.values()) / n_exact if n_exact else float("nan"),
            "exact_pair_accuracy_per_family": {f: r / n for f, (n, r) in sorted(exact_pairs.items()) if n},
            "follows_pairs": follows_pairs[0],
            "follows_pair_accuracy": follows_pairs[1] / follows_pairs[0] if follows_pairs[0] else float("nan"),
            "score_correlation": {"gold": _pearson(all_scores, all_gold), "length": _pearson(all_scores, all_length)}}


def _pearson(a: Sequence[float], b: Sequence[float]) -> float:
    """statistics.correlation, NaN where it is undefined (fewer than 2 points, a constant side)."""
    try:
        return statistics.correlation(a, b)
    except statistics.StatisticsError:
        return float("nan")


def split_rows(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held-out) by a seeded shuffle; at least one held-out row when possible."""
    order = list(range(len(rows)))
    random.Random(f"rlhfkit.world.rm-holdout/{seed}").shuffle(order)
    n_out = max(1, round(fraction * len(rows))) if len(rows) > 1 else 0
    held = sorted(order[:n_out])
    train = sorted(order[n_out:])
    return [rows[i] for i in train], [rows[i] for i in held]
