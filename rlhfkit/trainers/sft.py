"""Supervised fine-tuning on demonstrations (InstructGPT stage 1).

Completion-only next-token loss by default, averaged over every completion token
of an optimizer step (so gradient accumulation and multiple processes give the
same update as one large batch), cosine schedule with warmup, clipping,
optional packing without cross-document attention.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from rlhfkit.config import option
from rlhfkit.data.collate import PackedCollator, SFTCollator, pack_examples
from rlhfkit.data.loading import ColumnMap, load_sft
from rlhfkit.data.tokenize import encode_sft
from rlhfkit.losses.sft import masked_nll_loss
from rlhfkit.models.loading import (
    DTYPES,
    load_causal_lm,
    load_tokenizer,
    lora_options,
    save_pretrained_dir,
)
from rlhfkit.trainers.accelerator import make_accelerator
from rlhfkit.trainers.checkpoint import open_stage
from rlhfkit.trainers.data_plan import train_and_eval_records, training_plan
from rlhfkit.trainers.distributed import step_share
from rlhfkit.trainers.metrics import MetricsLogger, progress_bar
from rlhfkit.trainers.optim import NonFiniteGuard, apply_step, prepared_optimizer
from rlhfkit.trainers.train_config import DatasetTrainConfig


@dataclass
class SFTConfig(DatasetTrainConfig):
    """Supervised fine-tuning of a causal LM on demonstrations."""

    model: str = option("", "base model: local Hugging Face directory or hub id")
    data: str = option("", "demonstrations: .jsonl/.json/.parquet/.csv, a saved datasets directory, or a hub id")
    eval_data: str = option("", "optional held-out demonstrations (default: eval_fraction of data)")
    prompt_column: str = option("prompt", "column holding the prompt (string or list of messages)")
    completion_column: str = option("completion", "column holding the completion")
    messages_column: str = option("messages", "column holding a whole conversation")
    text_column: str = option("text", "column holding plain text (loss on every token)")
    completion_only_loss: bool = option(True, "loss on completion tokens only (False: prompt tokens too)")
    packing: bool = option(False, "pack several examples per row; attention never crosses documents")
    lr_scheduler: str = option("cosine", "learning-rate schedule after warmup: cosine, linear or constant")
    disable_dropout: bool = option(False, "turn the model's dropout off (InstructGPT kept 0.2 residual dropout for SFT)")

    def columns(self) -> ColumnMap:
        return ColumnMap(prompt=self.prompt_column, completion=self.completion_column,
                         messages=self.messages_column, text=self.text_column)


def _encode_all(records, tokenizer, cfg: SFTConfig):
    return list(encode_sft(tokenizer, records, cfg.max_length, completion_only=cfg.completion_only_loss,
                           on_error=cfg.on_error))


@torch.no_grad()
def evaluate_nll(model, examples, collator, batch_size: int, accelerator) -> float:
    """Mean completion-token NLL over `examples` (summed over tokens, then divided)."""
    model.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = {k: v.to(accelerator.device) for k, v in collator(examples[start:start + batch_size]).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       position_ids=batch["position_ids"], use_cache=False).logits
        loss, metrics = masked_nll_loss(logits, batch["input_ids"], batch["loss_mask"])
        n = int(metrics["tokens"])
        total += loss.item() * n
        tokens += n
    model.train()
    return total / max(tokens, 1)


def train_sft(cfg: SFTConfig) -> Path:
    if not cfg.model or not cfg.data:
        raise ValueError("sft needs --model and --data")
    out = Path(cfg.output_dir)
    accelerator = make_accelerator(cfg, out)
    checkpoints = open_stage(cfg, "sft", accelerator)
    if checkpoints.finished:  # the directory already holds the model these settings train
        return checkpoints.skip(accelerator)
    tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code,
                               chat_template=cfg.chat_template or None)
    train_records, eval_records = train_and_eval_records(load_sft, cfg, cfg.columns(), accelerator)
    train_examples = _encode_all(train_records, tokenizer, cfg)
    eval_examples = _encode_all(eval_records, tokenizer, cfg)
    if cfg.packing:
        train_examples = pack_examples(train_examples, cfg.max_length)
        collator = PackedCollator(tokenizer.pad_token_id, dtype=DTYPES[cfg.dtype])
    else:
        collator = SFTCollator(tokenizer.pad_token_id)
    eval_collator = SFTCollator(tokenizer.pad_token_id)

    lora = lora_options(cfg)
    model = load_causal_lm(cfg.model, tokenizer, dtype=cfg.dtype, dropout=not cfg.disable_dropout,
                           gradient_checkpointing=cfg.gradient_checkpointing, lora=lora,
                           trust_remote_code=cfg.trust_remote_code)
    plan = training_plan(cfg, len(train_examples), accelerator, [len(e) for e in train_examples])
    model, optimizer, scheduler = prepared_optimizer(accelerator, model, model.parameters(), cfg, len(plan),
                                                     cfg.lr_scheduler)
    total_steps = len(plan)

    logger = MetricsLogger(out / "metrics.jsonl", accelerator, stage="sft")
    start_step, _ = checkpoints.resume_training(accelerator, {"model": model}, optimizer, scheduler, logs=[logger])
    guard = NonFiniteGuard(cfg.max_nonfinite_steps, "sft", accelerator.print)
    bar = progress_bar(total_steps, "sft", cfg.progress and accelerator.is_local_main_process)
    bar.update(start_step)
    model.train()
    for step in range(start_step, total_steps):
        metrics = _optimizer_step(model, optimizer, scheduler, plan[step], train_examples, collator, cfg, accelerator,
                                  guard, step + 1)
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['loss/train']:.4f}")
        done = step + 1
        evaluated = bool(cfg.eval_every and done % cfg.eval_every == 0 and eval_examples)
        if evaluated:
            metrics["loss/val"] = evaluate_nll(model, eval_examples, eval_collator, cfg.per_device_batch_size, accelerator)
        if evaluated or done % cfg.log_every == 0 or done == total_steps:  # an evaluation is never dropped
            logger.log(done, metrics)
        if checkpoints.due(done, total_steps, accelerator):
            checkpoints.save_training(done, accelerator, {"model": model}, optimizer, scheduler)
    bar.close()
    if eval_examples:
        val = evaluate_nll(model, eval_examples, eval_collator, cfg.per_device_batch_size, accelerator)
        logger.log(total_steps, {"loss/val": val, "final": True})
    return checkpoints.finish_stage(accelerator, cfg, lambda out: save_pretrained_dir(
        accelerator.unwrap_model(model), tokenizer, out, merge_lora=not cfg.save_adapter_only))


def _optimizer_step(model, optimizer, scheduler, step_indices, examples, collator, cfg, accelerator, guard,
                    step: int) -> dict:
    """One optimizer step over `gradient_accumulation_steps` micro-batches; each
    micro-batch's mean loss is re-weighted by its share of the step's tokens."""
    rank, world = accelerator.process_index, accelerator.num_processes
    micro_batches = [idx[rank::world] for idx in step_indices]
    batches = [collator([examples[i] for i in mb]) for mb in micro_batches]
    local_tokens = sum(int(b["loss_mask"][:, 1:].sum()) for b in batches)
    global_tokens = accelerator.reduce(torch.tensor(float(local_tokens), device=accelerator.device), "sum").item()
    total_loss = 0.0
    for batch in batches:
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       position_ids=batch["position_ids"], use_cache=False).logits
        loss, metrics = masked_nll_loss(logits, batch["input_ids"], batch["loss_mask"])
        accelerator.backward(loss * step_share(float(metrics["tokens"]), global_tokens, world))
        total_loss += loss.item() * float(metrics["tokens"])
    if world > 1:  # the step's loss over every process's tokens, as one process would log it
        total_loss = accelerator.reduce(torch.tensor(total_loss, device=accelerator.device), "sum").item()
        local_tokens = global_tokens
    out = {"loss/train": total_loss / max(local_tokens, 1), "tokens": global_tokens}
    return {**out, **apply_step(accelerator, model, optimizer, scheduler, guard, step, {"loss": out["loss/train"]},
                                cfg.max_grad_norm)}
