"""Shared fixtures: the path of ../shared/data, `require_dataset`, tiny datasets written in tmp_path.

A missing real dataset (or the recbole wheel) skips a test with a reason, except under CI (CI=true), where it
is a failure: CI must never pass by skipping.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)  # 2-core machine shared with others; also makes float sums repeatable

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def _missing(reason: str):
    if under_ci():
        pytest.fail(f"{reason} (CI=true: a missing dataset is a failure, not a skip)")
    pytest.skip(reason)


def require_dataset(name: str) -> Path:
    """The folder ../shared/data/<name>; skips (or fails under CI) when it is missing."""
    folder = SHARED_DATA / name
    if not folder.is_dir():
        _missing(f"dataset folder {folder} not found")
    return folder


def require_recbole() -> None:
    """MovieLens-100K ships inside the recbole wheel (pip install --no-deps recbole==1.2.1)."""
    if importlib.util.find_spec("recbole") is None:
        _missing("recbole is not installed (pip install --no-deps recbole==1.2.1) so ml-100k is unavailable")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return SHARED_DATA


@pytest.fixture(scope="session")
def scientific(tmp_path_factory):
    """Scientific_UniSRec prepared once per session (in a temporary cache)."""
    from prmkd.config import DataConfig
    from prmkd.data import prepare

    folder = require_dataset("Scientific_UniSRec")
    cache = tmp_path_factory.mktemp("sci-cache")
    return prepare(DataConfig(path=str(folder), cache_dir=str(cache)), log=None)


# --------------------------------------------------------------------------------------------------
# tiny fixtures


def write_table(path: Path, rows: list[tuple], header: tuple, sep: str = ",") -> Path:
    path.write_text("\n".join(sep.join(str(c) for c in r) for r in [header, *rows]) + "\n")
    return path


def synthetic_events(n_users: int, n_items: int, min_len: int, max_len: int, seed: int = 0) -> list[tuple]:
    """(user, item, timestamp) rows: each user a random sequence with distinct increasing timestamps."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        n = int(rng.integers(min_len, max_len + 1))
        items = rng.integers(0, n_items, size=n)
        for t, it in enumerate(items):
            rows.append((f"u{u}", f"i{it}", 1000 + 10 * t))
    return rows


def write_tiny_table(folder: Path) -> tuple[Path, Path]:
    """A CSV interactions table + item table: 60 users, 40 items, lengths 4..30 (some beyond max_len=8)."""
    rows = synthetic_events(60, 40, 4, 30, seed=1)
    inter = write_table(folder / "inter.csv", rows, ("user", "item", "timestamp"))
    used = sorted({r[1] for r in rows}, key=lambda s: int(s[1:]))
    items = write_table(folder / "items.csv", [(i, f"Title {i}", "Brand", "Cat") for i in used],
                        ("item", "title", "brand", "categories"))
    return inter, items


@pytest.fixture
def tiny_table(tmp_path):
    return write_tiny_table(tmp_path)


@pytest.fixture
def tiny_ds(tiny_table, tmp_path):
    from prmkd.config import DataConfig
    from prmkd.data import prepare

    inter, items = tiny_table
    return prepare(DataConfig(path=str(inter), items=str(items), max_len=8, cache_dir=str(tmp_path / "cache")),
                   log=None)
