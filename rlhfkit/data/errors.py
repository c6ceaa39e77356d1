"""Data errors that say where the bad record is, and a report of skipped records.

Every problem with user data raises :class:`DataError`, whose message starts with
the place it came from::

    data.jsonl:17: field 'chosen': expected a string or a list of messages, got int

Loaders take ``on_error="raise"`` (the default: stop at the first bad record) or
``on_error="skip"`` (keep going, count the bad records in a :class:`SkipReport`
attached to the result as ``.skipped``, and log a warning). Nothing is ever
dropped or truncated silently.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

logger = logging.getLogger("rlhfkit.data")

OnError = Literal["raise", "skip"]
T = TypeVar("T")


class DataError(ValueError):
    """A problem with user data, located by `source` (file path or dataset id),
    `line` (1-based line of a JSONL/CSV file, or 1-based row of other formats) and
    `field` (the column), any of which may be None.

    `reason` is a short machine-readable category ("json", "encoding", "missing",
    "type", "empty", "identical", "ranking", "too_long", "no_records", ...) used to
    group skipped records in a :class:`SkipReport`.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        field: str | None = None,
        reason: str = "invalid",
    ):
        self.message = message
        self.source = source
        self.line = line
        self.field = field
        self.reason = reason
        super().__init__(message)

    @property
    def location(self) -> str:
        """`source:line`, `source`, or "" when unknown."""
        if self.source is None:
            return f"line {self.line}" if self.line is not None else ""
        return f"{self.source}:{self.line}" if self.line is not None else str(self.source)

    def __str__(self) -> str:
        parts = []
        if self.location:
            parts.append(self.location)
        if self.field is not None:
            parts.append(f"field {self.field!r}")
        parts.append(self.message)
        return ": ".join(parts)

    def __reduce__(self):  # keep the attributes through pickling (multiprocessing loaders)
        return (_rebuild_error, (self.message, self.source, self.line, self.field, self.reason))


def split_source(tag: str | None) -> dict:
    """A record's source tag "file:line" -> dict(source=..., line=...) for DataError."""
    if not tag:
        return {"source": None, "line": None}
    head, sep, tail = tag.rpartition(":")
    if sep and head and tail.isdigit():
        return {"source": head, "line": int(tail)}
    return {"source": tag, "line": None}


def _rebuild_error(message, source, line, field, reason) -> DataError:
    return DataError(message, source=source, line=line, field=field, reason=reason)


@dataclass
class SkipReport:
    """Records skipped under ``on_error="skip"``: counts per reason and the first few
    errors of each reason (their full messages, with file, line and field)."""

    max_examples: int = 3
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, error: DataError) -> None:
        self.counts[error.reason] += 1
        shown = self.examples.setdefault(error.reason, [])
        if len(shown) < self.max_examples:
            shown.append(str(error))

    def merge(self, other: "SkipReport") -> None:
        for reason, n in other.counts.items():
            self.counts[reason] += n
            shown = self.examples.setdefault(reason, [])
            shown.extend(other.examples.get(reason, [])[: max(0, self.max_examples - len(shown))])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __len__(self) -> int:
        return self.total

    def __bool__(self) -> bool:
        return self.total > 0

    def summary(self) -> str:
        if not self:
            return "no records skipped"
        lines = [f"skipped {self.total} record(s):"]
        for reason, n in self.counts.most_common():
            lines.append(f"  {reason}: {n}")
            lines.extend(f"    e.g. {msg}" for msg in self.examples.get(reason, []))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


class DataList(list, Generic[T]):
    """A plain list of results with two attributes:

    - `skipped`: the :class:`SkipReport` (empty unless ``on_error="skip"`` skipped something);
    - `kept`: for the batch encoders, the index in the input of each kept item
      (``None`` for loaders).
    """

    def __init__(self, items=(), skipped: SkipReport | None = None, kept: list[int] | None = None):
        super().__init__(items)
        self.skipped = skipped if skipped is not None else SkipReport()
        self.kept = kept


def check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


def warn_skipped(report: SkipReport, what: str) -> None:
    if report:
        logger.warning("%s: %s", what, report.summary())
