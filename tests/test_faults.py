"""Every bad value and every fault a demanding user can meet ends in one line `error: ...` naming what is wrong,
exit status 2, and nothing half-written: no run folder for a config that never ran, no finished run overwritten,
no temporary file left behind. The CLI runs in this process (`prmkd.cli.main`), as the user's command would."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_table, write_tiny_table
from prmkd.cli import main

MODEL = ["--set", "model.hidden_size=16", "--set", "model.layers=1", "--set", "model.inner_size=32"]


def run(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc: int, err: str, *words: str) -> str:
    """Exit status 2; stderr ends in exactly one line `error: ...` (progress lines may come before it)."""
    assert rc == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert errors == lines[-1:] and "Traceback" not in err, err
    lines = errors
    for w in words:
        assert w in lines[0], err
    return lines[0]


@pytest.fixture
def tiny(tmp_path):
    """The tiny table dataset as a DataConfig."""
    from prmkd.config import DataConfig

    inter, items = write_tiny_table(tmp_path)
    return DataConfig(path=str(inter), items=str(items), max_len=8, cache_dir=str(tmp_path / "cache"))


@pytest.fixture
def data(tiny):
    """The same dataset as `--set` arguments (and a small batch)."""
    return ["--set", f'data.path="{tiny.path}"', "--set", f'data.items="{tiny.items}"', "--set", "data.max_len=8",
            "--set", f'data.cache_dir="{tiny.cache_dir}"', "--set", "train.batch_size=16",
            "--set", "train.progress=false"]


# ---------------------------------------------------------------------------------------------- config values


@pytest.mark.parametrize("assignment, key", [
    ("train.epochs=-3", "train.epochs"), ("train.epochs=0", "train.epochs"),
    ("train.batch_size=-5", "train.batch_size"), ("train.lr=0", "train.lr"),
    ("train.eval_every=0", "train.eval_every"), ("train.threads=-1", "train.threads"),
    ("train.patience=0", "train.patience"), ('train.device="gpu"', "train.device"),
    ("data.users=-5", "data.users"), ("data.max_len=0", "data.max_len"),
    ("model.hidden_size=0", "model.hidden_size"), ("model.hidden_size=15", "model.hidden_size"),
    ("model.dropout=1.0", "model.dropout"), ("model.attn_dropout=-0.1", "model.attn_dropout"),
    ("eval.ks=[5, 20]", "eval.ks"), ("eval.max_elements=0", "eval.max_elements"),
    ("distill.temperature=-1", "distill.temperature"), ("distill.kd_weight=-5", "distill.kd_weight"),
    ("distill.epsilon=-1", "distill.epsilon"), ("distill.student_temperature=0", "distill.student_temperature"),
    ('distill.candidates="some"', "distill.candidates"), ('distill.fusion="max"', "distill.fusion"),
    ('distill.normalization="zscore"', "distill.normalization"), ('distill.kl="js"', "distill.kl"),
    ('distill.teacher_weights=[0, 0]', "distill.teacher_weights"),
])
def test_a_value_out_of_range_is_refused_before_anything_is_written(capsys, data, tmp_path, assignment, key):
    out = tmp_path / "never"
    rc, _, err = run(capsys, "train", "--model", "sasrec", *data, *MODEL, "--set", f'out="{out}"',
                     "--set", assignment)
    one_line_error(rc, err, key)
    assert not out.exists()


def test_teacher_config_values_are_checked_at_load(capsys, tmp_path):
    cfg = tmp_path / "t.toml"
    inter, items = write_tiny_table(tmp_path)
    cfg.write_text(f'family = "unisrec"\n[data]\npath = "{inter}"\nitems = "{items}"\n[train]\nepochs = -1\n')
    rc, _, err = run(capsys, "teacher", "build", cfg, "--set", f'out="{tmp_path / "t"}"')
    one_line_error(rc, err, "train.epochs")
    rc, _, err = run(capsys, "teacher", "build", cfg, "--set", "train.epochs=1", "--set", "teacher.hidden_size=30",
                     "--set", "teacher.heads=4")
    one_line_error(rc, err, "teacher.hidden_size", "teacher.heads")
    assert not (tmp_path / "t").exists()


def test_a_pipeline_teacher_value_names_the_teacher(tmp_path):
    from prmkd.errors import ConfigError
    from prmkd.experiment.pipeline import load_pipeline

    cfg = tmp_path / "p.toml"
    cfg.write_text('[[teachers]]\nfamily = "unisrec"\nname = "u"\n[teachers.teacher]\nid_dropout = 1.5\n')
    with pytest.raises(ConfigError, match="teachers.u.teacher.id_dropout"):
        load_pipeline(cfg)
    cfg.write_text('[[teachers]]\nfamily = "unisrec"\n[[teachers]]\nfamily = "unisrec"\n')
    with pytest.raises(ConfigError, match="two teachers are named 'unisrec'"):
        load_pipeline(cfg)


# ---------------------------------------------------------------------------------------------- run folders


def test_a_finished_run_is_never_overwritten_by_another_configuration(capsys, data, tmp_path):
    out = tmp_path / "run"
    rc, _, err = run(capsys, "train", "--model", "sasrec", *data, *MODEL, "--set", "train.epochs=1",
                     "--set", f'out="{out}"')
    assert rc == 0, err
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    rc, _, err = run(capsys, "train", "--model", "gru4rec", *data, "--set", "model.hidden_size=8",
                     "--set", "train.epochs=1", "--set", f'out="{out}"')
    one_line_error(rc, err, str(out), "finished run of another configuration", "--restart")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # untouched, still loadable
    rc, out_json, err = run(capsys, "evaluate", out)
    assert rc == 0, err
    # --restart replaces it, and the folder then holds the new run only
    rc, _, err = run(capsys, "train", "--model", "gru4rec", *data, "--set", "model.hidden_size=8",
                     "--set", "train.epochs=1", "--set", f'out="{out}"', "--restart")
    assert rc == 0, err
    assert json.loads((out / "results.json").read_text())["name"] == "gru4rec"


def test_a_stale_best_checkpoint_is_never_taken_for_a_new_run(data, tmp_path):
    """best.pt of another configuration in the folder is removed before a fresh run starts."""
    from prmkd.config import TrainConfig
    from prmkd.data.dataset import SeqDataset
    from prmkd.models import build_model
    from prmkd.training import fit

    ds = SeqDataset.from_sequences([[1, 2, 3, 4, 5]] * 8 + [[5, 4, 3, 2, 1]] * 8, 5, max_len=4)
    out = tmp_path / "f"
    out.mkdir()
    torch.save({"model": {"junk": torch.zeros(1)}}, out / "best.pt")
    model = build_model({"name": "sasrec", "hidden_size": 8, "layers": 1, "inner_size": 16}, ds)
    fit(model, ds, TrainConfig(epochs=1, batch_size=8, progress=False), out, log=lambda m: None)
    assert "junk" not in torch.load(out / "best.pt", weights_only=False)["model"]


# ---------------------------------------------------------------------------------------------- input files


def test_nan_and_infinite_timestamps_name_file_and_line(capsys, tmp_path):
    for bad in ("nan", "inf", "-Infinity"):
        inter = write_table(tmp_path / f"i-{bad}.csv", [("u1", "a", 1), ("u1", "b", bad), ("u1", "c", 3)],
                            ("user", "item", "timestamp"))
        rc, _, err = run(capsys, "prepare", inter, "--set", f'data.cache_dir="{tmp_path / "c"}"')
        one_line_error(rc, err, f"{inter}, line 3", "finite number")


def test_non_utf8_bytes_name_file_and_line(capsys, tmp_path):
    inter = tmp_path / "inter.tsv"
    inter.write_bytes(b"user\titem\ttimestamp\nu1\ta\t1\nu1\t\xff\xfe\t2\n")
    rc, _, err = run(capsys, "prepare", inter, "--set", f'data.cache_dir="{tmp_path / "c"}"')
    one_line_error(rc, err, f"{inter}, line 3", "not UTF-8")


def test_a_utf8_bom_is_accepted(capsys, tmp_path):
    inter, items = write_tiny_table(tmp_path)
    inter.write_bytes(b"\xef\xbb\xbf" + inter.read_bytes())
    rc, out, err = run(capsys, "prepare", inter, "--set", f'data.items="{items}"',
                       "--set", f'data.cache_dir="{tmp_path / "c"}"')
    assert rc == 0, err
    assert json.loads(out)["users"] == 60


def test_a_folder_where_a_file_is_expected(capsys, tmp_path):
    inter, _ = write_tiny_table(tmp_path)
    (tmp_path / "items.csv").unlink()
    (tmp_path / "items.csv").mkdir()
    rc, _, err = run(capsys, "prepare", inter, "--set", f'data.items="{tmp_path / "items.csv"}"',
                     "--set", f'data.cache_dir="{tmp_path / "c"}"')
    one_line_error(rc, err, str(tmp_path / "items.csv"), "is a folder")


def test_permission_denied_names_the_path(capsys, tmp_path, monkeypatch):
    inter, items = write_tiny_table(tmp_path)
    real_open = open

    def guarded(path, *a, **k):  # root reads every file whatever its mode: deny this one as the OS would
        if str(path) == str(items):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr("builtins.open", guarded)
    rc, _, err = run(capsys, "prepare", inter, "--set", f'data.items="{items}"',
                     "--set", f'data.cache_dir="{tmp_path / "c"}"')
    one_line_error(rc, err, str(items), "Permission denied")


def test_a_full_disk_leaves_no_temporary_file(capsys, data, tmp_path, monkeypatch):
    import prmkd.training as training

    def full(obj, f, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(f))

    monkeypatch.setattr(training.torch, "save", full)
    out = tmp_path / "run"
    rc, _, err = run(capsys, "train", "--model", "sasrec", *data, *MODEL, "--set", "train.epochs=1",
                     "--set", f'out="{out}"')
    one_line_error(rc, err, "No space left on device", str(out))
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_duplicate_rows_of_a_unisrec_text_file_are_refused(capsys, tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "d.text").write_text("item_id\ttext\nA\tfirst\nB\tsecond\nA\tagain\n")
    (folder / "d.item2index").write_text("A\t0\nB\t1\n")
    (folder / "d.test.inter").write_text("user_id:token\titem_id_list:token_seq\titem_id:token\n0\t0 1\t0\n")
    rc, _, err = run(capsys, "prepare", folder, "--set", f'data.cache_dir="{tmp_path / "c"}"')
    one_line_error(rc, err, f"{folder / 'd.text'}, line 4", "listed twice (first on line 2)")


def test_the_short_user_hint_works_for_already_split_data(capsys, tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "d.text").write_text("item_id\ttext\nA\tfirst\nB\tsecond\nC\tthird\n")
    (folder / "d.item2index").write_text("A\t0\nB\t1\nC\t2\n")
    (folder / "d.test.inter").write_text("user_id:token\titem_id_list:token_seq\titem_id:token\n"
                                         "0\t0 1\t2\n1\t2\t0\n")  # user 1 has two interactions
    args = ["prepare", folder, "--set", f'data.cache_dir="{tmp_path / "c"}"']
    rc, _, err = run(capsys, *args)
    line = one_line_error(rc, err, "fewer than 3 interactions", "data.drop_short_users = true")
    assert "kcore" not in line  # k-core filtering is never applied to already split data
    rc, out, err = run(capsys, *args, "--set", "data.drop_short_users=true")
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["users"] == 1 and any("dropped" in n for n in summary["notes"])


# ---------------------------------------------------------------------------------------------- teacher caches


@pytest.fixture
def cache(tmp_path, tiny):
    """A valid teacher cache (random rows) for the tiny dataset."""
    from prmkd.data.dataset import prepare
    from prmkd.teachers.cache import write_cache

    ds = prepare(tiny, log=None)
    rng = np.random.default_rng(0)
    rows = {"items": ds.n_items + 1, "train": ds.n_train_instances, "valid": ds.n_users, "test": ds.n_users}
    folder = write_cache(tmp_path / "cache-ok", name="t", family="external", ds=ds,
                         metrics={"valid": {"ndcg@10": 0.1}},
                         **{k: rng.standard_normal((r, 4)).astype(np.float32) for k, r in rows.items()})
    return folder


def _damage(folder: Path, how: str) -> Path:
    m = folder / "manifest.json"
    man = json.loads(m.read_text())
    if how == "truncated":
        p = folder / "train.npy"
        p.write_bytes(p.read_bytes()[:200])
        return p
    if how == "empty":
        (folder / "items.npy").write_bytes(b"")
        return folder / "items.npy"
    if how == "missing":
        (folder / "test.npy").unlink()
        return folder / "test.npy"
    if how == "broken_json":
        m.write_text(m.read_text()[:-30])
    elif how == "missing_key":
        del man["similarity"]
    elif how == "similarity":
        man["similarity"] = "l2"
    elif how == "temperature":
        man["temperature"] = 0
    elif how == "metrics":
        man["metrics"] = {"valid": {"ndcg@10": "high"}}
    if how != "broken_json":
        m.write_text(json.dumps(man))
    return m


@pytest.mark.parametrize("how, words", [
    ("truncated", ["not a readable .npy array"]), ("empty", ["not a readable .npy array"]),
    ("missing", ["missing"]), ("broken_json", ["not valid JSON"]),
    ("missing_key", ["missing manifest key 'similarity'"]), ("similarity", ["unknown similarity 'l2'"]),
    ("temperature", ["temperature must be > 0"]), ("metrics", ["'metrics' must map each split to numbers"]),
])
def test_a_damaged_teacher_cache_is_one_line_at_load(capsys, data, cache, tmp_path, how, words):
    bad = _damage(cache, how)
    out = tmp_path / "kd"
    rc, _, err = run(capsys, "distill", "--student", "sasrec", "--teachers", cache, *data, *MODEL,
                     "--set", "train.epochs=1", "--set", f'out="{out}"')
    one_line_error(rc, err, str(bad), *words)


def test_a_float16_overflow_says_so(tmp_path):
    from prmkd.data.dataset import SeqDataset
    from prmkd.errors import PrmkdError
    from prmkd.teachers.cache import write_cache

    ds = SeqDataset.from_sequences([[1, 2, 3, 4]] * 4, 4)
    rows = {"items": ds.n_items + 1, "train": ds.n_train_instances, "valid": ds.n_users, "test": ds.n_users}
    arrays = {k: np.ones((r, 3), np.float32) for k, r in rows.items()}
    arrays["train"][1, 2] = 1e6
    with pytest.raises(PrmkdError, match="array 'train' holds values up to 1e\\+06, beyond float16"):
        write_cache(tmp_path / "c", name="t", family="x", ds=ds, dtype="float16", **arrays)
