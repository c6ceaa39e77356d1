"""The stages of `rlhfkit run` (rlhfkit/experiment/run.py runs them in order): each
writes its files into its directory of the run and is run through
rlhfkit.pipeline.run_stage, so a finished stage is skipped and an interrupted
trainer resumes. A trainer stage gets its trainer's config from the world's stage
options (rlhfkit/experiment/options.py) plus the paths the run sets itself."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from rlhfkit.experiment.comparisons import filter_ranking, label_comparisons, split_rows
from rlhfkit.experiment.data import make_world_data, ptx_texts, tasks_of
from rlhfkit.experiment.evaluate import evaluate_best_of_n, evaluate_policy
from rlhfkit.experiment.feedback import ai_comparisons_stage, reference_responses_stage
from rlhfkit.experiment.layout import SeedLayout
from rlhfkit.experiment.options import ORACLE, RunConfig, labeler_config, resolve_model_path
from rlhfkit.experiment.pretrain import webtext_eval_texts
from rlhfkit.experiment.reward_figures import reward_model_figures
from rlhfkit.experiment.sampling import sample_responses
from rlhfkit.io import read_jsonl, write_json, write_jsonl
from rlhfkit.label.ai import Reasoning, read_principles
from rlhfkit.models.loading import load_causal_lm, load_tokenizer
from rlhfkit.pipeline import run_stage
from rlhfkit.trainers.dpo import DPOConfig, for_method, train_dpo
from rlhfkit.trainers.ppo.config import PPOConfig
from rlhfkit.trainers.ppo.trainer import train_ppo
from rlhfkit.trainers.reward import RewardConfig, train_reward_model
from rlhfkit.world.judge import gold_rewards, judge_task
from rlhfkit.world.labelers import LabelerConfig, make_comparisons
from rlhfkit.world.tasks import parse_instruction


def log(msg: str) -> None:
    """The run's progress lines (flushed: a run is often followed through a pipe)."""
    print(msg, flush=True)


def run_plain_stage(name: str, directory: Path, fn) -> float:
    """run_stage for a stage that is a plain function of no arguments."""
    directory.mkdir(parents=True, exist_ok=True)
    return run_stage(name, directory, lambda _cfg: fn(), None, log=log)


def comparisons_stage(cfg: RunConfig, lay: SeedLayout) -> None:
    """comparisons/: K SFT samples per comparison prompt (samples.jsonl), ranked by the
    labelers after their noise is recalibrated on them, split into comparisons.jsonl
    (training) and heldout.jsonl; labelers.json keeps the noise and agreement."""
    rows = read_jsonl(lay.data / "comparison_prompts.jsonl")
    tasks = tasks_of(rows)
    sft_dir = str(lay.sft)
    tokenizer = load_tokenizer(sft_dir)
    model = load_causal_lm(sft_dir, tokenizer).eval()
    # K samples per prompt: the prompt list repeated K times, one response each.
    prompts = [r["prompt"] for r in rows for _ in range(cfg.k)]
    s = sample_responses(model, tokenizer, prompts, temperature=cfg.comparison_temperature,
                         max_new_tokens=cfg.max_new_tokens, batch_size=cfg.eval_batch_size, seed=cfg.seed + 101)
    responses = [s.texts[i * cfg.k:(i + 1) * cfg.k] for i in range(len(rows))]
    terminated = [s.terminated[i * cfg.k:(i + 1) * cfg.k] for i in range(len(rows))]
    write_jsonl(lay.comparisons / "samples.jsonl",
                [{"instruction": t.instruction, "responses": y, "terminated": e}
                 for t, y, e in zip(tasks, responses, terminated)])
    ranked, figures, labeler = label_comparisons(tasks, responses, terminated, seed=cfg.seed,
                                                 labeler=labeler_config(cfg),
                                                 target_agreement=cfg.labeler_target_agreement,
                                                 calibrate=cfg.calibrate_labelers)
    train, held = split_rows(ranked, cfg.rm_heldout_fraction, cfg.seed)
    write_jsonl(lay.comparisons / "comparisons.jsonl", train)
    write_jsonl(lay.comparisons / "heldout.jsonl", held)
    figures["labeler_config"] = dataclasses.asdict(labeler)
    figures["train_prompts"], figures["heldout_prompts"] = len(train), len(held)
    write_json(lay.comparisons / "labelers.json", figures, indent=2)


def rm_stage(cfg: RunConfig, lay: SeedLayout, rm_cfg: RewardConfig) -> None:
    """The reward model, then its held-out figures (heldout.json) against the labelers and gold."""
    train_reward_model(rm_cfg)
    labelers = json.loads((lay.comparisons / "labelers.json").read_text())
    held = read_jsonl(lay.comparisons / "heldout.jsonl")
    figures = reward_model_figures(rm_cfg.output_dir, held, LabelerConfig(**labelers["labeler_config"]))
    figures["reward_form"] = rm_cfg.reward_form
    figures["init"] = cfg.rm_init
    if rm_cfg.reward_form == "mean_logprob":
        figures["reward_scale"] = rm_cfg.reward_scale
    write_json(Path(rm_cfg.output_dir) / "heldout.json", figures, indent=2)


def data_stage(cfg: RunConfig, out: Path) -> None:
    """data/: the world's datasets from its disjoint splits (experiment/data.py)."""
    counts = make_world_data(out / "data", n_demonstrations=cfg.demonstrations,
                             n_comparison_prompts=cfg.comparison_prompts, n_ppo_prompts=cfg.ppo_prompts,
                             n_eval_prompts=cfg.eval_prompts, n_validation_prompts=cfg.validation_prompts,
                             seed=cfg.seed)
    if cfg.ptx:
        ptx_data(cfg, out)
    write_json(out / "data" / "counts.json", counts, indent=2)


def ptx_data(cfg: RunConfig, out: Path) -> str:
    """data/webtext_ptx.jsonl: web text for PPO-ptx's pretraining term."""
    path = out / "data" / "webtext_ptx.jsonl"
    if not path.exists():  # also reached by a resumed run that first ran without ptx
        write_jsonl(path, [{"text": t} for t in ptx_texts(cfg.ptx_docs, cfg.seed)])
    return str(path)


def stage_config(trainer_config: type, options, cfg: RunConfig, **settings):
    """A trainer's config from the world's options for that stage (a subclass with the world's
    defaults), with the run's seed and threads and the stage's own settings (paths, ...)."""
    fields = {f.name: getattr(options, f.name) for f in dataclasses.fields(trainer_config)}
    fields.update({"seed": cfg.seed, "num_threads": cfg.num_threads, **settings})
    return trainer_config(**fields)


def ppo_stage_config(cfg: RunConfig, lay: SeedLayout, directory: Path, **overrides) -> PPOConfig:
    """The PPO config of a world run: policy and reference = SFT, reward = the RM
    plus the gold judge with weight 0 (logged as objective/scores_gold only)."""
    value = {"sft": str(lay.sft), "rm": str(lay.rm)}.get(cfg.ppo.value_model, cfg.ppo.value_model)
    settings = dict(model=str(lay.sft), reward_model=str(lay.rm), value_model=value,
                    prompts=str(lay.data / "ppo_prompts.jsonl"), output_dir=str(directory),
                    reward_weights={"gold": 0.0})  # the RM and any --ppo.reward_functions: weight 1
    settings.update(overrides)
    if settings.get("advantage_estimator", cfg.ppo.advantage_estimator) != "gae":  # critic-free: no value model
        settings["value_model"] = ""
    return stage_config(PPOConfig, cfg.ppo, cfg, **settings)


def gold(prompts, responses, terminated) -> list[float]:
    """The gold judge as a PPO reward function, added with weight 0 so that
    metrics.jsonl records `objective/scores_gold` beside the proxy reward."""
    return gold_rewards(prompts, responses, terminated)


def train_ppo_with_gold(ppo_cfg: PPOConfig) -> Path:
    """A PPO-family stage with the gold judge among its rewards (weighted by reward_weights)."""
    return train_ppo(ppo_cfg, reward_fns=(gold,))


def oracle_stage_config(cfg: RunConfig, lay: SeedLayout) -> PPOConfig:
    """PPO with the gold judge as its only reward (no reward model), scaled like the
    RM: 1 / the std of gold over the K SFT samples of the comparison prompts, so
    that beta and the learning rate mean the same as in PPO against the RM."""
    rows = read_jsonl(lay.comparisons / "samples.jsonl")
    golds = [judge_task(t, y, e).gold for t, r in zip(tasks_of(rows), rows)
             for y, e in zip(r["responses"], r["terminated"])]
    mean = sum(golds) / len(golds)
    std = (sum((g - mean) ** 2 for g in golds) / max(len(golds) - 1, 1)) ** 0.5
    return ppo_stage_config(cfg, lay, lay.methods / ORACLE, reward_model="",
                            reward_weights={"gold": 1.0 / max(std, 1e-3)})


def eval_stage(cfg: RunConfig, lay: SeedLayout, name: str, path: str, sft_holder: dict) -> None:
    """<eval_dir>/<name>.json: the model's figures by the gold judge (experiment/evaluate.py); the
    SFT model, evaluated first, stays loaded in sft_holder as every other model's KL reference."""
    rows = read_jsonl(lay.data / "eval_prompts.jsonl")
    tasks = tasks_of(rows)
    val_rows = read_jsonl(lay.data / "validation_prompts.jsonl")
    is_sft = name == "sft"
    if not is_sft and sft_holder.get("path") != str(lay.sft):
        sft_holder.update(path=str(lay.sft), model=load_causal_lm(str(lay.sft), load_tokenizer(str(lay.sft))).eval())
    eval_dir = lay.eval_dir(name)
    result = evaluate_policy(path, tasks, [r["prompt"] for r in rows], sft_model=None if is_sft else sft_holder["model"],
                             webtext=webtext_eval_texts(cfg.webtext_eval_docs), temperatures=cfg.eval_temperatures,
                             validation=(tasks_of(val_rows), [r["prompt"] for r in val_rows]), greedy=True,
                             max_new_tokens=cfg.max_new_tokens, batch_size=cfg.eval_batch_size, seed=cfg.seed + 7,
                             samples_out=eval_dir / f"{name}.samples.jsonl")
    if is_sft:  # the SFT model is its own reference: keep it loaded for the others
        sft_holder.update(path=str(lay.sft), model=result["model"])
        result["figures"]["kl_to_sft"] = 0.0  # log pi - log pi_sft is identically 0 on every sample
    write_json(eval_dir / f"{name}.json", {"figures": result["figures"], "decodings": result["decodings"]}, indent=1)


def ai_judge_setup(cfg: RunConfig, base_large: str) -> tuple[str, str]:
    """The AI labeler's model and constitution file: --ai_judge ("base_large" names that
    checkpoint) and --ai_principles ("world": the world's constitution; empty: none)."""
    from rlhfkit.world.webtext import CONSTITUTION

    judge = base_large if cfg.ai_judge == "base_large" else resolve_model_path(cfg.ai_judge)
    return judge, str(CONSTITUTION) if cfg.ai_principles == "world" else cfg.ai_principles


def ai_feedback_stages(cfg: RunConfig, lay: SeedLayout, rm_cfg: RewardConfig, bases: dict[str, str]) -> dict[str, float]:
    """RLAIF's recipe beside RLHF's: AI rankings of the same samples (comparisons_ai/) and a
    reward model on them (rm_ai/); for direct RLAIF, one SFT sample per PPO prompt as the
    judge's reference (references_ai/). The policies are method stages (ppo_ai_stage_config,
    ppo_ai_direct_stage_config)."""
    judge, principles_file = ai_judge_setup(cfg, bases["base_large"])
    principles = read_principles(principles_file) if principles_file else None
    reasoning = Reasoning(max_tokens=cfg.ai_reasoning_tokens) if cfg.ai_reasoning else None
    seconds = {"comparisons_ai": run_plain_stage(
        lay.stage_name("comparisons_ai"), lay.recipe / "comparisons_ai", lambda: ai_comparisons_stage(
            lay.recipe, judge, principles=principles, seed=cfg.seed, batch_size=cfg.eval_batch_size // 4,
            reasoning=reasoning, ablations=cfg.ai_ablations, base_dirs={"base-small": bases["base_small"],
                                                                       "base-large": bases["base_large"]}))}
    rm_ai = dataclasses.replace(rm_cfg, output_dir=str(lay.recipe / "rm_ai"),
                                data=str(lay.recipe / "comparisons_ai" / "comparisons.jsonl"))
    seconds["rm_ai"] = run_stage(lay.stage_name("rm_ai"), lay.recipe / "rm_ai", lambda c: rm_stage(cfg, lay, c),
                                 rm_ai, log=log)
    seconds["references_ai"] = run_plain_stage(
        lay.stage_name("references_ai"), lay.recipe / "references_ai",
        lambda: reference_responses_stage(lay.data / "ppo_prompts.jsonl", lay.sft, lay.recipe / "references_ai", judge,
                                          principles_file, max_new_tokens=cfg.max_new_tokens,
                                          batch_size=cfg.eval_batch_size, seed=cfg.seed + 29))
    return seconds


def ppo_ai_stage_config(cfg: RunConfig, lay: SeedLayout) -> PPOConfig:
    """PPO against the reward model trained on the AI labeler's rankings (RLAIF)."""
    return ppo_stage_config(cfg, lay, lay.methods / "ppo_ai", reward_model=str(lay.recipe / "rm_ai"))


def ppo_ai_direct_stage_config(cfg: RunConfig, lay: SeedLayout, base_large: str) -> PPOConfig:
    """Direct RLAIF: PPO whose reward is the judge's preference for the response over an
    SFT sample of the same prompt (no reward model), scaled like the RM: 1 / the std of
    that reward over fresh SFT samples (references_ai/scale.json). The value function
    starts from SFT, as there is no reward model to start it from."""
    judge, principles_file = ai_judge_setup(cfg, base_large)
    refs = lay.recipe / "references_ai"
    std = json.loads((refs / "scale.json").read_text())["std"]
    return ppo_stage_config(cfg, lay, lay.methods / "ppo_ai_direct", reward_model="", value_model=str(lay.sft),
                            ai_judge=judge, ai_judge_principles=principles_file,
                            prompts=str(refs / "ppo_prompts.jsonl"),
                            reward_weights={"gold": 0.0, "ai_judge": 1.0 / max(std, 1e-3)})


def best_of_n_stage(cfg: RunConfig, lay: SeedLayout) -> None:
    """eval/bon<n>.json for each n of bon_n: SFT samples re-ranked by the reward model."""
    rows = read_jsonl(lay.data / "eval_prompts.jsonl")
    sft_figures = json.loads((lay.eval_dir("sft") / "sft.json").read_text())["figures"]
    results = evaluate_best_of_n(str(lay.sft), str(lay.rm), tasks_of(rows), [r["prompt"] for r in rows],
                                 cfg.bon_n, sft_figures=sft_figures, max_new_tokens=cfg.max_new_tokens,
                                 batch_size=cfg.eval_batch_size, seed=cfg.seed + 13,
                                 samples_out=lay.methods / "eval" / "bon.samples.jsonl")
    for n, result in results.items():
        write_json(lay.methods / "eval" / f"bon{n}.json", result, indent=1)


def direct_stage(cfg: RunConfig, lay: SeedLayout, name: str, base_small: str) -> tuple[float, str]:
    """A direct method from SFT on the comparisons (the RM's training rankings, each
    expanded to its pairs; a response that ran out of tokens is encoded without
    EOS, as the RM saw it), or ORPO from base-small."""
    if name == "orpo":
        return orpo_stage(cfg, lay, base_small)
    directory = lay.methods / name
    dpo_cfg = stage_config(DPOConfig, cfg.dpo, cfg, model=str(lay.sft),
                           data=str(lay.comparisons / "comparisons.jsonl"), output_dir=str(directory))
    return run_stage(lay.stage_name(name), directory, train_dpo, for_method(dpo_cfg, name), log=log), str(directory)


def orpo_data(cfg: RunConfig, lay: SeedLayout, base_small: str) -> str:
    """ORPO's data for one stage from base-small (Hong et al. 2024 replace SFT + preference
    tuning by one loss): the comparisons every method gets, plus, for every
    demonstration, the demonstration and base-small's own sampled response to its
    prompt, ranked by the same (recalibrated) labelers. The NLL term then learns
    the demonstrations, the odds-ratio term what the labelers prefer. Part of the
    recipe: every seed's ORPO learns from the same pairs (sampled with the recipe's seed)."""
    path = lay.recipe / "orpo_data" / "pairs.jsonl"
    if path.exists():
        return str(path)
    seed = lay.recipe_seed
    rows = read_jsonl(lay.comparisons / "comparisons.jsonl")
    figures: dict = {"comparison_rankings": len(rows)}
    if cfg.orpo_demonstration_pairs:
        demos = read_jsonl(lay.data / "demonstrations.jsonl")
        tokenizer = load_tokenizer(base_small)
        model = load_causal_lm(base_small, tokenizer).eval()
        s = sample_responses(model, tokenizer, [d["prompt"] for d in demos], temperature=1.0,
                             max_new_tokens=cfg.max_new_tokens, batch_size=cfg.eval_batch_size, seed=seed + 211)
        labelers = json.loads((lay.comparisons / "labelers.json").read_text())
        labeler = LabelerConfig(**labelers["labeler_config"])
        tasks = [parse_instruction(d["prompt"][-1]["content"]) for d in demos]
        raw = make_comparisons(tasks, [[d["completion"], y] for d, y in zip(demos, s.texts)],
                               [[True, e] for e in s.terminated], seed, labeler, index_offset=1_000_000)
        demo_rows = [r for r in (filter_ranking(x) for x in raw) if r is not None]
        figures.update(demonstration_pairs=len(demo_rows),
                       demonstration_preferred=sum(r["original_order"][0] == 0 for r in demo_rows) / max(len(demo_rows), 1))
        rows = rows + demo_rows
    write_jsonl(path, rows)
    write_json(path.parent / "figures.json", figures, indent=2)
    return str(path)


def orpo_stage(cfg: RunConfig, lay: SeedLayout, base_small: str) -> tuple[float, str]:
    """ORPO from base-small; its data (orpo_data) is built inside the stage, so a finished stage skips both."""
    def stage(orpo_cfg: DPOConfig) -> Path:
        return train_dpo(dataclasses.replace(orpo_cfg, data=orpo_data(cfg, lay, base_small)))

    directory = lay.methods / "orpo"
    orpo_cfg = stage_config(DPOConfig, cfg.orpo, cfg, model=base_small,
                            data=str(lay.recipe / "orpo_data" / "pairs.jsonl"), output_dir=str(directory), loss="orpo")
    return run_stage(lay.stage_name("orpo"), directory, stage, orpo_cfg, log=log), str(directory)
