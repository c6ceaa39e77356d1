"""The reward model's forms and options on two tiny cases (a tiny Llama, hidden 64, 2 seeds
each; minutes on one CPU thread). Not the world: a check that each option does what it is for.

1. The prior. A start model fine-tuned on lowercase answers ("Say cat then dog." -> "cat dog.");
   comparisons ask for capitals and prefer the same answer in capitals. One epoch of 40 pairs at
   learning rate 1e-4 (5 steps); held-out accuracy on 16 pairs, per form and head option.
2. Length. Responses are a few words then "gold." (good) or "blue." (bad). `bias`: a labeler sees
   1.5 x good + 0.35 x words + logistic noise, length independent of quality. `confound`: the good
   response always wins, and in training it is the longer one 85% of the time. Held out: 200 pairs
   where length is independent of quality; accuracy against quality and corr(score, words), with
   and without --length_debias 1.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/rm_forms_tiny.py /tmp/rm_forms_tiny
"""
import json
import math
import random
import statistics
import sys
from pathlib import Path

from rlhfkit.experiment.reward_figures import reward_model_scores
from rlhfkit.models.loading import load_reward_model, load_tokenizer
from rlhfkit.testing import save_tiny_model
from rlhfkit.trainers.reward import RewardConfig, train_reward_model
from rlhfkit.trainers.sft import SFTConfig, train_sft

WORDS = ["cat", "dog", "red", "fig", "owl", "pear", "lime", "goat"]
SEEDS = (0, 1)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def final_accuracy(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("final")][-1]["val/accuracy"]


def prior_case(root: Path, base: str) -> dict:
    combos = [(a, b) for a in WORDS for b in WORDS if a != b]
    random.Random(0).shuffle(combos)
    held, train = combos[:16], combos[16:]
    sft = root / "sft"
    sft_rows = [{"prompt": [{"role": "user", "content": f"Say {a} then {b}."}], "completion": f"{a} {b}."}
                for a, b in train]
    train_sft(SFTConfig(model=base, data=write_jsonl(root / "sft.jsonl", sft_rows * 3), output_dir=str(sft),
                        num_epochs=10, learning_rate=3e-3, per_device_batch_size=16, progress=False))
    pref = lambda cs: [{"prompt": f"Say {a} then {b}. Answer in capital letters.", "chosen": f"{a} {b}.".upper(),
                        "rejected": f"{a} {b}."} for a, b in cs]
    common = dict(data=write_jsonl(root / "caps.jsonl", pref(train)), eval_data=write_jsonl(root / "caps_eval.jsonl",
                  pref(held)), num_epochs=1, learning_rate=1e-4, per_device_batch_size=8, progress=False,
                  normalize_on="none", log_every=1)
    runs = {"mean_logprob": dict(reward_form="mean_logprob"), "logratio": dict(reward_form="logratio"),
            "head": dict(reward_form="head"), "head, 3 epochs": dict(reward_form="head", num_epochs=3),
            "head, head_learning_rate 1e-2": dict(reward_form="head", head_learning_rate=1e-2),
            "head from the mean_logprob RM": dict(reward_form="head")}
    result = {}
    for name, options in runs.items():
        for seed in SEEDS:
            start = str(root / f"prior-0-{seed}") if name == "head from the mean_logprob RM" else str(sft)
            out = train_reward_model(RewardConfig(**{**common, **options}, model=start, seed=seed,
                                                  output_dir=str(root / f"prior-{list(runs).index(name)}-{seed}")))
            result.setdefault(name, []).append(round(final_accuracy(out), 3))
    return result


def length_case(root: Path, base: str) -> dict:
    rng = random.Random(0)

    def response(good, n):
        return " ".join(rng.choice(WORDS) for _ in range(n)) + (" gold." if good else " blue.")

    def biased(n):
        rows = []
        for _ in range(n):
            a, b = (rng.random() < 0.5, rng.randint(1, 8)), (rng.random() < 0.5, rng.randint(1, 8))
            u = 1.5 * (a[0] - b[0]) + 0.35 * (a[1] - b[1]) + math.log(1 / rng.random() - 1)
            w, l = (a, b) if u > 0 else (b, a)
            rows.append({"prompt": f"Say something about {rng.choice(WORDS)}.", "chosen": response(*w),
                         "rejected": response(*l)})
        return rows

    def confounded(n, share):
        rows = []
        for _ in range(n):
            short, long_ = rng.randint(1, 3), rng.randint(5, 8)
            longer = rng.random() < share
            rows.append({"prompt": f"Say something about {rng.choice(WORDS)}.",
                         "chosen": response(True, long_ if longer else short),
                         "rejected": response(False, short if longer else long_)})
        return rows

    held = confounded(200, 0.5)  # the good one first; length independent of quality
    cases = {"bias": biased(600), "confound": confounded(400, 0.85)}
    prompts = [[{"role": "user", "content": r["prompt"]}] for r in held for _ in (0, 1)]
    ys = [r[k] for r in held for k in ("chosen", "rejected")]
    result = {}
    for case, rows in cases.items():
        data = write_jsonl(root / f"{case}.jsonl", rows)
        for form in ("head", "logratio"):
            for debias in (0.0, 1.0):
                for seed in SEEDS:
                    out = train_reward_model(RewardConfig(
                        model=base, data=data, eval_fraction=0.0, reward_form=form, length_debias=debias,
                        num_epochs=2, learning_rate=1e-3, per_device_batch_size=8, seed=seed, progress=False,
                        log_every=50, output_dir=str(root / f"{case}-{form}-{debias}-{seed}")))
                    tok = load_tokenizer(str(out))
                    s = reward_model_scores(load_reward_model(str(out), tok).eval(), tok, prompts, ys, [True] * len(ys))
                    accuracy = sum(s[2 * i] > s[2 * i + 1] for i in range(len(held))) / len(held)
                    corr = statistics.correlation(s, [len(y.split()) for y in ys])
                    result.setdefault(f"{case}, {form}, length_debias {debias:g}", []).append(
                        {"accuracy": round(accuracy, 3), "corr_length": round(corr, 3)})
    return result


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/rm_forms_tiny")
    root.mkdir(parents=True, exist_ok=True)
    base = save_tiny_model(root / "base", hidden=64)
    print(json.dumps({"prior": prior_case(root, base), "length": length_case(root, base)}, indent=1))
