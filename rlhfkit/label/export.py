"""Labels out of the database: the files `rlhfkit rm` and `rlhfkit dpo` read, and the
inter-labeler agreement.

Rankings (one JSON object a line, what `load_preferences` reads as K-way rankings)::

    {"prompt": ..., "responses": [...], "ranking": [2, 0, 1, 3], "item": "17", "labeler": "ana",
     "likert": [3, 6, 4, 1], "flags": [[], [], [], ["made_up"]]}

``ranking[i]`` is the rank of ``responses[i]``, 0 = best; a ``terminated`` column of the
items passes through. Pairs: every C(K, 2) (chosen, rejected) pair of each ranking,
``{"prompt", "chosen", "rejected", "item", "labeler"}``, the DPO format.

With ``combine="all"`` every label is a row (an item labeled twice gives two rows,
as InstructGPT trained on every labeler's comparisons); ``combine="mean"`` gives one
row per item ranked by the mean rank over its labelers (ties: higher mean Likert,
then response order).
"""
from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from statistics import mean, median
from typing import ClassVar

from rlhfkit.config import check_options, option
from rlhfkit.io import output_file, write_jsonl
from rlhfkit.label.store import FLAGS, connect


def read_labels(db: str | Path) -> list[dict]:
    """Every label joined with its item, ordered by item then labeler."""
    conn = connect(db, create=False)
    try:
        rows = conn.execute("""SELECT i.id, i.key, i.prompt, i.responses, i.extra, l.labeler, l.ranking, l.likert,
                                      l.flags, l.seconds FROM labels l JOIN items i ON i.id = l.item_id
                               ORDER BY i.id, l.labeler""").fetchall()
    except sqlite3.DatabaseError as e:  # a damaged file behind a valid header
        raise ValueError(f"labels database {db}: cannot read its labels ({e})") from None
    finally:
        conn.close()
    return [{"item_id": r["id"], "item": r["key"], "prompt": json.loads(r["prompt"]),
             "responses": json.loads(r["responses"]), "extra": json.loads(r["extra"]), "labeler": r["labeler"],
             "ranking": json.loads(r["ranking"]), "likert": json.loads(r["likert"]),
             "flags": json.loads(r["flags"]), "seconds": r["seconds"]} for r in rows]


def ranking_rows(labels: list[dict], combine: str = "all") -> list[dict]:
    """Rows in the K-way rankings format (see the module docstring)."""
    if combine not in ("all", "mean"):
        raise ValueError(f"combine must be 'all' or 'mean', got {combine!r}")
    out = []
    if combine == "all":
        for lab in labels:
            row = {"prompt": lab["prompt"], "responses": lab["responses"], "ranking": lab["ranking"]}
            if "terminated" in lab["extra"]:
                row["terminated"] = lab["extra"]["terminated"]
            row.update(item=lab["item"], labeler=lab["labeler"], likert=lab["likert"], flags=lab["flags"])
            out.append(row)
        return out
    by_item = defaultdict(list)
    for lab in labels:
        by_item[lab["item_id"]].append(lab)
    for group in by_item.values():
        k = len(group[0]["responses"])
        key = lambda i: (mean(g["ranking"][i] for g in group), -mean(g["likert"][i] for g in group), i)  # noqa: E731
        order = sorted(range(k), key=key)
        ranking = [order.index(i) for i in range(k)]
        first = group[0]
        row = {"prompt": first["prompt"], "responses": first["responses"], "ranking": ranking}
        if "terminated" in first["extra"]:
            row["terminated"] = first["extra"]["terminated"]
        row.update(item=first["item"], labelers=[g["labeler"] for g in group],
                   likert=[round(mean(g["likert"][i] for g in group), 3) for i in range(k)])
        out.append(row)
    return out


def pair_rows(rankings: list[dict]) -> list[dict]:
    """Every (better, worse) pair of each ranking row, best pairs first."""
    out = []
    for row in rankings:
        order = sorted(range(len(row["responses"])), key=lambda i: row["ranking"][i])
        who = {k: row[k] for k in ("item", "labeler", "labelers") if k in row}
        for a, b in combinations(order, 2):
            out.append({"prompt": row["prompt"], "chosen": row["responses"][a], "rejected": row["responses"][b],
                        **who})
    return out


def agreement(labels: list[dict]) -> dict:
    """Inter-labeler agreement on items labeled by two labelers or more: over every pair
    of labelers of an item and every pair of its responses, the share ordered the same
    way (InstructGPT reports 72.6 +- 1.5% among its training labelers, sec. 3.4)."""
    by_item = defaultdict(list)
    for lab in labels:
        by_item[lab["item_id"]].append(lab)
    agree = total = 0
    per = defaultdict(lambda: [0, 0])  # labeler -> [agreeing, compared]
    shared = 0
    for group in by_item.values():
        if len(group) < 2:
            continue
        shared += 1
        k = len(group[0]["ranking"])
        for x, y in combinations(group, 2):
            for i, j in combinations(range(k), 2):
                same = (x["ranking"][i] < x["ranking"][j]) == (y["ranking"][i] < y["ranking"][j])
                agree, total = agree + same, total + 1
                for who in (x["labeler"], y["labeler"]):
                    per[who][0] += same
                    per[who][1] += 1
    return {"shared_items": shared, "compared_pairs": total,
            "agreement": agree / total if total else None,
            "per_labeler": {w: round(a / n, 4) for w, (a, n) in sorted(per.items())}}


def label_stats(labels: list[dict]) -> dict:
    """Agreement plus counts, mean Likert, flag rates and time per item."""
    stats = {"labels": len(labels), "items": len({lab["item_id"] for lab in labels}), **agreement(labels)}
    by_labeler = defaultdict(list)
    for lab in labels:
        by_labeler[lab["labeler"]].append(lab)
    stats["labelers"] = {}
    for who, labs in sorted(by_labeler.items()):
        scores = [x for lab in labs for x in lab["likert"]]
        seconds = [lab["seconds"] for lab in labs if lab["seconds"] is not None]
        n_resp = sum(len(lab["flags"]) for lab in labs)
        stats["labelers"][who] = {
            "labels": len(labs), "mean_likert": round(mean(scores), 3),
            "median_seconds": round(median(seconds), 1) if seconds else None,
            "flag_rate": {f: round(sum(f in fl for lab in labs for fl in lab["flags"]) / n_resp, 4) for f in FLAGS},
        }
    return stats


# ------------------------------------------------------------------ commands


@dataclass
class ExportConfig:
    """Write the labels as K-way rankings (`rlhfkit rm --data`) and pairs (`rlhfkit dpo --data`)."""

    db: str = option("labels.sqlite", "the labeling database")
    out: str = option("rankings.jsonl", "K-way rankings: prompt, responses, ranking (0 = best) + labeler metadata; a "
                      "directory gets rankings.jsonl inside (--output_dir is the same option)")
    pairs_out: str = option("", "also write every (chosen, rejected) pair here, for DPO (empty: no pairs file)")
    combine: str = option("all", "all: a row per label; mean: a row per item, ranked by the mean rank of its labelers")

    RULES: ClassVar[dict] = {"combine": ("all", "mean")}

    def __post_init__(self) -> None:
        check_options(self)


def export_labels(cfg: ExportConfig) -> Path:
    rows = ranking_rows(read_labels(cfg.db), cfg.combine)
    if not rows:
        raise ValueError(f"{cfg.db}: no labels yet")
    path = write_jsonl(output_file(cfg.out, "rankings.jsonl"), rows, ensure_ascii=False)
    if cfg.pairs_out:
        write_jsonl(cfg.pairs_out, pair_rows(rows), ensure_ascii=False)
    return path


@dataclass
class StatsConfig:
    """Inter-labeler agreement on shared items, and per-labeler counts, Likert and flags."""

    db: str = option("labels.sqlite", "the labeling database")
    out: str = option("", "write the figures as JSON here, a directory gets stats.json (empty: print only; "
                      "--output_dir is the same option)")


def labeling_stats(cfg: StatsConfig) -> Path | str:
    stats = label_stats(read_labels(cfg.db))
    a = stats["agreement"]
    print(f"{stats['labels']} labels on {stats['items']} items; {stats['shared_items']} items labeled by two or "
          f"more: agreement {'n/a' if a is None else f'{a:.1%}'} over {stats['compared_pairs']} response pairs")
    for who, s in stats["labelers"].items():
        print(f"  {who}: {s['labels']} labels, mean Likert {s['mean_likert']}, agreement with others "
              f"{stats['per_labeler'].get(who, 'n/a')}, median {s['median_seconds']} s/item")
    if cfg.out:
        path = output_file(cfg.out, "stats.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
        return path
    return "stats to stdout"
