"""Simulated labelers (docs/world.md, "Simulated labelers").

A labeler ranking K responses to one prompt perceives each response y as

    u(y) = g(y) + bias(y) + noise_std * z,       z ~ N(0, 1) by default

and orders them by u, best first (a Thurstone model; InstructGPT labelers
produced such K-way rankings). The terms:

- g: the gold score (rlhfkit.world.judge). Labelers are the only way the gold
  judge reaches training, as human raters were in the paper.
- bias: a mild quirk toward longer answers, `length_bias` per character of the
  response as a reader sees it (whitespace runs folded), counted up to
  `length_cap` characters, so at most 0.002 * 80 = 0.16 by default. It is below
  the 0.2 that ending the answer is worth and far below the ~0.7 between a right
  answer and a near miss, so it decides between answers of close gold score
  only: a short answer followed by 50+ characters of chatter (g = 0.9) out-ranks
  the bare answer (g = 1.0) in expectation, a wrong answer never does. That is the
  quirk a reward model learns and PPO can exploit (Gao et al. 2022; Singhal et
  al. 2023): the gold score falls while the learned reward rises with length.
- noise: per labeler, per prompt, per response position; Gaussian (default) or
  Gumbel (noise="gumbel", scaled to the same standard deviation; with Gumbel
  noise the rankings are exactly Plackett-Luce, i.e. Bradley-Terry for pairs,
  the model the reward model fits).

Determinism: the noise of labeler `labeler_id` on prompt `prompt_index` under
`seed` comes from its own random stream, so any ranking can be recomputed from
the (seed, labeler id, prompt index) that every comparison row records.

How `DEFAULT_NOISE_STD` was set. docs/world.md asks that two independent labelers
agree on 70-76% of pairs drawn from SFT samples (InstructGPT: 72.6 +- 1.5%). SFT
samples do not exist when the world is built, so the default was calibrated
with `calibrate_noise(proxy_samples(1000, 4, seed=0), target=0.73)` (labelers 0
and 1, seed 0, the default bias), which gave 0.2066 in world version 2 (0.1216
in version 1, whose samples differed less: no format halves the score), rounded
to 0.21: agreement 0.731-0.746 on proxy samples with seeds 1-3, and the labeler
agrees with the gold order on 0.763 of the pairs of seed 0. `proxy_samples`
stands in for SFT samples: K = 4 responses per "comparisons" prompt drawn from
the demonstrator mix plus unterminated run-ons and chattier answers (PROXY_MIX).
About 15% of its pairs tie on gold (two different fruits, two different chatter
lines) and are coin flips for labelers, as equally good answers are for people. Agreement counts only
pairs of *different* texts: two labelers given identical responses agree only by
chance (50%), and SFT samples repeat the canonical answer often, so counting
identical pairs would measure the policy's diversity, not the labelers. The
pipeline should recalibrate on its real SFT samples with `calibrate_noise` and
pass the result as `LabelerConfig(noise_std=...)`.
"""
from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from rlhfkit.world.demonstrators import (
    CHATTER,
    DemonstratorMix,
    correct_answer,
    in_asked_format,
    near_miss,
    verbose_answer,
)
from rlhfkit.world.judge import WIN_RATE_TOLERANCE, judge_task
from rlhfkit.world.splits import make_split
from rlhfkit.world.tasks import Task, parse_instruction

# See the module docstring for how this was calibrated.
DEFAULT_NOISE_STD = 0.21
TARGET_AGREEMENT = 0.73  # InstructGPT's training labelers: 72.6 +- 1.5%

_EULER_GAMMA = 0.5772156649015329

# One sample for agreement or calibration: a task, K responses, and whether each
# response ended with the end-of-sequence token.
Sample = tuple[Task, Sequence[str], Sequence[bool]]


@dataclass
class LabelerConfig:
    """How the simulated labelers perceive responses (see the module docstring)."""

    noise_std: float = DEFAULT_NOISE_STD  # std of the perception noise, in gold-score units
    length_bias: float = 0.002  # bias per character of the response (whitespace runs folded)
    length_cap: int = 80  # characters beyond which length adds nothing: bias <= length_bias * cap
    noise: str = "gaussian"  # "gaussian" (Thurstone) or "gumbel" (Plackett-Luce / Bradley-Terry)
    n_labelers: int = 40  # size of the labeler pool comparison prompts are spread over (InstructGPT: ~40)
    seed: int = 0  # labeling seed used when a function's `seed` argument is None

    def __post_init__(self) -> None:
        if self.noise_std < 0 or self.length_bias < 0 or self.length_cap < 0:
            raise ValueError("noise_std, length_bias and length_cap must be >= 0")
        if self.noise not in ("gaussian", "gumbel"):
            raise ValueError(f"noise must be 'gaussian' or 'gumbel', got {self.noise!r}")
        if self.n_labelers < 1:
            raise ValueError("n_labelers must be >= 1")


# ---------------------------------------------------------------------------
# Perception
# ---------------------------------------------------------------------------
def length_bias(response: str, config: LabelerConfig | None = None) -> float:
    """bias(y): `length_bias` per visible character, capped at `length_cap` characters."""
    config = config or LabelerConfig()
    visible = len(" ".join(response.split()))
    return config.length_bias * min(visible, config.length_cap)


def standard_noise(kind: str, seed: int, labeler_id: int, prompt_index: int, k: int) -> list[float]:
    """The k unit-variance noise draws of one labeler on one prompt (one per
    response position), from a stream keyed by (seed, labeler_id, prompt_index)."""
    rng = random.Random(f"rlhfkit.world.labeler/{seed}/{labeler_id}/{prompt_index}")
    if kind == "gaussian":
        return [rng.gauss(0.0, 1.0) for _ in range(k)]
    # Standard Gumbel, centred and scaled to unit variance (std pi / sqrt(6)).
    scale = math.pi / math.sqrt(6.0)
    draws = []
    for _ in range(k):
        u = min(max(rng.random(), 1e-300), 1.0 - 1e-16)
        draws.append((-math.log(-math.log(u)) - _EULER_GAMMA) / scale)
    return draws


def _base_quality(task: Task, responses: Sequence[str], terminated: Sequence[bool], config: LabelerConfig) -> list[float]:
    """g(y) + bias(y) for each response: the noiseless part of u."""
    if len(responses) != len(terminated):
        raise ValueError(f"{len(responses)} responses but {len(terminated)} terminated flags")
    return [judge_task(task, y, t).gold + length_bias(y, config) for y, t in zip(responses, terminated)]


def perceived_quality(
    task: Task,
    responses: Sequence[str],
    terminated: Sequence[bool],
    labeler_id: int,
    seed: int | None = None,
    *,
    prompt_index: int = 0,
    config: LabelerConfig | None = None,
) -> list[float]:
    """u = g + bias + noise for each response, as labeler `labeler_id` sees them."""
    config = config or LabelerConfig()
    seed = config.seed if seed is None else seed
    base = _base_quality(task, responses, terminated, config)
    z = standard_noise(config.noise, seed, labeler_id, prompt_index, len(responses))
    return [b + config.noise_std * zi for b, zi in zip(base, z)]


def rank(
    task: Task,
    responses: Sequence[str],
    terminated: Sequence[bool],
    labeler_id: int,
    seed: int | None = None,
    *,
    prompt_index: int = 0,
    config: LabelerConfig | None = None,
) -> list[int]:
    """Indices of `responses`, best first, as labeler `labeler_id` ranks them.

    Deterministic in (seed, labeler_id, prompt_index); equal perceived quality
    (only possible with zero noise) keeps the original order.
    """
    u = perceived_quality(task, responses, terminated, labeler_id, seed, prompt_index=prompt_index, config=config)
    return sorted(range(len(responses)), key=lambda i: -u[i])


def compare(
    task: Task,
    response_a: str,
    response_b: str,
    terminated_a: bool = True,
    terminated_b: bool = True,
    labeler_id: int = 0,
    seed: int | None = None,
    *,
    prompt_index: int = 0,
    config: LabelerConfig | None = None,
) -> int:
    """A pairwise comparison: 0 if the labeler prefers `response_a`, 1 if `response_b`."""
    order = rank(task, [response_a, response_b], [terminated_a, terminated_b], labeler_id, seed,
                 prompt_index=prompt_index, config=config)
    return order[0]


# ---------------------------------------------------------------------------
# Agreement
# ---------------------------------------------------------------------------
def _distinct_pairs(responses: Sequence[str] | None, k: int) -> list[tuple[int, int]]:
    """All pairs i < j, leaving out pairs of identical texts when texts are given."""
    return [(i, j) for i in range(k) for j in range(i + 1, k) if responses is None or responses[i] != responses[j]]


def pairwise_agreement(
    orders_a: Sequence[Sequence[int]],
    orders_b: Sequence[Sequence[int]],
    responses: Sequence[Sequence[str]] | None = None,
) -> float:
    """Fraction of pairs that two sets of rankings order the same way.

    orders_a[p] and orders_b[p] rank the same K responses of prompt p (indices,
    best first). Every pair of positions is counted once; when `responses` is
    given, pairs of identical texts are left out (see the module docstring).
    """
    if len(orders_a) != len(orders_b):
        raise ValueError("the two labelers ranked different numbers of prompts")
    agree = total = 0
    for p, (oa, ob) in enumerate(zip(orders_a, orders_b)):
        pos_a = {idx: r for r, idx in enumerate(oa)}
        pos_b = {idx: r for r, idx in enumerate(ob)}
        for i, j in _distinct_pairs(None if responses is None else responses[p], len(oa)):
            agree += (pos_a[i] < pos_a[j]) == (pos_b[i] < pos_b[j])
            total += 1
    if total == 0:
        raise ValueError("no pairs to compare")
    return agree / total


def labeler_agreement(
    samples: Sequence[Sample],
    config: LabelerConfig | None = None,
    seed: int | None = None,
    labelers: tuple[int, int] = (0, 1),
) -> float:
    """How often two independent labelers order a pair of different responses the
    same way; sample p is ranked as prompt index p by each labeler."""
    orders = [
        [rank(task, ys, ts, lab, seed, prompt_index=p, config=config) for p, (task, ys, ts) in enumerate(samples)]
        for lab in labelers
    ]
    return pairwise_agreement(orders[0], orders[1], [ys for _, ys, _ in samples])


def oracle_agreement(
    samples: Sequence[Sample],
    config: LabelerConfig | None = None,
    seed: int | None = None,
    labeler_id: int = 0,
) -> float:
    """How often a labeler's pairwise order agrees with the gold scores' order on
    the same pairs of different texts (pairs with equal gold count one half)."""
    agree = 0.0
    total = 0
    for p, (task, ys, ts) in enumerate(samples):
        order = rank(task, ys, ts, labeler_id, seed, prompt_index=p, config=config)
        pos = {idx: r for r, idx in enumerate(order)}
        gold = [judge_task(task, y, t).gold for y, t in zip(ys, ts)]
        for i, j in _distinct_pairs(ys, len(ys)):
            if abs(gold[i] - gold[j]) <= WIN_RATE_TOLERANCE:
                agree += 0.5
            else:
                agree += (gold[i] > gold[j]) == (pos[i] < pos[j])
            total += 1
    if total == 0:
        raise ValueError("no pairs to compare")
    return agree / total


def calibrate_noise(
    samples: Sequence[Sample],
    target: float = TARGET_AGREEMENT,
    config: LabelerConfig | None = None,
    seed: int | None = None,
    labelers: tuple[int, int] = (0, 1),
    lo: float = 0.0,
    hi: float = 2.0,
    tol: float = 1e-4,
) -> float:
    """The noise_std at which two labelers agree on `target` of the pairs.

    Bisection on [lo, hi]: agreement falls as noise grows (1 at zero noise, about
    1/2 as noise swamps every gold difference). The noise draws are fixed while
    noise_std varies (common random numbers), so the curve is a step function of
    noise_std; the result reproduces `labeler_agreement` with the same samples,
    seed and labelers to within one pair. Pass the result as
    `LabelerConfig(noise_std=...)`; the other fields of `config` (bias, noise
    kind) are kept, since the bias changes which pairs are close.
    """
    config = config or LabelerConfig()
    seed = config.seed if seed is None else seed
    base, za, zb, left, right = [], [], [], [], []
    offset = 0
    for p, (task, ys, ts) in enumerate(samples):
        base += _base_quality(task, ys, ts, config)
        za += standard_noise(config.noise, seed, labelers[0], p, len(ys))
        zb += standard_noise(config.noise, seed, labelers[1], p, len(ys))
        for i, j in _distinct_pairs(ys, len(ys)):
            left.append(offset + i)
            right.append(offset + j)
        offset += len(ys)
    if not left:
        raise ValueError("no pairs of different responses to calibrate on")
    # Per pair: difference of the noiseless parts, and of each labeler's draws.
    diffs = [(base[i] - base[j], za[i] - za[j], zb[i] - zb[j]) for i, j in zip(left, right)]

    def agreement(sigma: float) -> float:
        # Labeler prefers the lower index on u_i >= u_j, matching rank()'s stable sort.
        agree = sum((d + sigma * da >= 0) == (d + sigma * db >= 0) for d, da, db in diffs)
        return agree / len(diffs)

    if agreement(lo) < target:
        raise ValueError(f"agreement at noise_std={lo} is already below the target {target}")
    if agreement(hi) > target:
        raise ValueError(f"agreement at noise_std={hi} is still above the target {target}; raise hi")
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if agreement(mid) >= target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


# ---------------------------------------------------------------------------
# Proxy for SFT samples (used to set the default noise; see module docstring)
# ---------------------------------------------------------------------------
# Kind of proxy response -> probability. The demonstrator mix, with some of the
# canonical mass moved to the failures a young SFT policy sampled at temperature
# 1 still shows: not stopping (run-on chatter, no EOS) and chattier answers.
PROXY_MIX: dict[str, float] = {
    "canonical": 0.55,
    "verbose": 0.15,
    "near_miss": 0.15,
    "unterminated": 0.08,  # a correct answer that runs on with chatter and no EOS
    "chatty": 0.07,  # a correct answer followed by two or three lines of chatter
}


def _proxy_response(task: Task, kind: str, rng: random.Random) -> tuple[str, bool]:
    if kind == "canonical":
        return correct_answer(task, rng), True
    if kind == "verbose":
        return verbose_answer(task, rng), True
    if kind == "near_miss":
        return near_miss(task, rng), True
    lines = [correct_answer(task, rng), *rng.sample(CHATTER, rng.randint(2, 3))]
    return "\n".join(lines), kind == "chatty"


def proxy_samples(n_tasks: int = 1000, k: int = 4, seed: int = 0) -> list[Sample]:
    """Stand-in SFT samples: K responses (PROXY_MIX) for each of `n_tasks` prompts
    of the "comparisons" split, each in the asked format with the demonstrators'
    probability (1/2) on a constrained prompt. Deterministic in (n_tasks, k, seed)."""
    rng = random.Random(f"rlhfkit.world.proxy-samples/{seed}")
    kinds, weights = tuple(PROXY_MIX), tuple(PROXY_MIX.values())
    samples: list[Sample] = []
    for task in make_split("comparisons", n_tasks, seed):
        pairs = []
        for _ in range(k):
            y, ended = _proxy_response(task, rng.choices(kinds, weights)[0], rng)
            pairs.append((in_asked_format(task, y, rng, DemonstratorMix())[0], ended))  # the asked format half the time
        samples.append((task, [y for y, _ in pairs], [t for _, t in pairs]))
    return samples


# ---------------------------------------------------------------------------
# Comparison datasets
# ---------------------------------------------------------------------------
def assign_labeler(seed: int, prompt_index: int, n_labelers: int) -> int:
    """Which labeler of the pool ranks a prompt. Hashed rather than round-robin so
    that labeler ids do not line up with the families' round-robin order."""
    return random.Random(f"rlhfkit.world.assign/{seed}/{prompt_index}").randrange(n_labelers)


def make_comparisons(
    tasks: Sequence[Task],
    responses_per_task: Sequence[Sequence[str]],
    terminated: Sequence[Sequence[bool]],
    seed: int | None = None,
    labeler_config: LabelerConfig | None = None,
    *,
    index_offset: int = 0,
) -> list[dict]:
    """K-way rankings of each task's responses, as InstructGPT collected them.

    Prompt p (numbered from `index_offset`, so shards can be labeled separately)
    goes to labeler `assign_labeler(seed, p, n_labelers)`. Rows:

        prompt      the bare instruction (user message content, not rendered)
        responses   the K responses, best first
        terminated  whether each (best-first) response ended with EOS; a trainer
                    must append EOS to exactly these when tokenising
        order       original indices, best first (responses[r] = input[order[r]])
        labeler     the labeler id;  seed: the labeling seed;  index: p
        family      the task family

    (labeler, seed, index) reproduce the ranking (`rank`), and
    `recompute_agreement` measures a second labeler against the dataset.
    """
    config = labeler_config or LabelerConfig()
    seed = config.seed if seed is None else seed
    if not len(tasks) == len(responses_per_task) == len(terminated):
        raise ValueError("tasks, responses_per_task and terminated differ in length")
    rows = []
    for offset, (task, ys, ts) in enumerate(zip(tasks, responses_per_task, terminated)):
        index = index_offset + offset
        labeler = assign_labeler(seed, index, config.n_labelers)
        order = rank(task, ys, ts, labeler, seed, prompt_index=index, config=config)
        rows.append({
            "prompt": task.instruction,
            "responses": [ys[i] for i in order],
            "terminated": [bool(ts[i]) for i in order],
            "order": order,
            "labeler": labeler,
            "seed": seed,
            "index": index,
            "family": task.family,
        })
    return rows


def recompute_agreement(rows: Sequence[dict], config: LabelerConfig | None = None, other_labeler_offset: int = 1_000_003) -> float:
    """Agreement between a comparison dataset and a fresh, independent labeler
    (id = row labeler + `other_labeler_offset`, never in the pool) on the same
    pairs of different responses: the labelers' own agreement figure to print
    beside a reward model's held-out accuracy."""
    orders_a, orders_b, texts = [], [], []
    for row in rows:
        task = parse_instruction(row["prompt"])
        k = len(row["responses"])
        original = [None] * k
        original_t = [True] * k
        for r, i in enumerate(row["order"]):
            original[i] = row["responses"][r]
            original_t[i] = row["terminated"][r]
        other = rank(task, original, original_t, row["labeler"] + other_labeler_offset, row["seed"],
                     prompt_index=row["index"], config=config)
        orders_a.append(row["order"])
        orders_b.append(other)
        texts.append(original)
    return pairwise_agreement(orders_a, orders_b, texts)
