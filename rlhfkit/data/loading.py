"""Load user data (files, saved datasets, hub ids, in-memory rows) into canonical records.

Every loader takes `data`, which may be:

- a path to a ``.jsonl``/``.ndjson``, ``.json``, ``.parquet``, ``.csv`` or ``.tsv`` file;
- a directory written by ``datasets.Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``
  (``split`` picks the split, default "train"), or any directory ``datasets.load_dataset``
  understands;
- a Hugging Face Hub dataset id (``datasets.load_dataset(id, split=split or "train")``);
- in memory: a list of dicts, a ``datasets.Dataset`` or ``DatasetDict`` (source "<memory>").

Loaders return a :class:`DataList` (a list) whose ``.skipped`` is a :class:`SkipReport`.
With ``on_error="raise"`` (default) the first bad record raises :class:`DataError`; with
``on_error="skip"`` bad records are counted in ``.skipped`` and a warning is logged.
Each record's ``source`` is ``"file:line"`` (1-based JSONL/CSV line, or row number for
.json lists, parquet and datasets).
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import combinations
from pathlib import Path
from typing import Any, TypeVar

from rlhfkit.data.errors import DataError, DataList, SkipReport, check_on_error, warn_skipped
from rlhfkit.data.formats import (
    HH_ASSISTANT,
    HH_HUMAN,
    ColumnMap,
    Where,
    decode_csv_cell,
    parse_labeled_row,
    parse_preference_row,
    parse_prompt_row,
    parse_sft_row,
)
from rlhfkit.data.records import LabeledRecord, PreferenceRecord, PromptRecord, RankingRecord, SFTRecord

__all__ = [
    "ColumnMap",
    "read_rows",
    "load_sft",
    "load_preferences",
    "load_prompts",
    "load_labeled",
    "as_rankings",
    "as_pairs",
]

MEMORY = "<memory>"
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".tsv": "tsv"}
# what a plain directory of data files may hold for datasets.load_dataset (its own .arrow too)
_DIRECTORY_SUFFIXES = (*_SUFFIXES, ".arrow")
R = TypeVar("R")
Row = dict[str, Any]
_Item = tuple[str, int | None, "Row | DataError"]
logger = logging.getLogger("rlhfkit.data")  # the CLI prints its INFO lines (what each file held) on the main process


# ----------------------------------------------------------------------------- reading rows


def read_rows(data: Any, split: str | None = None) -> Iterator[tuple[str, int, Row]]:
    """Yield ``(source, line, row)`` for every record in `data` (see the module docstring
    for what `data` may be). Raises :class:`DataError` on the first bad line (malformed
    JSON, invalid UTF-8, a non-object row) and when there are no records at all."""
    for source, line, row in _iter_rows(data, split):
        if isinstance(row, DataError):
            raise row
        yield source, line, row


def _iter_rows(data: Any, split: str | None) -> Iterator[_Item]:
    """Like read_rows, but per-record problems are yielded as DataError items so that
    loaders can skip them; problems with the whole source are raised."""
    n = 0
    source = MEMORY
    for source, line, row in _dispatch(data, split):
        n += 1
        if not isinstance(row, DataError) and not isinstance(row, Mapping):
            row = DataError(f"expected an object (a dict of columns), got {type(row).__name__}",
                            source=source, line=line, reason="type")
        elif isinstance(row, Mapping) and not isinstance(row, dict):
            row = dict(row)
        yield source, line, row
    if n == 0:
        raise DataError("no records", source=_name(data), reason="no_records")


def _name(data: Any) -> str:
    return str(data) if isinstance(data, (str, os.PathLike)) else MEMORY


def _dispatch(data: Any, split: str | None) -> Iterator[_Item]:
    if isinstance(data, (str, os.PathLike)):
        yield from _from_path(str(data), split)
        return
    # imported only for in-memory datasets: `import datasets` costs about a second of start-up
    datasets = None
    if type(data).__module__.startswith("datasets"):
        import datasets
    if datasets is not None and isinstance(data, (datasets.Dataset, datasets.DatasetDict)):
        yield from _from_dataset(_pick_split(data, split, MEMORY), MEMORY)
    elif datasets is not None and isinstance(data, datasets.IterableDataset):
        yield from _from_dataset(data, MEMORY)
    elif isinstance(data, Mapping):
        raise DataError("expected a list of row dicts, a datasets.Dataset or a path, got a single dict "
                        "(wrap one row in a list)", source=MEMORY, reason="type")
    elif isinstance(data, Iterable):
        for i, row in enumerate(data, 1):
            yield MEMORY, i, row
    else:
        raise DataError(f"cannot read data from a {type(data).__name__}", source=MEMORY, reason="type")


def _from_path(path: str, split: str | None) -> Iterator[_Item]:
    p = Path(path).expanduser()
    if p.is_dir():
        yield from _from_directory(p, split)
        return
    kind = _SUFFIXES.get(p.suffix.lower())
    if p.exists() and not p.is_file():  # a named pipe, socket or device: not "no such file"
        raise DataError(f"is a {_special_kind(p)}, not a regular file; write the data to a file (it is read more "
                        "than once: hashed for the checkpoint fingerprint, then loaded)", source=path, reason="format")
    if p.is_file():
        if kind is None:
            raise DataError(f"unsupported file type {p.suffix!r} (expected one of {sorted(_SUFFIXES)})",
                            source=path, reason="format")
        yield from {"jsonl": _jsonl, "json": _json, "parquet": _parquet, "csv": _csv, "tsv": _csv}[kind](p, path, split)
        return
    looks_local = kind is not None or path.startswith(("/", "./", "../", "~", ".\\")) or (p.suffix and p.parent.is_dir())
    if looks_local:
        raise DataError("no such file or directory", source=path, reason="not_found")
    yield from _from_hub(path, split)


def _special_kind(p: Path) -> str:
    import stat

    mode = p.stat().st_mode
    return ("named pipe" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode)
            else "device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "special file")


def _from_dataset(ds, source: str) -> Iterator[_Item]:
    for i, row in enumerate(ds, 1):
        yield source, i, row


def _pick_split(ds, split: str | None, source: str):
    import datasets

    if isinstance(ds, datasets.DatasetDict):
        name = split or "train"
        if name not in ds:
            raise DataError(f"no split {name!r}; splits: {sorted(ds)} (pass split=...)", source=source, reason="split")
        return ds[name]
    return ds


def _from_directory(p: Path, split: str | None) -> Iterator[_Item]:
    import datasets

    source = str(p)
    if (p / "dataset_dict.json").exists() or (p / "state.json").exists() or (p / "dataset_info.json").exists():
        try:
            ds = datasets.load_from_disk(str(p))
        except Exception as e:  # noqa: BLE001 - surface any datasets failure as a DataError
            raise DataError(f"cannot load the saved dataset: {type(e).__name__}: {e}", source=source, reason="load") from e
        yield from _from_dataset(_pick_split(ds, split, source), source)
        return
    files = [f for f in p.rglob("*") if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)]
    if not any(f.suffix.lower() in _DIRECTORY_SUFFIXES for f in files):
        # datasets.load_dataset would read anything else as text, one record a line
        found = ", ".join(sorted(str(f.relative_to(p)) for f in files)[:5]) or "nothing"
        raise DataError(f"a directory with no data files (expected {', '.join(_DIRECTORY_SUFFIXES)} files, or a "
                        f"saved dataset with dataset_dict.json/state.json); found: {found}", source=source,
                        reason="format")
    try:
        ds = datasets.load_dataset(str(p), split=split or "train")
    except Exception as e:  # noqa: BLE001
        raise DataError(f"not a saved dataset (no dataset_dict.json/state.json) and datasets.load_dataset "
                        f"failed: {type(e).__name__}: {e}", source=source, reason="load") from e
    yield from _from_dataset(ds, source)


def _from_hub(name: str, split: str | None) -> Iterator[_Item]:
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split or "train")
    except Exception as e:  # noqa: BLE001
        raise DataError(
            f"not a local file or directory, and datasets.load_dataset({name!r}, split={split or 'train'!r}) "
            f"failed ({type(e).__name__}: {e}). Without network access, download the dataset "
            "elsewhere and pass its local path (a .jsonl/.parquet file or a save_to_disk directory).",
            source=name, reason="load",
        ) from e
    yield from _from_dataset(ds, name)


def _jsonl(p: Path, source: str, split: str | None = None) -> Iterator[_Item]:
    with open(p, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                yield source, lineno, DataError(
                    f"invalid UTF-8 at byte {e.start} of the line ({raw[e.start:e.start + 4]!r})",
                    source=source, line=lineno, reason="encoding")
                continue
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                yield source, lineno, DataError(f"malformed JSON: {e.msg} (column {e.colno})",
                                                source=source, line=lineno, reason="json")
                continue
            except RecursionError:
                yield source, lineno, DataError("JSON nested too deeply to read", source=source, line=lineno,
                                                reason="json")
                continue
            except ValueError as e:  # e.g. an integer of more than 4,300 digits
                yield source, lineno, DataError(f"unreadable JSON value: {str(e)[:120]}", source=source, line=lineno,
                                                reason="json")
                continue
            yield source, lineno, row


def _json(p: Path, source: str, split: str | None) -> Iterator[_Item]:
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"invalid UTF-8 ({raw[e.start:e.start + 4]!r})", source=source, line=line,
                        reason="encoding") from e
    if not text.strip():
        raise DataError("no records (empty file)", source=source, reason="no_records")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # JSON Lines saved with a .json suffix
            yield from _jsonl(p, source)
            return
        raise DataError(f"malformed JSON: {e.msg} (column {e.colno})", source=source, line=e.lineno,
                        reason="json") from e
    except RecursionError:
        raise DataError("JSON nested too deeply to read", source=source, reason="json") from None
    except ValueError as e:  # e.g. an integer of more than 4,300 digits
        raise DataError(f"unreadable JSON value: {str(e)[:120]}", source=source, reason="json") from None
    if isinstance(data, dict):
        data = _json_records(data, source, split)
    if not isinstance(data, list):
        raise DataError(f"expected a list of objects or {{'data': [...]}}, got {type(data).__name__}",
                        source=source, reason="type")
    for i, row in enumerate(data, 1):
        yield source, i, row


def _json_records(data: dict, source: str, split: str | None) -> Any:
    for key in ([split] if split else ["data", "train"]):
        if key in data:
            return data[key]
    lists = [k for k, v in data.items() if isinstance(v, list)]
    if split is None and len(lists) == 1:
        return data[lists[0]]
    want = repr(split) if split else "'data' or 'train'"
    raise DataError(f"a JSON object must hold the records under {want} (keys: {sorted(data)})",
                    source=source, reason="format")


def _parquet(p: Path, source: str, split: str | None = None) -> Iterator[_Item]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(p)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"cannot read parquet: {type(e).__name__}: {e}", source=source, reason="format") from e
    i = 0
    for batch in pf.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            i += 1
            yield source, i, row


def _csv(p: Path, source: str, split: str | None = None) -> Iterator[_Item]:
    """CSV/TSV with a header row. Cells holding JSON lists (messages, responses,
    ranking) are decoded; other cells stay strings (an empty margin cell means no margin)."""
    text = p.read_bytes().decode("utf-8-sig", errors="surrogateescape")
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 28))  # long texts are data, not an error (default 128 KB)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if p.suffix.lower() == ".tsv" else ",")
    if reader.fieldnames is None:
        return
    bad_header = _bad_utf8(" ".join(reader.fieldnames))
    if bad_header:
        raise DataError(f"invalid UTF-8 in the header ({bad_header})", source=source, line=1, reason="encoding")
    end = reader.line_num
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:  # e.g. a NUL byte or an unterminated quote the parser cannot read past
            raise DataError(f"malformed CSV: {e}", source=source, line=end + 1, reason="csv") from None
        line, end = end + 1, reader.line_num
        if None in row:
            yield source, line, DataError(f"row has {len(reader.fieldnames) + len(row[None])} fields, the header "
                                          f"{len(reader.fieldnames)}", source=source, line=line, reason="csv")
            continue
        bad = next(((k, b) for k, v in row.items() if isinstance(v, str) and (b := _bad_utf8(v))), None)
        if bad:
            yield source, line, DataError(f"invalid UTF-8 ({bad[1]})", source=source, line=line, field=bad[0],
                                          reason="encoding")
            continue
        yield source, line, {k: (None if v is None else decode_csv_cell(v)) for k, v in row.items()}


def _bad_utf8(s: str) -> str:
    for i, ch in enumerate(s):
        if "\udc80" <= ch <= "\udcff":
            return f"byte 0x{ord(ch) - 0xDC00:02x} at character {i}"
    return ""


# ----------------------------------------------------------------------------- loaders


def _load(data, split, on_error: str, parse: Callable[[Row, Where], R], what: str) -> DataList[R]:
    check_on_error(on_error)
    report = SkipReport()
    out: DataList[R] = DataList(skipped=report)
    formats: Counter = Counter()
    for source, line, row in _iter_rows(data, split):
        try:
            if isinstance(row, DataError):
                raise row
            out.append(parse(row, Where(source, line, formats)))
        except DataError as e:
            if on_error == "raise":
                raise
            report.add(e)
    if not out:
        raise DataError(f"no valid records; {report.summary()}", source=_name(data), reason="no_records")
    warn_skipped(report, f"{what}({_name(data)})")
    logger.info("%s", load_summary(_name(data), len(out), formats, len(report)))
    return out


def load_summary(name: str, n: int, formats: Counter, skipped: int = 0) -> str:
    """One line saying what was loaded: `demos.jsonl: 1,200 records (prompt/completion)`."""
    if len(formats) == 1:
        kinds = next(iter(formats))
    else:
        kinds = ", ".join(f"{fmt} {count:,}" for fmt, count in formats.most_common())
    return f"{name}: {n:,} record{'s' if n != 1 else ''} ({kinds})" + (f", {skipped:,} skipped" if skipped else "")


def load_sft(
    data: Any, columns: ColumnMap | None = None, on_error: str = "raise", split: str | None = None
) -> DataList[SFTRecord]:
    """Demonstrations: ``prompt`` + ``completion``; or ``messages`` (the prompt is every
    turn before the final assistant turn, the completion that turn: only the last
    assistant turn is trained on); or plain ``text`` (prompt "")."""
    cols = columns or ColumnMap()
    return _load(data, split, on_error, lambda row, w: parse_sft_row(row, cols, w), "load_sft")


def load_preferences(
    data: Any, columns: ColumnMap | None = None, on_error: str = "raise", split: str | None = None,
    *, assistant_marker: str = HH_ASSISTANT, human_marker: str | None = HH_HUMAN,
) -> DataList[PreferenceRecord | RankingRecord]:
    """Comparisons. Pairs (``chosen``/``rejected``, with or without a ``prompt``) load as
    PreferenceRecord; K-way rankings (``prompt``, ``responses``, ``ranking``) as
    RankingRecord with responses best first. ``ranking[i]`` is the rank of
    ``responses[i]`` (0 = best) and must be a permutation of range(K).

    Without a prompt column, string pairs are split as Anthropic-HH transcripts after the
    last `assistant_marker` both share (a response that still contains `human_marker` is an
    error), and message lists use their shared leading messages as the prompt."""
    cols = columns or ColumnMap()
    return _load(
        data, split, on_error,
        lambda row, w: parse_preference_row(row, cols, w, assistant_marker, human_marker),
        "load_preferences",
    )


def load_prompts(
    data: Any, columns: ColumnMap | None = None, on_error: str = "raise", split: str | None = None
) -> DataList[PromptRecord]:
    """RL prompts: ``prompt`` (string or messages), or ``messages`` (turns up to the last
    user turn). Every other column goes to ``metadata``."""
    cols = columns or ColumnMap()
    return _load(data, split, on_error, lambda row, w: parse_prompt_row(row, cols, w), "load_prompts")


def load_labeled(
    data: Any, columns: ColumnMap | None = None, on_error: str = "raise", split: str | None = None
) -> DataList[LabeledRecord]:
    """Unpaired judgements (KTO): ``prompt``, ``completion``, ``label`` (True = desirable)."""
    cols = columns or ColumnMap()
    return _load(data, split, on_error, lambda row, w: parse_labeled_row(row, cols, w), "load_labeled")


# ----------------------------------------------------------------------------- conversions


def as_rankings(records: Iterable[PreferenceRecord | RankingRecord]) -> list[RankingRecord]:
    """Pairs become K = 2 rankings [chosen, rejected] keeping their margin."""
    out = []
    for r in records:
        if isinstance(r, RankingRecord):
            out.append(r)
        elif isinstance(r, PreferenceRecord):
            out.append(RankingRecord(r.prompt, [r.chosen, r.rejected], margin=r.margin, source=r.source))
        else:
            raise TypeError(f"expected PreferenceRecord or RankingRecord, got {type(r).__name__}")
    return out


def as_pairs(records: Iterable[PreferenceRecord | RankingRecord]) -> list[PreferenceRecord | RankingRecord]:
    """A K-way ranking expands to all C(K, 2) (better, worse) pairs in the ranking's
    order: (0,1), (0,2), ..., (0,K-1), (1,2), ...; a K = 2 ranking keeps its margin.
    A ranking with per-response `terminated` flags gives K = 2 rankings that keep
    them (so a response that ran out of tokens is encoded without EOS); otherwise
    the pairs are PreferenceRecords."""
    out: list[PreferenceRecord | RankingRecord] = []
    for r in records:
        if isinstance(r, PreferenceRecord):
            out.append(r)
        elif isinstance(r, RankingRecord):
            margin = r.margin if len(r.responses) == 2 else None
            for i, j in combinations(range(len(r.responses)), 2):
                if r.terminated is None:
                    out.append(PreferenceRecord(r.prompt, r.responses[i], r.responses[j], margin=margin,
                                                source=r.source))
                else:
                    out.append(RankingRecord(r.prompt, [r.responses[i], r.responses[j]], margin=margin,
                                             source=r.source, terminated=[r.terminated[i], r.terminated[j]]))
        else:
            raise TypeError(f"expected PreferenceRecord or RankingRecord, got {type(r).__name__}")
    return out


def load_records(loader: Callable[..., Any], path: str, columns, on_error: str, accelerator=None,
                 split: str | None = None) -> list:
    """Call a data loader (`split`: a DatasetDict's split, None for the loader's default);
    with on_error="skip", print how much was skipped and why."""
    records = loader(path, columns=columns, on_error=on_error, split=split or None)
    report = getattr(records, "skipped", None)
    if report:
        (accelerator.print if accelerator else print)(f"{path}: {report.summary()}")
    return records
