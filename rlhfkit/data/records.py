"""Canonical records: every input format is loaded into one of these.

A *prompt* is either a list of chat messages (rendered with the tokenizer's chat
template, generation prompt appended) or a plain string used verbatim (raw
language-model text, or an implicit Anthropic-HH style transcript ending in
"\\n\\nAssistant:"). A *completion* or *response* is always a plain string: the
text the model should produce after the prompt, without the end-of-sequence
token (the tokenisation step appends it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": str}
Prompt = Union[str, list[Message]]


@dataclass
class SFTRecord:
    """A demonstration. Plain `text` loads as prompt "" and the text as completion."""

    prompt: Prompt
    completion: str
    source: str = ""  # "file:line" where the record came from, for error messages


@dataclass
class PreferenceRecord:
    """One comparison: `chosen` preferred to `rejected` after the same prompt."""

    prompt: Prompt
    chosen: str
    rejected: str
    margin: float | None = None  # optional preference strength (reward-model margin)
    source: str = ""


@dataclass
class RankingRecord:
    """K responses to one prompt, ordered best first (InstructGPT's K-way rankings)."""

    prompt: Prompt
    responses: list[str]  # responses[0] is the most preferred
    margin: float | None = None  # only for K = 2: optional preference strength
    source: str = ""
    # per response, best first: whether it ended with EOS (sampled responses can run out of
    # tokens); None means all did. Encoding appends EOS only where True.
    terminated: list[bool] | None = None


@dataclass
class PromptRecord:
    """A prompt for RL; `metadata` carries any other columns (e.g. a task's answers)."""

    prompt: Prompt
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = ""


@dataclass
class LabeledRecord:
    """An unpaired judgement (KTO): a response marked desirable or not."""

    prompt: Prompt
    completion: str
    desirable: bool
    source: str = ""
