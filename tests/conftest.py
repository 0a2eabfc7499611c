"""Shared fixtures: the path of ../shared/data, `require_dataset`, tiny datasets written in tmp_path.

A missing real dataset (or the recbole wheel) skips a test with a reason, except under CI (CI=true), where it
is a failure: CI must never pass by skipping.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
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


# --------------------------------------------------------------------------------------------------
# in-memory datasets (SeqDataset.from_sequences), shared by the contract tests and others

WORDS = ["pipette", "beaker", "flask", "tube", "glove", "lens", "scale", "probe", "clamp", "stand", "dish", "foil"]


def block_sequences(groups: int = 4, per_group: int = 8, users_per_group: int = 6, seq_len: int = 7,
                    seed: int = 0) -> list[np.ndarray]:
    """Users in groups, each consuming `seq_len` distinct items of its group's block (a learnable structure)."""
    rng = np.random.default_rng(seed)
    return [rng.choice(np.arange(g * per_group, (g + 1) * per_group) + 1, seq_len, replace=False)
            for g in range(groups) for _ in range(users_per_group)]


def text_fields(n_items: int) -> dict[str, list[str]]:
    """title / brand / categories per item (index 0 = padding), a few blank and every 11th item without any text,
    as real metadata has."""
    return {"title": [""] + [f"{WORDS[i % 12]} {WORDS[(i * 5) % 12]} model {i}" if i % 11 else ""
                             for i in range(1, n_items + 1)],
            "brand": [""] + [f"brand{i % 3}" if i % 5 and i % 11 else "" for i in range(1, n_items + 1)],
            "categories": [""] + [f"lab tools {WORDS[i % 4]}" if i % 7 and i % 11 else ""
                                  for i in range(1, n_items + 1)]}


def image_features(n_items: int, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random image vectors for two items in three (row 0 = padding), like a partly covered modality."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_items + 1, dim)).astype(np.float32)
    has = np.arange(n_items + 1) % 3 != 0
    x[~has] = 0.0
    return x, has


def small_dataset(seed: int = 0, max_len: int = 6, images: bool = True):
    from prmkd.data.dataset import SeqDataset

    seqs = block_sequences(seed=seed)
    n = 32
    return SeqDataset.from_sequences(seqs, n, fields=text_fields(n), max_len=max_len, name=f"small{seed}",
                                     features={"image": image_features(n)} if images else None)


@pytest.fixture(scope="session")
def small_ds():
    """24 users x 32 items with text fields and partial 16-d image features; histories cut to 6."""
    return small_dataset()


def held_elsewhere(lock: Path):
    """The open lock file `lock`, locked (flock) and naming "pid 4242 on elsewhere" as its holder, as another
    process holding it would; closing it lets go."""
    import fcntl

    f = open(lock, "a+")
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if someone holds it already
    f.seek(0)
    f.truncate()
    f.write("pid 4242 on elsewhere\n")
    f.flush()
    return f
