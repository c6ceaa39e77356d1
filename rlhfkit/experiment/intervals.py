"""Intervals for the world's figures, and which method differences they support.

Every figure the world reports is a mean over the same evaluation prompts
(gold, exact, follows, a win rate: one value per prompt), measured for one or
several training seeds. A seed's figure moves with the prompts drawn and with
training's own randomness, so the interval has to carry both. With values
x[s, i] for seeds s = 1..S and prompts i = 1..N, the two-way random-effects
model x = mu + a_s + b_i + e_si (seed effect, prompt effect, interaction) gives
the variance of the grand mean in closed form from the mean squares of the
seeds x prompts table (Searle, Casella & McCulloch 1992, Variance Components,
ch. 4):

    Var(mean) = s_a^2 / S + s_b^2 / N + s_e^2 / (S N)
              = (MS_seed + MS_prompt - MS_error) / (S N)

with the degrees of freedom of that combination from Satterthwaite (1946). With
one seed it is the usual s^2 / N over prompts, which is what a bootstrap over the
prompts estimates, without the resampling noise: the same files always give the
same interval. The prompts are the same for every model and seed, so a
difference between two methods is the same computation on the per-prompt
differences (paired over prompts and seeds), and its p-value a t test;
Holm (1979) corrects a table of such tests for their number.

Pure Python: no numpy, no scipy (Student's t from the regularised incomplete
beta function, Numerical Recipes 6.4).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations

LEVEL = 0.95


# ----------------------------------------------------------------------------- Student's t

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-14:
            break
    return h


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularised incomplete beta function."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with df degrees of freedom (df may be fractional)."""
    if not math.isfinite(t):
        return 0.0 if math.isinf(t) else float("nan")
    if df == math.inf or df > 1e7:
        return math.erfc(abs(t) / math.sqrt(2.0))
    return _incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(p: float, df: float) -> float:
    """The q with P(T <= q) = p, for p in (0.5, 1): by bisection on the two-sided tail."""
    tail = 2.0 * (1.0 - p)
    lo, hi = 0.0, 1.0
    while t_two_sided_p(hi, df) > tail:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_two_sided_p(mid, df) > tail:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


# ----------------------------------------------------------------------------- seeds x prompts

def _finite_columns(table: Sequence[Sequence[float]]) -> list[list[float]]:
    """The table restricted to the prompts where every seed has a finite value
    (a figure over a subset of prompts carries NaN elsewhere)."""
    keep = [i for i in range(len(table[0])) if all(math.isfinite(row[i]) for row in table)]
    return [[row[i] for i in keep] for row in table]


def mean_interval(table: Sequence[Sequence[float]], *, level: float = LEVEL,
                  bounds: tuple[float, float] | None = None) -> dict:
    """Mean of a seeds x prompts table with its interval.

    table[s][i]: seed s's value on prompt i (NaN: the prompt is not in this figure).
    Returns {"mean", "ci95": [lo, hi], "seed_std", "se", "df", "seeds", "prompts"}:
    seed_std is the standard deviation of the per-seed means (None for one seed);
    bounds clips the interval to a figure's range (a share lies in [0, 1])."""
    rows = _finite_columns(table) if table else []
    s, n = len(rows), len(rows[0]) if rows else 0
    if s == 0 or n == 0:
        return {"mean": None, "ci95": [None, None], "seed_std": None, "se": None, "df": None, "seeds": s, "prompts": 0}
    seed_means = [sum(r) / n for r in rows]
    mean = sum(seed_means) / s
    if s * n < 2:  # one value: nothing to say how far it could move
        return {"mean": mean, "ci95": [None, None], "seed_std": None, "se": None, "df": None, "seeds": s, "prompts": n}
    se, df = _standard_error(rows, seed_means, mean)
    half = t_quantile(0.5 + level / 2.0, df) * se if se > 0 else 0.0
    lo, hi = mean - half, mean + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    seed_std = math.sqrt(sum((m - mean) ** 2 for m in seed_means) / (s - 1)) if s > 1 else None
    return {"mean": mean, "ci95": [lo, hi], "seed_std": seed_std, "se": se, "df": df, "seeds": s, "prompts": n}


def _standard_error(rows: list[list[float]], seed_means: list[float], mean: float) -> tuple[float, float]:
    """Standard error of the grand mean and its Satterthwaite degrees of freedom."""
    s, n = len(rows), len(rows[0])
    prompt_means = [sum(r[i] for r in rows) / s for i in range(n)]
    ss_prompt = s * sum((c - mean) ** 2 for c in prompt_means)
    if n < 2:  # one prompt: only the seeds vary
        ms_seed = n * sum((m - mean) ** 2 for m in seed_means) / (s - 1) if s > 1 else 0.0
        return math.sqrt(ms_seed / (s * n)), max(s - 1, 1)
    ms_prompt = ss_prompt / (n - 1)
    if s == 1:
        return math.sqrt(ms_prompt / n), n - 1
    ss_seed = n * sum((m - mean) ** 2 for m in seed_means)
    ss_error = sum((rows[k][i] - seed_means[k] - prompt_means[i] + mean) ** 2 for k in range(s) for i in range(n))
    ms_seed, ms_error = ss_seed / (s - 1), ss_error / ((s - 1) * (n - 1))
    variance = max(ms_seed + ms_prompt - ms_error, ms_error) / (s * n)  # never below the noise floor
    terms = [(ms_seed, s - 1), (ms_prompt, n - 1), (ms_error, (s - 1) * (n - 1))]
    spread = sum(ms * ms / d for ms, d in terms if d > 0)
    df = (ms_seed + ms_prompt - ms_error) ** 2 / spread if spread > 0 else n - 1
    return math.sqrt(variance), max(df, 1.0)


def difference_test(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> dict:
    """A vs B on the same seeds and prompts: the mean of a - b, its interval and the
    two-sided p-value of "no difference" (paired over prompts and seeds)."""
    diff = [[x - y for x, y in zip(ra, rb)] for ra, rb in zip(a, b)]
    figure = mean_interval(diff)
    se, mean = figure["se"], figure["mean"]
    if mean is None:
        p = float("nan")
    elif not se:
        p = 1.0 if mean == 0 else 0.0
    else:
        p = t_two_sided_p(mean / se, figure["df"])
    return {"difference": mean, "ci95": figure["ci95"], "p": p}


def holm(pvalues: dict[str, float], alpha: float = 1.0 - LEVEL) -> dict[str, dict]:
    """Holm's step-down correction: {name: {"p", "p_holm", "significant"}}. The i-th
    smallest p-value of m is compared with alpha / (m - i); once one fails, the rest do."""
    order = sorted(pvalues, key=lambda k: (math.isnan(pvalues[k]), pvalues[k]))
    m = len(order)
    out, running, rejecting = {}, 0.0, True
    for i, name in enumerate(order):
        p = pvalues[name]
        adjusted = min(1.0, (m - i) * p) if math.isfinite(p) else float("nan")
        running = max(running, adjusted) if math.isfinite(adjusted) else running
        rejecting = rejecting and math.isfinite(p) and p <= alpha / (m - i)
        out[name] = {"p": p, "p_holm": running if math.isfinite(adjusted) else float("nan"), "significant": rejecting}
    return out


def pairwise_table(tables: dict[str, Sequence[Sequence[float]]], order: Sequence[str]) -> list[dict]:
    """Every pair of methods (in `order`), Holm-corrected: rows {"a", "b", "difference",
    "ci95", "p", "p_holm", "significant"}; a positive difference favours a."""
    tests = {(a, b): difference_test(tables[a], tables[b]) for a, b in combinations(order, 2)}
    corrected = holm({f"{a}|{b}": t["p"] for (a, b), t in tests.items()})
    return [{"a": a, "b": b, "difference": t["difference"], "ci95": t["ci95"],
             **corrected[f"{a}|{b}"]} for (a, b), t in tests.items()]


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b between two scorings of the same items (ties handled), NaN
    when either side is constant or there are fewer than two items."""
    concordant = discordant = ties_x = ties_y = 0
    for i, j in combinations(range(len(x)), 2):
        dx, dy = x[i] - x[j], y[i] - y[j]
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            ties_x += 1
        elif dy == 0:
            ties_y += 1
        elif (dx > 0) == (dy > 0):
            concordant += 1
        else:
            discordant += 1
    denominator = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denominator if denominator else float("nan")


def ratio_interval(numerators: Sequence[float], denominators: Sequence[float], *, level: float = LEVEL,
                   bounds: tuple[float, float] | None = (0.0, 1.0)) -> dict:
    """sum(numerators) / sum(denominators) with its interval, the prompts as clusters (the
    pairs of one prompt are not independent): the ratio estimator's variance
    n / (n - 1) * sum((y_i - R d_i)^2) / (sum d_i)^2 (Cochran 1977, Sampling Techniques, 6.4)."""
    rows = [(y, d) for y, d in zip(numerators, denominators) if d > 0]
    total = sum(d for _, d in rows)
    if not rows or total <= 0:
        return {"mean": None, "ci95": [None, None], "seed_std": None}
    ratio = sum(y for y, _ in rows) / total
    n = len(rows)
    if n < 2:
        return {"mean": ratio, "ci95": [None, None], "seed_std": None}
    se = math.sqrt(n / (n - 1) * sum((y - ratio * d) ** 2 for y, d in rows)) / total
    half = t_quantile(0.5 + level / 2.0, n - 1) * se
    lo, hi = ratio - half, ratio + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return {"mean": ratio, "ci95": [lo, hi], "seed_std": None}
