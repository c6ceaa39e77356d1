"""`rlhfkit world reason --out DIR`: RL with a verifier as the only reward, in a world
where written working helps and can be checked exactly.

    data  -> base (a tiny Llama pretrained from scratch on worked problems in a sloppy hand)
          -> sft  (a few hundred demonstrations, some with slips)
          -> rl   (GRPO-family RL from the SFT policy, reward = rlhfkit.rewards.verifiers:answer_reward)
          -> eval (pass@1, pass@k from n samples, greedy accuracy, faithfulness of the working)

Each stage writes a `.done` marker; rerunning the command skips finished stages and
resumes an interrupted one from its checkpoint (like `rlhfkit run`). The results go to
report.json: models.base, models.sft and models.rl, each with pass_at_1, pass_at_k
{k: rate}, right_answer_wrong_working, wrong_answer_right_working, seconds (its
training stage) and eval_seconds; seconds per stage; and the response length and
accuracy over RL training (rl_training). docs/reasoning.md has the measured figures.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

from rlhfkit.config import option, save_yaml
from rlhfkit.io import write_json, write_jsonl
from rlhfkit.pipeline import run_stage
from rlhfkit.reason.tasks import Problem, sample_problem, sloppy_working


@dataclass
class ReasonConfig:
    """The reasoning world: multi-digit addition and multiplication by one digit with the
    working written out, a tiny model pretrained from scratch, SFT on a few hundred
    demonstrations, then RL with the answer checker as the only reward."""

    output_dir: str = option("runs/reason", "run directory (rerun the same command to resume)")
    seed: int = option(0, "seed of the problems, the models and every stage")
    digits_min: int = option(3, "fewest digits of the first operand")
    digits_max: int = option(3, "most digits of the first operand")
    pretrain_problems: int = option(12000, "worked problems in the base model's text, written by a sloppy hand")
    pretrain_slip_rate: float = option(0.15, "chance that the pretraining text's writer slips on a step")
    pretrain_epochs: float = option(2.0, "passes over the pretraining text")
    pretrain_batch: int = option(16, "pretraining sequences per step (small batches learn more per FLOP here)")
    pretrain_learning_rate: float = option(2e-3, "peak pretraining learning rate (cosine decay)")
    demonstrations: int = option(400, "SFT demonstrations")
    demo_slip_rate: float = option(0.05, "chance that a demonstrator slips on a step")
    sft_epochs: float = option(2.0, "passes over the demonstrations")
    rl_prompts: int = option(4000, "RL problems (answers known to the verifier, disjoint from the evaluation)")
    rl_mul_share: float = option(0.0, "share of multiplications among the RL prompts, made by repeating the "
                                 "drawn ones (0: as drawn, about a fifth: the pretraining text holds most)")
    eval_problems: int = option(200, "held-out problems for the evaluation")
    eval_samples: int = option(16, "samples per problem (n of the pass@k estimator; k up to n)")
    hidden: int = option(64, "model width")
    layers: int = option(4, "transformer layers")
    heads: int = option(4, "attention heads")
    rl_episodes: int = option(65536, "RL responses sampled over the whole run (512 steps of --rl_batch 128)")
    rl_batch: int = option(128, "responses per RL step (rl_batch / rl_group_size prompts)")
    rl_group_size: int = option(8, "responses per prompt (the GRPO group)")
    rl_learning_rate: float = option(4e-4, "RL learning rate (6e-4 and above collapse)")
    rl_warmup_ratio: float = option(0.05, "share of the RL steps warming the learning rate up linearly")
    rl_epochs: int = option(1, "passes over each RL batch")
    rl_loss_type: str = option("dapo", "RL policy loss (--loss_type of rlhfkit ppo)")
    rl_estimator: str = option("grpo", "group advantage (--advantage_estimator): grpo, dr_grpo or rloo")
    rl_kl_coef: float = option(0.0, "KL coefficient to the SFT policy (in the loss, k3)")
    rl_dynamic_sampling: bool = option(False, "leave out of the update the groups whose rewards are all equal (DAPO)")
    response_length: int = option(48, "most response tokens")
    num_threads: int = option(0, "torch CPU threads (0: torch's default)")
    progress: bool = option(False, "progress bars")


PASS_KS = (1, 2, 4, 8, 16)


def _unique_problems(rng: random.Random, n: int, cfg: ReasonConfig, taken: set) -> list[Problem]:
    out = []
    while len(out) < n:
        p = sample_problem(rng, (cfg.digits_min, cfg.digits_max))
        if p.prompt not in taken:
            taken.add(p.prompt)
            out.append(p)
    return out


def _mix(problems: list[Problem], mul_share: float, seed: int) -> list[Problem]:
    """The same number of problems with a share mul_share of multiplications, the drawn
    multiplications repeated in turn (0: the problems as drawn). Only the RL prompts are
    mixed, so the other sets, the pretraining text and the models stay as they are. Only 7,200
    multiplications exist (100-999 times 2-9); the pretraining text takes 4,600 of them and
    the unique draws then favour additions: at seed 0 the RL problems drawn hold 22%
    multiplications (the demonstrations 26%, the evaluation 47%)."""
    if not mul_share:
        return problems
    muls, adds = [p for p in problems if p.op == "mul"], [p for p in problems if p.op == "add"]
    n_mul = min(len(problems), round(mul_share * len(problems)))
    if not muls or len(adds) < len(problems) - n_mul:
        raise ValueError(f"cannot make a share {mul_share} of multiplications from {len(muls)} of {len(problems)}")
    mixed = [muls[i % len(muls)] for i in range(n_mul)] + adds[:len(problems) - n_mul]
    random.Random(seed).shuffle(mixed)
    return mixed


def data_paths(data: Path) -> dict[str, str]:
    """The data stage's files: pretraining text, demonstrations, RL prompts, evaluation
    problems, and the untrained model (init)."""
    paths = {k: str(data / f"{k}.jsonl") for k in ("pretrain", "sft", "rl_prompts", "eval")}
    paths["init"] = str(data / "init")
    return paths


def make_data(cfg: ReasonConfig, data: Path) -> dict[str, str]:
    """Pretraining text, demonstrations, RL prompts (with answers) and evaluation problems,
    four disjoint sets of problems; the tokenizer and the untrained model. Deterministic."""
    paths = data_paths(data)
    data.mkdir(parents=True, exist_ok=True)
    rng, taken = random.Random(cfg.seed), set()
    evals = _unique_problems(rng, cfg.eval_problems, cfg, taken)
    pre = _unique_problems(rng, cfg.pretrain_problems, cfg, taken)
    demos = _unique_problems(rng, cfg.demonstrations, cfg, taken)
    rl = _mix(_unique_problems(rng, cfg.rl_prompts, cfg, taken), cfg.rl_mul_share, cfg.seed)
    write_jsonl(Path(paths["eval"]), [{"op": p.op, "a": p.a, "b": p.b} for p in evals])
    write_jsonl(Path(paths["pretrain"]), [{"text": p.prompt + sloppy_working(p, rng, cfg.pretrain_slip_rate)}
                                           for p in pre])
    write_jsonl(Path(paths["sft"]), [{"prompt": p.prompt, "completion": sloppy_working(p, rng, cfg.demo_slip_rate)}
                                      for p in demos])
    write_jsonl(Path(paths["rl_prompts"]), [{"prompt": p.prompt, "answer": str(p.answer)} for p in rl])
    _init_model(cfg, Path(paths["init"]), [p.prompt + sloppy_working(p, rng, 0.0) for p in pre[:2000]])
    return paths


def _init_model(cfg: ReasonConfig, directory: Path, texts: list[str]) -> None:
    """A byte-level tokenizer (digits one per token, a few merges) and a random tiny Llama."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlhfkit.models.tokenizer import train_bpe_tokenizer

    tok = train_bpe_tokenizer(texts, vocab_size=300, model_max_length=128)
    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=cfg.hidden, intermediate_size=cfg.hidden * 3,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
        max_position_embeddings=128, tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id, bos_token_id=None))
    model.save_pretrained(directory)
    tok.save_pretrained(directory)


def stage_configs(cfg: ReasonConfig, out: Path, paths: dict):
    """The base, SFT and RL stage configs (the library's own trainers)."""
    from rlhfkit.trainers.ppo.config import PPOConfig
    from rlhfkit.trainers.sft import SFTConfig

    common = dict(seed=cfg.seed, num_threads=cfg.num_threads, progress=cfg.progress, max_length=128,
                  eval_fraction=0.0, disable_dropout=True, lr_scheduler="cosine", log_every=20)
    base = SFTConfig(model=paths["init"], data=paths["pretrain"], output_dir=str(out / "base"),
                     learning_rate=cfg.pretrain_learning_rate, warmup_ratio=0.02,
                     per_device_batch_size=cfg.pretrain_batch,
                     num_epochs=cfg.pretrain_epochs, checkpoint_every=100, **common)
    sft = SFTConfig(model=str(out / "base"), data=paths["sft"], output_dir=str(out / "sft"), learning_rate=3e-4,
                    per_device_batch_size=16, num_epochs=cfg.sft_epochs, **common)
    rl = PPOConfig(model=str(out / "sft"), prompts=paths["rl_prompts"], output_dir=str(out / "rl"), seed=cfg.seed,
                   reward_functions=["rlhfkit.rewards.verifiers:answer_reward"], advantage_estimator=cfg.rl_estimator,
                   samples_per_prompt=cfg.rl_group_size, loss_type=cfg.rl_loss_type, whiten_advantages="none",
                   kl_placement="loss" if cfg.rl_kl_coef else "none", kl_coef=cfg.rl_kl_coef, kl_estimator="k3",
                   total_episodes=cfg.rl_episodes, rollout_batch_size=cfg.rl_batch,
                   per_device_train_batch_size=cfg.rl_batch, generation_batch_size=cfg.rl_batch,
                   ppo_epochs=cfg.rl_epochs, learning_rate=cfg.rl_learning_rate, warmup_ratio=cfg.rl_warmup_ratio,
                   adam_eps=1e-8, dynamic_sampling=cfg.rl_dynamic_sampling,
                   response_length=cfg.response_length, missing_eos_penalty=0.0, max_prompt_length=32,
                   num_threads=cfg.num_threads, progress=cfg.progress, log_every=4, checkpoint_every=16,
                   num_samples_logged=2)
    return base, sft, rl


def _evaluate(cfg: ReasonConfig, name: str, model_dir: Path, problems: list[Problem], out: Path) -> dict:
    from rlhfkit.reason.evaluate import evaluate_policy

    path = out / f"eval_{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    start = time.perf_counter()
    result = evaluate_policy(str(model_dir), problems, cfg.eval_samples, PASS_KS, cfg.response_length,
                             seed=cfg.seed)
    result["eval_seconds"] = time.perf_counter() - start
    write_json(path, result, indent=2)
    return result


def _rl_curve(metrics: Path) -> list[dict]:
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.exists() else []
    return [{"step": r["step"], "episodes": r["episodes"], "response_length": r["response/length"],
             "accuracy": r.get("objective/scores_answer_reward"), "kl": r["objective/kl"]} for r in rows]


def run_reason(cfg: ReasonConfig) -> Path:
    import torch

    from rlhfkit.trainers.ppo.trainer import train_ppo
    from rlhfkit.trainers.sft import train_sft

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, out / "config.yaml")
    paths = data_paths(out / "data")  # a stage like the others: a finished one is skipped
    seconds = {"data": run_stage("data", out / "data", lambda _cfg: make_data(cfg, out / "data"), None)}
    base, sft, rl = stage_configs(cfg, out, paths)
    seconds["base"] = run_stage("base", out / "base", train_sft, base)
    seconds["sft"] = run_stage("sft", out / "sft", train_sft, sft)
    seconds["rl"] = run_stage("rl", out / "rl", train_ppo, rl)
    problems = [Problem(**json.loads(line)) for line in Path(paths["eval"]).read_text().splitlines()]
    models = {}
    for name in ("base", "sft", "rl"):
        models[name] = _evaluate(cfg, name, out / name, problems, out)
        seconds[f"eval_{name}"] = models[name]["eval_seconds"]
        models[name]["seconds"] = seconds[name]  # training the model (its stage), as eval_seconds is evaluating it
    report = {
        "world": "reason",
        "models": models,
        "gain_pass_at_1": models["rl"]["pass_at_1"] - models["sft"]["pass_at_1"],
        "rl_training": _rl_curve(out / "rl" / "metrics.jsonl"),
        "seconds": {**seconds, "total": sum(seconds.values())},
    }
    write_json(out / "report.json", report, indent=2)
    print(summary(report))
    return out


def summary(report: dict) -> str:
    lines = ["model  pass@1  " + "  ".join(f"pass@{k:<2}" for k in report["models"]["sft"]["pass_at_k"])
             + "  greedy  right-ans/wrong-work  wrong-ans/right-work"]
    for name, m in report["models"].items():
        lines.append(f"{name:<6} {m['pass_at_1']:6.3f}  " + "  ".join(f"{v:7.3f}" for v in m["pass_at_k"].values())
                     + f"  {m['greedy_accuracy']:6.3f}  {m['right_answer_wrong_working']:20.3f}"
                     f"  {m['wrong_answer_right_working']:20.3f}")
    curve = report["rl_training"]
    if curve:
        lines.append(f"RL response length {curve[0]['response_length']:.1f} -> {curve[-1]['response_length']:.1f} "
                     f"tokens; seconds {json.dumps({k: round(v) for k, v in report['seconds'].items()})}")
    return "\n".join(lines)
