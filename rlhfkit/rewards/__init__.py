"""Reward sources for RL: a reward model (normalised as stored with it), plain
Python functions `f(prompts, responses, **kwargs) -> scores`, or a weighted sum.
Ready-made reward functions live beside this file: verifiers.py (answer and format
checks); a new source is a scorer here or a function module there.

Every scorer is called with the batch's prompts and responses in both forms
(token ids and decoded text) and returns scores [B] as float32 on the caller's
device.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import numbers
import pkgutil
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from rlhfkit.config import did_you_mean
from rlhfkit.data.collate import pad_prompt_response
from rlhfkit.models.forward import reward_scores
from rlhfkit.models.loading import reward_normalisation


@dataclass
class ScoringBatch:
    prompt_ids: torch.Tensor  # [B,P] left-padded prompts
    prompt_mask: torch.Tensor  # [B,P]
    response_ids: torch.Tensor  # [B,A] responses, pad after the first EOS
    response_mask: torch.Tensor  # [B,A] 1 up to and including the first EOS
    prompts: list  # the prompts as the user gave them (strings or message lists)
    responses: list[str]  # decoded responses, EOS and padding removed
    eos: torch.Tensor  # [B] bool: the response ended with EOS
    metadata: list[dict]  # other columns of each prompt record


class RewardModelScorer:
    """Scores a response with a reward model (any form: a sequence classifier read at
    the last token, the EOS when there is one, a causal LM's scaled mean response
    log-likelihood, or that minus its frozen reference's), then applies the stored
    normalisation."""

    def __init__(self, model, policy_tokenizer, reward_tokenizer, normalise: bool = True, batch_size: int = 64):
        self.model, self.policy_tokenizer, self.reward_tokenizer = model, policy_tokenizer, reward_tokenizer
        self.mean, self.std = reward_normalisation(model) if normalise else (0.0, 1.0)
        self.batch_size = batch_size
        # Same vocabulary: reuse the policy's token ids; otherwise re-tokenise the text.
        self.same_tokens = policy_tokenizer.get_vocab() == reward_tokenizer.get_vocab()

    @torch.no_grad()
    def __call__(self, batch: ScoringBatch) -> torch.Tensor:
        if self.same_tokens:
            ids = torch.cat([batch.prompt_ids, batch.response_ids], dim=1)
            mask = torch.cat([batch.prompt_mask, batch.response_mask], dim=1)
            target = torch.cat([torch.zeros_like(batch.prompt_mask), batch.response_mask], dim=1)
        else:
            ids, mask, target = self._retokenise(batch)
        device = batch.prompt_ids.device
        ids, mask, target = ids.to(device), mask.to(device), target.to(device)
        rows = range(0, ids.shape[0], self.batch_size)
        raw = torch.cat([reward_scores(self.model, ids[i:i + self.batch_size], mask[i:i + self.batch_size],
                                       target[i:i + self.batch_size]) for i in rows])
        return (raw - self.mean) / self.std

    def _retokenise(self, batch: ScoringBatch):
        from rlhfkit.data.tokenize import render_prompt

        tok = self.reward_tokenizer
        pairs = [(tok(render_prompt(tok, prompt), add_special_tokens=False)["input_ids"],
                  tok(response, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if eos else []))
                 for prompt, response, eos in zip(batch.prompts, batch.responses, batch.eos.tolist())]
        return pad_prompt_response(pairs, tok.pad_token_id, side="left")


class FunctionScorer:
    """Wraps `f(prompts, responses, **kwargs) -> list[float]`. Keyword arguments the
    function declares among `terminated` (list[bool]: ended with EOS), `metadata`
    (the prompt records' other columns), `prompt_ids`, `response_ids` are passed."""

    OPTIONAL = ("terminated", "metadata", "prompt_ids", "response_ids")

    def __init__(self, fn: Callable):
        self.fn = fn
        params = inspect.signature(fn).parameters
        takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        self.extra = [k for k in self.OPTIONAL if takes_all or k in params]
        self.name = getattr(fn, "__name__", type(fn).__name__)

    def __call__(self, batch: ScoringBatch) -> torch.Tensor:
        available = {"terminated": batch.eos.tolist(), "metadata": batch.metadata,
                     "prompt_ids": batch.prompt_ids, "response_ids": batch.response_ids}
        try:
            scores = self.fn(batch.prompts, batch.responses, **{k: available[k] for k in self.extra})
        except Exception as e:  # the user's code: name the function and where it failed, in one line
            raise RewardFunctionError(f"reward function {self.name} raised {type(e).__name__}: {e}"
                                      f"{_user_frame(e)}") from e
        return check_scores(scores, len(batch.responses), f"reward function {self.name}",
                            batch.prompt_ids.device)


class RewardFunctionError(ValueError):
    """A user's reward function failed or returned something other than B finite numbers."""


def _user_frame(e: BaseException) -> str:
    ours = {Path(__file__).resolve(), Path(pkgutil.__file__).resolve()}
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if not f.filename.startswith("<") and Path(f.filename).resolve() not in ours]
    return f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def check_scores(scores, n: int, who: str, device=None) -> torch.Tensor:
    """`scores` as a float32 tensor [n], or RewardFunctionError saying what is wrong: a
    list, tuple, array or tensor of n finite real numbers is expected ([n, 1] is not
    flattened: a [n/2, 2] list would be silently misread)."""
    if scores is None:
        raise RewardFunctionError(f"{who} returned None; expected a list of {n} numbers, one per response")
    if isinstance(scores, (str, bytes, dict)) or isinstance(scores, numbers.Number):
        raise RewardFunctionError(f"{who} returned a {type(scores).__name__}; expected a list of {n} numbers, "
                                  "one per response")
    if isinstance(scores, (list, tuple)):
        bad = next(((i, v) for i, v in enumerate(scores)  # bools count as 0/1; 0-d tensors and arrays as numbers
                    if not isinstance(v, numbers.Real) and getattr(v, "ndim", None) != 0), None)
        if bad is not None:
            raise RewardFunctionError(f"{who} returned {type(bad[1]).__name__} {_short(bad[1])} at position "
                                      f"{bad[0]}; expected a number per response")
    try:
        tensor = torch.as_tensor(scores, dtype=torch.float32, device=device)
    except (TypeError, ValueError, RuntimeError) as e:
        raise RewardFunctionError(f"{who} returned {type(scores).__name__} that is not a list of numbers "
                                  f"({str(e).splitlines()[0][:120]})") from None
    if tensor.dim() != 1:
        raise RewardFunctionError(f"{who} returned scores of shape {list(tensor.shape)}; expected [{n}], "
                                  "one number per response")
    if tensor.numel() != n:
        raise RewardFunctionError(f"{who} returned {tensor.numel()} scores for {n} responses")
    bad = (~torch.isfinite(tensor)).nonzero().flatten()
    if bad.numel():
        i = int(bad[0])
        raise RewardFunctionError(f"{who} returned a non-finite score ({float(tensor[i])}) for response {i} "
                                  f"({bad.numel()} of {n} non-finite)")
    return tensor


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class WeightedReward:
    """sum_i w_i * scorer_i(batch); each component is also reported on its own.

    The weights are keyed by the rewards' names ("rm" for a reward model, a
    function's name), so a weight cannot land on the wrong reward when the rewards
    are listed in another order; a reward without a weight has weight 1."""

    def __init__(self, scorers: Sequence[Callable], weights: Mapping[str, float] | None = None,
                 names: Sequence[str] | None = None):
        if not scorers:
            raise ValueError("PPO needs a reward: a reward model, a reward function, or both")
        self.scorers = list(scorers)
        self.names = list(names) if names else [f"reward_{i}" for i in range(len(self.scorers))]
        if len(self.names) != len(self.scorers):
            raise ValueError(f"{len(self.names)} reward names for {len(self.scorers)} rewards")
        twice = sorted({n for n in self.names if self.names.count(n) > 1})
        if twice:
            raise ValueError(f"two rewards are named {twice[0]!r}: their weights and logged scores would mix; "
                             "give each reward function its own name")
        weights = dict(weights or {})
        unknown = [n for n in weights if n not in self.names]
        if unknown:
            raise ValueError(f"reward_weights: no reward is named {unknown[0]!r}; the rewards are "
                             f"{', '.join(self.names)}{did_you_mean(unknown[0], self.names)}")
        if not all(isinstance(w, numbers.Real) and math.isfinite(w) for w in weights.values()):
            raise ValueError(f"reward weights must be finite numbers, got {weights}")
        self.weights = [float(weights.get(name, 1.0)) for name in self.names]

    def __call__(self, batch: ScoringBatch) -> tuple[torch.Tensor, dict[str, float]]:
        total, parts = None, {}
        for name, weight, scorer in zip(self.names, self.weights, self.scorers):
            s = scorer(batch)
            if not isinstance(scorer, FunctionScorer):  # reward models: the same checks
                s = check_scores(s, len(batch.responses), f"reward {name}", batch.prompt_ids.device)
            parts[f"objective/scores_{name}"] = float(s.mean())
            total = weight * s if total is None else total + weight * s
        return total, parts


def import_function(spec: str) -> Callable:
    """'package.module:function' (pkgutil.resolve_name; also 'module:Class.method') or a
    path 'file.py:function' -> the callable."""
    if ":" not in spec:
        raise ValueError(f"reward function {spec!r}: write it as module:function or path/to/file.py:function")
    module_name, attr = spec.rsplit(":", 1)
    from_file = module_name.endswith(".py")
    if from_file and not Path(module_name).is_file():
        raise ValueError(f"reward function {spec!r}: no such file {module_name}")
    try:
        fn = getattr(_import_file(module_name), attr, None) if from_file else pkgutil.resolve_name(spec)
    except Exception as e:  # ModuleNotFoundError, SyntaxError, an error at the module's top level, a bad name
        if not (isinstance(e, AttributeError) and module_name in sys.modules):
            raise RewardFunctionError(f"reward function {spec!r}: cannot import {module_name}: {type(e).__name__}: "
                                      f"{e}{'' if isinstance(e, ImportError) else _user_frame(e)}") from e
        fn = None  # the module was imported and has no such attribute
    if not callable(fn):
        raise ValueError(f"reward function {spec!r}: {module_name} has no callable {attr!r}")
    return fn


def _import_file(path: str):
    spec = importlib.util.spec_from_file_location("rlhfkit_user_reward", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"no module loader for {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
