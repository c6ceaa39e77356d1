"""forgetting: the alignment tax and how much PPO-ptx buys back. For base-small, SFT,
PPO and PPO-ptx at several ptx coefficients: the web-text loss (held-out documents),
a base skill the demonstrations never teach (writing an answer in the format one
example exchange shows, pretrain.format_imitation's task, per prompt), and the gold
score the model earns, with its KL to SFT (InstructGPT: ptx recovers the tax at a
small cost in the labelers' preference)."""
from __future__ import annotations

from pathlib import Path

import torch

from rlhfkit.experiment.studies.common import Study, cached_values, figure
from rlhfkit.experiment.studies.report import table, write_study_report


@torch.no_grad()
def webtext_loss_values(model_dir: str, texts: list[str]) -> list[float]:
    """Per held-out document: the mean token NLL (nats), the alignment tax's unit."""
    from rlhfkit.experiment.pretrain import webtext_loss
    from rlhfkit.models.loading import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    model = load_causal_lm(model_dir, tokenizer).eval()
    return [webtext_loss(model, tokenizer, [t]) for t in texts]


@torch.no_grad()
def format_imitation_values(model_dir: str, n_prompts: int, seed: int, max_new_tokens: int = 48) -> list[float]:
    """Per question: the share of the five formats (plain and the four constraints) the
    model writes when one example exchange answered in that format precedes a new plain
    instruction (the share of sampled first lines carrying exactly that format)."""
    from rlhfkit.experiment.sampling import sample_responses
    from rlhfkit.models.loading import load_causal_lm, load_tokenizer
    from rlhfkit.world.judge import read_formats
    from rlhfkit.world.splits import make_split
    from rlhfkit.world.tasks import CONSTRAINTS, apply_format, constrain

    tokenizer = load_tokenizer(model_dir)
    model = load_causal_lm(model_dir, tokenizer).eval()
    tasks = [constrain(t, None) for t in make_split("eval", 2 * n_prompts, seed) if t.family != "count"]
    examples, questions = tasks[:n_prompts], tasks[n_prompts:2 * n_prompts]
    hits = [0.0] * len(questions)
    formats = (None, *CONSTRAINTS)
    for fmt in formats:
        prompts = [[{"role": "user", "content": ex.instruction},
                    {"role": "assistant", "content": apply_format(ex.answer, fmt)},
                    {"role": "user", "content": q.instruction}] for ex, q in zip(examples, questions)]
        s = sample_responses(model, tokenizer, prompts, temperature=1.0, max_new_tokens=max_new_tokens,
                             batch_size=128, seed=seed)
        want = () if fmt is None else (fmt,)
        for i, y in enumerate(s.texts):
            hits[i] += read_formats(y)[0] == want
    return [h / len(formats) for h in hits]


def forgetting_study(study: Study) -> dict:
    from rlhfkit.experiment.pretrain import webtext_eval_texts
    from rlhfkit.experiment.options import resolve_model_path
    from rlhfkit.experiment.stages import ptx_data

    cfg, run_cfg = study.cfg, study.run_cfg
    texts = webtext_eval_texts(run_cfg.webtext_eval_docs)
    base = resolve_model_path(run_cfg.base_small)
    models: dict[str, dict[int, str]] = {"base_small": {s: base for s in cfg.seeds},
                                         "sft": {s: str(study.lay.sft) for s in cfg.seeds}, "ppo": {}}
    for seed in cfg.seeds:
        models["ppo"][seed] = str(study.ppo(study.out / "ppo" / f"seed_{seed}", seed))
    ptx_file = ptx_data(run_cfg, study.run)
    for coef in cfg.ptx_coefs:
        models[f"ppo_ptx_{coef:g}"] = {s: str(study.ppo(study.out / f"ppo_ptx_{coef:g}" / f"seed_{s}", s,
                                                        ptx_data=ptx_file, ptx_coef=coef)) for s in cfg.seeds}
    rows = []
    for name, by_seed in models.items():
        trained = name not in ("base_small", "sft")  # the others are one model every seed shares
        seeds = cfg.seeds if trained else cfg.seeds[:1]
        values = {"webtext_loss": [], "skill": [], "gold": [], "kl": []}
        for seed in seeds:
            where = study.out / "values" / f"{name}_seed_{seed}"
            values["webtext_loss"].append(cached_values(where.with_suffix(".webtext.json"),
                                                        lambda: webtext_loss_values(by_seed[seed], texts)))
            values["skill"].append(cached_values(where.with_suffix(".skill.json"), lambda: format_imitation_values(
                by_seed[seed], cfg.skill_prompts, seed=run_cfg.seed, max_new_tokens=run_cfg.max_new_tokens)))
            policy = study.lay.sft if name == "sft" else Path(by_seed[seed])
            ev = study.sft_eval() if name == "sft" else study.evaluate(policy, where.with_suffix(".eval.json"), seed)
            values["gold"].append(ev["gold"])
            values["kl"].append(ev["kl"])
        rows.append({"model": name, "ptx_coef": float(name.rsplit("_", 1)[1]) if name.startswith("ppo_ptx") else None,
                     "webtext_loss": figure(values["webtext_loss"]), "skill": figure(values["skill"], (0.0, 1.0)),
                     "gold": figure(values["gold"]), "kl": figure([v for v in values["kl"] if v is not None])})
    by_name = {r["model"]: r for r in rows}
    tax = _tax(by_name)
    report = {"study": "forgetting", "run_dir": str(study.run), "seeds": list(cfg.seeds), "models": rows,
              "alignment_tax": tax, "webtext_docs": len(texts), "skill_prompts": cfg.skill_prompts}
    ptx = [r for r in rows if r["ptx_coef"] is not None]
    panels = [{"xlabel": "ptx coefficient (0: PPO)", "ylabel": "web-text loss (nats/token, held out)",
               "series": {"PPO / PPO-ptx": [(0.0, by_name["ppo"]["webtext_loss"])] +
                          [(r["ptx_coef"], r["webtext_loss"]) for r in ptx]},
               "hline": (by_name["base_small"]["webtext_loss"]["mean"], "base-small")},
              {"xlabel": "web-text loss", "ylabel": "gold (eval prompts, T = 1)",
               "series": {r["model"]: [(r["webtext_loss"]["mean"], r["gold"])] for r in rows}},
              {"xlabel": "ptx coefficient (0: PPO)", "ylabel": "format imitated from one example (share)",
               "series": {"PPO / PPO-ptx": [(0.0, by_name["ppo"]["skill"])] + [(r["ptx_coef"], r["skill"]) for r in ptx]},
               "hline": (by_name["base_small"]["skill"]["mean"], "base-small")}]
    lines = table(["model", "web-text loss", "format imitation", "gold", "KL to SFT"],
                  [[r["model"], r["webtext_loss"], r["skill"], r["gold"], r["kl"]] for r in rows])
    taxes = [f"SFT {tax['sft']:+.3f}", f"PPO {tax['ppo']:+.3f}",
             *[f"PPO-ptx {r['ptx_coef']:g} {tax[r['model']]:+.3f}" for r in ptx]]
    note = [f"Alignment tax (web-text loss over base-small's, nats per token): {', '.join(taxes)}."]
    write_study_report(study.out, "forgetting", report, [("Models", [*note, "", *lines])],
                       {"forgetting.png": (panels, "Forgetting: web-text loss, a base skill and gold (95% intervals)")})
    return report


def _tax(by_name: dict[str, dict]) -> dict[str, float]:
    """Each model's web-text loss above base-small's (nats per token)."""
    base = by_name["base_small"]["webtext_loss"]["mean"]
    return {name: r["webtext_loss"]["mean"] - base for name, r in by_name.items() if name != "base_small"}
