"""Per-format parsing and validation of one row (a dict) into a canonical record.

`loading.py` reads files and datasets into rows; the `parse_*_row` functions here
turn one row into a record or raise :class:`DataError` naming the source, line
and column. The formats recognised:

SFT
    prompt + completion  strings; or prompt as a list of messages and completion as
                         a string or a list holding one assistant message
    messages             a conversation ending with an assistant turn: the prompt is
                         every turn before it, the completion its content
    text                 plain text: prompt "" and the text as completion
Preferences
    prompt + chosen/rejected     strings, or message lists with or without the
                                 prompt's messages repeated in front
    chosen/rejected, no prompt   Anthropic-HH transcripts ("\\n\\nHuman: ...\\n\\nAssistant: ...")
                                 split after the last "\\n\\nAssistant:" both share;
                                 or message lists whose shared leading messages are the prompt
    prompt + responses + ranking K-way rankings; ``ranking[i]`` is the rank of
                                 ``responses[i]``, 0 = best (a permutation of range(K))
Prompts      prompt (string or messages) or messages (turns up to the last user turn)
Labeled      prompt + completion + label (KTO: True = desirable)

Responses given as assistant messages make a row conversational: a string prompt
beside them stands for one user turn (it is rendered with the chat template).
Strings are never stripped or altered; a prompt string is used verbatim.
"""
from __future__ import annotations

import difflib
import json
import math
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

from rlhfkit.data.errors import DataError
from rlhfkit.data.records import (
    LabeledRecord,
    Message,
    PreferenceRecord,
    Prompt,
    PromptRecord,
    RankingRecord,
    SFTRecord,
)

ROLES = ("system", "user", "assistant")
HH_ASSISTANT = "\n\nAssistant:"
HH_HUMAN = "\n\nHuman:"


@dataclass
class ColumnMap:
    """Names of the columns in the user's data (on the command line `--prompt_column`,
    `--chosen_column`, ...). Set a field to None (or "none") to ignore that column
    (e.g. ``ColumnMap(prompt=None)``, `--prompt_column none`, to split HH transcripts
    even though the data also has a prompt column)."""

    prompt: str | None = "prompt"
    completion: str | None = "completion"
    messages: str | None = "messages"
    text: str | None = "text"
    chosen: str | None = "chosen"
    rejected: str | None = "rejected"
    responses: str | None = "responses"
    ranking: str | None = "ranking"
    margin: str | None = "margin"
    label: str | None = "label"
    terminated: str | None = "terminated"

    def __post_init__(self) -> None:
        for f in fields(self):  # "none" from a command line or YAML file means no column
            if isinstance(getattr(self, f.name), str) and getattr(self, f.name).lower() in ("none", "null"):
                setattr(self, f.name, None)


def column_option(attr: str, value: str | None) -> str:
    """How to map column `attr` to `value` on the command line and in Python."""
    shown = "none" if value is None else value
    return f"--{attr}_column {shown} (in Python ColumnMap({attr}={value!r}))"


@dataclass(frozen=True)
class Where:
    """Where a row came from, for error messages."""

    source: str
    line: int | None
    formats: Counter | None = field(default=None, compare=False, repr=False)  # format name -> rows, for a summary

    def saw(self, fmt: str) -> None:
        """Count a row read in format `fmt` (the loader's one-line summary names them)."""
        if self.formats is not None:
            self.formats[fmt] += 1

    def error(self, field: str | None, message: str, reason: str = "invalid") -> DataError:
        return DataError(message, source=self.source, line=self.line, field=field, reason=reason)

    def tag(self) -> str:
        return f"{self.source}:{self.line}" if self.line is not None else self.source


# ----------------------------------------------------------------------------- basics


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def present(row: dict, col: str | None) -> bool:
    return col is not None and col in row and row[col] is not None


def _close_matches(name: str, keys) -> list[str]:
    keys = [str(k) for k in keys]
    lowered = {k.lower(): k for k in keys}
    if name.lower() in lowered and lowered[name.lower()] != name:
        return [lowered[name.lower()]]
    return difflib.get_close_matches(name, keys, n=2, cutoff=0.6)


def missing_error(row: dict, cols: ColumnMap, attr: str, where: Where, extra: str = "") -> DataError:
    """A 'missing column' error with a did-you-mean on close column names."""
    col = getattr(cols, attr)
    if col is None:
        return where.error(attr, f"required, but its column is off (--{attr}_column none; ColumnMap.{attr} is None)",
                           reason="missing")
    msg = "missing"
    if col in row:
        msg = "is null"
    else:
        close = [k for k in _close_matches(col, row.keys()) if k not in _used_columns(cols)]
        if close:
            msg += f"; did you mean {close[0]!r}? (map it with {column_option(attr, close[0])})"
    if extra:
        msg += f"; {extra}"
    msg += f"; columns present: {sorted(map(str, row.keys()))}"
    return where.error(col, msg, reason="missing")


def _used_columns(cols: ColumnMap) -> set[str]:
    return {getattr(cols, f.name) for f in fields(cols)} - {None}


def require(row: dict, cols: ColumnMap, attr: str, where: Where) -> Any:
    col = getattr(cols, attr)
    if not present(row, col):
        raise missing_error(row, cols, attr, where)
    return row[col]


def as_text(value: Any, where: Where, field: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise where.error(field, f"expected a string, got {type_name(value)}", reason="type")
    if not allow_empty and not value.strip():
        raise where.error(field, "empty string" if not value else "string is only whitespace", reason="empty")
    return value


# ----------------------------------------------------------------------------- messages


def validate_messages(value: Any, where: Where, field: str) -> list[Message]:
    """A list of {"role": system|user|assistant, "content": str} dicts (copied;
    extra keys are kept). User and assistant contents must be non-empty."""
    if not isinstance(value, list):
        raise where.error(field, f"expected a list of messages, got {type_name(value)}", reason="type")
    if not value:
        raise where.error(field, "empty list of messages", reason="empty")
    out = []
    for i, msg in enumerate(value):
        f = f"{field}[{i}]"
        if not isinstance(msg, dict):
            raise where.error(f, f"expected a message object with 'role' and 'content', got {type_name(msg)}", reason="type")
        for key in ("role", "content"):
            if key not in msg:
                raise where.error(f, f"message has no {key!r} key (keys: {sorted(msg)})", reason="missing")
        role, content = msg["role"], msg["content"]
        if not isinstance(role, str) or role not in ROLES:
            raise where.error(f"{f}.role", f"expected one of {list(ROLES)}, got {role!r}", reason="type")
        if not isinstance(content, str):
            raise where.error(f"{f}.content", f"expected a string, got {type_name(content)}", reason="type")
        if role != "system" and not content.strip():
            raise where.error(f"{f}.content", f"empty {role} message", reason="empty")
        out.append(dict(msg))
    return out


def is_message_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) for m in value)


def _roles(messages: list[Message]) -> list[str]:
    return [m["role"] for m in messages]


def check_prompt_messages(messages: list[Message], where: Where, field: str) -> list[Message]:
    if not messages:
        raise where.error(field, "the prompt has no messages", reason="empty")
    if messages[-1]["role"] == "assistant":
        raise where.error(field, "a prompt's messages must not end with an assistant turn "
                          f"(roles: {_roles(messages)})", reason="invalid")
    return messages


def as_prompt(value: Any, where: Where, field: str, *, allow_empty: bool = False) -> Prompt:
    """A prompt: a string (verbatim) or a list of messages not ending with an assistant turn."""
    if isinstance(value, str):
        return as_text(value, where, field, allow_empty=allow_empty)
    if isinstance(value, list):
        return check_prompt_messages(validate_messages(value, where, field), where, field)
    raise where.error(field, f"expected a string or a list of messages, got {type_name(value)}", reason="type")


def as_chat_prompt(prompt: Prompt) -> Prompt:
    """Responses given as assistant messages make the data conversational: a string
    prompt then stands for one user turn (rendered with the chat template)."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


def as_response(value: Any, where: Where, field: str) -> str:
    """A response: a non-empty string, or a list holding exactly one assistant message."""
    if isinstance(value, str):
        return as_text(value, where, field)
    if isinstance(value, list):
        return _single_assistant(validate_messages(value, where, field), where, field)
    raise where.error(field, f"expected a string or a list of messages, got {type_name(value)}", reason="type")


def _single_assistant(messages: list[Message], where: Where, field: str, after: str = "") -> str:
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        raise where.error(
            field,
            f"expected exactly one assistant message{after}, got roles {_roles(messages)}",
            reason="invalid",
        )
    return as_text(messages[0]["content"], where, f"{field}.content")


def shared_prefix_length(a: list, b: list) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def split_conversation(messages: list[Message], where: Where, field: str) -> tuple[list[Message], str]:
    """SFT: (all turns before the last assistant turn, that turn's content)."""
    if messages[-1]["role"] != "assistant":
        raise where.error(field, f"a conversation must end with an assistant turn (roles: {_roles(messages)})")
    prompt = messages[:-1]
    if not prompt:
        raise where.error(field, "the conversation has no turn before its assistant message", reason="empty")
    check_prompt_messages(prompt, where, field)
    return prompt, as_text(messages[-1]["content"], where, f"{field}[{len(messages) - 1}].content")


def prompt_from_messages(messages: list[Message], where: Where, field: str) -> list[Message]:
    """RL prompts: the turns up to and including the last user turn."""
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        raise where.error(field, f"no user turn in the conversation (roles: {_roles(messages)})", reason="invalid")
    return messages[: users[-1] + 1]


def strip_shared_messages(
    prompt: Prompt | None, chosen: list[Message], rejected: list[Message], where: Where, cols: ColumnMap
) -> tuple[Prompt, str, str]:
    """Message-list responses: the messages `chosen` and `rejected` share in front
    are the prompt; what remains of each must be one assistant message. With an
    explicit prompt that is not repeated, both lists are just the assistant message.
    When the lists repeat the prompt, they must agree with the prompt column."""
    prompt = as_chat_prompt(prompt) if prompt is not None else None
    if isinstance(prompt, list):  # the prompt repeated in front of either list, or not
        k = len(prompt)
        c_rem = chosen[k:] if len(chosen) > k and chosen[:k] == prompt else chosen
        r_rem = rejected[k:] if len(rejected) > k and rejected[:k] == prompt else rejected
        if c_rem is not chosen or r_rem is not rejected:
            if c_rem == r_rem:
                raise where.error(cols.chosen, "chosen and rejected are identical", reason="identical")
            after = " after the prompt's messages"
            return (prompt, _single_assistant(c_rem, where, cols.chosen, after),
                    _single_assistant(r_rem, where, cols.rejected, after))
    n = shared_prefix_length(chosen, rejected)
    if n == len(chosen) and n == len(rejected):
        raise where.error(cols.chosen, "chosen and rejected are identical", reason="identical")
    for col, msgs in ((cols.chosen, chosen), (cols.rejected, rejected)):
        if n == len(msgs):
            raise where.error(col, "no response after the messages chosen and rejected share", reason="empty")
    if n == 0:
        if prompt is None:
            raise where.error(
                cols.prompt,
                "missing, and chosen and rejected share no leading messages to use as the prompt",
                reason="missing",
            )
        after = ""
    else:
        after = " after the shared prompt messages"
    c = _single_assistant(chosen[n:], where, cols.chosen, after)
    r = _single_assistant(rejected[n:], where, cols.rejected, after)
    if n:
        shared = chosen[:n]
        if prompt is not None:
            _check_prompt_agrees(prompt, shared, where, cols)
        prompt = check_prompt_messages(shared, where, cols.chosen)
    return prompt, c, r


def _check_prompt_agrees(prompt: list[Message], shared: list[Message], where: Where, cols: ColumnMap) -> None:
    # The shared messages may hold more than the prompt column (e.g. a system turn it omits).
    ok = len(prompt) <= len(shared) and shared[len(shared) - len(prompt):] == prompt
    if not ok:
        raise where.error(
            cols.prompt,
            "the prompt column does not match the leading messages chosen and rejected share "
            f"(roles {_roles(shared)}); fix the data or ignore the column with {column_option('prompt', None)}",
            reason="mismatch",
        )


def split_implicit_prompt(
    chosen: str, rejected: str, where: Where, cols: ColumnMap,
    assistant_marker: str = HH_ASSISTANT, human_marker: str | None = HH_HUMAN, hint: str = "",
) -> tuple[str, str, str]:
    """Anthropic-HH transcripts: the prompt is the text up to and including the last
    `assistant_marker` that lies wholly inside the text both share; the responses are
    the rest (their leading space kept: it is what the model generates after
    "Assistant:"). Splitting at the raw common character prefix would cut words."""
    if chosen == rejected:
        raise where.error(cols.chosen, "chosen and rejected are identical", reason="identical")
    n = shared_prefix_length(chosen, rejected)
    cut = chosen.rfind(assistant_marker, 0, n)
    if cut < 0:
        raise where.error(
            cols.prompt,
            f"missing{hint}, and chosen and rejected share no {assistant_marker!r} turn to split an "
            "implicit prompt at; give a prompt column or message lists",
            reason="missing",
        )
    end = cut + len(assistant_marker)
    prompt, c, r = chosen[:end], chosen[end:], rejected[end:]
    for col, resp in ((cols.chosen, c), (cols.rejected, r)):
        as_text(resp, where, col)
        if human_marker and human_marker in resp:
            raise where.error(
                col,
                f"the response after the last shared {assistant_marker!r} contains a {human_marker!r} "
                "turn: chosen and rejected differ before their final assistant turn",
                reason="invalid",
            )
    return prompt, c, r


# ----------------------------------------------------------------------------- scalars


def as_margin(value: Any, where: Where, field: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise where.error(field, "expected a number, got bool", reason="type")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise where.error(field, f"expected a number, got string {value!r}", reason="type") from None
    if not isinstance(value, (int, float)):
        raise where.error(field, f"expected a number, got {type_name(value)}", reason="type")
    if not math.isfinite(value):
        raise where.error(field, f"expected a finite number, got {value}", reason="invalid")
    return float(value)


_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}


def as_label(value: Any, where: Where, field: str) -> bool:
    """KTO labels: bool, 0/1, or the strings true/false/1/0/yes/no (CSV)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise where.error(field, f"expected a bool (true = desirable), got {type_name(value)} {value!r}", reason="type")


def ranking_order(ranking: Any, k: int, where: Where, field: str) -> list[int]:
    """Indices of the responses best first. ``ranking[i]`` is the rank of response i,
    0 = best; it must be a permutation of range(K) (no ties)."""
    if not isinstance(ranking, list) or not all(isinstance(r, int) and not isinstance(r, bool) for r in ranking):
        raise where.error(field, f"expected a list of integer ranks, got {_describe(ranking)}", reason="type")
    if len(ranking) != k:
        raise where.error(field, f"has {len(ranking)} ranks for {k} responses", reason="ranking")
    if sorted(ranking) != list(range(k)):
        hint = ""
        if sorted(ranking) == list(range(1, k + 1)):
            hint = "; ranks are 0-based (0 = best): subtract 1"
        elif len(set(ranking)) < k:
            hint = "; ties are not allowed"
        raise where.error(field, f"{ranking} is not a permutation of range({k}){hint}", reason="ranking")
    return sorted(range(k), key=lambda i: ranking[i])


def _describe(value: Any) -> str:
    if isinstance(value, list):
        return "a list of " + "/".join(sorted({type_name(v) for v in value})) if value else "an empty list"
    return type_name(value)


# ----------------------------------------------------------------------------- rows


def _no_format_error(row: dict, cols: ColumnMap, where: Where, options: list[tuple[str, ...]]) -> DataError:
    wanted = " or ".join("+".join(repr(getattr(cols, a)) for a in opt) for opt in options)
    for opt in options:
        for attr in opt:
            col = getattr(cols, attr)
            if col is not None and col not in row and _close_matches(col, row.keys()):
                return missing_error(row, cols, attr, where, extra=f"expected columns {wanted}")
    return where.error(None, f"no recognised columns: expected {wanted}; columns present: "
                       f"{sorted(map(str, row.keys()))} (map yours with --prompt_column NAME, --chosen_column NAME, "
                       "...; in Python ColumnMap)", reason="missing")


def parse_sft_row(row: dict, cols: ColumnMap, where: Where) -> SFTRecord:
    tag = where.tag()
    if present(row, cols.completion) or (
        present(row, cols.prompt) and not present(row, cols.messages) and not present(row, cols.text)
    ):
        # an empty prompt is refused as PPO refuses it (a completion with no instruction is the
        # text format's job: --text_column, loss on every token)
        prompt = as_prompt(require(row, cols, "prompt", where), where, cols.prompt)
        raw = require(row, cols, "completion", where)
        completion = as_response(raw, where, cols.completion)
        if isinstance(raw, list) and isinstance(prompt, str):  # conversational: the prompt is a user turn
            prompt = as_chat_prompt(as_text(prompt, where, cols.prompt))
        where.saw("prompt/completion" + (" (conversational)" if isinstance(prompt, list) else ""))
        return SFTRecord(prompt=prompt, completion=completion, source=tag)
    if present(row, cols.messages):
        messages = validate_messages(row[cols.messages], where, cols.messages)
        prompt, completion = split_conversation(messages, where, cols.messages)
        where.saw("messages")
        return SFTRecord(prompt=prompt, completion=completion, source=tag)
    if present(row, cols.text):
        text = as_text(row[cols.text], where, cols.text)
        where.saw("text")
        return SFTRecord(prompt="", completion=text, source=tag)
    raise _no_format_error(row, cols, where, [("prompt", "completion"), ("messages",), ("text",)])


def parse_preference_row(
    row: dict, cols: ColumnMap, where: Where,
    assistant_marker: str = HH_ASSISTANT, human_marker: str | None = HH_HUMAN,
) -> PreferenceRecord | RankingRecord:
    if present(row, cols.responses):
        return _parse_ranking_row(row, cols, where)
    if not (present(row, cols.chosen) or present(row, cols.rejected)):
        raise _no_format_error(row, cols, where, [("chosen", "rejected"), ("prompt", "responses", "ranking")])
    chosen = require(row, cols, "chosen", where)
    rejected = require(row, cols, "rejected", where)
    margin = as_margin(row.get(cols.margin) if cols.margin else None, where, cols.margin)
    has_prompt = present(row, cols.prompt)
    prompt = as_prompt(row[cols.prompt], where, cols.prompt) if has_prompt else None

    if isinstance(chosen, list) or isinstance(rejected, list):
        c_msgs = validate_messages(chosen, where, cols.chosen)
        r_msgs = validate_messages(rejected, where, cols.rejected)
        prompt, c, r = strip_shared_messages(prompt, c_msgs, r_msgs, where, cols)
    else:
        c = as_response(chosen, where, cols.chosen)
        r = as_response(rejected, where, cols.rejected)
        if prompt is None:  # Anthropic-HH transcripts
            hint = ""
            if cols.prompt is not None and cols.prompt not in row:
                close = _close_matches(cols.prompt, [k for k in row if k not in _used_columns(cols)])
                if close:
                    hint = f"; did you mean {close[0]!r}? (map it with {column_option('prompt', close[0])})"
            prompt, c, r = split_implicit_prompt(c, r, where, cols, assistant_marker, human_marker, hint)
    if c == r:
        raise where.error(cols.chosen, "chosen and rejected are identical", reason="identical")
    where.saw("chosen/rejected pairs" + (" (conversational)" if isinstance(prompt, list) else "")
              + ("" if has_prompt or isinstance(chosen, list) else " (HH transcripts, prompt split off)"))
    return PreferenceRecord(prompt=prompt, chosen=c, rejected=r, margin=margin, source=where.tag())


def _parse_ranking_row(row: dict, cols: ColumnMap, where: Where) -> RankingRecord:
    prompt = as_prompt(require(row, cols, "prompt", where), where, cols.prompt)
    responses = row[cols.responses]
    if not isinstance(responses, list):
        raise where.error(cols.responses, f"expected a list of responses, got {type_name(responses)}", reason="type")
    if len(responses) < 2:
        raise where.error(cols.responses, f"a ranking needs K >= 2 responses, got {len(responses)}", reason="ranking")
    texts = [as_response(x, where, f"{cols.responses}[{i}]") for i, x in enumerate(responses)]
    if any(isinstance(x, list) for x in responses):
        prompt = as_chat_prompt(prompt)
    if len(set(texts)) < len(texts):
        i = next(i for i, t in enumerate(texts) if texts.index(t) != i)
        raise where.error(f"{cols.responses}[{i}]", f"duplicates response {texts.index(texts[i])}", reason="identical")
    order = ranking_order(require(row, cols, "ranking", where), len(texts), where, cols.ranking)
    margin = as_margin(row.get(cols.margin) if cols.margin else None, where, cols.margin)
    if margin is not None and len(texts) != 2:
        raise where.error(cols.margin, f"a margin is only meaningful for K = 2, got K = {len(texts)}")
    terminated = None
    if present(row, cols.terminated):
        flags = row[cols.terminated]
        if not isinstance(flags, list) or len(flags) != len(texts) or not all(isinstance(f, bool) for f in flags):
            raise where.error(cols.terminated, f"expected a list of {len(texts)} booleans (did each response end "
                              f"with EOS?), got {_describe(flags)}", reason="type")
        terminated = [flags[i] for i in order]
    where.saw("K-way rankings (prompt/responses/ranking)")
    return RankingRecord(prompt=prompt, responses=[texts[i] for i in order], margin=margin, source=where.tag(),
                         terminated=terminated)


def parse_prompt_row(row: dict, cols: ColumnMap, where: Where) -> PromptRecord:
    if present(row, cols.prompt):
        used, prompt = cols.prompt, as_prompt(row[cols.prompt], where, cols.prompt)
    elif present(row, cols.messages):
        messages = validate_messages(row[cols.messages], where, cols.messages)
        used, prompt = cols.messages, prompt_from_messages(messages, where, cols.messages)
    else:
        raise _no_format_error(row, cols, where, [("prompt",), ("messages",)])
    metadata = {k: v for k, v in row.items() if k != used}
    where.saw("prompt" if used == cols.prompt else "messages")
    return PromptRecord(prompt=prompt, metadata=metadata, source=where.tag())


def parse_labeled_row(row: dict, cols: ColumnMap, where: Where) -> LabeledRecord:
    prompt = as_prompt(require(row, cols, "prompt", where), where, cols.prompt)
    raw = require(row, cols, "completion", where)
    completion = as_response(raw, where, cols.completion)
    if isinstance(raw, list):
        prompt = as_chat_prompt(prompt)
    label = as_label(require(row, cols, "label", where), where, cols.label)
    where.saw("prompt/completion/label (unpaired)")
    return LabeledRecord(prompt=prompt, completion=completion, desirable=label, source=where.tag())


def decode_csv_cell(value: str) -> Any:
    """CSV cells that hold a JSON list of messages, strings or integers (a messages,
    responses or ranking column) are decoded; every other cell stays a string."""
    s = value.strip()
    if not (s.startswith("[") and s.endswith("]")):
        return value
    try:
        parsed = json.loads(s)
    except (ValueError, RecursionError):
        return value
    if not isinstance(parsed, list) or not parsed:
        return value
    if all(isinstance(m, dict) and "role" in m for m in parsed):
        return parsed
    if all(isinstance(x, str) for x in parsed) or all(isinstance(x, int) and not isinstance(x, bool) for x in parsed):
        return parsed
    return value
