"""Readers of the four input kinds: correct on small fixtures with known answers and on the real data; every
malformed input rejected with a DataError naming the file, the line (where there is one) and what was expected."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import require_dataset, require_recbole, write_table
from prmkd.config import DataConfig, FeatureConfig
from prmkd.data.dataset import build, kcore, prepare
from prmkd.errors import DataError


def raw_seq(ds, u: int) -> list[str]:
    """User u's sequence as raw item keys."""
    return [ds.item_keys[i - 1] for i in ds.seq(u)]


def user_index(ds, key: str) -> int:
    return ds.user_keys.index(key)


def assert_data_error(cfg: DataConfig, file: Path, line: int | None, *words: str) -> DataError:
    """Building `cfg` raises a DataError naming `file` (and `line`), whose message contains `words`."""
    with pytest.raises(DataError) as info:
        build(cfg)
    err = info.value
    msg = str(err)
    assert Path(err.path) == Path(file), msg
    assert msg.startswith(str(file)), msg
    if line is not None:
        assert err.line == line, msg
        assert f"{file}, line {line}:" in msg, msg
    where = str(file) + (f", line {err.line}" if err.line is not None else "") + ": "
    assert msg.startswith(where), msg
    detail = msg[len(where):]
    for w in words:
        assert w in detail, msg
    return err


# --------------------------------------------------------------------------------------------------
# (a) UniSRec-style atomic files


def write_unisrec(folder: Path, seqs: dict[int, list[int]], texts: list[str], name: str = "toy") -> Path:
    """UniSRec files as the real ones are laid out: prefix rows newest first, histories cut to 50."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.item2index").write_text("".join(f"A{i:04d}\t{i}\n" for i in range(len(texts))))
    (folder / f"{name}.text").write_text("item_id:token\ttext:token_seq\n" +
                                          "".join(f"A{i:04d}\t{t}\n" for i, t in enumerate(texts)))
    head = "user_id:token\titem_id_list:token_seq\titem_id:token\n"

    def row(u, s, t):
        return f"{u}\t{' '.join(map(str, s[:t][-50:]))}\t{s[t]}\n"

    train = "".join(row(u, s, t) for u, s in seqs.items() for t in range(len(s) - 3, 0, -1))
    (folder / f"{name}.train.inter").write_text(head + train)
    (folder / f"{name}.valid.inter").write_text(head + "".join(row(u, s, len(s) - 2) for u, s in seqs.items()))
    (folder / f"{name}.test.inter").write_text(head + "".join(row(u, s, len(s) - 1) for u, s in seqs.items()))
    return folder


UNISREC_SEQS = {0: [0, 1, 2, 3, 4], 1: [2, 3, 5, 1, 0, 4], 2: [5, 4, 3], 3: list(range(6)) * 10}  # user 3: 60 items
UNISREC_TEXTS = ["Alpha one. Cat A. BrandA. ", "Beta. Cat B. BrandB. ", "Gamma. Cat C. BrandC. ",
                 "Delta. Cat D. BrandD. ", "Eps. Cat E. BrandE. ", "Zeta. Cat F. BrandF. "]


@pytest.fixture
def unisrec_dir(tmp_path):
    return write_unisrec(tmp_path / "toy_unisrec", UNISREC_SEQS, UNISREC_TEXTS)


def test_unisrec_fixture_read(unisrec_dir):
    ds = build(DataConfig(path=str(unisrec_dir)))
    assert ds.item_keys == [f"A{i:04d}" for i in range(6)]  # internal id = index + 1
    assert ds.user_keys == ["0", "1", "2", "3"]
    for u, s in UNISREC_SEQS.items():
        # sequences rebuilt in full, including user 3 whose stored histories are cut to 50
        assert ds.seq(u).tolist() == [i + 1 for i in s]
    assert ds.item_text[1:] == UNISREC_TEXTS  # the given clean text is kept as it is
    assert ds.item_fields["title"][1] == "Alpha one"
    assert ds.item_fields["brand"][1] == "BrandA" and ds.item_fields["categories"][1] == "Cat A"
    assert ds.n_train_instances == sum(len(s) - 3 for s in UNISREC_SEQS.values())


def test_unisrec_without_train_and_valid_uses_test_histories(tmp_path):
    folder = write_unisrec(tmp_path / "x", {0: [0, 1, 2, 3], 1: [3, 2, 1]}, UNISREC_TEXTS[:4])
    (folder / "toy.train.inter").unlink()
    (folder / "toy.valid.inter").unlink()
    ds = build(DataConfig(path=str(folder)))
    assert [ds.seq(u).tolist() for u in range(2)] == [[1, 2, 3, 4], [4, 3, 2]]


def test_unisrec_missing_column(unisrec_dir):
    p = unisrec_dir / "toy.test.inter"
    p.write_text(p.read_text().replace("item_id:token\n", "target:token\n", 1))
    assert_data_error(DataConfig(path=str(unisrec_dir)), p, 1, "missing column 'item_id'")


def test_unisrec_non_integer_id(unisrec_dir):
    p = unisrec_dir / "toy.train.inter"
    lines = p.read_text().splitlines(keepends=True)
    lines[2] = lines[2].replace("\t", "\tx ", 1)  # a non-integer id in the history of line 3
    p.write_text("".join(lines))
    assert_data_error(DataConfig(path=str(unisrec_dir)), p, 3, "must be an integer", "'x'")


def test_unisrec_item_absent_from_item_table(unisrec_dir):
    p = unisrec_dir / "toy.test.inter"
    lines = p.read_text().splitlines(keepends=True)
    lines[2] = lines[2].rsplit("\t", 1)[0] + "\t6\n"  # item 6: the index has ids 0..5
    p.write_text("".join(lines))
    assert_data_error(DataConfig(path=str(unisrec_dir)), p, 3, "item 6 is not in the item table", "toy.text")


def test_unisrec_item_file_keyed_by_non_integer_without_index(unisrec_dir):
    """Without an item2index the ids must be integers; an ASIN-keyed item table is an error, not a crash."""
    (unisrec_dir / "toy.item2index").unlink()
    assert_data_error(DataConfig(path=str(unisrec_dir)), unisrec_dir / "toy.text", 2, "A0000", "integer")


@pytest.mark.parametrize("which", ["toy.test.inter", "toy.text"])
def test_unisrec_empty_file(unisrec_dir, which):
    (unisrec_dir / which).write_text("")
    assert_data_error(DataConfig(path=str(unisrec_dir)), unisrec_dir / which, 1, "empty")


def test_unisrec_empty_index(unisrec_dir):
    (unisrec_dir / "toy.item2index").write_text("")
    assert_data_error(DataConfig(path=str(unisrec_dir)), unisrec_dir / "toy.item2index", None, "empty")


def test_unisrec_short_user(tmp_path):
    folder = write_unisrec(tmp_path / "x", {0: [0, 1, 2, 3]}, UNISREC_TEXTS[:4])
    with open(folder / "toy.test.inter", "a") as f:
        f.write("1\t2\t3\n")  # user 1: history [2] -> 3, two interactions in all (line 3)
    assert_data_error(DataConfig(path=str(folder)), folder / "toy.test.inter", 3, "fewer than 3", "user '1'")


def test_unknown_format(unisrec_dir):
    err = assert_data_error(DataConfig(path=str(unisrec_dir), format="unisrecc"), unisrec_dir, None)
    assert "unknown format 'unisrecc'" in str(err)


def test_unrecognisable_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n")
    assert_data_error(DataConfig(path=str(tmp_path)), tmp_path, None, "cannot tell the format")


# --------------------------------------------------------------------------------------------------
# (b) RecBole atomic files


def write_recbole(folder: Path, inter_rows: list[tuple], item_rows: list[tuple] | None, name: str = "toy") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_table(folder / f"{name}.inter", inter_rows,
                ("user_id:token", "item_id:token", "rating:float", "timestamp:float"), sep="\t")
    if item_rows is not None:
        write_table(folder / f"{name}.item", item_rows,
                    ("item_id:token", "movie_title:token_seq", "release_year:token", "class:token_seq"), sep="\t")
    return folder


RECBOLE_INTER = [  # file lines 2.. ; user 7 has timestamp ties
    ("7", "m1", 5, 300), ("7", "m2", 4, 100), ("9", "m3", 3, 50), ("7", "m3", 1, 300),
    ("9", "m1", 2, 60), ("7", "m4", 5, 100), ("9", "m2", 4, 40),
]
RECBOLE_ITEMS = [("m4", "Delta", "1999", "Drama"), ("m1", "Toy Story", "1995", "Animation Comedy"),
                 ("m2", "Heat", "1995", "Crime"), ("m3", "Up", "2009", "Animation")]


@pytest.fixture
def recbole_dir(tmp_path):
    return write_recbole(tmp_path / "rb", RECBOLE_INTER, RECBOLE_ITEMS)


def test_recbole_fixture_read(recbole_dir):
    ds = build(DataConfig(path=str(recbole_dir)))
    assert ds.item_keys == ["m4", "m1", "m2", "m3"]  # item-table order
    # chronological; equal timestamps keep file order (m2 line 3 before m4 line 7; m1 line 2 before m3 line 5)
    assert raw_seq(ds, user_index(ds, "7")) == ["m2", "m4", "m1", "m3"]
    assert raw_seq(ds, user_index(ds, "9")) == ["m2", "m3", "m1"]
    i = ds.item_keys.index("m1") + 1
    assert ds.item_fields["title"][i] == "Toy Story" and ds.item_fields["categories"][i] == "Animation Comedy"
    assert ds.item_text[i] == "Toy Story. Animation Comedy."  # no brand: title. categories.


def test_recbole_without_item_table(tmp_path):
    folder = write_recbole(tmp_path / "rb", RECBOLE_INTER, None)
    ds = build(DataConfig(path=str(folder)))
    assert ds.item_keys == ["m1", "m2", "m3", "m4"]  # order of first appearance
    assert ds.item_text == [""] * 5


def test_recbole_missing_column(tmp_path):
    folder = tmp_path / "rb"
    folder.mkdir()
    write_table(folder / "toy.inter", [("1", "a", "3")], ("user_id:token", "item_id:token", "rating:float"), "\t")
    assert_data_error(DataConfig(path=str(folder)), folder / "toy.inter", 1, "missing column 'timestamp'")


def test_recbole_item_table_missing_column(recbole_dir):
    p = recbole_dir / "toy.item"
    p.write_text(p.read_text().replace("item_id:token", "movie_id:token", 1))
    assert_data_error(DataConfig(path=str(recbole_dir)), p, 1, "missing column 'item_id'")


def test_recbole_non_numeric_timestamp(tmp_path):
    rows = list(RECBOLE_INTER)
    rows[3] = ("7", "m3", 1, "yesterday")  # file line 5
    folder = write_recbole(tmp_path / "rb", rows, RECBOLE_ITEMS)
    assert_data_error(DataConfig(path=str(folder)), folder / "toy.inter", 5, "timestamp must be a number", "yesterday")


def test_recbole_item_absent_from_item_table(tmp_path):
    rows = [*RECBOLE_INTER, ("9", "m99", 1, 500)]  # file line 9
    folder = write_recbole(tmp_path / "rb", rows, RECBOLE_ITEMS)
    assert_data_error(DataConfig(path=str(folder)), folder / "toy.inter", 9, "'m99' is not in the item table")


def test_recbole_duplicate_item(tmp_path):
    folder = write_recbole(tmp_path / "rb", RECBOLE_INTER, [*RECBOLE_ITEMS, ("m1", "Again", "2000", "X")])
    assert_data_error(DataConfig(path=str(folder)), folder / "toy.item", 6, "'m1'", "line 3")


def test_recbole_empty_inter(recbole_dir):
    p = recbole_dir / "toy.inter"
    p.write_text("")
    assert_data_error(DataConfig(path=str(recbole_dir)), p, 1, "empty")
    p.write_text("user_id:token\titem_id:token\ttimestamp:float\n")  # a header only
    assert_data_error(DataConfig(path=str(recbole_dir)), p, None, "no interactions")


def test_recbole_empty_item_table(recbole_dir):
    (recbole_dir / "toy.item").write_text("")
    assert_data_error(DataConfig(path=str(recbole_dir)), recbole_dir / "toy.item", 1, "empty")


def test_recbole_short_user(tmp_path):
    rows = [*RECBOLE_INTER, ("5", "m1", 1, 1), ("5", "m2", 1, 2)]  # user 5 first appears on line 9
    folder = write_recbole(tmp_path / "rb", rows, RECBOLE_ITEMS)
    assert_data_error(DataConfig(path=str(folder)), folder / "toy.inter", 9, "fewer than 3", "user '5' with 2",
                      "kcore")


def test_recbole_folder_without_inter(tmp_path):
    (tmp_path / "toy.item").write_text("item_id:token\n1\n")
    assert_data_error(DataConfig(path=str(tmp_path), format="recbole"), tmp_path, None, "'*.inter'")


# --------------------------------------------------------------------------------------------------
# (c) plain tables


TABLE_ROWS = [  # file lines 2..; u1 has timestamp ties
    ("u1", "x", 5), ("u1", "y", 3), ("u2", "y", 1), ("u1", "z", 5), ("u1", "w", 3), ("u2", "x", 2), ("u2", "z", 3),
]
TABLE_ITEMS = [("w", "Widget Pro.", "Acme", "Tools Hand Tools"), ("x", "Xylo", "", "Music"),
               ("y", "Yo-yo", "Duncan", ""), ("z", "Zither", "Z&Co", "Music Strings")]


def write_parquet(path: Path, rows: list[tuple], header: tuple) -> Path:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    cols = {h: [r[i] for r in rows] for i, h in enumerate(header)}
    pq.write_table(pa.table(cols), path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "tsv", "parquet"])
def test_table_read(tmp_path, fmt):
    head, ihead = ("user", "item", "timestamp"), ("item", "title", "brand", "categories")
    if fmt == "parquet":
        inter = write_parquet(tmp_path / "inter.parquet", TABLE_ROWS, head)
        items = write_parquet(tmp_path / "items.parquet", TABLE_ITEMS, ihead)
    else:
        sep = "," if fmt == "csv" else "\t"
        inter = write_table(tmp_path / f"inter.{fmt}", TABLE_ROWS, head, sep)
        items = write_table(tmp_path / f"items.{fmt}", TABLE_ITEMS, ihead, sep)
    ds = build(DataConfig(path=str(inter), items=str(items)))
    assert ds.item_keys == ["w", "x", "y", "z"]
    assert ds.user_keys == ["u1", "u2"]
    assert raw_seq(ds, 0) == ["y", "w", "x", "z"]  # ties (3: y, w; 5: x, z) keep file order
    assert raw_seq(ds, 1) == ["y", "x", "z"]
    # title. brand. categories.  -- each present field ends in exactly one period, empty ones are left out
    assert ds.item_text[1:] == ["Widget Pro. Acme. Tools Hand Tools.", "Xylo. Music.", "Yo-yo. Duncan.",
                                "Zither. Z&Co. Music Strings."]


def test_table_custom_columns_and_text_fields(tmp_path):
    inter = write_table(tmp_path / "i.csv", [(u, i, t) for u, i, t in TABLE_ROWS], ("uid", "iid", "ts"))
    items = write_table(tmp_path / "m.csv", TABLE_ITEMS, ("iid", "title", "brand", "categories"))
    ds = build(DataConfig(path=str(inter), items=str(items), user_column="uid", item_column="iid", time_column="ts",
                          text_fields=["categories", "title"]))
    assert ds.item_text[1] == "Tools Hand Tools. Widget Pro."


def test_table_without_item_table(tmp_path):
    inter = write_table(tmp_path / "i.csv", TABLE_ROWS, ("user", "item", "timestamp"))
    ds = build(DataConfig(path=str(inter)))
    assert ds.item_keys == ["x", "y", "z", "w"]  # first appearance
    assert raw_seq(ds, 0) == ["y", "w", "x", "z"]


def test_kcore_known_answer(tmp_path):
    # 3-core: g passes the first round (3 users) but those users fall below 3 items, so g drops in round 2;
    # only u1..u3 with a, b, c survive. A single pass would keep g in u1's sequence.
    seqs = {"u1": "abcg", "u2": "abc", "u3": "abce", "u4": "aeg", "u5": "gbx", "u6": "gyz"}
    assert kcore({u: list(s) for u, s in seqs.items()}, 3) == {u: ["a", "b", "c"] for u in ("u1", "u2", "u3")}
    rows = [(u, it, t) for u, s in seqs.items() for t, it in enumerate(s)]
    inter = write_table(tmp_path / "i.csv", rows, ("user", "item", "timestamp"))
    ds = build(DataConfig(path=str(inter), kcore=3))
    assert ds.user_keys == ["u1", "u2", "u3"] and ds.item_keys == ["a", "b", "c"]
    assert [ds.seq(u).tolist() for u in range(3)] == [[1, 2, 3]] * 3
    assert build(DataConfig(path=str(inter))).n_users == 6  # off by default


def test_kcore_can_leave_short_users(tmp_path):
    rows = [("u1", "a", 1), ("u1", "b", 2), ("u2", "a", 1), ("u2", "b", 2), ("u3", "a", 1), ("u3", "c", 2)]
    inter = write_table(tmp_path / "i.csv", rows, ("user", "item", "timestamp"))
    # 2-core keeps u1, u2 (and u3 with a only -> dropped): two users with 2 items, too short for leave-one-out
    assert_data_error(DataConfig(path=str(inter), kcore=2), inter, 2, "fewer than 3", "user 'u1' with 2")


def test_table_missing_column(tmp_path):
    inter = write_table(tmp_path / "i.csv", [(u, i) for u, i, _ in TABLE_ROWS], ("user", "item"))
    assert_data_error(DataConfig(path=str(inter)), inter, 1, "missing column 'timestamp'")


def test_item_table_missing_column(tmp_path):
    inter = write_table(tmp_path / "i.csv", TABLE_ROWS, ("user", "item", "timestamp"))
    items = write_table(tmp_path / "m.csv", TABLE_ITEMS, ("id", "title", "brand", "categories"))
    assert_data_error(DataConfig(path=str(inter), items=str(items)), items, 1, "missing column 'item'")


def test_parquet_missing_column(tmp_path):
    inter = write_parquet(tmp_path / "i.parquet", [(u, i) for u, i, _ in TABLE_ROWS], ("user", "item"))
    assert_data_error(DataConfig(path=str(inter)), inter, None, "missing column 'timestamp'")


def test_table_non_numeric_timestamp(tmp_path):
    rows = list(TABLE_ROWS)
    rows[4] = ("u1", "w", "3pm")  # file line 6
    inter = write_table(tmp_path / "i.tsv", rows, ("user", "item", "timestamp"), "\t")
    assert_data_error(DataConfig(path=str(inter)), inter, 6, "column 'timestamp' must be a number", "3pm")


def test_table_item_absent_from_item_table(tmp_path):
    inter = write_table(tmp_path / "i.csv", TABLE_ROWS, ("user", "item", "timestamp"))
    items = write_table(tmp_path / "m.csv", TABLE_ITEMS[:3], ("item", "title", "brand", "categories"))
    # the first interaction with z is on file line 5
    assert_data_error(DataConfig(path=str(inter), items=str(items)), inter, 5, "'z' is not in the item table",
                      "m.csv")


def test_table_duplicate_item(tmp_path):
    inter = write_table(tmp_path / "i.csv", TABLE_ROWS, ("user", "item", "timestamp"))
    items = write_table(tmp_path / "m.csv", [*TABLE_ITEMS, ("x", "X again", "", "")],
                        ("item", "title", "brand", "categories"))
    assert_data_error(DataConfig(path=str(inter), items=str(items)), items, 6, "'x'", "line 3")


def test_table_ragged_row(tmp_path):
    inter = tmp_path / "i.csv"
    inter.write_text("user,item,timestamp\nu1,a,1\nu1,b\nu1,c,3\n")
    assert_data_error(DataConfig(path=str(inter)), inter, 3, "expected 3 columns, got 2")


@pytest.mark.parametrize("content", ["", "\n", "user,item,timestamp\n"])
def test_table_empty_file(tmp_path, content):
    inter = tmp_path / "i.csv"
    inter.write_text(content)
    err = assert_data_error(DataConfig(path=str(inter)), inter, 1 if "user" not in content else None)
    assert "empty" in str(err) or "no rows" in str(err)


def test_parquet_empty_file(tmp_path):
    inter = write_parquet(tmp_path / "i.parquet", [], ("user", "item", "timestamp"))
    assert_data_error(DataConfig(path=str(inter)), inter, None, "empty")


def test_table_short_user(tmp_path):
    rows = [*TABLE_ROWS, ("u3", "x", 1), ("u3", "y", 2)]  # u3 first on line 9
    inter = write_table(tmp_path / "i.csv", rows, ("user", "item", "timestamp"))
    assert_data_error(DataConfig(path=str(inter)), inter, 9, "fewer than 3", "user 'u3' with 2")


def test_table_unknown_extension(tmp_path):
    inter = tmp_path / "i.xlsx"
    inter.write_text("user,item,timestamp\n")
    assert_data_error(DataConfig(path=str(inter)), inter, None, "unknown table format '.xlsx'")


def test_missing_file(tmp_path):
    assert_data_error(DataConfig(path=str(tmp_path / "nope.csv")), tmp_path / "nope.csv", None, "not found")
    inter = write_table(tmp_path / "i.csv", TABLE_ROWS, ("user", "item", "timestamp"))
    assert_data_error(DataConfig(path=str(inter), items=str(tmp_path / "m.csv")), tmp_path / "m.csv", None,
                      "not found")


# --------------------------------------------------------------------------------------------------
# (d) raw Amazon review files


def write_jsonl(path: Path, objs: list) -> Path:
    text = "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs)
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


AMAZON_REVIEWS = [  # file lines 1..; A1 has a tie at 100 (B2 line 1 before B1 line 4)
    {"reviewerID": "A1", "asin": "B2", "unixReviewTime": 100, "overall": 5.0},
    {"reviewerID": "A2", "asin": "B1", "unixReviewTime": 10},
    {"reviewerID": "A1", "asin": "B3", "unixReviewTime": 50},
    {"reviewerID": "A1", "asin": "B1", "unixReviewTime": 100},
    {"reviewerID": "A2", "asin": "B9", "unixReviewTime": 15},  # no metadata: dropped
    {"reviewerID": "A2", "asin": "B2", "unixReviewTime": 20},
    {"reviewerID": "A2", "asin": "B3", "unixReviewTime": 30},
]
AMAZON_META = [
    {"asin": "B1", "title": "Lab Goggles &amp; Case", "brand": "SafeCo",
     "categories": [["Industrial & Scientific", "Lab Supplies"], ["Safety"]]},  # 2014 style: category paths
    {"asin": "B2", "title": "Pipette.", "brand": "", "category": ["Lab", "Pipettes"]},  # 2018 style
    {"asin": "B3", "title": "Beaker\n500ml", "brand": "Pyrex"},
]


@pytest.fixture
def amazon_files(tmp_path):
    return write_jsonl(tmp_path / "reviews.json.gz", AMAZON_REVIEWS), write_jsonl(tmp_path / "meta.json", AMAZON_META)


def test_amazon_read(amazon_files):
    reviews, meta = amazon_files
    ds = build(DataConfig(path=str(reviews), items=str(meta)))
    assert ds.item_keys == ["B1", "B2", "B3"]  # meta order
    assert raw_seq(ds, user_index(ds, "A1")) == ["B3", "B2", "B1"]
    assert raw_seq(ds, user_index(ds, "A2")) == ["B1", "B2", "B3"]  # B9 has no metadata
    assert ds.item_text[1:] == ["Lab Goggles & Case. SafeCo. Industrial & Scientific Lab Supplies Safety.",
                                "Pipette. Lab Pipettes.", "Beaker 500ml. Pyrex."]
    assert any("1 reviews of items without metadata dropped" in n for n in ds.meta["notes"])


def test_amazon_missing_key(amazon_files, tmp_path):
    reviews, meta = amazon_files
    bad = [dict(r) for r in AMAZON_REVIEWS]
    del bad[2]["unixReviewTime"]
    write_jsonl(reviews, bad)
    assert_data_error(DataConfig(path=str(reviews), items=str(meta)), reviews, 3, "missing key 'unixReviewTime'")
    write_jsonl(meta, [AMAZON_META[0], {"title": "no asin"}])
    assert_data_error(DataConfig(path=str(reviews), items=str(meta)), meta, 2, "missing key 'asin'")


def test_amazon_non_numeric_time(amazon_files):
    reviews, meta = amazon_files
    bad = [dict(r) for r in AMAZON_REVIEWS]
    bad[5]["unixReviewTime"] = "20 May"
    write_jsonl(reviews, bad)
    assert_data_error(DataConfig(path=str(reviews), items=str(meta)), reviews, 6, "unixReviewTime must be a number")


def test_amazon_not_json(amazon_files):
    reviews, meta = amazon_files
    write_jsonl(meta, [AMAZON_META[0], "{'asin': 'B2'}"])  # Python repr, not JSON
    assert_data_error(DataConfig(path=str(reviews), items=str(meta)), meta, 2, "not a JSON object")
    write_jsonl(meta, [AMAZON_META[0], "[1, 2]"])
    assert_data_error(DataConfig(path=str(reviews), items=str(meta)), meta, 2, "one JSON object per line")


def test_amazon_no_review_of_a_known_item(amazon_files):
    reviews, meta = amazon_files
    write_jsonl(reviews, [{"reviewerID": "A1", "asin": "Z", "unixReviewTime": 1}])
    assert_data_error(DataConfig(path=str(reviews), items=str(meta)), reviews, None, "no review refers to an item")


@pytest.mark.parametrize("which", [0, 1])
def test_amazon_empty_file(amazon_files, which):
    path = amazon_files[which]
    write_jsonl(path, ["", "  "])  # blank lines only (the reviews file is gzipped)
    assert_data_error(DataConfig(path=str(amazon_files[0]), items=str(amazon_files[1])), path, None, "empty")


def test_amazon_short_user(amazon_files):
    reviews, meta = amazon_files
    write_jsonl(reviews, [*AMAZON_REVIEWS, {"reviewerID": "A3", "asin": "B1", "unixReviewTime": 1}])
    assert_data_error(DataConfig(path=str(reviews), items=str(meta)), reviews, 8, "fewer than 3", "user 'A3' with 1")


def test_amazon_needs_meta(amazon_files):
    reviews, _ = amazon_files
    assert_data_error(DataConfig(path=str(reviews)), reviews, None, "data.items")


# --------------------------------------------------------------------------------------------------
# real data


def test_missing_dataset_skips_but_fails_under_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not found"):
        require_dataset("no_such_dataset")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_dataset("no_such_dataset")


def test_without_recbole(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "recbole" else real(name, *a))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="recbole"):
        require_recbole()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        require_recbole()
    with pytest.raises(DataError, match=r"pip install --no-deps recbole==1\.2\.1"):
        build(DataConfig(path="recbole:ml-100k"))


def _inter_rows(path: Path) -> list[tuple[int, list[int], int]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        next(f)
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    return [(int(u), [int(x) for x in h.split()], int(i)) for u, h, i in rows]


def test_scientific_counts_and_train_rows(scientific):
    folder = require_dataset("Scientific_UniSRec")
    ds = scientific
    assert (ds.n_users, ds.n_items, int(ds.seq_lengths.sum())) == (8442, 4385, 59427)
    train_rows = _inter_rows(folder / "Scientific.train.inter")
    assert ds.n_train_instances == len(train_rows) == 34101
    # every train.inter row is exactly one training instance: history s[:t] (cut to 50) -> s[t]
    users, items, ids = ds.train_pairs()
    offs = ds.train_instance_offsets
    ours = set()
    for u, it, i in zip(users.tolist(), items.tolist(), ids.tolist()):
        t = i - offs[u] + 1
        s = ds.seq(u)
        assert s[t] == it
        ours.add((u, tuple((s[:t][-50:] - 1).tolist()), it - 1))
    assert ours == {(u, tuple(h), i) for u, h, i in train_rows}
    # valid / test rows are the last two targets, their histories the end of the sequence before them
    for split, fname in (("valid", "Scientific.valid.inter"), ("test", "Scientific.test.inter")):
        targets = ds.split_targets(split)
        for u, h, i in _inter_rows(folder / fname):
            assert targets[u] == i + 1
            assert (ds.split_history(u, split)[-len(h):] - 1).tolist() == h
    asins = [line.split("\t")[0] for line in (folder / "Scientific.item2index").read_text().splitlines()]
    assert ds.item_keys == asins


def test_games_counts(tmp_path):
    folder = require_dataset("Games_LLMRank")
    ds = prepare(DataConfig(path=str(folder), cache_dir=str(tmp_path)), log=None)
    assert (ds.n_users, ds.n_items, int(ds.seq_lengths.sum())) == (50546, 16859, 440264)
    assert ds.item_text[1] == "Fire Emblem: The Sacred Stones."
    test_rows = _inter_rows(folder / "Games-6k.test.inter.gz")
    u, h, i = test_rows[0]
    assert ds.seq(u).tolist() == [x + 1 for x in [*h, i]]


def test_ml100k_counts(tmp_path):
    require_recbole()
    ds = prepare(DataConfig(path="recbole:ml-100k", cache_dir=str(tmp_path)), log=None)
    assert (ds.n_users, ds.n_items, int(ds.seq_lengths.sum())) == (943, 1682, 100000)
    i = ds.item_keys.index("1") + 1
    assert ds.item_fields["title"][i] == "Toy Story"
    assert ds.item_text[i] == "Toy Story. Animation Children's Comedy."
    # chronological: every user's timestamps are non-decreasing along the sequence
    from prmkd.data.readers import recbole_example_folder

    inter = recbole_example_folder("ml-100k") / "ml-100k.inter"
    ts = {}
    for line in inter.read_text().splitlines()[1:]:
        uid, iid, _, t = line.split("\t")
        ts[(uid, iid)] = float(t)
    for u in range(0, ds.n_users, 50):
        times = [ts[(ds.user_keys[u], k)] for k in raw_seq(ds, u)]
        assert times == sorted(times)


def test_image_features_join(tmp_path):
    sci = require_dataset("Scientific_UniSRec")
    mm = require_dataset("Scientific_MMsubset_DeCoRec")
    feat = FeatureConfig(name="image", path=str(mm / "Scientific.feat3CLS"), dim=512,
                         index=str(mm / "Scientific.item2index"))
    ds = prepare(DataConfig(path=str(sci), features=[feat], cache_dir=str(tmp_path)), log=None)
    X, has = ds.features["image"]
    assert X.shape == (4385 + 1, 512) and X.dtype == np.float32
    assert int(has.sum()) == 1585 and not has[0]
    raw = np.fromfile(mm / "Scientific.feat3CLS", dtype="<f4").reshape(-1, 512)
    rows = {k: int(r) for k, r in (line.split("\t") for line in (mm / "Scientific.item2index").read_text().split("\n")
                                   if line)}
    expect_has = np.array([False] + [k in rows for k in ds.item_keys])
    assert (has == expect_has).all()
    assert not X[~has].any()  # items without a feature are zero rows
    for k in list(rows)[:5] + list(rows)[-5:]:
        assert np.array_equal(X[ds.item_keys.index(k) + 1], raw[rows[k]])
    # the cached copy gives the same matrix and mask back
    again = prepare(DataConfig(path=str(sci), features=[feat], cache_dir=str(tmp_path)), log=None)
    assert np.array_equal(again.features["image"][0], X) and np.array_equal(again.features["image"][1], has)


def test_unisrec_id_only_folder_reads_without_text(tmp_path):
    """An ID-only UniSRec folder (Office: test rows and item2index, no .text / .item) is a dataset whose items
    have no text."""
    (tmp_path / "o.item2index").write_text("A\t0\nB\t1\nC\t2\nD\t3\n")
    (tmp_path / "o.test.inter").write_text("user_id:token\titem_id_list:token_seq\titem_id:token\n"
                                           "0\t0 1 2\t3\n1\t3 2\t1\n")
    ds = build(DataConfig(path=str(tmp_path)))
    assert ds.n_items == 4 and ds.n_users == 2 and not any(ds.item_text[1:])
    assert [ds.item_keys[i - 1] for i in ds.seq(0)] == ["A", "B", "C", "D"]
