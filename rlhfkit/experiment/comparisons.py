"""The comparison data: K SFT samples per prompt ranked by the simulated labelers
(their noise recalibrated on these samples first), filtered into rankings the
reward trainer loads, and split into training and held-out prompts."""
from __future__ import annotations

import random
from collections.abc import Sequence

from rlhfkit.experiment.data import chat
from rlhfkit.world.labelers import LabelerConfig, calibrate_noise, labeler_agreement, make_comparisons, oracle_agreement
from rlhfkit.world.tasks import Task


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


def split_rows(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held-out) by a seeded shuffle; at least one held-out row when possible."""
    order = list(range(len(rows)))
    random.Random(f"rlhfkit.world.rm-holdout/{seed}").shuffle(order)
    n_out = max(1, round(fraction * len(rows))) if len(rows) > 1 else 0
    held = sorted(order[:n_out])
    train = sorted(order[n_out:])
    return [rows[i] for i in train], [rows[i] for i in held]
