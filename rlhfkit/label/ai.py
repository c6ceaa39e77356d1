"""AI feedback: a causal LM judges pairs of responses by Constitutional AI's
multiple-choice method (Bai et al. 2022, "Constitutional AI", sec. 4.1; RLAIF, Lee
et al. 2023, uses the same readout).

The judge reads the pair in a fixed template and we take its next-token probability
of "A" against "B" after it. The default template (``TEMPLATE``) is the review
document the instruction world's web text carries, exactly::

    {instruction}
    (A) {answer_a}
    (B) {answer_b}
    Better: (

with one line ``{principle}`` in front of it when a principle is given. Each pair is
read in both orders and the two readings averaged,

    P(a better) = 1/2 [ P("A" | a as (A), b as (B)) + P("B" | b as (A), a as (B)) ],

where each P is normalised over the two letters only, which cancels a judge's
preference for a position (CAI's "both orders" symmetrisation). With several
principles each pair gets one drawn at random (seeded), as in CAI, or with
``ensemble=True`` the mean over all of them.

When the tokenizer splits the text cleanly before the letter (tokens of template +
"A" = tokens of template, then one token), one forward pass per ordering reads both
letters' probabilities. A tokenizer that merges "(A" into one token gets the exact
continuation probability instead: each letter's string is scored by teacher forcing
from where the two tokenisations part (two passes per ordering). The cost is counted
in `stats["forward_sequences"]`.

With `reasoning` (chain of thought; CAI sec. 4.2, RLAIF sec. 3.1) the judge first
writes its review after a reasoning template, greedily, in each order; the verdict cue
follows the review and the letters are read there as above. The world's judge writes
the checks and grades of the critiques it read (docs/world.md, "The AI judge's reading").

`rlhfkit label ai` applies this to every pair of each item's K responses and ranks
them by their summed win probabilities (a K-way ranking, the format `rlhfkit rm` reads).
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import ClassVar

import torch

from rlhfkit.config import check_options, option
from rlhfkit.data.formats import Where
from rlhfkit.data.loading import read_rows
from rlhfkit.data.records import Prompt
from rlhfkit.io import output_file, read_line_list, write_jsonl
from rlhfkit.label.export import pair_rows
from rlhfkit.label.lm import instruction_text, load_lm, model_device, pad_left
from rlhfkit.label.store import parse_item

TEMPLATE = "{instruction}\n(A) {answer_a}\n(B) {answer_b}\nBetter: ("
CHOICES = ("A", "B")
# Chain of thought: the judge continues this text with its review, greedily, then the
# verdict cue is put after the review and the letters are read as without reasoning.
# The default opens the checks of the world's critiques ("Asked: caps. Key: ...");
# for another judge use e.g. "...\n(B) {answer_b}\nLet's compare them step by step."
REASONING_TEMPLATE = "{instruction}\n(A) {answer_a}\n(B) {answer_b}\nAsked:"
VERDICT_CUE = "Better: ("


def judge_text(instruction: str, answer_a: str, answer_b: str, principle: str | None = None,
               template: str = TEMPLATE) -> str:
    """The text the judge continues: the template, after a principle line when one is given."""
    text = template.format(instruction=instruction, answer_a=answer_a, answer_b=answer_b)
    return f"{principle}\n{text}" if principle else text


def _tokens(tokenizer, text: str) -> list[int]:
    from rlhfkit.data.tokenize import prompt_token_ids

    return prompt_token_ids(tokenizer, text)  # the BOS rule of training, applied to raw text


@torch.no_grad()
def _last_logits(model, seqs: list[list[int]], keep: int, pad_id: int, batch_size: int,
                 stats: dict) -> list[torch.Tensor]:
    """Per sequence, the logits [keep, V] of its last `keep` positions. Sequences are batched
    by length and left-padded (positions from the mask), and only those positions go through
    the LM head when the model takes `logits_to_keep`."""
    from rlhfkit.models.forward import forward_accepts, positions_from_mask

    out: list[torch.Tensor] = [None] * len(seqs)  # type: ignore[list-item]
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    extra = {"logits_to_keep": keep} if forward_accepts(model, "logits_to_keep") else {}
    device = model_device(model)
    for b in range(0, len(order), batch_size):
        chunk = order[b:b + batch_size]
        ids, mask = pad_left([seqs[i] for i in chunk], pad_id)
        ids, mask = ids.to(device), mask.to(device)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask), use_cache=False,
                       **extra).logits[:, -keep:].float()  # [B,keep,V]
        stats["forward_sequences"] = stats.get("forward_sequences", 0) + len(chunk)
        for row, i in enumerate(chunk):
            out[i] = logits[row].cpu()
    return out


def choice_probabilities(model, tokenizer, texts: Sequence[str], choices: Sequence[str] = CHOICES,
                         batch_size: int = 16, stats: dict | None = None) -> torch.Tensor:
    """P(choice | text) for each text, normalised over `choices`: [N, len(choices)]."""
    stats = {} if stats is None else stats
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    plain = [_tokens(tokenizer, t) for t in texts]
    full = [[_tokens(tokenizer, t + c) for c in choices] for t in texts]
    clean = [all(len(f) == len(p) + 1 and f[: len(p)] == p for f in fs) for p, fs in zip(plain, full)]
    result = torch.empty(len(texts), len(choices))
    # clean split: one pass per text, the letters read from the next token's logits
    idx = [i for i, ok in enumerate(clean) if ok]
    if idx:
        last = _last_logits(model, [plain[i] for i in idx], 1, pad, batch_size, stats)
        for i, logits in zip(idx, last):
            result[i] = torch.stack([logits[-1, f[-1]] for f in full[i]])
    # merged tokens: each letter's continuation scored from where the tokenisations part
    idx = [i for i, ok in enumerate(clean) if not ok]
    if idx:
        seqs, tails = [], []
        for i in idx:
            start = max(1, min(_common_prefix(full[i][0], f) for f in full[i][1:]))
            seqs += full[i]
            tails += [len(f) - start for f in full[i]]
        last = _last_logits(model, seqs, max(tails) + 1, pad, batch_size, stats)
        scores = []
        for seq, tail, logits in zip(seqs, tails, last):
            logp = torch.log_softmax(logits[-tail - 1:-1], dim=-1)  # [tail,V]: position t predicts token t + 1
            scores.append(logp.gather(-1, torch.tensor(seq[-tail:])[:, None]).sum())
        for n, i in enumerate(idx):
            result[i] = torch.stack(scores[n * len(choices):(n + 1) * len(choices)])
    return torch.softmax(result, dim=-1)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@dataclass(frozen=True)
class Reasoning:
    """Chain-of-thought judging: the judge writes a review (greedy, at most `max_tokens`)
    after `template`, the review is cut where it starts its own verdict (`cut_review`),
    and `verdict_cue` follows it on a line of its own; the letters are read after it."""

    template: str = REASONING_TEMPLATE
    verdict_cue: str = VERDICT_CUE
    max_tokens: int = 128


def cut_review(review: str, verdict_cue: str) -> str:
    """The review before the judge's own verdict: cut where it writes the cue, and drop a
    last line that is the cue's beginning (the review ran out of tokens while writing it)."""
    cue = verdict_cue.strip()
    cut = review.find(cue)
    if cut >= 0:
        review = review[:cut]
    head, _, last = review.rpartition("\n")
    if last.strip() and cue.startswith(last.strip()):
        review = head + "\n" if head else ""
    return review.rstrip(" ")


def write_reviews(model, tokenizer, texts: Sequence[str], reasoning: Reasoning, batch_size: int,
                  stats: dict) -> list[str]:
    """Each text continued by the judge's review and the verdict cue: text + review + cue."""
    from rlhfkit.label.lm import sample_texts

    prompt_ids = [_tokens(tokenizer, t) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: len(prompt_ids[i]))  # little padding per batch
    reviews, _ = sample_texts(model, tokenizer, [prompt_ids[i] for i in order], max_new_tokens=reasoning.max_tokens,
                              temperature=0.0, batch_size=batch_size)
    stats["forward_sequences"] = stats.get("forward_sequences", 0) + len(texts)
    stats["review_tokens"] = stats.get("review_tokens", 0) + sum(len(_tokens(tokenizer, r)) for r in reviews)
    out: list[str] = [""] * len(texts)
    for i, review in zip(order, reviews):
        review = cut_review(review, reasoning.verdict_cue)
        out[i] = texts[i] + review + ("" if not review or review.endswith("\n") else "\n") + reasoning.verdict_cue
    shown = stats.setdefault("review_samples", [])  # a few whole texts, for reading what the judge wrote
    shown.extend(out[: max(0, 4 - len(shown))])
    return out


def judge_pairs(model, tokenizer, prompts: Sequence[Prompt], pairs: Sequence[tuple[str, str]],
                principles: Sequence[str] | None = None, *, template: str = TEMPLATE, ensemble: bool = False,
                seed: int = 0, batch_size: int = 16, stats: dict | None = None,
                reasoning: Reasoning | None = None) -> torch.Tensor:
    """P(pairs[i][0] is better than pairs[i][1]) for each pair, [N]: both orders averaged
    (see the module docstring). `prompts[i]` is the instruction of pair i (a string or chat
    messages). `principles`: None for no principle line; several: one drawn per pair with
    `seed`, or all of them averaged with `ensemble`. `reasoning`: the judge writes a review
    in each order before its verdict (chain of thought; `template` is then unused).
    `stats["forward_sequences"]` counts the sequences the judge read or wrote."""
    if len(prompts) != len(pairs):
        raise ValueError(f"{len(prompts)} prompts for {len(pairs)} pairs")
    stats = {} if stats is None else stats
    if principles is not None and not principles:
        raise ValueError("principles is empty: pass None for no principle")
    rng = random.Random(seed)
    if principles is None:
        chosen = [[None] for _ in pairs]
    elif ensemble:
        chosen = [list(principles) for _ in pairs]
    else:
        chosen = [[rng.choice(list(principles))] for _ in pairs]
    if reasoning is not None:
        template = reasoning.template
    texts, owner = [], []
    for i, (prompt, (a, b)) in enumerate(zip(prompts, pairs)):
        instruction = instruction_text(prompt)
        for principle in chosen[i]:
            texts += [judge_text(instruction, a, b, principle, template), judge_text(instruction, b, a, principle, template)]
            owner.append(i)
    if reasoning is not None:
        texts = write_reviews(model, tokenizer, texts, reasoning, batch_size, stats)
    probs = choice_probabilities(model, tokenizer, texts, CHOICES, batch_size, stats)  # [2M, 2]
    first_better = (probs[0::2, 0] + probs[1::2, 1]) / 2  # [M]: a as (A) said "A"; a as (B) said "B"
    out = torch.zeros(len(pairs))
    count = torch.zeros(len(pairs))
    out.index_add_(0, torch.tensor(owner, dtype=torch.long), first_better)
    count.index_add_(0, torch.tensor(owner, dtype=torch.long), torch.ones(len(owner)))
    return out / count


def read_principles(path: str) -> list[str]:
    """One principle a line; blank lines and lines starting with # are skipped."""
    principles = read_line_list(path)
    if not principles:
        raise ValueError(f"{path}: no principles (one a line; # starts a comment)")
    return principles


def rank_items(model, tokenizer, items: list[dict], principles: list[str] | None, **judge_kwargs) -> list[dict]:
    """Items (prompt, responses) -> ranking rows: every pair judged, responses ranked by the
    sum of their win probabilities (ties: response order); `ai_wins[i]` is that sum."""
    prompts, pairs, where = [], [], []
    for n, item in enumerate(items):
        for i, j in combinations(range(len(item["responses"])), 2):
            prompts.append(item["prompt"])
            pairs.append((item["responses"][i], item["responses"][j]))
            where.append((n, i, j))
    probs = judge_pairs(model, tokenizer, prompts, pairs, principles, **judge_kwargs).tolist()
    wins = [[0.0] * len(item["responses"]) for item in items]
    for (n, i, j), p in zip(where, probs):
        wins[n][i] += p
        wins[n][j] += 1 - p
    rows = []
    for item, w in zip(items, wins):
        order = sorted(range(len(w)), key=lambda i: (-w[i], i))
        row = {"prompt": item["prompt"], "responses": item["responses"], "ranking": [order.index(i) for i in range(len(w))]}
        if "terminated" in item:
            row["terminated"] = item["terminated"]
        row.update(item=item["id"], labeler="ai", ai_wins=[round(x, 4) for x in w])
        rows.append(row)
    return rows


TEMPLATE_FIELDS = ("instruction", "answer_a", "answer_b")


def template_problem(template: str) -> str | None:
    """What is wrong with a judge template (str.format syntax), or None: a field it must
    have is missing, it names a field there is no value for, or its braces do not pair
    (a lone `{` or `}`: literal braces are written `{{` and `}}`)."""
    import string

    fields = ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS)
    try:
        named = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        return f"template is not a valid format string ({e}); the fields are {fields}, literal braces are {{{{ and }}}}"
    roots = [n.split(".")[0].split("[")[0] for n in named]
    unknown = next((n for n, root in zip(named, roots) if root not in TEMPLATE_FIELDS), None)
    if unknown is not None:
        return (f"template has an unknown field {{{unknown}}}; the fields are {fields} "
                "(literal braces are {{ and }})")
    missing = next((f for f in TEMPLATE_FIELDS if f not in roots), None)
    if missing is not None:
        return f"template must contain {{{missing}}}"
    try:
        template.format(**{f: "x" for f in TEMPLATE_FIELDS})
    except (AttributeError, IndexError, KeyError, ValueError, TypeError) as e:
        return f"template cannot be filled in ({type(e).__name__}: {e}); the fields are {fields}"
    return None


@dataclass
class AIConfig:
    """Rank items with a causal LM judge (Constitutional AI's multiple-choice method, both orders)."""

    judge: str = option("", "the judge: a Hugging Face causal LM directory")
    data: str = option("", "items to judge (JSONL: prompt, responses; what `label sample` writes)")
    principles: str = option("", "a constitution: one principle a line, put before each comparison (empty: none)")
    ensemble: bool = option(False, "average every principle for each pair (cost x principles) instead of drawing one")
    template: str = option(TEMPLATE, "the judge's template: {instruction}, {answer_a}, {answer_b}; the letter follows it")
    reasoning: bool = option(False, "chain of thought: the judge writes its review after --reasoning_template "
                             "(greedy) before the verdict cue, in each order; costs a generation per reading")
    reasoning_template: str = option(REASONING_TEMPLATE, "what the judge continues with its review: {instruction}, "
                                     "{answer_a}, {answer_b}")
    verdict_cue: str = option(VERDICT_CUE, "put after the review; the letter follows it (the review is cut where it "
                              "writes this itself)")
    max_reasoning_tokens: int = option(128, "longest review, in tokens")
    out: str = option("ai_rankings.jsonl", "K-way rankings (the format `rlhfkit rm` reads) with ai_wins per response; a "
                      "directory gets ai_rankings.jsonl inside (--output_dir is the same option)")
    pairs_out: str = option("", "also write every (chosen, rejected) pair, for DPO (empty: none)")
    per_device_batch_size: int = option(16, "sequences per judge forward pass")
    seed: int = option(0, "seed for drawing a principle per pair")
    dtype: str = option("float32", "judge weights dtype: float32, bfloat16 or float16")
    trust_remote_code: bool = option(False, "allow model code from the checkpoint")
    num_threads: int = option(0, "torch CPU threads (0: torch's default)")

    RULES: ClassVar[dict] = {"per_device_batch_size": ">= 1", "num_threads": ">= 0", "max_reasoning_tokens": ">= 1",
                             "dtype": ("float32", "bfloat16", "float16"), "template": lambda t: template_problem(t),
                             "reasoning_template": lambda t: (p := template_problem(t)) and f"reasoning_{p}",
                             "verdict_cue": lambda c: None if c.strip() else "verdict_cue is empty"}

    def __post_init__(self) -> None:
        check_options(self)


def label_ai(cfg: AIConfig) -> Path:
    items = []
    for source, line, row in read_rows(cfg.data):
        key, prompt, responses, extra = parse_item(row, Where(source, line))
        items.append({"id": key, "prompt": prompt, "responses": responses, **extra})
    principles = read_principles(cfg.principles) if cfg.principles else None
    model, tokenizer = load_lm(cfg.judge, cfg.dtype, cfg.trust_remote_code, cfg.num_threads)
    stats: dict = {}
    reasoning = Reasoning(cfg.reasoning_template, cfg.verdict_cue, cfg.max_reasoning_tokens) if cfg.reasoning else None
    rows = rank_items(model, tokenizer, items, principles, template=cfg.template, ensemble=cfg.ensemble,
                      seed=cfg.seed, batch_size=cfg.per_device_batch_size, stats=stats, reasoning=reasoning)
    path = write_jsonl(output_file(cfg.out, "ai_rankings.jsonl"), rows, ensure_ascii=False)
    if cfg.pairs_out:
        write_jsonl(cfg.pairs_out, pair_rows(rows), ensure_ascii=False)
    print(f"label ai: {len(rows)} items, {sum(len(r['responses']) * (len(r['responses']) - 1) // 2 for r in rows)} "
          f"pairs judged in {stats.get('forward_sequences', 0)} judge sequences"
          + (f" ({stats.get('review_tokens', 0)} review tokens written)" if reasoning else ""))
    return path


class AIJudgeReward:
    """Direct RLAIF (Lee et al. 2023, "d-RLAIF"): the judge scores each response during RL,
    no reward model in between. The reward is the judge's preference for the response
    over the prompt's reference response (a column of the prompt record; in the world,
    an SFT sample), read as a Bradley-Terry score difference:

        r(x, y) = logit P(y better than y_ref | x)    (both orders averaged, clipped to +-`clip`)

    so a response the judge finds as good as the reference scores 0. Called with a
    rlhfkit.rewards.ScoringBatch (the prompts as given, decoded responses, metadata)."""

    name = "ai_judge"

    def __init__(self, judge_dir: str, *, principles: Sequence[str] | None = None, reference_column: str = "reference",
                 batch_size: int = 64, clip: float = 5.0, dtype: str = "float32", trust_remote_code: bool = False,
                 device=None):
        self.model, self.tokenizer = load_lm(judge_dir, dtype, trust_remote_code)
        if device is not None:
            self.model.to(device)
        self.model.requires_grad_(False)
        self.principles = list(principles) if principles else None
        self.reference_column, self.batch_size, self.clip = reference_column, batch_size, clip
        self.calls = 0
        self.stats: dict = {}

    @torch.no_grad()
    def __call__(self, batch) -> torch.Tensor:
        missing = next((i for i, m in enumerate(batch.metadata) if not isinstance(m.get(self.reference_column), str)),
                       None)
        if missing is not None:
            raise ValueError(f"ai_judge reward: prompt record {missing} of the batch has no string column "
                             f"{self.reference_column!r} (the reference response the judge compares against; "
                             "--ai_judge_reference names the column)")
        references = [m[self.reference_column] for m in batch.metadata]
        return self.score(batch.prompts, batch.responses, references).to(batch.prompt_ids.device)

    @torch.no_grad()
    def score(self, prompts: Sequence[Prompt], responses: Sequence[str], references: Sequence[str]) -> torch.Tensor:
        """logit P(response better than reference), clipped: [N]."""
        p = judge_pairs(self.model, self.tokenizer, prompts, list(zip(responses, references)), self.principles,
                        seed=self.calls, batch_size=self.batch_size, stats=self.stats)
        self.calls += 1  # a fresh draw of principles per call
        return torch.logit(p, eps=1e-6).clamp(-self.clip, self.clip)
