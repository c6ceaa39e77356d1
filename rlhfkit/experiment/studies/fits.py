"""Gao et al. (2022)'s functional forms of gold reward against d = sqrt(KL to the
initial policy), and the best-of-n estimator the curves are drawn from.

    best-of-n:  R(d) = d (a - b d)
    RL:         R(d) = d (a - b log d)

R is the gold reward's gain over the initial policy (so R(0) = 0). Both forms are
linear in (a, b), so ordinary least squares fits them exactly: no iterative solver,
the same points always give the same coefficients. Pure Python (no numpy)."""
from __future__ import annotations

import math
from collections.abc import Sequence


def _solve_2x2(a11: float, a12: float, a22: float, b1: float, b2: float) -> tuple[float, float] | None:
    det = a11 * a22 - a12 * a12
    if abs(det) < 1e-12 * max(abs(a11 * a22), 1e-300):
        return None
    return (b1 * a22 - b2 * a12) / det, (a11 * b2 - a12 * b1) / det


def fit_form(d: Sequence[float], gain: Sequence[float], form: str) -> dict:
    """Least-squares (a, b) of R = a d - b g(d), g(d) = d^2 (form "bon") or d log d
    (form "rl"); R^2 against the mean of the gains. Points with d <= 0 carry no
    information about (a, b) (both forms are 0 there) and are left out."""
    if form not in ("bon", "rl"):
        raise ValueError(f"form must be bon or rl, got {form!r}")
    points = [(x, y) for x, y in zip(d, gain) if x > 0 and math.isfinite(x) and math.isfinite(y)]
    out = {"form": "d (a - b d)" if form == "bon" else "d (a - b log d)", "a": None, "b": None, "r2": None,
           "points": len(points)}
    if len(points) < 2:
        return out
    # columns of the design: u = d, v = -g(d); R = a u + b v
    cols = [(x, -(x * x if form == "bon" else x * math.log(x)), y) for x, y in points]
    suu = sum(u * u for u, _, _ in cols)
    suv = sum(u * v for u, v, _ in cols)
    svv = sum(v * v for _, v, _ in cols)
    solution = _solve_2x2(suu, suv, svv, sum(u * y for u, _, y in cols), sum(v * y for _, v, y in cols))
    if solution is None:
        return out
    a, b = solution
    mean = sum(y for *_, y in cols) / len(cols)
    ss_res = sum((y - a * u - b * v) ** 2 for u, v, y in cols)
    ss_tot = sum((y - mean) ** 2 for *_, y in cols)
    out.update(a=a, b=b, r2=1.0 - ss_res / ss_tot if ss_tot > 0 else None)
    return out


def form_value(fit: dict, d: float) -> float:
    """The fitted curve at d (0 at d = 0)."""
    if d <= 0:
        return 0.0
    g = d * d if fit["form"] == "d (a - b d)" else d * math.log(d)
    return fit["a"] * d - fit["b"] * g


def peak_d(fit: dict) -> float | None:
    """Where the fitted gold gain peaks: a / (2 b) for best-of-n, exp(a / b - 1) for RL."""
    a, b = fit.get("a"), fit.get("b")
    if a is None or b is None or b <= 0:
        return None  # no peak: the fitted curve still rises at every d
    return a / (2 * b) if fit["form"] == "d (a - b d)" else math.exp(a / b - 1.0)


def best_of_n_expectation(proxy: Sequence[float], values: Sequence[float], n: int) -> float:
    """E[value of the draw with the highest proxy among n drawn without replacement from
    these N samples], exactly: the sample of proxy rank i (1 = lowest) is the best of a
    random n-subset with probability C(i-1, n-1) / C(N, n). Every n <= N comes from the same
    N samples with far less variance than drawing n fresh ones (Nakano et al. 2021,
    Gao et al. 2022 use this estimator). Proxy ties are broken by sample order."""
    count = len(proxy)
    if not 1 <= n <= count:
        raise ValueError(f"n must be in 1..{count}, got {n}")
    order = sorted(range(count), key=lambda j: (proxy[j], -j))  # ascending proxy: rank i = position + 1
    total = math.comb(count, n)
    return sum(math.comb(i, n - 1) * values[j] for i, j in enumerate(order) if i >= n - 1) / total
