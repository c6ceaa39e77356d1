"""Direct preference optimisation and its successors (IPO, cDPO, SimPO, ORPO, KTO, ...).

An explicit loop over Accelerate. Each micro-batch of B pairs is ONE right-padded
forward pass over [chosen rows; rejected rows] (2B rows); the summed response-token
log-probs and token counts go to the pure loss `rlhfkit.losses.dpo.dpo_loss`.

The reference pi_ref is, by default, the initial policy. Its log-probs are
precomputed in one pass before training into a table indexed by item, and the
reference model is then freed, so training holds one model. With LoRA the
reference is the policy with its adapter disabled. Reference-free variants
(simpo, orpo) never load or run a reference. Pair losses are batch means; they are
weighted so that every pair of an optimizer step counts equally across
micro-batches and processes.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import torch

from rlhfkit.config import option
from rlhfkit.data.loading import ColumnMap, load_labeled, load_preferences
from rlhfkit.losses.common import tie_half_accuracy
from rlhfkit.losses.dpo import DPO_LOSSES, DPOLossConfig, PreferenceLogps, dpo_loss
from rlhfkit.models.loading import load_causal_lm, load_tokenizer, lora_options, save_pretrained_dir
from rlhfkit.trainers.accelerator import make_accelerator
from rlhfkit.trainers.checkpoint import open_stage
from rlhfkit.trainers.data_plan import train_and_eval_records, training_plan
from rlhfkit.trainers.distributed import step_share
from rlhfkit.trainers.dpo_data import (
    PreferenceItems,
    encode_items,
    has_label_column,
    item_rows,
    reference_table,
    sequence_logps,
)
from rlhfkit.trainers.metrics import MetricsLogger, progress_bar
from rlhfkit.trainers.optim import NonFiniteGuard, apply_step, prepared_optimizer
from rlhfkit.trainers.train_config import DatasetTrainConfig

REFERENCE_FREE = frozenset({"simpo", "orpo"})
# Method names `--algo` accepts (pipeline, world run) -> the DPO-family loss. All train
# from the SFT policy except orpo, which replaces SFT + preference tuning by one stage.
DIRECT_METHODS = {"dpo": "sigmoid", "ipo": "ipo", "cdpo": "cdpo", "robust": "robust", "hinge": "hinge",
                  "simpo": "simpo", "kto": "kto", "orpo": "orpo"}


@dataclass
class DPOConfig(DatasetTrainConfig):
    """Preference optimisation of a causal LM without a reward model (DPO family)."""

    model: str = option("", "policy to train (usually the SFT model): local Hugging Face directory or hub id")
    ref_model: str = option("", "reference model (default: the initial policy; with LoRA the disabled adapter)")
    data: str = option("", "comparisons: prompt/chosen/rejected, implicit-prompt pairs, prompt/responses/ranking "
                       "(expanded to all pairs), or, for --loss kto, prompt/completion/label")
    eval_data: str = option("", "optional held-out data in the same format (default: eval_fraction of data)")
    prompt_column: str = option("prompt", "column holding the prompt")
    chosen_column: str = option("chosen", "column holding the preferred response")
    rejected_column: str = option("rejected", "column holding the other response")
    responses_column: str = option("responses", "column holding K responses (rankings)")
    ranking_column: str = option("ranking", "column holding the ranking of the K responses")
    completion_column: str = option("completion", "column holding the response of unpaired (KTO) data")
    label_column: str = option("label", "column holding the desirable/undesirable label of unpaired (KTO) data")
    loss: str = option("sigmoid", f"preference loss: one of {', '.join(sorted(DPO_LOSSES))}")
    beta: float = option(0.1, "inverse temperature on the log-ratio (IPO tau; SimPO beta, where about 2 is usual)")
    label_smoothing: float = option(0.0, "probability a label is flipped (cdpo/sigmoid, robust)")
    simpo_gamma_beta_ratio: float = option(0.5, "SimPO target margin gamma as a fraction of beta")
    orpo_lambda: float = option(0.1, "ORPO weight of the odds-ratio term against the chosen NLL")
    kto_desirable_weight: float = option(1.0, "KTO weight lambda_D of desirable responses")
    kto_undesirable_weight: float = option(1.0, "KTO weight lambda_U of undesirable responses")
    precompute_ref_logprobs: bool = option(True, "compute reference log-probs once before training and free "
                                           "the reference (False: keep it and run it every micro-batch)")
    use_lora: bool = option(False, "train a LoRA adapter (the reference is the disabled adapter; merged on save "
                            "unless save_adapter_only)")
    lr_scheduler: str = option("linear", "learning-rate schedule after warmup: cosine, linear or constant")
    learning_rate: float = option(5e-6, "peak learning rate (AdamW)")

    RULES: ClassVar[dict] = {"loss": tuple(sorted(DPO_LOSSES)), "beta": "> 0", "label_smoothing": "[0, 0.5)",
                             "simpo_gamma_beta_ratio": ">= 0", "orpo_lambda": ">= 0", "kto_desirable_weight": ">= 0",
                             "kto_undesirable_weight": ">= 0"}

    def columns(self) -> ColumnMap:
        return ColumnMap(prompt=self.prompt_column, chosen=self.chosen_column, rejected=self.rejected_column,
                         responses=self.responses_column, ranking=self.ranking_column,
                         completion=self.completion_column, label=self.label_column)

    def loss_config(self) -> DPOLossConfig:
        return DPOLossConfig(beta=self.beta, label_smoothing=self.label_smoothing,
                             simpo_gamma_beta_ratio=self.simpo_gamma_beta_ratio, orpo_lambda=self.orpo_lambda,
                             kto_desirable_weight=self.kto_desirable_weight,
                             kto_undesirable_weight=self.kto_undesirable_weight)

    def validate(self) -> None:
        if not self.model or not self.data:
            raise ValueError("dpo needs --model and --data")
        if self.loss not in DPO_LOSSES:
            raise ValueError(f"unknown --loss {self.loss!r}; options: {sorted(DPO_LOSSES)}")


def for_method(cfg: DPOConfig, method: str) -> DPOConfig:
    """`cfg` set up for an --algo method name: its loss, and for cdpo a label
    smoothing of 0.1 when none is given (cDPO with smoothing 0 is plain DPO)."""
    cfg = replace(cfg, loss=DIRECT_METHODS[method])
    if method == "cdpo" and not cfg.label_smoothing:
        cfg = replace(cfg, label_smoothing=0.1)
    return cfg


# ----------------------------------------------------------------------------- log-probs and loss


def batch_logps(model, items: PreferenceItems, indices: list[int], pad_id: int, device,
                ref_table: torch.Tensor | None, ref_fn) -> PreferenceLogps:
    """Policy (and reference) log-probs of a micro-batch, in one policy forward pass.

    Pairs: rows [chosen; rejected] (2B). Unpaired KTO items (B rows) fill both the
    chosen and the rejected slot with the same rows and labels, so the KTO mean over
    2B rows is the mean over the B items.
    """
    rows = item_rows(items, indices)
    logps, tokens = sequence_logps(model, rows, pad_id, device)  # [kB], [kB]
    ref = None
    if ref_table is not None:
        ref = ref_table[indices].T.reshape(-1).to(device)  # [kB], column-major like rows
    elif ref_fn is not None:
        with torch.no_grad():
            ref = ref_fn(rows).float()
    b = len(indices)
    if items.paired:
        split = lambda x: (x[:b], x[b:]) if x is not None else (None, None)  # noqa: E731
        (pc, pr), (rc, rr), (tc, tr) = split(logps), split(ref), split(tokens)
        return PreferenceLogps(pc, pr, rc, rr, tc, tr)
    labels = torch.tensor([items.desirable[i] for i in indices], device=device)
    return PreferenceLogps(logps, logps, ref, ref, tokens, tokens, chosen_desirable=labels, rejected_desirable=labels)


def unpaired_metrics(logps: PreferenceLogps, cfg: DPOConfig, metrics: dict) -> dict:
    """For unpaired KTO data: chosen/rejected become desirable/undesirable, and the
    accuracy is the share of (desirable, undesirable) pairs ordered correctly."""
    rewards = cfg.beta * (logps.policy_chosen - logps.ref_chosen).detach()
    d = logps.chosen_desirable.bool()
    out = {k: v for k, v in metrics.items() if not k.startswith(("rewards/", "logps/"))}
    if d.any():
        out["rewards/chosen"] = rewards[d].mean()
        out["logps/chosen"] = logps.policy_chosen[d].detach().mean()
    if (~d).any():
        out["rewards/rejected"] = rewards[~d].mean()
        out["logps/rejected"] = logps.policy_chosen[~d].detach().mean()
    if d.any() and (~d).any():
        diff = rewards[d][:, None] - rewards[~d][None, :]
        out["rewards/accuracy"] = tie_half_accuracy(diff).mean()
        out["rewards/margin"] = diff.mean()
    return out


def preference_loss(logps: PreferenceLogps, cfg: DPOConfig, paired: bool):
    loss, metrics = dpo_loss(cfg.loss, logps, cfg.loss_config())
    return loss, (metrics if paired else unpaired_metrics(logps, cfg, metrics))


@torch.no_grad()
def evaluate(model, items: PreferenceItems, ref_table, ref_fn, cfg: DPOConfig, pad_id: int, device) -> dict:
    """Held-out loss and implicit-reward accuracy and margin over the whole set."""
    model.eval()
    parts = [batch_logps(model, items, list(range(s, min(s + cfg.per_device_batch_size, len(items)))), pad_id,
                         device, ref_table, ref_fn) for s in range(0, len(items), cfg.per_device_batch_size)]
    model.train()
    cat = lambda name: (None if getattr(parts[0], name) is None  # noqa: E731
                        else torch.cat([getattr(p, name) for p in parts]))
    fields = ("policy_chosen", "policy_rejected", "ref_chosen", "ref_rejected", "chosen_tokens",
              "rejected_tokens", "chosen_desirable", "rejected_desirable")
    loss, metrics = preference_loss(PreferenceLogps(**{f: cat(f) for f in fields}), cfg, items.paired)
    out = {f"val/{k.split('/', 1)[1] if k.startswith('rewards/') else k.replace('/', '_')}": float(v)
           for k, v in metrics.items() if k != "loss/dpo"}
    return out | {"val/loss": float(loss), "val/pairs": len(items)}


# ----------------------------------------------------------------------------- reference


def _reference(cfg: DPOConfig, model, tokenizer, accelerator):
    """A function rows -> reference log-probs [N]; a separate reference model lives only
    in its closure, so dropping the function frees the model."""
    pad, device = tokenizer.pad_token_id, accelerator.device
    unwrapped = accelerator.unwrap_model(model)
    same = not cfg.ref_model or cfg.ref_model == cfg.model
    if same and cfg.use_lora:
        def adapter_off(rows):
            with unwrapped.disable_adapter(), accelerator.autocast():
                return sequence_logps(unwrapped, rows, pad, device)[0]
        return adapter_off
    if same and cfg.precompute_ref_logprobs:  # the policy before its first update is the reference
        def initial_policy(rows):
            with accelerator.autocast():
                return sequence_logps(unwrapped, rows, pad, device)[0]
        return initial_policy
    ref = load_causal_lm(cfg.ref_model or cfg.model, tokenizer, dtype=cfg.dtype,
                         trust_remote_code=cfg.trust_remote_code).to(device).eval()
    ref.requires_grad_(False)

    def frozen(rows):
        with accelerator.autocast():
            return sequence_logps(ref, rows, pad, device)[0]
    return frozen


# ----------------------------------------------------------------------------- training loop


def train_dpo(cfg: DPOConfig) -> Path:
    cfg.validate()
    out = Path(cfg.output_dir)
    accelerator = make_accelerator(cfg, out)
    checkpoints = open_stage(cfg, "dpo", accelerator)
    if checkpoints.finished:  # the directory already holds the model these settings train
        return checkpoints.skip(accelerator)
    device = accelerator.device
    tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code, chat_template=cfg.chat_template or None)
    pad = tokenizer.pad_token_id
    unpaired = cfg.loss == "kto" and has_label_column(cfg.data, cfg.label_column, cfg.dataset_train_split)
    # a held-out share is split by prompt before rankings expand to pairs: no prompt is on both sides
    records, held_records = train_and_eval_records(load_labeled if unpaired else load_preferences, cfg, cfg.columns(),
                                                   accelerator)
    train = encode_items(records, tokenizer, cfg, unpaired)
    held = encode_items(held_records, tokenizer, cfg, unpaired) if held_records else PreferenceItems([])

    lora = lora_options(cfg)
    model = load_causal_lm(cfg.model, tokenizer, dtype=cfg.dtype, gradient_checkpointing=cfg.gradient_checkpointing,
                           lora=lora, trust_remote_code=cfg.trust_remote_code)
    plan = training_plan(cfg, len(train), accelerator, [sum(len(e) for e in item) for item in train.sequences])
    model, optimizer, scheduler = prepared_optimizer(accelerator, model, model.parameters(), cfg, len(plan),
                                                     cfg.lr_scheduler)

    ref_fn, train_ref, held_ref = None, None, None
    if cfg.loss not in REFERENCE_FREE:
        ref_fn = _reference(cfg, model, tokenizer, accelerator)
        if cfg.precompute_ref_logprobs:  # before any resume: the policy may be the reference
            model.eval()
            train_ref = reference_table(ref_fn, train, cfg.per_device_batch_size)
            held_ref = reference_table(ref_fn, held, cfg.per_device_batch_size) if len(held) else None
            ref_fn = None  # frees a separate reference model
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    logger = MetricsLogger(out / "metrics.jsonl", accelerator, stage="dpo")
    start, _ = checkpoints.resume_training(accelerator, {"model": model}, optimizer, scheduler, logs=[logger])
    guard = NonFiniteGuard(cfg.max_nonfinite_steps, "dpo", accelerator.print)
    bar = progress_bar(len(plan), f"dpo ({cfg.loss})", cfg.progress and accelerator.is_local_main_process)
    bar.update(start)
    model.train()
    for step in range(start, len(plan)):
        metrics = _optimizer_step(model, optimizer, scheduler, plan[step], train, train_ref, ref_fn, cfg,
                                  accelerator, pad, guard, step + 1)
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['loss/dpo']:.4f}", acc=f"{metrics.get('rewards/accuracy', 0):.2f}")
        done = step + 1
        evaluated = bool(cfg.eval_every and done % cfg.eval_every == 0 and len(held))
        if evaluated:
            metrics.update(evaluate(model, held, held_ref, ref_fn, cfg, pad, device))
        if evaluated or done % cfg.log_every == 0 or done == len(plan):  # an evaluation is never dropped
            logger.log(done, metrics)
        if checkpoints.due(done, len(plan), accelerator):
            checkpoints.save_training(done, accelerator, {"model": model}, optimizer, scheduler)
    bar.close()
    final = {"final": True}
    if len(held):
        final.update(evaluate(model, held, held_ref, ref_fn, cfg, pad, device))
    logger.log(len(plan), final)
    return checkpoints.finish_stage(accelerator, cfg, lambda out: save_pretrained_dir(
        accelerator.unwrap_model(model), tokenizer, out, merge_lora=not cfg.save_adapter_only))


def _optimizer_step(model, optimizer, scheduler, step_indices, items, ref_table, ref_fn, cfg, accelerator,
                    pad, guard: NonFiniteGuard, step: int) -> dict:
    """One optimizer step; each micro-batch's mean loss is weighted by its share of
    the step's pairs (over all processes), so every pair counts equally."""
    rank, world = accelerator.process_index, accelerator.num_processes
    total_pairs = sum(len(m) for m in step_indices)
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for micro in step_indices:
        local = micro[rank::world]
        if not local:
            continue
        logps = batch_logps(model, items, local, pad, accelerator.device, ref_table, ref_fn)
        loss, metrics = preference_loss(logps, cfg, items.paired)
        accelerator.backward(loss * step_share(len(local), total_pairs, world))
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + float(v) * len(local)
            counts[k] = counts.get(k, 0) + len(local)
    out = {k: sums[k] / counts[k] for k in sums}
    return {**out, **apply_step(accelerator, model, optimizer, scheduler, guard, step, {"loss": out["loss/dpo"]},
                                cfg.max_grad_norm)}
