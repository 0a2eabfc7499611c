"""The teacher cache: the only thing distillation reads from a teacher.

A cache is a folder:
  manifest.json  name, family, similarity ("dot" | "cos"), temperature, dataset fingerprint, shapes, dtype,
                 the teacher's own valid/test metrics, parameter count, how it was made
  items.npy      (n_items + 1, d)   row i = item i (row 0 = padding, zeros)
  train.npy      (n_train_instances, d)  row = training instance id (see SeqDataset.train_instance_offsets)
  valid.npy      (n_users, d)       the validation instance of each user
  test.npy       (n_users, d)       the test instance of each user
Arrays are plain .npy (memory-mapped when read; float32 or float16).

A teacher's logit for instance u and item e is sim(u, e) / temperature, with sim the dot product or the cosine.
Distillation then applies its own tau on top (Eq. 1): s = softmax(logit / tau) over the candidates.
"""

from __future__ import annotations

import json
import mmap
import uuid
from pathlib import Path

import numpy as np
import torch

from ..data.batches import EvalBatch, TrainBatches, eval_batches
from ..data.dataset import SeqDataset
from ..io import read_json, write_atomic
from ..env import now
from ..errors import CacheMismatchError, PrmkdError
from ..models.base import Recommender

CACHE_VERSION = 1
ARRAYS = ("items", "train", "valid", "test")
SIMILARITIES = ("dot", "cos")


def _normalize(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x.astype(np.float32), axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def write_cache(folder: Path, *, name: str, family: str, items: np.ndarray, train: np.ndarray, valid: np.ndarray,
                test: np.ndarray, ds: SeqDataset, similarity: str = "dot", temperature: float = 1.0,
                metrics: dict | None = None, parameters: int | None = None, config: dict | None = None,
                dtype: str = "float32", extra: dict | None = None) -> Path:
    """Write a cache folder (arrays first, manifest last: a manifest means a complete cache)."""
    folder = Path(folder)
    arrays = {"items": items, "train": train, "valid": valid, "test": test}
    check_arrays(arrays, ds, where=str(folder))
    if similarity not in SIMILARITIES:
        raise PrmkdError(f"{folder}: unknown similarity {similarity!r} (expected {' or '.join(SIMILARITIES)})")
    if not temperature > 0:
        raise PrmkdError(f"{folder}: temperature must be > 0, got {temperature}")
    if dtype == "float16" and (over := float16_overflow(arrays)):
        raise PrmkdError(f"{folder}: array '{over[0]}' holds values up to {over[1]:.4g}, beyond float16's "
                         f"{float(np.finfo(np.float16).max):.0f}: store this cache as float32")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").unlink(missing_ok=True)
    for k, a in arrays.items():
        write_atomic(folder / f"{k}.npy", lambda t, a=a: np.save(t, np.ascontiguousarray(a, dtype=dtype)))
    manifest = {
        "version": CACHE_VERSION, "name": name, "family": family, "similarity": similarity,
        "temperature": float(temperature), "dim": int(items.shape[1]), "dtype": dtype,
        "dataset": ds.name, "dataset_fingerprint": ds.fingerprint, "n_items": ds.n_items,
        "n_users": ds.n_users, "n_train_instances": ds.n_train_instances,
        "metrics": metrics or {}, "parameters": parameters, "config": config or {}, "created": now(),
        "build_id": uuid.uuid4().hex, **(extra or {}),
    }
    write_atomic(folder / "manifest.json", lambda t: t.write_text(json.dumps(manifest, indent=2)))
    return folder


def float16_overflow(arrays: dict[str, np.ndarray]) -> tuple[str, float] | None:
    """(array name, largest magnitude) of the first array holding a value float16 cannot store, else None (read in
    row blocks: a memory-mapped array is never read whole)."""
    f16_max = float(np.finfo(np.float16).max)
    for k, a in arrays.items():
        peak = max((float(np.abs(b).max(initial=0.0)) for b in _blocks(a)), default=0.0)
        if peak > f16_max:
            return k, peak
    return None


def cache_identity(folder: str | Path) -> dict | None:
    """What tells one build of a cache from another at the same path: its manifest's build id (the creation
    time for caches written before there was one) and teacher fingerprint (None while there is no complete
    cache there)."""
    mpath = Path(folder) / "manifest.json"
    if not mpath.exists():
        return None
    man = read_json(mpath, "teacher cache manifest")
    return {"build": man.get("build_id") or man.get("created"), "teacher_fingerprint": man.get("teacher_fingerprint")}


def check_arrays(arrays: dict[str, np.ndarray], ds: SeqDataset, where: str) -> None:
    """Shapes, dtype and finiteness of cache arrays against the dataset they are for."""
    rows = {"items": ds.n_items + 1, "train": ds.n_train_instances, "valid": ds.n_users, "test": ds.n_users}
    dims = set()
    for k in ARRAYS:
        if k not in arrays:
            raise PrmkdError(f"{where}: missing array '{k}'")
        a = arrays[k]
        if a.ndim != 2:
            raise PrmkdError(f"{where}: array '{k}' must be 2-D (rows x dim), got shape {tuple(a.shape)}")
        if not np.issubdtype(a.dtype, np.floating):
            raise PrmkdError(f"{where}: array '{k}' must hold floats, got dtype {a.dtype}")
        if a.shape[0] != rows[k]:
            raise PrmkdError(f"{where}: array '{k}' has {a.shape[0]} rows, the dataset {ds.name} needs {rows[k]} "
                             f"({'n_items + 1 (row 0 = padding)' if k == 'items' else k + ' instances'})")
        if not _all_finite(a):
            raise PrmkdError(f"{where}: array '{k}' contains NaN or infinite values")
        dims.add(a.shape[1])
    if len(dims) != 1:
        raise PrmkdError(f"{where}: arrays disagree on the representation size: {sorted(dims)}")


def _blocks(a: np.ndarray, block: int = 1 << 14):
    """`a` in row blocks as float32; the pages a memory-mapped `a` read for a block leave the process's resident
    set after it (they stay in the kernel's page cache), so a pass over a cache never makes the process hold it."""
    for lo in range(0, len(a), block):
        yield np.asarray(a[lo:lo + block], dtype=np.float32)
        _release(a, min_bytes=0)


def _all_finite(a: np.ndarray) -> bool:
    """Finiteness checked in row blocks (a memory-mapped array is never resident whole)."""
    return all(np.isfinite(b).all() for b in _blocks(a))


MANIFEST_TYPES = {"name": str, "family": str, "similarity": str, "temperature": (int, float), "dataset": str,
                  "dataset_fingerprint": str, "n_items": int, "dim": int}


def check_manifest(m, path: Path) -> dict:
    """A cache manifest's keys and values (one line naming the file for the first problem)."""
    if not isinstance(m, dict):
        raise PrmkdError(f"{path}: expected a JSON object")
    for k, tp in MANIFEST_TYPES.items():
        if k not in m:
            raise PrmkdError(f"{path}: missing manifest key '{k}'")
        if isinstance(m[k], bool) or not isinstance(m[k], tp):
            raise PrmkdError(f"{path}: manifest key '{k}' has the wrong type ({type(m[k]).__name__})")
    if m["similarity"] not in SIMILARITIES:
        raise PrmkdError(f"{path}: unknown similarity {m['similarity']!r} (expected {' or '.join(SIMILARITIES)})")
    if not m["temperature"] > 0:
        raise PrmkdError(f"{path}: temperature must be > 0, got {m['temperature']}")
    metrics = m.get("metrics", {})
    if not isinstance(metrics, dict) or not all(
            isinstance(v, dict) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v.values())
            for v in metrics.values()):
        raise PrmkdError(f"{path}: 'metrics' must map each split to numbers, e.g. {{\"valid\": {{\"ndcg@10\": 0.05}}}}")
    return m


RELEASE_BYTES = 64 << 20  # mappings at least this large give their pages back after every gather


def _release(arr: np.ndarray, min_bytes: int = RELEASE_BYTES) -> None:
    """madvise(MADV_DONTNEED) on a large read-only memory map: its pages leave this process's resident set."""
    m = getattr(arr, "_mmap", None)
    if m is not None and arr.nbytes >= min_bytes and hasattr(mmap, "MADV_DONTNEED"):
        m.madvise(mmap.MADV_DONTNEED)


def load_array(path: Path, mapped: bool = True) -> np.ndarray:
    """A .npy array (memory-mapped by default); a missing, truncated or foreign file is one line naming it."""
    if not path.exists():
        raise PrmkdError(f"{path}: missing (a teacher cache needs {', '.join(k + '.npy' for k in ARRAYS)})")
    try:
        return np.load(path, mmap_mode="r" if mapped else None, allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
        raise PrmkdError(f"{path}: not a readable .npy array (truncated or damaged: {e})") from None


class TeacherCache:
    """A loaded cache. The item matrix is held in memory as a float32 tensor; instance rows stay memory-mapped
    on disk and are gathered per batch (`rows`), so the resident memory of a distillation does not grow with the
    number of training instances, and a data-parallel rank reads only the rows of its shard. Rows of cosine
    teachers are normalized as they are gathered."""

    def __init__(self, folder: Path, ds: SeqDataset | None = None):
        self.folder = Path(folder)
        mpath = self.folder / "manifest.json"
        if not mpath.exists():
            raise PrmkdError(f"{self.folder}: not a teacher cache (no manifest.json; an interrupted export leaves "
                             f"none)")
        self.manifest = check_manifest(read_json(mpath, "teacher cache manifest"), mpath)
        if ds is not None and self.manifest["dataset_fingerprint"] != ds.fingerprint:
            raise CacheMismatchError(
                f"{self.folder}: this teacher cache was made for dataset '{self.manifest['dataset']}' "
                f"(fingerprint {self.manifest['dataset_fingerprint']}), not for '{ds.name}' "
                f"(fingerprint {ds.fingerprint}); rebuild it for this dataset and split")
        self.name = self.manifest["name"]
        self.similarity = self.manifest["similarity"]
        self.temperature = float(self.manifest["temperature"])
        self._np = {k: load_array(self.folder / f"{k}.npy") for k in ARRAYS}
        if ds is not None:
            check_arrays(self._np, ds, str(self.folder))
        self.items = torch.from_numpy(np.array(self._rows(self._np["items"])))  # (n_items + 1, d), in memory
        self.device = torch.device("cpu")

    def _rows(self, a: np.ndarray) -> np.ndarray:
        x = np.asarray(a)
        return np.asarray(_normalize(x) if self.similarity == "cos" else x, dtype=np.float32)

    @property
    def metrics(self) -> dict:
        return self.manifest.get("metrics", {})

    @property
    def dim(self) -> int:
        return int(self._np["items"].shape[1])

    def to(self, device) -> "TeacherCache":
        self.device = torch.device(device)
        self.items = self.items.to(self.device)
        return self

    def rows(self, split: str, ids: torch.Tensor) -> torch.Tensor:
        """(N, d) float32 rows of `split` ("train" instance ids, or "valid" / "test" users), on the cache's device.
        The pages read are handed back to the kernel after the gather (they stay in its page cache), so a pass
        over a cache larger than memory never makes the process hold it."""
        idx = ids.detach().cpu().numpy()
        arr = self._np[split]
        out = torch.from_numpy(self._rows(arr[idx])).to(self.device, non_blocking=True)
        _release(arr)
        return out

    def logits(self, split: str, instance_ids: torch.Tensor, candidates: torch.Tensor,
               out: torch.Tensor | None = None) -> torch.Tensor:
        """(N, C) teacher logits sim(u, e) / temperature of instances (rows of `split`) vs candidate items
        (written into `out` when given)."""
        u = self.rows(split, instance_ids)  # (N, d)
        e = self.items[candidates]  # (C, d)
        if out is None:
            return (u @ e.T) / self.temperature
        return torch.mm(u.to(out.dtype), e.to(out.dtype).T, out=out).mul_(1.0 / self.temperature)


class CacheModel(Recommender):
    """A teacher cache seen through the model contract, so the ordinary evaluator scores it."""

    def __init__(self, cache: TeacherCache, split: str = "test"):
        super().__init__()
        self.cache, self.split = cache, split
        self.n_items = cache.manifest["n_items"]

    def eval_state(self, batch: EvalBatch) -> torch.Tensor:
        return self.cache.rows(self.split, batch.users)

    def score_items(self, state: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        return (state @ self.cache.items[lo:hi].T) / self.cache.temperature


def evaluate_cache(cache: TeacherCache, ds: SeqDataset, split: str, eval_cfg=None):
    from ..evaluation import evaluate

    return evaluate(CacheModel(cache, split), ds, split, eval_cfg)


@torch.no_grad()
def export_arrays(model, ds: SeqDataset, batch_size: int = 256, device="cpu") -> dict[str, np.ndarray]:
    """Cache arrays of a factorized model: `model.item_table()` (n_items + 1, d) for items, and the model's
    instance representations (`encode` on every training window, `eval_state` on valid / test)."""
    model.eval()
    items = model.item_table().float().cpu().numpy()
    d = items.shape[1]
    train = np.zeros((ds.n_train_instances, d), dtype=np.float32)
    seen = np.zeros(ds.n_train_instances, dtype=bool)
    for _, batch in TrainBatches(ds, batch_size, seed=0).epoch(0):
        enc = model.encode(batch.to(device))
        ids = enc.instance_ids.cpu().numpy()
        train[ids] = enc.reps.float().cpu().numpy()
        seen[ids] = True
    if not seen.all():
        raise PrmkdError(f"export: {int((~seen).sum())} training instances got no representation")
    out = {"items": items, "train": train}
    for split in ("valid", "test"):
        rows = np.zeros((ds.n_users, d), dtype=np.float32)
        for batch in eval_batches(ds, split, batch_size * 8):
            rows[batch.users.numpy()] = model.eval_state(batch.to(device)).float().cpu().numpy()
        out[split] = rows
    return out
