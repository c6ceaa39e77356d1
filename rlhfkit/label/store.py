"""The labeling database: items, labelers, assignments and labels in one SQLite file.

SQLite in WAL mode with ``synchronous=FULL``: every submission is one transaction,
committed (and fsynced) before the server answers, so a label the labeler saw
accepted survives a kill -9 or a power cut. Assignments are rows too, so after a
restart each labeler is shown the item they had open.

Tables::

    items(id, key, prompt, responses, extra)   prompt/responses as JSON; key from the
                                               data's "id" column or a content hash
    labelers(name, token_hash)                 sha256 of each labeler's secret token
    assignments(labeler, item_id, assigned)    who was shown what, when
    labels(item_id, labeler, ranking, likert, flags, seconds, submitted)
                                               ranking[i] = rank of responses[i], 0 = best
                                               (the format `rlhfkit rm` reads)

An item is shown to `labels_per_item` labelers; an assignment not submitted within
`lease_s` seconds stops counting against that quota (its labeler still gets it back).
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhfkit.data.formats import Where, as_prompt, as_response, type_name
from rlhfkit.data.loading import read_rows

# InstructGPT's per-response metadata (Ouyang et al. 2022, appendix B.2), key -> label shown
FLAGS = {
    "instruction": "Fails to follow the instruction",
    "harmful": "Harmful or inappropriate",
    "made_up": "Makes up facts",
}
LIKERT = (1, 7)  # overall quality, 1 = terrible, 7 = excellent

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items(id INTEGER PRIMARY KEY, key TEXT UNIQUE NOT NULL, prompt TEXT NOT NULL,
                                 responses TEXT NOT NULL, extra TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS labelers(name TEXT PRIMARY KEY, token_hash TEXT UNIQUE NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS assignments(labeler TEXT NOT NULL REFERENCES labelers(name),
                                       item_id INTEGER NOT NULL REFERENCES items(id),
                                       assigned REAL NOT NULL, PRIMARY KEY(labeler, item_id));
CREATE TABLE IF NOT EXISTS labels(item_id INTEGER NOT NULL REFERENCES items(id),
                                  labeler TEXT NOT NULL REFERENCES labelers(name),
                                  ranking TEXT NOT NULL, likert TEXT NOT NULL, flags TEXT NOT NULL,
                                  seconds REAL, submitted REAL NOT NULL, PRIMARY KEY(item_id, labeler));
CREATE INDEX IF NOT EXISTS assignments_item ON assignments(item_id);
CREATE INDEX IF NOT EXISTS labels_item ON labels(item_id);
CREATE INDEX IF NOT EXISTS labels_labeler ON labels(labeler);
"""


class LabelError(ValueError):
    """A submission the store refuses (the server answers 400 with the message)."""


@dataclass
class Item:
    id: int
    key: str
    prompt: Any  # a string or a list of chat messages
    responses: list[str]  # [K]
    extra: dict  # other columns of the data row (e.g. "terminated")


TABLES = ("meta", "items", "labelers", "assignments", "labels")


def connect(path: str | Path, *, create: bool = True) -> sqlite3.Connection:
    """An open labeling database. Anything that is not one is refused in one line naming
    the path, before a byte is written: a directory, a missing parent directory (or a
    missing file when `create` is False), a file that is not SQLite, and another
    program's SQLite file (it is never given this schema or switched to WAL)."""
    p = Path(path)
    where = f"labels database {path}"
    if p.is_dir():
        raise ValueError(f"{where}: is a directory; expected an SQLite file (created if missing)")
    if p.exists() and not p.is_file():
        raise ValueError(f"{where}: not a regular file (a pipe or a device?)")
    if not p.exists():
        if not create:
            raise FileNotFoundError(f"no labels database at {path}")
        if not p.parent.is_dir():
            raise ValueError(f"{where}: its directory {p.parent} does not exist")
    try:
        conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as e:  # "file is not a database", "unable to open database file", ...
        raise ValueError(f"{where}: cannot open it as an SQLite database ({e})") from None
    if tables and not {"items", "labels"} <= tables:
        conn.close()
        raise ValueError(f"{where}: is another program's SQLite database (tables: {', '.join(sorted(tables))}), "
                         f"not a labeling database ({', '.join(TABLES)}); give a new --db path")
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # fsync at each commit: a label is on disk before the reply
        conn.execute("PRAGMA foreign_keys=ON")
    except sqlite3.DatabaseError as e:  # e.g. a read-only file or directory
        conn.close()
        raise ValueError(f"{where}: cannot open it for writing ({e})") from None
    conn.row_factory = sqlite3.Row
    return conn


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_item(row: dict, where: Where) -> tuple[str, Any, list[str], dict]:
    """(key, prompt, responses, extra) of one data row: ``prompt`` (string or messages) and
    ``responses`` (K >= 2 distinct strings); ``id`` (optional) names it, other columns are kept."""
    if "prompt" not in row:
        raise where.error("prompt", f"missing; columns present: {sorted(row)}", reason="missing")
    prompt = as_prompt(row["prompt"], where, "prompt")
    responses = row.get("responses")
    if not isinstance(responses, list) or len(responses) < 2:
        raise where.error("responses", f"expected a list of K >= 2 responses, got {type_name(responses)}",
                          reason="type")
    texts = [as_response(r, where, f"responses[{i}]") for i, r in enumerate(responses)]
    if len(set(texts)) < len(texts):
        raise where.error("responses", "two responses are identical (a ranking needs K distinct ones)",
                          reason="identical")
    extra = {k: v for k, v in row.items() if k not in ("id", "prompt", "responses")}
    key = str(row["id"]) if row.get("id") is not None else hashlib.sha256(
        json.dumps([prompt, texts], sort_keys=True).encode()).hexdigest()[:16]
    return key, prompt, texts, extra


class Store:
    """One connection behind a lock: requests are short transactions, run one at a time."""

    def __init__(self, path: str | Path, labels_per_item: int = 1, lease_s: float = 3600.0):
        if labels_per_item < 1:
            raise ValueError(f"labels_per_item must be >= 1, got {labels_per_item}")
        self.path, self.labels_per_item, self.lease_s = str(path), labels_per_item, lease_s
        self._conn = connect(path)
        self._lock = threading.Lock()
        self._conn.executescript(_SCHEMA)
        self._floor = 0  # every item below this id has all its labels: searches start here
        with self._tx() as c:
            c.execute("INSERT OR IGNORE INTO meta VALUES ('secret', ?)", (secrets.token_hex(32),))
        self._secret = self._one("SELECT value FROM meta WHERE key = 'secret'")[0].encode()

    # ------------------------------------------------------------------ plumbing

    @contextlib.contextmanager
    def _tx(self):
        """One write transaction under the lock: committed at the end, rolled back on an error."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _one(self, sql: str, args: tuple = ()) -> sqlite3.Row | None:
        with self._lock:
            return self._conn.execute(sql, args).fetchone()

    def close(self) -> None:
        self._conn.close()

    # ------------------------------------------------------------------ items and labelers

    def add_items(self, data: Any) -> int:
        """Load items from a JSONL/JSON/parquet file or a list of rows; rows already present
        (same key) are left as they are. Returns the number added."""
        rows = []
        for source, line, row in read_rows(data):
            rows.append(parse_item(row, Where(source, line)))
        with self._tx() as c:
            before = c.execute("SELECT count(*) FROM items").fetchone()[0]
            c.executemany("INSERT OR IGNORE INTO items(key, prompt, responses, extra) VALUES (?, ?, ?, ?)",
                          [(k, json.dumps(p), json.dumps(r), json.dumps(e)) for k, p, r, e in rows])
            return c.execute("SELECT count(*) FROM items").fetchone()[0] - before

    def add_labeler(self, name: str) -> str | None:
        """A new labeler's secret token (shown once; only its hash is stored), or None if
        the name exists already (it keeps its token)."""
        if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ValueError(f"labeler names are letters, digits, '-', '_' and '.', got {name!r}")
        token = secrets.token_urlsafe(24)
        with self._tx() as c:
            cur = c.execute("INSERT OR IGNORE INTO labelers VALUES (?, ?, ?)", (name, _hash(token), time.time()))
            return token if cur.rowcount else None

    def labeler_for(self, token: str | None) -> str | None:
        if not token:
            return None
        row = self._one("SELECT name FROM labelers WHERE token_hash = ?", (_hash(token),))
        return row["name"] if row else None

    def csrf_token(self, labeler: str) -> str:
        """HMAC of the labeler's name under the database's secret: stable across restarts,
        so an open page keeps working after the server comes back."""
        return hmac.new(self._secret, f"csrf:{labeler}".encode(), "sha256").hexdigest()

    def check_csrf(self, labeler: str, token: str | None) -> bool:
        # as bytes: compare_digest refuses str with non-ASCII characters (a header's latin-1 bytes)
        return bool(token) and hmac.compare_digest(self.csrf_token(labeler).encode(), token.encode("utf-8", "replace"))

    def item_id_for(self, key: Any) -> int | None:
        """The database id of the item whose items-file `id` is `key` (a string, or the
        number the file held), or None."""
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            return None
        row = self._one("SELECT id FROM items WHERE key = ?", (str(key),))
        return row["id"] if row else None

    def item(self, item_id: int) -> Item | None:
        row = self._one("SELECT * FROM items WHERE id = ?", (item_id,))
        return _item(row) if row else None

    # ------------------------------------------------------------------ labeling

    def next_item(self, labeler: str) -> Item | None:
        """The item this labeler has open (assigned, not submitted), else the first item
        that still needs labels and that they have not seen; None when none is left."""
        with self._tx() as c:
            row = c.execute("""SELECT i.* FROM assignments a JOIN items i ON i.id = a.item_id
                               WHERE a.labeler = ? AND NOT EXISTS (SELECT 1 FROM labels l
                                     WHERE l.item_id = a.item_id AND l.labeler = a.labeler)
                               ORDER BY a.assigned, a.item_id LIMIT 1""", (labeler,)).fetchone()
            if row is None:
                floor = c.execute("""SELECT min(id) FROM items WHERE id >= ? AND
                    (SELECT count(*) FROM labels l WHERE l.item_id = items.id) < ?""",
                                  (self._floor, self.labels_per_item)).fetchone()[0]
                if floor is None:
                    return None
                self._floor = floor
                row = c.execute("""SELECT i.* FROM items i
                    WHERE i.id >= ? AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.item_id = i.id AND a.labeler = ?)
                      AND (SELECT count(*) FROM labels l WHERE l.item_id = i.id)
                        + (SELECT count(*) FROM assignments a WHERE a.item_id = i.id AND a.assigned > ?
                           AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.item_id = i.id AND l.labeler = a.labeler))
                        < ?
                    ORDER BY i.id LIMIT 1""", (floor, labeler, time.time() - self.lease_s,
                                               self.labels_per_item)).fetchone()
                if row is not None:
                    c.execute("INSERT INTO assignments VALUES (?, ?, ?)", (labeler, row["id"], time.time()))
            return _item(row) if row else None

    def submit(self, labeler: str, item_id: Any, order: Any, likert: Any, flags: Any,
               seconds: Any = None) -> None:
        """Store one label, committed before returning. `order`: response indices best first;
        `likert`: one score per response (index order); `flags`: one list of FLAGS keys per
        response. A labeler may resubmit an item (the last submission counts)."""
        if not isinstance(item_id, int) or isinstance(item_id, bool):
            raise LabelError("item_id: expected an integer")
        if not -(1 << 63) <= item_id < 1 << 63:  # SQLite's integers are 64-bit: no such item
            raise LabelError(f"no item {item_id}")
        with self._tx() as c:
            row = c.execute("SELECT responses FROM items WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                raise LabelError(f"no item {item_id}")
            if c.execute("SELECT 1 FROM assignments WHERE labeler = ? AND item_id = ?",
                         (labeler, item_id)).fetchone() is None:
                raise LabelError(f"item {item_id} was not assigned to {labeler}")
            k = len(json.loads(row["responses"]))
            ranking, likert, flags = _validate(k, order, likert, flags)
            if seconds is not None and (not isinstance(seconds, (int, float)) or isinstance(seconds, bool)
                                        or not 0 <= seconds < 1e7):
                raise LabelError("seconds: expected a non-negative number")
            c.execute("INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?, ?, ?, ?)",
                      (item_id, labeler, json.dumps(ranking), json.dumps(likert), json.dumps(flags),
                       seconds, time.time()))

    def progress(self, labeler: str | None = None, full: bool = True) -> dict:
        """Counts of items and labels, this labeler's own (`mine`), and with `full` the
        per-labeler counts and the items with all their labels (which scan every label)."""
        with self._lock:
            c = self._conn
            items = c.execute("SELECT count(*) FROM items").fetchone()[0]
            labels = c.execute("SELECT count(*) FROM labels").fetchone()[0]
            out = {"items": items, "labels": labels, "labels_per_item": self.labels_per_item,
                   "labels_needed": items * self.labels_per_item}
            if labeler is not None:
                out["mine"] = c.execute("SELECT count(*) FROM labels WHERE labeler = ?", (labeler,)).fetchone()[0]
            if not full:
                return out
            complete = c.execute("SELECT count(*) FROM (SELECT item_id FROM labels GROUP BY item_id "
                                 "HAVING count(*) >= ?)", (self.labels_per_item,)).fetchone()[0]
            per = {r["name"]: r["n"] for r in c.execute(
                "SELECT name, (SELECT count(*) FROM labels l WHERE l.labeler = name) AS n FROM labelers ORDER BY name")}
        return {**out, "items_complete": complete, "labelers": per}


def _item(row: sqlite3.Row) -> Item:
    return Item(row["id"], row["key"], json.loads(row["prompt"]), json.loads(row["responses"]), json.loads(row["extra"]))


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _validate(k: int, order: Any, likert: Any, flags: Any) -> tuple[list[int], list[int], list[list[str]]]:
    """(ranking as rank per response, likert, flags) or LabelError."""
    if not isinstance(order, list) or not all(map(_is_int, order)) or sorted(order) != list(range(k)):
        raise LabelError(f"order: expected every response index 0..{k - 1} once, best first")
    lo, hi = LIKERT
    if not isinstance(likert, list) or len(likert) != k or not all(_is_int(x) and lo <= x <= hi for x in likert):
        raise LabelError(f"likert: expected {k} integers from {lo} to {hi}")
    if flags is None:
        flags = [[] for _ in range(k)]
    if (not isinstance(flags, list) or len(flags) != k
            or not all(isinstance(f, list) and all(isinstance(x, str) and x in FLAGS for x in f) for f in flags)):
        raise LabelError(f"flags: expected {k} lists of {sorted(FLAGS)}")
    ranking = [0] * k
    for rank, i in enumerate(order):
        ranking[i] = rank
    return ranking, list(likert), [sorted(set(f)) for f in flags]
