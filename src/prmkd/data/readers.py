"""Readers for the four input kinds, each into one `RawData`.

(a) UniSRec-style atomic files (already split, integer ids, `.text`/`.item` + `.item2index`);
(b) RecBole atomic files (`.inter` with user, item, timestamp; `.item` with text fields);
(c) a plain interactions table (CSV / TSV / Parquet) plus an item table;
(d) raw Amazon review files (reviews JSON lines + meta JSON lines).

Every reader rejects malformed input with a `DataError` naming the file, the line and what was expected.
"""

from __future__ import annotations

import csv
import gzip
import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError

# --------------------------------------------------------------------------------------------------


@dataclass
class RawData:
    """Interactions with raw (string) ids, before remapping.

    `sequences[user]` is that user's chronological item list. `items[item]` maps field name -> text.
    `presplit` marks data that arrived already split (UniSRec files): it is used as it is, never filtered.
    `item_order` fixes the order in which items get internal ids (file order of the item table).
    """

    sequences: dict[str, list[str]]
    items: dict[str, dict[str, str]]
    item_order: list[str]
    presplit: bool = False
    text_ready: dict[str, str] = field(default_factory=dict)  # item -> already assembled text, if given
    sources: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    user_lines: dict[str, tuple[str, int]] = field(default_factory=dict)  # user -> (file, line) of its first row


class TextLines:
    """A text file read line by line as UTF-8 (a leading BOM skipped, `.gz` gunzipped): a byte sequence that is not
    UTF-8 is a DataError naming the file and the line; a missing file, a folder or an unreadable file is one too."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if self.path.is_dir():
            raise DataError(self.path, "is a folder, expected a file")
        try:
            self._f = gzip.open(self.path, "rb") if str(self.path).endswith(".gz") else open(self.path, "rb")
        except FileNotFoundError:
            raise DataError(self.path, "file not found") from None
        except OSError as e:
            raise DataError(self.path, e.strerror or str(e)) from None
        self.line = 0

    def readline(self) -> str:
        raw = self._read()
        return self._decode(raw) if raw else ""

    def _read(self) -> bytes:
        try:
            return self._f.readline()
        except (OSError, EOFError) as e:  # e.g. a truncated or corrupt .gz
            raise DataError(self.path, f"cannot be read ({e})", self.line + 1) from None

    def _decode(self, raw: bytes) -> str:
        self.line += 1
        if self.line == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(self.path, f"not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1})",
                            self.line) from None

    def __iter__(self):
        while raw := self._read():
            yield self._decode(raw)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def open_text(path: Path) -> TextLines:
    """Open a text file for reading lines (UTF-8, BOM accepted, `.gz` transparently gunzipped)."""
    return TextLines(path)


def _find(folder: Path, name: str, suffix: str, required: bool = True) -> Path | None:
    for cand in (folder / f"{name}{suffix}", folder / f"{name}{suffix}.gz"):
        if cand.exists():
            return cand
    if required:
        raise DataError(folder, f"expected a file '{name}{suffix}' (or '{name}{suffix}.gz') in this folder")
    return None


def _header(path: Path, line: str, want: dict[str, str]) -> dict[str, int]:
    """Map wanted logical columns to their index in an atomic-file header like `user_id:token`."""
    if not line.strip():
        raise DataError(path, "file is empty (expected a header line)", 1)
    names = [c.split(":")[0] for c in line.rstrip("\r\n").split("\t")]
    out = {}
    for key, col in want.items():
        if col not in names:
            raise DataError(path, f"missing column '{col}' in header (found: {', '.join(names)})", 1)
        out[key] = names.index(col)
    return out


def _int(path: Path, lineno: int, text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataError(path, f"{what} must be an integer, got '{text}'", lineno) from None


def _number(path: Path, lineno: int, text: str, what: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise DataError(path, f"{what} must be a number, got '{text}'", lineno) from None
    if not math.isfinite(x):
        raise DataError(path, f"{what} must be a finite number, got '{text}'", lineno)
    return x


# --------------------------------------------------------------------------------------------------
# (a) UniSRec-style atomic files


def _read_index(path: Path) -> dict[int, str]:
    """`KEY<TAB>idx` lines (no header) -> {idx: KEY}."""
    out: dict[int, str] = {}
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) != 2:
                raise DataError(path, f"expected 'KEY<TAB>index', got {len(parts)} columns", lineno)
            out[_int(path, lineno, parts[1], "index")] = parts[0]
    if not out:
        raise DataError(path, "file is empty (expected 'KEY<TAB>index' lines)")
    return out


def _read_seq_file(path: Path, n_known_items: int | None, item_table: str) -> list[tuple[int, list[int], int, int]]:
    """(user, history, item, line) rows of a `user_id, item_id_list, item_id` file."""
    rows = []
    with open_text(path) as f:
        first = f.readline()
        cols = _header(path, first, {"user": "user_id", "hist": "item_id_list", "item": "item_id"})
        for lineno, line in enumerate(f, 2):
            if not line.strip():
                continue
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) <= max(cols.values()):
                raise DataError(path, f"expected {len(first.split(chr(9)))} tab-separated columns, got {len(parts)}",
                                lineno)
            user = _int(path, lineno, parts[cols["user"]], "user_id")
            hist = [_int(path, lineno, t, "item id in item_id_list") for t in parts[cols["hist"]].split()]
            item = _int(path, lineno, parts[cols["item"]], "item_id")
            if n_known_items is not None:
                for it in [*hist, item]:
                    if not 0 <= it < n_known_items:
                        raise DataError(path, f"item {it} is not in the item table {item_table} "
                                              f"({n_known_items} items, ids 0..{n_known_items - 1})", lineno)
            rows.append((user, hist, item, lineno))
    if not rows:
        raise DataError(path, "file has a header but no interactions")
    return rows


def _chain_train(path: Path, user: int, rows: list[tuple[list[int], int]]) -> list[int]:
    """A user's training sequence from its prefix rows (file order: most recent prefix first).

    Each row is history -> next item; histories are capped (at 50), so the sequence is rebuilt by
    chaining targets, and every row is checked against what the chain says its history must be.
    """
    rows = rows[::-1]  # oldest prefix first
    seq = list(rows[0][0])
    for hist, item in rows:
        if not hist or seq[len(seq) - len(hist):] != hist:
            raise DataError(path, f"user {user}: training rows are not the successive prefixes of one sequence")
        seq.append(item)
    return seq


def _join_sequence(path: Path, user: int, train: list[int] | None, valid: tuple | None, test: tuple) -> list[int]:
    """Rebuild a user's full sequence from its train / valid / test rows (histories may be cut to 50)."""
    full: list[int] = list(train) if train else []
    for hist, item in (valid, test):
        if hist is None:
            continue
        if not full:
            full = list(hist)
        elif full[len(full) - len(hist):] != hist:
            raise DataError(path, f"user {user}: a history is not the user's earlier sequence "
                                  f"(validation / test rows disagree with the rows before them)")
        full.append(item)
    return full


def read_unisrec(folder: Path, name: str = "") -> RawData:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "expected a folder of UniSRec-style atomic files")
    if not name:
        tests = sorted(p.name.split(".test.inter")[0] for p in folder.glob("*.test.inter*"))
        if len(tests) != 1:
            raise DataError(folder, f"expected exactly one '*.test.inter' file, found {tests or 'none'}; set data.name")
        name = tests[0]
    test_p = _find(folder, name, ".test.inter")
    train_p = _find(folder, name, ".train.inter", required=False)
    valid_p = _find(folder, name, ".valid.inter", required=False)
    index_p = _find(folder, name, ".item2index", required=False)
    text_p = _find(folder, name, ".text", required=False)
    item_p = _find(folder, name, ".item", required=False)
    user_index_p = _find(folder, name, ".user2index", required=False)

    # item table: `.text` keyed by raw key (ASIN, via item2index) or `.item` keyed by the integer id
    keys = _read_index(index_p) if index_p else None
    items: dict[str, dict[str, str]] = {}
    text_ready: dict[str, str] = {}
    lines: dict[str, int] = {}  # item key -> its line in the item table
    if text_p is not None:
        with open_text(text_p) as f:
            cols = _header(text_p, f.readline(), {"id": "item_id", "text": "text"})
            for lineno, line in enumerate(f, 2):
                if not line.strip():
                    continue
                parts = line.rstrip("\r\n").split("\t")
                if len(parts) <= max(cols.values()):
                    raise DataError(text_p, "expected 'item_id<TAB>text'", lineno)
                key, text = parts[cols["id"]], parts[cols["text"]]
                _unique(text_p, lines, key, lineno)
                text_ready[key] = text
                items[key] = split_unisrec_text(text)
    elif item_p is not None:
        with open_text(item_p) as f:
            header = f.readline()
            if not header.strip():
                raise DataError(item_p, "file is empty (expected a header line)", 1)
            names = [c.split(":")[0] for c in header.rstrip("\r\n").split("\t")]
            if "item_id" not in names:
                raise DataError(item_p, f"missing column 'item_id' in header (found: {', '.join(names)})", 1)
            for lineno, line in enumerate(f, 2):
                if not line.strip():
                    continue
                parts = line.rstrip("\r\n").split("\t")
                row = dict(zip(names, parts))
                iid = _int(item_p, lineno, row["item_id"], "item_id")
                if keys is not None and iid not in keys:
                    raise DataError(item_p, f"item_id {iid} is not in the index {index_p.name}", lineno)
                key = keys[iid] if keys else row["item_id"]
                _unique(item_p, lines, key, lineno)
                items[key] = {k: v for k, v in row.items() if k != "item_id"}
    elif keys is not None:  # an ID-only dataset: the index names every item, none has text
        items = {k: {} for k in keys.values()}
    else:
        raise DataError(folder, f"expected an item table '{name}.text' or '{name}.item', or at least "
                                f"'{name}.item2index'")

    if keys is None:  # ids are the integers themselves
        for k in items:
            _int(text_p or item_p, lines[k], k, f"item_id (there is no '{name}.item2index' to map it)")
        n_items = max(int(k) for k in items) + 1 if items else 0
        keys = {i: str(i) for i in range(n_items)}
    item_table = (text_p or item_p or index_p).name
    missing = [k for k in keys.values() if k not in items]
    if missing:
        raise DataError(text_p or item_p or index_p, f"{len(missing)} items of the index have no row here, e.g. "
                                                     f"'{missing[0]}'")

    test_rows = _read_seq_file(test_p, len(keys), item_table)
    valid_rows = {u: (h, i) for u, h, i, _ in _read_seq_file(valid_p, len(keys), item_table)} if valid_p else {}
    train_rows: dict[int, list] = {}
    if train_p:
        for u, h, i, _ in _read_seq_file(train_p, len(keys), item_table):
            train_rows.setdefault(u, []).append((h, i))
    users = _read_index(user_index_p) if user_index_p else None
    sequences: dict[str, list[str]] = {}
    user_lines: dict[str, tuple[str, int]] = {}
    for u, hist, item, lineno in test_rows:
        train = _chain_train(train_p, u, train_rows[u]) if u in train_rows else None
        full = _join_sequence(test_p, u, train, valid_rows.get(u, (None, None)), (hist, item))
        ukey = users.get(u, str(u)) if users else str(u)
        sequences[ukey] = [keys[i] for i in full]
        user_lines[ukey] = (str(test_p), lineno)
    order = [keys[i] for i in sorted(keys)]
    notes = [] if valid_p else ["no .valid.inter: validation item = second-to-last item of the test history"]
    srcs = [str(p) for p in (train_p, test_p, valid_p, index_p, text_p, item_p, user_index_p) if p]
    return RawData(sequences, items, order, presplit=True, text_ready=text_ready, sources=srcs, notes=notes,
                   user_lines=user_lines)


def split_unisrec_text(text: str) -> dict[str, str]:
    """A UniSRec clean text "Title. Categories. Brand. " -> fields, split from the right.

    The format joins fields that each end with one period; titles may contain ". " themselves,
    so the last field is the brand, the one before it the categories, and the rest the title.
    """
    parts = [p.strip() for p in text.strip().rstrip(".").split(". ")]
    if len(parts) >= 3:
        return {"title": ". ".join(parts[:-2]), "categories": parts[-2], "brand": parts[-1]}
    return {"title": ". ".join(parts)}


# --------------------------------------------------------------------------------------------------
# (b) RecBole atomic files


def recbole_example_folder(name: str) -> Path:
    """The folder of a dataset shipped inside the `recbole` wheel (installed with --no-deps)."""
    import importlib.util

    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"recbole:{name}", "the 'recbole' package is not installed; install its wheel without its "
                                           "dependencies: pip install --no-deps recbole==1.2.1")
    folder = Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / name
    if not folder.is_dir():
        raise DataError(folder, f"recbole ships no example dataset '{name}'")
    return folder


def read_recbole(folder: Path, name: str = "") -> RawData:
    folder = Path(folder)
    if not name:
        inters = sorted(p.name.split(".inter")[0] for p in folder.glob("*.inter"))
        if len(inters) != 1:
            raise DataError(folder, f"expected exactly one '*.inter' file, found {inters or 'none'}; set data.name")
        name = inters[0]
    inter_p = _find(folder, name, ".inter")
    item_p = _find(folder, name, ".item", required=False)
    events: list[tuple[str, str, float, int]] = []
    with open_text(inter_p) as f:
        cols = _header(inter_p, f.readline(), {"user": "user_id", "item": "item_id", "time": "timestamp"})
        for lineno, line in enumerate(f, 2):
            if not line.strip():
                continue
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) <= max(cols.values()):
                raise DataError(inter_p, f"expected at least {max(cols.values()) + 1} tab-separated columns", lineno)
            ts = _number(inter_p, lineno, parts[cols["time"]], "timestamp")
            events.append((parts[cols["user"]], parts[cols["item"]], ts, lineno))
    if not events:
        raise DataError(inter_p, "file has a header but no interactions")
    items: dict[str, dict[str, str]] = {}
    order: list[str] = []
    if item_p is not None:
        with open_text(item_p) as f:
            header = f.readline()
            _header(item_p, header, {"id": "item_id"})
            names = [c.split(":")[0] for c in header.rstrip("\r\n").split("\t")]
            first: dict[str, int] = {}
            for lineno, line in enumerate(f, 2):
                if not line.strip():
                    continue
                row = dict(zip(names, line.rstrip("\r\n").split("\t")))
                _unique(item_p, first, row["item_id"], lineno)
                fields = {k: v for k, v in row.items() if k != "item_id"}
                # RecBole's MovieLens names: movie_title -> title, class -> categories
                if "movie_title" in fields:
                    fields["title"] = fields.pop("movie_title")
                if "class" in fields:
                    fields["categories"] = fields.pop("class")
                items[row["item_id"]] = fields
                order.append(row["item_id"])
    raw = _events_to_raw(events, items, order, inter_p, item_p, strict_items=item_p is not None)
    raw.sources = [str(p) for p in (inter_p, item_p) if p]
    return raw


def _events_to_raw(events, items, order, inter_p, item_p, strict_items: bool) -> RawData:
    """Group (user, item, time, line) events into chronological sequences (ties keep file order)."""
    seqs: dict[str, list[tuple[float, int, str]]] = {}
    user_lines: dict[str, tuple[str, int]] = {}
    for user, item, ts, lineno in events:
        if strict_items and item not in items:
            raise DataError(inter_p, f"item '{item}' is not in the item table {item_p}", lineno)
        seqs.setdefault(user, []).append((ts, lineno, item))
        user_lines.setdefault(user, (str(inter_p), lineno))
    sequences = {u: [it for _, _, it in sorted(evs)] for u, evs in seqs.items()}
    if not items:  # no item table: items in order of first appearance, no text
        seen: dict[str, None] = {}
        for _, item, _, _ in events:
            seen.setdefault(item, None)
        order = list(seen)
        items = {i: {} for i in order}
    return RawData(sequences, items, order, user_lines=user_lines)


def _unique(path: Path, first: dict[str, int], item: str, lineno: int) -> None:
    """An item table lists each item once (a second row would give one item two internal ids)."""
    if item in first:
        raise DataError(path, f"item '{item}' is listed twice (first on line {first[item]})", lineno)
    first[item] = lineno


# --------------------------------------------------------------------------------------------------
# (c) plain tables


def _read_table(path: Path, required: list[str]) -> tuple[list[dict], list[int]]:
    """Rows of a CSV / TSV / Parquet file as dicts, with the line number of each (header = line 1)."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    suffixes = "".join(path.suffixes[-2:]).lower().replace(".gz", "")
    if suffixes.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError(path, "reading Parquet needs pyarrow: pip install pyarrow") from None
        table = pq.read_table(path)
        if table.num_rows == 0:
            raise DataError(path, "file is empty (no rows)")
        missing = [c for c in required if c not in table.column_names]
        if missing:
            raise DataError(path, f"missing column '{missing[0]}' (found: {', '.join(table.column_names)})")
        rows = [{k: ("" if v is None else str(v)) for k, v in r.items()} for r in table.to_pylist()]
        return rows, [i + 1 for i in range(len(rows))]  # Parquet has no lines: row numbers, 1-based
    if suffixes.endswith(".csv"):
        delim = ","
    elif suffixes.endswith((".tsv", ".txt", ".tab")):
        delim = "\t"
    else:
        raise DataError(path, f"unknown table format '{''.join(path.suffixes)}' (expected .csv, .tsv or .parquet)")
    with open_text(path) as f:
        reader = csv.reader(f, delimiter=delim)
        try:
            header = next(reader, None)
            if not header:
                raise DataError(path, "file is empty (expected a header line)", 1)
            header = [h.strip() for h in header]
            missing = [c for c in required if c not in header]
            if missing:
                raise DataError(path, f"missing column '{missing[0]}' in header (found: {', '.join(header)})", 1)
            rows, lines = [], []
            for row in reader:
                if not any(c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    raise DataError(path, f"expected {len(header)} columns, got {len(row)}", reader.line_num)
                rows.append(dict(zip(header, row)))
                lines.append(reader.line_num)
        except csv.Error as e:  # e.g. a stray carriage return or quote
            raise DataError(path, f"not a well-formed {'CSV' if delim == ',' else 'TSV'} row ({e})",
                            reader.line_num + 1) from None
    if not rows:
        raise DataError(path, "file has a header but no rows")
    return rows, lines


def read_table(inter_path: Path, item_path: Path | None, user_col: str, item_col: str, time_col: str,
               text_fields: list[str]) -> RawData:
    rows, lines = _read_table(inter_path, [user_col, item_col, time_col])
    events = [(r[user_col], r[item_col], _number(Path(inter_path), ln, r[time_col], f"column '{time_col}'"), ln)
              for r, ln in zip(rows, lines)]
    items: dict[str, dict[str, str]] = {}
    order: list[str] = []
    if item_path:
        irows, ilines = _read_table(item_path, [item_col])
        first: dict[str, int] = {}
        for r, ln in zip(irows, ilines):
            _unique(Path(item_path), first, r[item_col], ln)
            items[r[item_col]] = {k: v for k, v in r.items() if k != item_col}
            order.append(r[item_col])
    raw = _events_to_raw(events, items, order, Path(inter_path), item_path, strict_items=bool(item_path))
    raw.sources = [str(p) for p in (inter_path, item_path) if p]
    return raw


# --------------------------------------------------------------------------------------------------
# (d) raw Amazon review files


def _json_lines(path: Path):
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    n = 0
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(path, f"not a JSON object ({e.msg})", lineno) from None
            if not isinstance(obj, dict):
                raise DataError(path, "expected one JSON object per line", lineno)
            n += 1
            yield lineno, obj
    if n == 0:
        raise DataError(path, "file is empty (expected JSON lines)")


def _clean(text) -> str:
    if isinstance(text, list):
        text = " ".join(_clean(t) for t in text)
    text = html.unescape(str(text or ""))
    return re.sub(r"\s+", " ", text.replace('"', " ").replace("\n", " ")).strip()


def read_amazon(reviews_path: Path, meta_path: Path) -> RawData:
    items: dict[str, dict[str, str]] = {}
    order: list[str] = []
    for lineno, obj in _json_lines(meta_path):
        if "asin" not in obj:
            raise DataError(meta_path, "missing key 'asin'", lineno)
        cats = obj.get("categories", obj.get("category", []))
        if cats and isinstance(cats[0], list):  # 2014 files: a list of category paths
            cats = [c for path in cats for c in path]
        fields = {"title": _clean(obj.get("title", "")), "brand": _clean(obj.get("brand", "")),
                  "categories": _clean(cats)}
        if obj["asin"] not in items:
            order.append(obj["asin"])
        items[obj["asin"]] = fields
    events = []
    dropped = 0
    for lineno, obj in _json_lines(reviews_path):
        for key in ("reviewerID", "asin", "unixReviewTime"):
            if key not in obj:
                raise DataError(reviews_path, f"missing key '{key}'", lineno)
        t = obj["unixReviewTime"]
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
            t = _number(Path(reviews_path), lineno, str(t), "unixReviewTime")
        if obj["asin"] not in items:  # items without metadata are dropped, as UniSRec does
            dropped += 1
            continue
        events.append((obj["reviewerID"], obj["asin"], float(t), lineno))
    if not events:
        raise DataError(reviews_path, "no review refers to an item of the meta file")
    raw = _events_to_raw(events, items, order, Path(reviews_path), meta_path, strict_items=False)
    raw.sources = [str(reviews_path), str(meta_path)]
    if dropped:
        raw.notes.append(f"{dropped} reviews of items without metadata dropped")
    return raw
