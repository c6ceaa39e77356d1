"""Prompt rendering, tokenisation and loss masks.

The prompt and the completion are tokenised SEPARATELY and concatenated, so the
training tokens are exactly what generation sees: the prompt tokenised alone, then
the response tokens generated after it. (Tokenising prompt + completion as one
string lets BPE merge across the boundary, so the model would be trained on
token sequences it never produces.)

BOS rule: the BOS token is prepended when the tokenizer has one *and adds it by
default* (``tokenizer("x")`` starts with it: Llama, Mistral, Gemma), unless the
rendered prompt already starts with it (chat templates that write ``{{ bos_token }}``).
Tokenizers that define a BOS but never add it (GPT-2, Pythia: BOS = EOS) get none,
which is again what generation with the tokenizer's defaults sees.

The EOS token is appended after every completion (unless the completion already
ends with it) so the policy learns to stop. Nothing is ever truncated: a sequence
longer than `max_length` raises :class:`DataError` naming its source and lengths;
the batch encoders (`encode_sft`, ...) can skip such records with ``on_error="skip"``.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from rlhfkit.data.errors import DataError, DataList, SkipReport, check_on_error, split_source, warn_skipped
from rlhfkit.data.records import (
    LabeledRecord,
    PreferenceRecord,
    Prompt,
    PromptRecord,
    RankingRecord,
    SFTRecord,
)

__all__ = [
    "EncodedExample",
    "render_prompt",
    "prompt_token_ids",
    "encode_prompt",
    "encode_prompt_completion",
    "encode_ranking",
    "encode_sft",
    "encode_rankings",
    "encode_prompts",
    "encode_labeled",
]

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class EncodedExample:
    """One tokenised prompt + completion.

    `loss_mask[t] == 1` marks token t as a training target (predicted from the
    logits at t - 1); by default exactly the completion tokens and the EOS.
    """

    input_ids: list[int]  # [T]
    loss_mask: list[int]  # [T] 1 on target tokens, 0 elsewhere
    prompt_length: int  # number of prompt tokens (BOS included); input_ids[prompt_length:] is the completion

    def __len__(self) -> int:
        return len(self.input_ids)


def render_prompt(tokenizer, prompt: Prompt, source: str = "") -> str:
    """Message lists go through the tokenizer's chat template with the generation
    prompt appended; strings are used verbatim."""
    if isinstance(prompt, str):
        return prompt
    if not isinstance(prompt, list):
        raise DataError(f"expected a prompt string or a list of messages, got {type(prompt).__name__}",
                        **split_source(source), field="prompt", reason="type")
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(
            "the prompt is a list of messages but the tokenizer has no chat template; call "
            "rlhfkit.models.tokenizer.prepare_tokenizer(tokenizer) or set tokenizer.chat_template",
            **split_source(source), field="prompt", reason="template",
        )
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    if not isinstance(text, str):  # pragma: no cover - defensive against API changes
        raise TypeError(f"apply_chat_template(tokenize=False) returned {type(text).__name__}, expected str")
    return text


_BOS_CACHE: "weakref.WeakKeyDictionary[Any, tuple[int | None, bool]]" = weakref.WeakKeyDictionary()


def _default_bos(tokenizer) -> int | None:
    """The BOS id when the tokenizer adds one by default, else None."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return None
    try:
        cached = _BOS_CACHE.get(tokenizer)
    except TypeError:  # not weak-referenceable
        cached = None
    if cached is not None and cached[0] == bos:
        return bos if cached[1] else None
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    adds = bool(ids) and ids[0] == bos
    try:
        _BOS_CACHE[tokenizer] = (bos, adds)
    except TypeError:
        pass
    return bos if adds else None


def _tokens(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def prompt_token_ids(tokenizer, prompt: Prompt, source: str = "") -> list[int]:
    """Rendered prompt tokens with the BOS rule applied (no length check)."""
    ids = _tokens(tokenizer, render_prompt(tokenizer, prompt, source))
    bos = _default_bos(tokenizer)
    if bos is not None and (not ids or ids[0] != bos):
        ids.insert(0, bos)
    return ids


def _check_length(n: int, max_length: int | None, source: str, detail: str) -> None:
    if max_length is not None and n > max_length:
        raise DataError(
            f"sequence of {n} tokens ({detail}) exceeds max_length={max_length}; it is not truncated: "
            "raise max_length or drop it (on_error='skip')",
            **split_source(source), reason="too_long",
        )


def encode_prompt(tokenizer, prompt: Prompt, max_length: int | None, source: str = "") -> list[int]:
    """RL prompt tokens (same rendering and BOS rule as training)."""
    ids = prompt_token_ids(tokenizer, prompt, source)
    if not ids:
        raise DataError("the prompt encodes to no tokens", **split_source(source), field="prompt", reason="empty")
    _check_length(len(ids), max_length, source, "prompt")
    return ids


def _completion_ids(tokenizer, completion: str, add_eos: bool, source: str, field: str) -> list[int]:
    if not isinstance(completion, str):
        raise DataError(f"expected a string, got {type(completion).__name__}", **split_source(source),
                        field=field, reason="type")
    ids = _tokens(tokenizer, completion) if completion else []
    if not ids:
        raise DataError("empty completion", **split_source(source), field=field, reason="empty")
    if add_eos:
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError("the tokenizer has no EOS token; set one so the policy can learn to stop")
        if ids[-1] != eos:
            ids.append(eos)
    return ids


def _join(prompt_ids: list[int], completion_ids: list[int], max_length: int | None, completion_only: bool,
          source: str) -> EncodedExample:
    p, c = len(prompt_ids), len(completion_ids)
    _check_length(p + c, max_length, source, f"prompt {p} + completion {c}")
    mask = [0] * p + [1] * c if completion_only else [1] * (p + c)
    return EncodedExample(input_ids=prompt_ids + completion_ids, loss_mask=mask, prompt_length=p)


def encode_prompt_completion(
    tokenizer, prompt: Prompt, completion: str, max_length: int | None, *,
    completion_only: bool = True, add_eos: bool = True, source: str = "",
) -> EncodedExample:
    """Prompt tokens (rendered, BOS rule) + completion tokens (+ EOS), tokenised
    separately. `loss_mask` is 1 exactly on the completion and EOS, or on every
    token when ``completion_only=False``."""
    c = _completion_ids(tokenizer, completion, add_eos, source, "completion")
    return _join(prompt_token_ids(tokenizer, prompt, source), c, max_length, completion_only, source)


def encode_ranking(
    tokenizer, record: RankingRecord | PreferenceRecord, max_length: int | None, *, add_eos: bool = True
) -> list[EncodedExample]:
    """One example per response, best first, sharing the prompt's tokens. A
    PreferenceRecord encodes as [chosen, rejected]."""
    responses = record.responses if isinstance(record, RankingRecord) else [record.chosen, record.rejected]
    terminated = getattr(record, "terminated", None) or [True] * len(responses)
    p = prompt_token_ids(tokenizer, record.prompt, record.source)
    out = []
    for i, resp in enumerate(responses):
        c = _completion_ids(tokenizer, resp, add_eos and terminated[i], record.source, f"responses[{i}]")
        out.append(_join(list(p), c, max_length, True, record.source))
    return out


# ----------------------------------------------------------------------------- many records


def _encode_all(items: Sequence[T], fn: Callable[[T], R], on_error: str, what: str) -> DataList[R]:
    check_on_error(on_error)
    report, kept, out = SkipReport(), [], []
    for i, item in enumerate(items):
        try:
            out.append(fn(item))
            kept.append(i)
        except DataError as e:
            if on_error == "raise":
                raise
            report.add(e)
    warn_skipped(report, what)
    return DataList(out, skipped=report, kept=kept)


def encode_sft(
    tokenizer, records: Iterable[SFTRecord], max_length: int | None, *,
    completion_only: bool = True, add_eos: bool = True, on_error: str = "raise",
) -> DataList[EncodedExample]:
    """Encode demonstrations; ``.kept`` gives the index of each kept record."""
    return _encode_all(
        list(records),
        lambda r: encode_prompt_completion(tokenizer, r.prompt, r.completion, max_length,
                                           completion_only=completion_only, add_eos=add_eos, source=r.source),
        on_error, "encode_sft",
    )


def encode_rankings(
    tokenizer, records: Iterable[RankingRecord | PreferenceRecord], max_length: int | None, *,
    on_error: str = "raise",
) -> DataList[list[EncodedExample]]:
    """Encode comparisons, one group of examples (best first) per record; pairs are K = 2."""
    return _encode_all(list(records), lambda r: encode_ranking(tokenizer, r, max_length), on_error,
                       "encode_rankings")


def encode_prompts(
    tokenizer, records: Iterable[PromptRecord], max_length: int | None, *, on_error: str = "raise"
) -> DataList[list[int]]:
    """Encode RL prompts; use ``.kept`` to find each one's record (and its metadata)."""
    return _encode_all(list(records), lambda r: encode_prompt(tokenizer, r.prompt, max_length, r.source),
                       on_error, "encode_prompts")


def encode_labeled(
    tokenizer, records: Iterable[LabeledRecord], max_length: int | None, *, on_error: str = "raise"
) -> DataList[EncodedExample]:
    """Encode KTO judgements; ``records[i].desirable`` for i in ``.kept`` are the labels."""
    return _encode_all(
        list(records),
        lambda r: encode_prompt_completion(tokenizer, r.prompt, r.completion, max_length, source=r.source),
        on_error, "encode_labeled",
    )
