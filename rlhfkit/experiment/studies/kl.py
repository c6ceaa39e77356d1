"""kl: PPO at fixed KL coefficients from 0 to 0.2 and with an adaptive coefficient
(Ziegler et al. 2019: beta steered toward a target KL), from the run's SFT and reward
model with the run's budget: gold and KL to SFT of the final policy, and the win rate
against SFT. The run's own beta is one of the fixed points, marked on the curve."""
from __future__ import annotations

from rlhfkit.experiment.studies.common import Study, figure
from rlhfkit.experiment.studies.report import table, write_study_report
from rlhfkit.world.judge import win_indicators


def kl_study(study: Study) -> dict:
    cfg, run_beta = study.cfg, study.run_cfg.ppo.kl_coef
    sft = study.sft_eval()
    points = [("fixed", beta, {"kl_coef": beta, "adaptive_kl": False}) for beta in cfg.betas]
    points += [("adaptive", target, {"adaptive_kl": True, "kl_target": target}) for target in cfg.kl_targets]
    rows = []
    for kind, value, overrides in points:
        name = f"beta_{value:g}" if kind == "fixed" else f"target_{value:g}"
        evals = []
        for seed in cfg.seeds:
            policy = study.ppo(study.out / name / f"seed_{seed}", seed, **overrides)
            evals.append(study.evaluate(policy, study.out / name / f"eval_seed_{seed}.json", seed))
        rows.append({"kind": kind, "beta" if kind == "fixed" else "kl_target": value, "name": name,
                     "run_default": kind == "fixed" and value == run_beta,
                     "gold": figure([e["gold"] for e in evals]), "kl": figure([e["kl"] for e in evals]),
                     "win_vs_sft": figure([win_indicators(e["gold"], sft["gold"]) for e in evals], bounds=(0.0, 1.0))})
    sft_gold = figure([sft["gold"]])
    report = {"study": "kl", "run_dir": str(study.run), "seeds": list(cfg.seeds), "run_beta": run_beta,
              "sft_gold": sft_gold, "points": rows}
    fixed = [r for r in rows if r["kind"] == "fixed"]
    adaptive = [r for r in rows if r["kind"] == "adaptive"]
    default = [(r["beta"], r["gold"]) for r in fixed if r["run_default"]]
    panels = [{"xlabel": "beta (KL coefficient)", "ylabel": "gold (eval prompts, T = 1)",
               "series": {"fixed beta": [(r["beta"], r["gold"]) for r in fixed],
                          f"the run's beta {run_beta:g}": default},
               "hline": (sft_gold["mean"], "SFT")},
              {"xlabel": "KL to SFT at the end (nats per response)", "ylabel": "gold",
               "series": {"fixed beta": [(r["kl"]["mean"], r["gold"]) for r in fixed],
                          "adaptive (target KL)": [(r["kl"]["mean"], r["gold"]) for r in adaptive]},
               "hline": (sft_gold["mean"], "SFT")}]
    lines = table(["point", "gold", "KL to SFT", "win rate vs SFT"],
                  [[f"{'beta' if r['kind'] == 'fixed' else 'adaptive, target KL'} {r.get('beta', r.get('kl_target')):g}"
                    + (" (the run's)" if r["run_default"] else ""), r["gold"], r["kl"], r["win_vs_sft"]]
                   for r in rows])
    write_study_report(study.out, "kl", report,
                       [("Final policy per KL setting", [f"SFT gold {sft_gold['mean']:.3f}.", "", *lines])],
                       {"kl.png": (panels, "KL coefficient: gold and KL to SFT at the end (95% intervals)")})
    return report
