"""The `prmkd` command, run as a user runs it (a subprocess): prepare, train, evaluate; --config and --set;
user errors as one line `error: ...` with exit status 2 and no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import write_tiny_table
from prmkd.models.sasrec import SASRecConfig

MODEL = ["--set", "model.hidden_size=16", "--set", "model.layers=1", "--set", "model.heads=1",
         "--set", "model.inner_size=32"]


def prmkd(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prmkd.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def assert_user_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    """Exit status 2 and exactly one line on stderr, `error: ...`, no traceback."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for w in words:
        assert w in lines[0], proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A tiny dataset and a config file that uses it (model and epochs left to --set)."""
    folder = tmp_path_factory.mktemp("cli")
    inter, items = write_tiny_table(folder)
    (folder / "run.toml").write_text(
        f'[data]\npath = "{inter}"\nitems = "{items}"\nmax_len = 8\ncache_dir = "{folder / "cache"}"\n\n'
        f'[train]\nepochs = 5\nbatch_size = 16\nseed = 3\nthreads = 1\ndevice = "cpu"\ncheckpoint_every = 2\n')
    return folder


@pytest.fixture(scope="module")
def trained(work):
    """`prmkd train` with the config file and --set overrides (2 epochs instead of the file's 5)."""
    proc = prmkd("train", "--config", work / "run.toml", *MODEL, "--set", "train.epochs=2", "--set", 'out="run1"',
                 cwd=work)
    assert proc.returncode == 0, proc.stderr
    return work / "run1", json.loads(proc.stdout)


def test_prepare(tmp_path):
    inter, items = write_tiny_table(tmp_path)
    args = ["prepare", inter, "--set", f'data.items="{items}"', "--set", "data.max_len=8",
            "--set", f'data.cache_dir="{tmp_path / "cache"}"']
    first = prmkd(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert (out["users"], out["max_len"]) == (60, 8)
    assert out["folder"] and Path(out["folder"]).is_dir() and str(tmp_path / "cache") in out["folder"]
    assert "prepared inter" in first.stderr
    again = prmkd(*args, cwd=tmp_path)  # from the cache: same answer, nothing rebuilt
    assert again.returncode == 0 and json.loads(again.stdout) == out and "prepared" not in again.stderr
    assert not (tmp_path / ".prmkd").exists()  # nothing written outside the cache dir asked for


def test_train(trained):
    run, out = trained
    assert out["run"] == "sasrec" and set(out["metrics"]) == {"valid", "test"}
    results = json.loads((run / "results.json").read_text())
    assert results["metrics"] == out["metrics"]
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["epochs"] == 2  # --set wins over the file
    assert config["train"]["batch_size"] == 16 and config["train"]["seed"] == 3  # the file wins over defaults
    assert config["model"]["hidden_size"] == 16
    assert config["model"]["dropout"] == SASRecConfig().dropout  # defaults filled in
    assert results["timing"]["epochs"] == 2


def test_evaluate(trained):
    run, trained_out = trained
    plain = prmkd("evaluate", run, cwd=run.parent)
    assert plain.returncode == 0, plain.stderr
    out = json.loads(plain.stdout)
    assert out["metrics"] == trained_out["metrics"]["test"]
    assert out["settings"]["mask_history"] is False and out["settings"]["split"] == "test"
    assert json.loads((run / "eval_test.json").read_text())["eval"]["mask_history"] is False

    masked = prmkd("evaluate", run, "--set", "eval.mask_history=true", cwd=run.parent)
    assert masked.returncode == 0, masked.stderr
    mout = json.loads(masked.stdout)
    assert mout["settings"]["mask_history"] is True  # recorded in the output
    saved = json.loads((run / "eval_test_masked.json").read_text())
    assert saved["eval"]["mask_history"] is True and saved["metrics"] == mout["metrics"]
    # masking only removes competitors: no user's target ranks lower
    r_plain = np.load(run / "per_user_test.npz")["ranks"]
    r_masked = np.load(run / "per_user_test_masked.npz")["ranks"]
    assert len(r_masked) == 60 and (r_masked <= r_plain).all() and (r_masked < r_plain).any()


@pytest.mark.parametrize("command, key", [
    ("train", "model.hiden"),
    ("train", "train.nope"),
    ("prepare", "data.fromat"),
    ("evaluate", "eval.mask_histroy"),
])
def test_unknown_key(work, trained, command, key):
    args = [command, *([trained[0]] if command == "evaluate" else []), "--config", work / "run.toml",
            "--set", f"{key}=1"]
    msg = assert_user_error(prmkd(*args, cwd=work), f"'{key}'")
    assert "unknown config key" in msg


def test_unknown_key_in_config_file(work, tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text((work / "run.toml").read_text().replace("epochs = 5", "epohcs = 5"))
    assert_user_error(prmkd("train", "--config", cfg, cwd=tmp_path), "'train.epohcs'")


def test_malformed_data_file(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item,timestamp\nu1,a,1\nu1,b,noon\nu1,c,3\n")
    proc = prmkd("prepare", bad, "--set", f'data.cache_dir="{tmp_path / "c"}"', cwd=tmp_path)
    assert_user_error(proc)
    assert proc.stderr.strip() == f"error: {bad}, line 3: column 'timestamp' must be a number, got 'noon'"


def test_unknown_format(tmp_path):
    inter, _ = write_tiny_table(tmp_path)
    proc = prmkd("prepare", inter, "--set", "data.format=xml", "--set", f'data.cache_dir="{tmp_path / "c"}"',
                 cwd=tmp_path)
    assert_user_error(proc, "data.format", "'xml'", "expected one of auto, unisrec")


def test_bad_invocations(work, tmp_path):
    assert_user_error(prmkd("train", "--set", "train.epochs", cwd=tmp_path), "key=value")
    assert_user_error(prmkd("train", "--config", tmp_path / "missing.toml", cwd=tmp_path), "missing.toml")
    assert_user_error(prmkd("train", "--config", work / "run.toml", "--set", "train.epochs=two", cwd=tmp_path),
                      "'train.epochs'", "integer")
    assert_user_error(prmkd("evaluate", tmp_path, cwd=tmp_path), "not a run folder")
