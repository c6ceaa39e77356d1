"""Pretraining of the instruction world's base models (docs/world.md, "Web text").

`rlhfkit world pretrain` (`pretrain_world`) trains, from random initialisation
and on the generated web text (`make_webtext`), two Llama-style base models:

- base-small: hidden 128, 4 layers, 4 heads, intermediate 352, tied embeddings
  (about 0.87M parameters): the starting point of the SFT and RLHF policies;
- base-large: hidden 256, 10 layers, 4 heads, intermediate 704, tied (about
  8.1M parameters, >= 8x base-small): the world's "GPT-3".

and, in a run of its own (`--models judge`), the AI feedback model `judge`:
base-large's continued pretraining on JUDGE_MIX, web text in which half the
documents are critiques that name their checks before the verdict
(rlhfkit.world.webtext). base-small and base-large are untouched by it.

Steps: (1) a byte-level BPE tokenizer (vocab 512, digits split, EOS
"<|endoftext|>", pad "<|pad|>", DEFAULT_CHAT_TEMPLATE) trained on the web text;
(2) each document is its own plain-`text` record, so the SFT trainer trains on
every token and appends one EOS per document: EOS marks the end of a document
and the end of a chat turn that stops cleanly, while run-on chat turns (60% of
assistant turns) have none, which is what makes the base models misaligned;
(3) random init with the seed, `train_sft` (completion_only_loss=False, packing
without cross-document attention, cosine schedule with warmup); (4) the final
Hugging Face directories (fp32 safetensors, tokenizer with chat template) go to
`output_dir/base-small` and `output_dir/base-large`, each with `pretrain.json`
holding the figures of its run.

Also here: the held-out web text every stage of the world is measured on
(`webtext_eval_texts`, `webtext_loss`: the alignment tax) and a behaviour check
of a base model under the gold judge (`judge_base_model`).
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from rlhfkit.config import option
from rlhfkit.io import write_json, write_jsonl
from rlhfkit.world.webtext import JUDGE_MIX, make_webtext

# Held-out web text: its own seed, never the training seed (disjoint documents).
WEBTEXT_EVAL_SEED = 1_000_003
WEBTEXT_EVAL_DOCS = 500

JUDGE = "judge"  # the AI feedback model: continued pretraining, not an architecture of its own

# Architectures (LlamaConfig keyword arguments).
MODEL_SPECS: dict[str, dict] = {
    "small": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                  intermediate_size=352),
    "large": dict(hidden_size=256, num_hidden_layers=10, num_attention_heads=4, num_key_value_heads=4,
                  intermediate_size=704),
}
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
               "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


@dataclass
class PretrainConfig:
    """Pretrain the world's base models (base-small, base-large) on generated web text."""

    output_dir: str = option("rlhfkit/world/checkpoints", "where base-small/ and base-large/ are written")
    work_dir: str = option("runs/world-pretrain", "scratch: corpus JSONL, tokenizer, initial models, training logs")
    seed: int = option(0, "seed of the web text, the initialisation and the data order")
    n_docs: int = option(20000, "web-text training documents (one fresh pass is better than many epochs)")
    n_eval_docs: int = option(WEBTEXT_EVAL_DOCS, "held-out web-text documents (seed WEBTEXT_EVAL_SEED) for the validation loss")
    tokenizer_docs: int = option(20000, "documents the BPE tokenizer is trained on (the first of the corpus)")
    vocab_size: int = option(512, "BPE vocabulary size (special tokens included)")
    max_length: int = option(256, "context length = max_position_embeddings; longer documents are dropped")
    models: str = option("small,large", "which base models to train, comma-separated: small, large")
    small_epochs: float = option(1.0, "passes over the corpus for base-small (fractions allowed)")
    small_lr: float = option(2e-3, "peak learning rate of base-small")
    small_batch_size: int = option(4, "packed rows of max_length tokens per optimizer step, base-small")
    large_epochs: float = option(1.0, "passes over the corpus for base-large (fractions allowed)")
    large_lr: float = option(1e-3, "peak learning rate of base-large")
    large_batch_size: int = option(4, "packed rows of max_length tokens per optimizer step, base-large")
    warmup_ratio: float = option(0.05, "fraction of steps of linear warmup before the cosine decay")
    weight_decay: float = option(0.01, "AdamW weight decay")
    packing: bool = option(True, "pack documents into max_length rows (no attention across documents)")
    num_threads: int = option(1, "torch CPU threads (1: the two models train side by side, one per core)")
    checkpoint_every: int = option(50, "save a resumable checkpoint every N optimizer steps (0: never mid-run)")
    resume: bool = option(False, "continue interrupted runs from their latest checkpoint in work_dir (same config)")
    init_large: str = option("", "continued pretraining: start base-large from this model directory (and use its "
                                 "tokenizer) instead of random weights; give a new --seed for fresh documents")
    init_small: str = option("", "the same for base-small")
    init_judge: str = option("rlhfkit/world/checkpoints/base-large", "--models judge: the model the AI judge continues "
                             "from (it keeps that model's tokenizer and architecture)")
    judge_docs: int = option(12000, "--models judge: documents of the judge's reading (JUDGE_MIX: half critiques)")
    judge_corpus_seed: int = option(1, "--models judge: seed of its documents (not the base models' seed 0, so the "
                                       "tasks it reads are new to it)")
    judge_epochs: float = option(1.0, "--models judge: passes over its documents")
    judge_lr: float = option(5e-4, "--models judge: peak learning rate")
    judge_batch_size: int = option(4, "--models judge: packed rows per optimizer step")
    judge_prompts: int = option(200, "after training, sample this many eval-split prompts and score them (0: skip)")
    judge_seed: int = option(0, "seed of those prompts and samples (fixed, so runs with other corpus seeds compare)")
    progress: bool = option(False, "show progress bars")


# ----------------------------------------------------------------------------- held-out web text


def webtext_eval_texts(n: int = WEBTEXT_EVAL_DOCS, seed: int = WEBTEXT_EVAL_SEED) -> list[str]:
    """The held-out web text the world measures every model's web-text loss on."""
    return make_webtext(n, seed)


@torch.no_grad()
def webtext_loss(model, tokenizer, texts: list[str], *, batch_size: int = 32, max_length: int = 256) -> float:
    """Mean next-token NLL (nats/token) of `model` on `texts`, each document
    followed by EOS (as in pretraining) and truncated to `max_length` tokens;
    every token but each document's first is predicted. Batched, no grad."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    seqs = []
    for t in texts:
        # cut by the tokenizer: the same first tokens, without transformers' warning that a
        # sequence longer than the model's maximum "will result in indexing errors"
        ids = list(tokenizer(t, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"])
        if not ids or ids[-1] != eos:
            ids.append(eos)
        seqs.append(ids[:max_length])
    seqs.sort(key=len)  # less padding
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start:start + batch_size]
        T = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), T), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), T), dtype=torch.long)
        for i, s in enumerate(chunk):
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
        ids, mask = ids.to(device), mask.to(device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, :-1].float()
        target, tmask = ids[:, 1:], mask[:, 1:].bool()
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                reduction="none").view_as(target)
        total += nll[tmask].sum().item()
        count += int(tmask.sum())
    if was_training:
        model.train()
    return total / max(count, 1)


# ----------------------------------------------------------------------------- behaviour under the judge


@torch.no_grad()
def judge_base_model(model_dir: str | Path, n_prompts: int = 200, seed: int = 0, *, max_new_tokens: int = 48,
                     temperature: float = 1.0, batch_size: int = 100, num_samples_shown: int = 8) -> dict:
    """Sample a model on eval-split instructions rendered with its chat template
    (pure sampling: temperature 1, no top-k/top-p, `max_new_tokens`) and score the
    responses with the gold judge. Returns mean gold, exact, correct, terminated,
    polite, concise, likert, mean response length (tokens) and a few samples."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhfkit.generation.samplers import LocalSampler
    from rlhfkit.world.judge import judge_task
    from rlhfkit.world.splits import make_split

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model.eval()
    tasks = make_split("eval", n_prompts, seed)
    gen = LocalSampler(model, tok.eos_token_id, tok.pad_token_id, max_new_tokens, temperature)
    torch.manual_seed(seed)
    rows = []
    for start in range(0, len(tasks), batch_size):
        chunk = tasks[start:start + batch_size]
        prompts = [tok.apply_chat_template([{"role": "user", "content": t.instruction}], tokenize=False,
                                           add_generation_prompt=True) for t in chunk]
        enc = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        P = max(len(e) for e in enc)
        ids = torch.full((len(enc), P), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(enc), P), dtype=torch.long)
        for i, e in enumerate(enc):  # left padding
            ids[i, P - len(e):] = torch.tensor(e)
            mask[i, P - len(e):] = 1
        g = gen.generate(ids, mask)
        for i, t in enumerate(chunk):
            n = int(g.response_mask[i].sum())
            resp_ids = [x for x in g.response_ids[i, :n].tolist() if x != tok.eos_token_id]
            text = tok.decode(resp_ids, skip_special_tokens=False)
            r = judge_task(t, text, bool(g.eos[i]))
            rows.append((t, text, r, n))
    k = max(len(rows), 1)
    out = {
        "model": str(model_dir), "n_prompts": len(rows), "seed": seed, "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "gold": sum(r.gold for _, _, r, _ in rows) / k,
        "likert": sum(r.likert for _, _, r, _ in rows) / k,
        "correct": sum(r.correct for _, _, r, _ in rows) / k,
        "exact": sum(r.exact for _, _, r, _ in rows) / k,
        "follows": sum(r.follows for _, _, r, _ in rows) / k,
        "follows_constrained": (sum(r.follows for t, _, r, _ in rows if t.constraint)
                                / max(1, sum(1 for t, *_ in rows if t.constraint))),
        "terminated": sum(r.terminated for _, _, r, _ in rows) / k,
        "polite": sum(r.polite for _, _, r, _ in rows) / k,
        "concise": sum(r.concise for _, _, r, _ in rows) / k,
        "exact_and_terminated": sum(r.exact and r.terminated for _, _, r, _ in rows) / k,
        "mean_length": sum(n for *_, n in rows) / k,
        "samples": [{"instruction": t.instruction, "response": text, "exact": r.exact, "follows": r.follows,
                     "terminated": r.terminated}
                    for t, text, r, _ in rows[:num_samples_shown]],
    }
    return out


@torch.no_grad()
def format_imitation(model_dir: str | Path, n_prompts: int = 100, seed: int = 0, *, max_new_tokens: int = 48,
                     batch_size: int = 100) -> dict:
    """Can a base model write each format when shown an example of it? For each
    format (plain and the four of the constraints) the chat prompt holds one
    example exchange answered correctly in that format, then a new plain
    instruction; the figure is the share of sampled answers (T = 1) whose first
    line carries exactly that format. World version 2 asks that a base model
    can (the web text shows every format) but does not match formats to
    requests (`judge_base_model`'s follows_constrained)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhfkit.experiment.sampling import sample_responses
    from rlhfkit.world.judge import read_formats
    from rlhfkit.world.splits import make_split
    from rlhfkit.world.tasks import CONSTRAINTS, apply_format, constrain

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    tasks = [constrain(t, None) for t in make_split("eval", 2 * n_prompts, seed) if t.family != "count"]
    examples, questions = tasks[:n_prompts], tasks[n_prompts:2 * n_prompts]
    rates = {}
    for fmt in (None, *CONSTRAINTS):
        prompts = [[{"role": "user", "content": ex.instruction},
                    {"role": "assistant", "content": apply_format(ex.answer, fmt)},
                    {"role": "user", "content": q.instruction}] for ex, q in zip(examples, questions)]
        s = sample_responses(model, tok, prompts, temperature=1.0, max_new_tokens=max_new_tokens,
                             batch_size=batch_size, seed=seed)
        want = () if fmt is None else (fmt,)
        rates[fmt or "plain"] = sum(read_formats(y)[0] == want for y in s.texts) / len(s.texts)
    return {"prompts": len(examples), "seed": seed, "rate": rates}


# ----------------------------------------------------------------------------- pretraining


def count_parameters(model) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def build_base_model(kind: str, tokenizer, max_length: int, seed: int, spec: dict | None = None):
    """A randomly initialised Llama base model of `kind` ("small" or "large")."""
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = spec if spec is not None else MODEL_SPECS[kind]
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=max_length, tie_word_embeddings=True,
                         bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         rms_norm_eps=1e-5, attention_dropout=0.0, **spec)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.bos_token_id = None
    return model


def _copy_model_dir(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for name in MODEL_FILES:
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)


def pretrain_world(cfg: PretrainConfig, *, _specs: dict[str, dict] | None = None) -> Path:
    """Train the requested base models; returns `output_dir`. Each model dir gets
    a `pretrain.json` with its figures (parameters, tokens seen, wall time,
    validation loss) and the config that produced it."""
    from transformers import AutoModelForCausalLM

    from rlhfkit.models.loading import load_tokenizer, save_pretrained_dir
    from rlhfkit.models.tokenizer import train_bpe_tokenizer
    from rlhfkit.trainers.sft import SFTConfig, train_sft

    specs = dict(_specs or MODEL_SPECS)
    kinds = [k.strip() for k in cfg.models.split(",") if k.strip()]
    for k in kinds:
        if k not in specs and k != JUDGE:
            raise ValueError(f"unknown base model {k!r}; choose from {sorted(specs) + [JUDGE]}")
    if JUDGE in kinds and kinds != [JUDGE]:
        raise ValueError("--models judge reads its own corpus from its own init: train it in a run of its own")
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    out, work = Path(cfg.output_dir), Path(cfg.work_dir)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    if kinds == [JUDGE]:  # continued pretraining on the judge's reading
        texts = make_webtext(cfg.judge_docs, cfg.judge_corpus_seed, mix=JUDGE_MIX)
    else:
        texts = make_webtext(cfg.n_docs, cfg.seed)
    eval_texts = webtext_eval_texts(cfg.n_eval_docs)
    inits = {k: getattr(cfg, f"init_{k}", "") for k in kinds}
    init_dirs = {d for d in inits.values() if d}
    if len(init_dirs) > 1 or (init_dirs and len(init_dirs) != len(kinds)):
        raise ValueError("continued pretraining: give init_* for every model trained in this run, all sharing one "
                         "tokenizer (or train the models in separate runs)")
    if init_dirs:  # continued pretraining keeps the tokenizer the models were trained with
        tokenizer = load_tokenizer(next(iter(init_dirs)))
    else:
        tokenizer = train_bpe_tokenizer(texts[: cfg.tokenizer_docs], cfg.vocab_size, model_max_length=cfg.max_length)
    tokenizer.save_pretrained(work / "tokenizer")
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts]  # + EOS
    kept = [t for t, n in zip(texts, lengths) if n <= cfg.max_length]
    corpus_tokens = sum(n for n in lengths if n <= cfg.max_length)
    write_jsonl(work / "webtext.jsonl", [{"text": t} for t in kept])
    print(f"[pretrain] corpus: {len(kept)}/{len(texts)} docs <= {cfg.max_length} tokens, {corpus_tokens} tokens "
          f"(+EOS), tokenizer {len(tokenizer)} tokens, {time.time() - t0:.0f}s", flush=True)

    for kind in kinds:
        name = JUDGE if kind == JUDGE else f"base-{kind}"
        epochs = getattr(cfg, f"{kind}_epochs", 1.0)
        lr = getattr(cfg, f"{kind}_lr", 1e-3)
        bs = getattr(cfg, f"{kind}_batch_size", 16)
        init_dir, run_dir = work / f"{name}-init", work / name
        if inits[kind]:
            model = AutoModelForCausalLM.from_pretrained(inits[kind], dtype=torch.float32)
        else:
            model = build_base_model(kind, tokenizer, cfg.max_length, cfg.seed, specs[kind])
        n_params = count_parameters(model)
        init_loss = webtext_loss(model, tokenizer, eval_texts, max_length=cfg.max_length)
        save_pretrained_dir(model, tokenizer, init_dir)
        del model
        resumed = cfg.resume and any((run_dir / "checkpoints").glob("step-*"))
        if run_dir.exists() and not resumed:
            shutil.rmtree(run_dir)  # no resuming from a stale run unless asked
        sft = SFTConfig(model=str(init_dir), data=str(work / "webtext.jsonl"), output_dir=str(run_dir),
                        seed=cfg.seed, learning_rate=lr, weight_decay=cfg.weight_decay,
                        warmup_ratio=cfg.warmup_ratio, per_device_batch_size=bs, num_epochs=epochs,
                        max_length=cfg.max_length, eval_fraction=0.0, log_every=10, on_error="skip",
                        completion_only_loss=False, packing=cfg.packing, lr_scheduler="cosine",
                        disable_dropout=True, num_threads=cfg.num_threads, progress=cfg.progress,
                        checkpoint_every=cfg.checkpoint_every, keep_checkpoints=1)
        print(f"[pretrain] {name}: {n_params} parameters, lr {lr}, batch {bs}, epochs {epochs}, "
              f"initial val loss {init_loss:.4f}", flush=True)
        t1 = time.time()
        train_sft(sft)
        wall = time.time() - t1
        model = AutoModelForCausalLM.from_pretrained(str(run_dir), dtype=torch.float32)
        val = webtext_loss(model, tokenizer, eval_texts, max_length=cfg.max_length)
        log = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
        train_losses = [r.get("loss/train") for r in log if r.get("loss/train") is not None]
        steps = max((int(r.get("step", 0)) for r in log), default=0)
        final = out / name
        _copy_model_dir(run_dir, final)
        figures = {
            "name": name, "init_from": inits[kind] or "random", "parameters": n_params,
            "architecture": specs.get(kind, "as init_from"),
            "corpus_docs": len(kept), "corpus_tokens": corpus_tokens, "epochs": epochs,
            "tokens_seen": int(round(corpus_tokens * epochs)), "optimizer_steps": steps,
            "wall_time_s": round(wall, 1), "resumed": bool(resumed), "val_loss_init": round(init_loss, 4), "val_loss": round(val, 4),
            "val_docs": len(eval_texts), "val_seed": WEBTEXT_EVAL_SEED,
            "train_loss_first": train_losses[0] if train_losses else None,
            "train_loss_last": train_losses[-1] if train_losses else None,
            "torch_threads": torch.get_num_threads(), "config": asdict(cfg),
        }
        if cfg.judge_prompts > 0:
            figures["judge"] = judge_base_model(final, cfg.judge_prompts, cfg.judge_seed)
            figures["format_imitation"] = format_imitation(final, min(cfg.judge_prompts, 100), cfg.judge_seed)
        if inits[kind] and (Path(inits[kind]) / "pretrain.json").exists():  # the lineage of continued pretraining
            figures["previous"] = json.loads((Path(inits[kind]) / "pretrain.json").read_text())
        write_json(final / "pretrain.json", figures, indent=2)
        size = (final / "model.safetensors").stat().st_size
        print(f"[pretrain] {name}: done in {wall:.0f}s, {steps} steps, val loss {init_loss:.4f} -> {val:.4f}, "
              f"{size / 1e6:.1f} MB -> {final}", flush=True)
        del model
    return out

