"""The label store: every teacher answer in one SQLite file, durable as soon as it is written.

One row per (corpus, utterance_id, teacher, prompt_hash) with the raw answer, the parsed label (NULL unless the
answer was a label), the status (ok / invalid / error / refused), latency, attempts, a hash of the text that was labelled
and a timestamp. Each answer is committed on its own in WAL mode: a labelling run killed at any moment keeps every
answer it had received, and a rerun asks the teacher only for what is missing (or whose text has changed).
``synchronous=NORMAL`` keeps commits durable against a killed process; only an operating-system crash or power
loss can drop the last few.

:func:`join_labels` puts the labels back beside a manifest's rows; :func:`pseudo_labelled_manifest` turns them
into a three-class manifest for text pretraining.
"""

from __future__ import annotations

import datetime
import hashlib
import sqlite3
from pathlib import Path

import pandas as pd

from merits.data.manifest import Manifest
from merits.errors import DataError
from merits.locks import sqlite_wal
from merits.teach.prompt import SENTIMENTS

SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    corpus        TEXT NOT NULL,
    utterance_id  TEXT NOT NULL,
    teacher       TEXT NOT NULL,
    prompt_hash   TEXT NOT NULL,
    text_hash     TEXT NOT NULL,
    raw           TEXT,
    label         TEXT CHECK (label IS NULL OR label IN ('negative', 'neutral', 'positive')),
    status        TEXT NOT NULL CHECK (status IN ('ok', 'invalid', 'error', 'refused')),
    latency_s     REAL,
    attempts      INTEGER,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (corpus, utterance_id, teacher, prompt_hash)
);
CREATE TABLE IF NOT EXISTS prompts (
    prompt_hash   TEXT PRIMARY KEY,
    prompt        TEXT NOT NULL
);
-- which data each corpus name stands for: two files of one stem (calls.csv in two folders) would otherwise share
-- one namespace of rows, the second replacing the first's labels
CREATE TABLE IF NOT EXISTS corpora (
    corpus        TEXT PRIMARY KEY,
    source        TEXT NOT NULL
);
"""
# Every answer also by what was asked (teacher, prompt, text), whatever corpus or utterance asked it: an answer paid
# for is never lost when another corpus of the same name replaces a row of labels, and the same text is never
# bought twice. Only answers (ok, invalid) are kept here; errors and refusals are asked again by the rules above.
ANSWERS = """
CREATE TABLE IF NOT EXISTS answers (
    teacher       TEXT NOT NULL,
    prompt_hash   TEXT NOT NULL,
    text_hash     TEXT NOT NULL,
    raw           TEXT,
    label         TEXT,
    status        TEXT NOT NULL,
    latency_s     REAL,
    attempts      INTEGER,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (teacher, prompt_hash, text_hash)
);
"""


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class LabelStore:
    """A SQLite file of teacher answers (created with its parent folders when absent)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite_wal(self.path)  # two runs may open one store at the same moment
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            self._migrate()
            if not self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'answers'").fetchone():
                with self._db:  # a store written before answers were kept by content: fill it from its labels
                    self._db.executescript(ANSWERS)
                    self._db.execute("INSERT OR IGNORE INTO answers SELECT teacher, prompt_hash, text_hash, raw, label, "
                                     "status, latency_s, attempts, created_at FROM labels WHERE status IN "
                                     "('ok', 'invalid')")
        except sqlite3.DatabaseError as e:
            raise DataError(f"label store {self.path}: not a usable SQLite database ({e})") from e

    def _migrate(self) -> None:
        """Stores written before the 'refused' status existed: the same rows under the current schema."""
        (sql,) = self._db.execute("SELECT sql FROM sqlite_master WHERE name = 'labels'").fetchone()
        if "'refused'" in sql:
            return
        with self._db:
            self._db.execute("ALTER TABLE labels RENAME TO labels_old")
            self._db.executescript(SCHEMA)
            self._db.execute("INSERT INTO labels SELECT * FROM labels_old")
            self._db.execute("DROP TABLE labels_old")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "LabelStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LabelStore({str(self.path)!r})"

    # ------------------------------------------------------------------ writing
    def register_prompt(self, prompt_hash: str, prompt: str) -> None:
        """Keep the prompt behind a hash, so that every stored label can be traced to its exact prompt."""
        with self._db:
            self._db.execute("INSERT OR IGNORE INTO prompts VALUES (?, ?)", (prompt_hash, prompt))

    def claim(self, corpus: str, source: str | None) -> None:
        """Record that ``corpus`` names the data read from ``source``; a name already standing for other data that
        still exists is a DataError (its labels would be replaced), which says how to give this data its own name.
        A source that no longer exists is taken to have moved (a data root, a reinstalled package): the name follows."""
        if not source:
            return
        with self._db:
            self._db.execute("INSERT OR IGNORE INTO corpora VALUES (?, ?)", (corpus, source))
            (held,) = self._db.execute("SELECT source FROM corpora WHERE corpus = ?", (corpus,)).fetchone()
            if held != source and not Path(held).exists():
                self._db.execute("UPDATE corpora SET source = ? WHERE corpus = ?", (source, corpus))
                held = source
        if held != source:
            raise DataError(
                f"label store {self.path}: the corpus name {corpus!r} already holds the labels of {held}; {source} "
                f"has the same name, and labelling it would replace them. Give it its own name (e.g. "
                f"data.options.name={corpus}_2 for a custom file), or use another store (store=...)")

    def put(self, corpus: str, utterance_id: str, teacher: str, prompt_hash: str, text_hash: str, answer) -> None:
        """Store one answer (a :class:`merits.teach.base.Answer`) and commit it; replaces an older one."""
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
        with self._db:  # one transaction per answer: committed before the next answer arrives
            self._db.execute(
                "INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (corpus, utterance_id, teacher, prompt_hash, text_hash, answer.raw, answer.label, answer.status,
                 answer.latency_s, answer.attempts, now))
            self._keep([(teacher, prompt_hash, text_hash, answer, now)])

    def put_many(self, corpus: str, teacher: str, prompt_hash: str, rows) -> None:
        """Store several answers in ONE transaction: ``rows`` of (utterance_id, text_hash, answer). The corpus-scale
        pipeline's driver (the store's only writer) flushes each batch that comes back from its workers this way:
        small transactions, each committed before the next batch is read."""
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(corpus, u, teacher, prompt_hash, h, a.raw, a.label, a.status, a.latency_s, a.attempts, now)
                 for u, h, a in rows])
            self._keep([(teacher, prompt_hash, h, a, now) for _, h, a in rows])

    def _keep(self, rows) -> None:
        """The answers among ``rows`` (teacher, prompt hash, text hash, answer, time), by what was asked."""
        self._db.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             [(t, p, h, a.raw, a.label, a.status, a.latency_s, a.attempts, now)
                              for t, p, h, a, now in rows if a.status in ("ok", "invalid")])

    def reuse(self, corpus: str, teacher: str, prompt_hash: str, wanted: list[tuple[str, str]]) -> set[str]:
        """For ``wanted`` (utterance id, text hash) pairs, the answers already bought for the same text, teacher and
        prompt (under any corpus or utterance) stored as this corpus' rows without asking; returns their ids."""
        found, done = {}, set()
        hashes = sorted({h for _, h in wanted})
        for start in range(0, len(hashes), 500):
            part = hashes[start:start + 500]
            found.update({row[0]: row[1:] for row in self._db.execute(
                "SELECT text_hash, raw, label, status, latency_s, attempts, created_at FROM answers WHERE teacher = ? "
                f"AND prompt_hash = ? AND text_hash IN ({','.join('?' * len(part))})", (teacher, prompt_hash, *part))})
        rows = [(corpus, u, teacher, prompt_hash, h, *found[h]) for u, h in wanted if h in found]
        if rows:
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            done = {r[1] for r in rows}
        return done

    # ------------------------------------------------------------------ reading
    def stored(self, corpus: str, teacher: str, prompt_hash: str, include_errors: bool = True,
               include_refused: bool = True) -> dict[str, str]:
        """utterance id -> text hash of the answers stored for this teacher and prompt: those counted as done.
        Without ``include_errors`` transient failures are left out (asked again), without ``include_refused``
        requests the server refused (HTTP 400, a malformed reply: deterministic, re-billed only when asked)."""
        sql = "SELECT utterance_id, text_hash FROM labels WHERE corpus = ? AND teacher = ? AND prompt_hash = ?"
        if not include_errors:
            sql += " AND status != 'error'"
        if not include_refused:
            sql += " AND status != 'refused'"
        return dict(self._db.execute(sql, (corpus, teacher, prompt_hash)).fetchall())

    def table(self, corpus: str | None = None, teacher: str | None = None, prompt_hash: str | None = None) -> pd.DataFrame:
        """The stored rows (all columns), filtered by whichever of corpus / teacher / prompt hash are given."""
        where, args = [], []
        for column, value in (("corpus", corpus), ("teacher", teacher), ("prompt_hash", prompt_hash)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "SELECT * FROM labels" + (" WHERE " + " AND ".join(where) if where else "")
        return pd.read_sql_query(sql + " ORDER BY rowid", self._db, params=args)

    def summary(self, corpus: str | None = None) -> pd.DataFrame:
        """One row per (corpus, teacher, prompt_hash): how many answers are ok / invalid / error."""
        sql = ("SELECT corpus, teacher, prompt_hash, COUNT(*) AS answers, "
               "SUM(status = 'ok') AS ok, SUM(status = 'invalid') AS invalid, SUM(status = 'error') AS error, "
               "SUM(status = 'refused') AS refused "
               "FROM labels" + (" WHERE corpus = ?" if corpus else "") +
               " GROUP BY corpus, teacher, prompt_hash ORDER BY corpus, teacher, prompt_hash")
        return pd.read_sql_query(sql, self._db, params=[corpus] if corpus else [])

    def prompt(self, prompt_hash: str) -> str | None:
        row = self._db.execute("SELECT prompt FROM prompts WHERE prompt_hash = ?", (prompt_hash,)).fetchone()
        return row[0] if row else None

    def resolve(self, corpus: str, teacher: str, prompt_hash: str | None = None) -> str:
        """The prompt hash to use for ``teacher`` on ``corpus``: the one given, or the only one stored."""
        hashes = [h for (h,) in self._db.execute(
            "SELECT DISTINCT prompt_hash FROM labels WHERE corpus = ? AND teacher = ?", (corpus, teacher))]
        if prompt_hash is not None:
            if prompt_hash not in hashes:
                raise DataError(f"label store {self.path} has no labels of teacher {teacher!r} with prompt "
                                f"{prompt_hash} for corpus {corpus!r}; it has prompts {hashes}")
            return prompt_hash
        if len(hashes) != 1:
            known = self.summary(corpus)[["teacher", "prompt_hash"]].to_dict("records")
            raise DataError(f"label store {self.path}: teacher {teacher!r} on corpus {corpus!r} has "
                            f"{'no labels' if not hashes else f'several prompts {hashes}; name one'}; stored: {known}")
        return hashes[0]


def _teacher_key(teacher) -> tuple[str, str | None]:
    """A Teacher object or a teacher name -> (name, prompt hash or None)."""
    return (teacher, None) if isinstance(teacher, str) else (teacher.name, teacher.prompt_hash)


def join_labels(manifest: Manifest, store: LabelStore, teacher, prompt_hash: str | None = None,
                column: str = "teacher_label") -> pd.DataFrame:
    """The manifest's table plus ``column`` (the label, "" when none) and ``column + "_status"`` per row.

    Status is ok / invalid / error as stored, ``missing`` for an utterance never labelled, and ``stale`` for one
    whose text changed after it was labelled (its label is not used).
    """
    name, hashed = _teacher_key(teacher)
    prompt_hash = store.resolve(manifest.corpus, name, prompt_hash or hashed)
    stored = store.table(manifest.corpus, name, prompt_hash).set_index("utterance_id")
    t = manifest.table.copy()
    current = t["text"].map(text_hash)
    found = t["utterance_id"].isin(stored.index)
    status = pd.Series("missing", index=t.index)
    status[found] = t.loc[found, "utterance_id"].map(stored["status"])
    stale = found & (t["utterance_id"].map(stored["text_hash"]) != current)
    status[stale] = "stale"
    label = t["utterance_id"].map(stored["label"]).where(status == "ok", "").fillna("")
    return t.assign(**{column: label, f"{column}_status": status})


def pseudo_labelled_manifest(manifest: Manifest, store: LabelStore, teacher, prompt_hash: str | None = None) -> Manifest:
    """The utterances the teacher labelled, with its label as ``label`` (classes negative / neutral / positive).

    Utterances without a usable label are left out and counted in ``excluded`` ("teacher invalid", "teacher
    error", "teacher missing", "teacher stale"). Splits, conversations and turns are kept as they were.
    """
    joined = join_labels(manifest, store, teacher, prompt_hash, column="_teacher")
    keep = joined["_teacher_status"] == "ok"
    if not keep.any():
        raise DataError(f"no usable labels of teacher {_teacher_key(teacher)[0]!r} for corpus {manifest.corpus!r} "
                        f"in {store.path}: statuses {joined['_teacher_status'].value_counts().to_dict()}")
    dropped = joined.loc[~keep, "_teacher_status"].value_counts()
    excluded = {f"teacher {status}": int(n) for status, n in dropped.items()}
    table = joined[keep].assign(label=joined.loc[keep, "_teacher"]).drop(columns=["_teacher", "_teacher_status"])
    name, hashed = _teacher_key(teacher)
    source = (f"{manifest.source} | pseudo-labels of {name} "
              f"(prompt {store.resolve(manifest.corpus, name, prompt_hash or hashed)}) from {store.path}")
    return Manifest(manifest.corpus, SENTIMENTS, table, source, excluded).validate()


__all__ = ["LabelStore", "join_labels", "pseudo_labelled_manifest", "text_hash"]
