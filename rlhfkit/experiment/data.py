"""The world's datasets as JSONL files in a run's data/ directory: demonstrations,
comparison / PPO / evaluation / validation prompts (from the world's disjoint
splits) and web text for PPO-ptx. Deterministic in the seed, so a resumed run
rebuilds the same files."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rlhfkit.io import write_jsonl
from rlhfkit.world.demonstrators import make_demonstrations
from rlhfkit.world.splits import iter_split, make_split
from rlhfkit.world.tasks import Task, parse_instruction
from rlhfkit.world.webtext import make_webtext


def chat(instruction: str) -> list[dict]:
    """The world's prompt: one user message."""
    return [{"role": "user", "content": instruction}]


def tasks_of(rows: Sequence[dict]) -> list[Task]:
    return [parse_instruction(r["instruction"]) for r in rows]


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
