"""How far each stage of a world run is from the machine's floor: the model FLOPs it
did (estimated from the tokens it processed) against the seconds it took and the
machine's measured matrix-product peak.

Model FLOPs per token (Kaplan et al. 2020, "Scaling laws", section 2.1): a forward
pass costs 2N, a training step (forward and backward) 6N, for N parameters;
attention's length-dependent term is left out (small at these lengths). Sampling
with a KV cache processes every prompt and response token once: 2N per token. The
counts are estimates of the useful work: padding and recomputed passes are work the
machine did that is not counted, which is what the fraction should expose.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from rlhfkit.io import read_jsonl


def parameters(model_dir: Path) -> int:
    """Parameters of a saved model, from its float32 safetensors (4 bytes each)."""
    files = list(Path(model_dir).glob("*.safetensors"))
    return sum(f.stat().st_size for f in files) // 4


class TokenCounter:
    """Token counts of prompts and texts with one tokenizer (the SFT model's)."""

    def __init__(self, tokenizer_dir: Path):
        from rlhfkit.data.tokenize import prompt_token_ids
        from rlhfkit.models.loading import load_tokenizer

        self.tokenizer = load_tokenizer(str(tokenizer_dir))
        self._prompt_ids = prompt_token_ids

    def prompt(self, prompt) -> int:
        return len(self._prompt_ids(self.tokenizer, prompt))

    def text(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + 1  # + EOS


def _sft_flops(lay, count: TokenCounter, cfg) -> float:
    demos = read_jsonl(lay.data / "demonstrations.jsonl")
    tokens = sum(count.prompt(d["prompt"]) + count.text(d["completion"]) for d in demos)
    return 6 * parameters(lay.sft) * tokens * cfg.sft.num_epochs * (1 - cfg.sft.eval_fraction)


def _comparison_tokens(rows: list[dict], count: TokenCounter) -> float:
    return sum(count.prompt(r["prompt"]) * len(r["responses"]) + sum(count.text(y) for y in r["responses"])
               for r in rows)


def _sampling_flops(model_params: int, samples_file: Path, count: TokenCounter, prompts: dict[str, int]) -> float:
    """2N per prompt and response token of every sample a file holds."""
    if not samples_file.exists():
        return 0.0
    rows = read_jsonl(samples_file)
    return 2 * model_params * sum(prompts.get(r["instruction"], 0) + count.text(r["response"]) for r in rows)


def seed_flops(lay, cfg, models: dict[str, str], recipe: bool) -> dict[str, float]:
    """Model FLOPs of one seed's stages (and of the recipe's, when `recipe`)."""
    count = TokenCounter(lay.sft)
    n_sft = parameters(lay.sft)
    eval_prompts = {r["instruction"]: count.prompt(r["prompt"]) for r in read_jsonl(lay.data / "eval_prompts.jsonl")}
    out: dict[str, float] = {}
    if recipe:
        out["sft"] = _sft_flops(lay, count, cfg)
        samples = read_jsonl(lay.comparisons / "samples.jsonl")
        sample_tokens = sum(len(r["responses"]) * count.prompt([{"role": "user", "content": r["instruction"]}])
                            + sum(count.text(y) for y in r["responses"]) for r in samples)
        out["comparisons"] = 2 * n_sft * sample_tokens
        train = read_jsonl(lay.comparisons / "comparisons.jsonl")
        n_rm = parameters(lay.rm)
        out["rm"] = 6 * n_rm * _comparison_tokens(train, count) * cfg.rm.num_epochs
    for name, path in models.items():
        metrics = Path(path) / "metrics.jsonl"
        if name.startswith("ppo") or name in ("rloo", "grpo"):
            out[name] = _rl_flops(Path(path), metrics, count, lay, n_sft)
        elif (Path(path) / "config.yaml").exists() and name not in ("sft", "base_small", "base_large"):
            out[name] = _direct_flops(Path(path), count)
    evaluated = 0.0
    validation = len(read_jsonl(lay.data / "validation_prompts.jsonl"))
    mean_prompt = sum(eval_prompts.values()) / max(len(eval_prompts), 1)
    for name, path in models.items():
        shared = lay.eval_dir(name).parent != lay.methods  # the bases, and a shared SFT: counted with their seed
        if shared and not (recipe and (name == "sft" or lay.methods == lay.run)):
            continue
        figures_file = lay.methods / "eval" / f"{name}.json" if name.startswith("bon") else \
            lay.eval_dir(name) / f"{name}.json"
        if not figures_file.exists():
            continue
        figures = json.loads(figures_file.read_text())["figures"]
        if name.startswith("bon"):  # n draws of SFT, each scored by the reward model
            n = int(name[3:])
            if n == max(int(m[3:]) for m in models if m.startswith("bon")):
                per_draw = len(eval_prompts) * (mean_prompt + figures["length"] + 1)
                evaluated += n * per_draw * 2 * (n_sft + parameters(lay.rm))
            continue
        n_model = parameters(Path(path))
        evaluated += _sampling_flops(n_model, lay.eval_dir(name) / f"{name}.samples.jsonl", count, eval_prompts)
        evaluated += 2 * n_model * len(cfg.eval_temperatures) * validation * (mean_prompt + figures["length"] + 1)
    out["eval"] = evaluated
    return out


def _direct_flops(directory: Path, count: TokenCounter) -> float:
    """A direct method (DPO family, ORPO): every pair of every ranking of its data, the
    policy trained on both responses (6N a token) and, where there is one, the frozen
    reference's forward (2N), num_epochs times."""
    import yaml

    cfg = yaml.safe_load((directory / "config.yaml").read_text())
    data = Path(cfg["data"])
    if not data.exists():
        return 0.0
    tokens = 0.0
    for row in read_jsonl(data):
        prompt = count.prompt(row["prompt"])
        lengths = [count.text(y) for y in row["responses"]]
        k = len(lengths)
        tokens += sum(2 * prompt + lengths[i] + lengths[j] for i in range(k) for j in range(i + 1, k))
    n = parameters(directory)
    reference = 0 if cfg.get("loss") in ("orpo", "simpo") else 2 * n
    return (6 * n + reference) * tokens * cfg.get("num_epochs", 1)


def _rl_flops(directory: Path, metrics: Path, count: TokenCounter, lay, n_sft: int) -> float:
    """PPO-family: per episode, sampling (2N per token), the reference, value and reward
    forwards (2N each), and the update (6N per token of the policy and the value model,
    ppo_epochs times); the sizes from the stage's config.yaml, the lengths from its metrics."""
    import yaml

    cfg = yaml.safe_load((directory / "config.yaml").read_text())
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.exists() else []
    lengths = [r["response/length"] for r in rows if "response/length" in r]
    if not lengths:
        return 0.0
    prompts = read_jsonl(lay.data / "ppo_prompts.jsonl")
    prompt_tokens = sum(count.prompt(r["prompt"]) for r in prompts) / len(prompts)
    tokens = prompt_tokens + sum(lengths) / len(lengths)
    has_value = cfg.get("advantage_estimator", "gae") == "gae"
    has_reward = bool(cfg.get("reward_model"))
    forwards = 1 + has_value + has_reward  # reference, value, reward model
    update = 6 * n_sft * (1 + has_value) * cfg.get("ppo_epochs", 1)
    return cfg["total_episodes"] * tokens * (2 * n_sft + 2 * n_sft * forwards + update)


def matmul_peak(threads: int, size: int = 1024, repeats: int = 5) -> float:
    """The best float32 matrix-product FLOP/s of the machine the report is written on, at `threads` threads."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(max(threads, 1))
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        torch.mm(a, b)
        best = 0.0
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            best = max(best, 2 * size ** 3 / (time.perf_counter() - start))
    finally:
        torch.set_num_threads(old)
    return best


def flops_table(flops: dict[str, float], seconds: dict[str, float], peak: float) -> dict[str, dict]:
    """{stage: {"flops", "seconds", "peak_fraction"}} for the stages whose FLOPs are counted."""
    return {stage: {"flops": f, "seconds": seconds.get(stage),
                    "peak_fraction": f / (seconds[stage] * peak) if seconds.get(stage) and peak else None}
            for stage, f in flops.items() if f}


def run_flops(out: Path, cfg, seeds: dict) -> dict:
    """report.json's `flops`: each stage's model FLOPs summed over the seeds, and the
    matrix-product peak they are measured against (measured once per run directory and
    kept in flops_peak.json, so that a rebuilt report is the same)."""
    import torch

    total: dict[str, float] = {}
    recipes: set[Path] = set()
    for lay, models, _ in seeds.values():
        for stage, f in seed_flops(lay, cfg, models, recipe=lay.recipe not in recipes).items():
            total[stage] = total.get(stage, 0.0) + f
        recipes.add(lay.recipe)
    peak_file = out / "flops_peak.json"
    if peak_file.exists():
        peak = json.loads(peak_file.read_text())
    else:
        threads = cfg.num_threads or torch.get_num_threads()
        peak = {"flops_per_second": matmul_peak(threads), "threads": threads}
        from rlhfkit.io import write_json

        write_json(peak_file, peak, indent=2)
    return {"matmul_peak": peak, "stages": total}
