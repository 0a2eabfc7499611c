"""The teacher cache: the only thing distillation reads from a teacher.

A cache is a folder:
  manifest.json  name, family, similarity ("dot" | "cos"), temperature, dataset fingerprint, shapes, dtype,
                 the teacher's own valid/test metrics, parameter count, how it was made
  items.npy      (n_items + 1, d)   row i = item i (row 0 = padding, zeros)
  train.npy      (n_train_instances, d)  row = training instance id (see SeqDataset.train_instance_offsets)
  valid.npy      (n_users, d)       the validation instance of each user
  test.npy       (n_users, d)       the test instance of each user
Arrays are plain .npy (memory-mappable; float32 or float16).

A teacher's logit for instance u and item e is sim(u, e) / temperature, with sim the dot product or the cosine.
Distillation then applies its own tau on top (Eq. 1): s = softmax(logit / tau) over the candidates.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import torch

from ..data.batches import EvalBatch, TrainBatches, eval_batches
from ..data.dataset import SeqDataset
from ..io import write_atomic
from ..env import now
from ..errors import CacheMismatchError, PrmkdError
from ..models.base import Recommender

CACHE_VERSION = 1
ARRAYS = ("items", "train", "valid", "test")


def _normalize(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x.astype(np.float32), axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def write_cache(folder: Path, *, name: str, family: str, items: np.ndarray, train: np.ndarray, valid: np.ndarray,
                test: np.ndarray, ds: SeqDataset, similarity: str = "dot", temperature: float = 1.0,
                metrics: dict | None = None, parameters: int | None = None, config: dict | None = None,
                dtype: str = "float32", extra: dict | None = None) -> Path:
    """Write a cache folder (arrays first, manifest last: a manifest means a complete cache)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").unlink(missing_ok=True)
    arrays = {"items": items, "train": train, "valid": valid, "test": test}
    check_arrays(arrays, ds, where=str(folder))
    for k, a in arrays.items():
        np.save(folder / f"{k}.npy", np.ascontiguousarray(a, dtype=dtype))
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


def cache_identity(folder: str | Path) -> dict | None:
    """What tells one build of a cache from another at the same path: its manifest's build id (the creation
    time for caches written before there was one) and teacher fingerprint (None while there is no complete
    cache there)."""
    mpath = Path(folder) / "manifest.json"
    if not mpath.exists():
        return None
    man = json.loads(mpath.read_text())
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
        if not np.isfinite(np.asarray(a, dtype=np.float32)).all():
            raise PrmkdError(f"{where}: array '{k}' contains NaN or infinite values")
        dims.add(a.shape[1])
    if len(dims) != 1:
        raise PrmkdError(f"{where}: arrays disagree on the representation size: {sorted(dims)}")


class TeacherCache:
    """A loaded cache. Instance and item representations are held as float32 torch tensors (cosine
    teachers already normalized), so a distillation step is one gather and one small matmul per teacher."""

    def __init__(self, folder: Path, ds: SeqDataset | None = None, mmap: bool = False):
        self.folder = Path(folder)
        mpath = self.folder / "manifest.json"
        if not mpath.exists():
            raise PrmkdError(f"{self.folder}: not a teacher cache (no manifest.json; an interrupted export leaves none)")
        self.manifest = json.loads(mpath.read_text())
        if ds is not None and self.manifest["dataset_fingerprint"] != ds.fingerprint:
            raise CacheMismatchError(
                f"{self.folder}: this teacher cache was made for dataset '{self.manifest['dataset']}' "
                f"(fingerprint {self.manifest['dataset_fingerprint']}), not for '{ds.name}' "
                f"(fingerprint {ds.fingerprint}); rebuild it for this dataset and split")
        self.name = self.manifest["name"]
        self.similarity = self.manifest["similarity"]
        self.temperature = float(self.manifest["temperature"])
        arrays = {k: np.load(self.folder / f"{k}.npy", mmap_mode="r" if mmap else None) for k in ARRAYS}
        if ds is not None:
            check_arrays(arrays, ds, str(self.folder))
        cos = self.similarity == "cos"
        self.arrays = {k: torch.from_numpy(np.asarray(_normalize(a) if cos else a, dtype=np.float32))
                       for k, a in arrays.items()}

    @property
    def metrics(self) -> dict:
        return self.manifest.get("metrics", {})

    def to(self, device) -> "TeacherCache":
        self.arrays = {k: v.to(device) for k, v in self.arrays.items()}
        return self

    def logits(self, split: str, instance_ids: torch.Tensor, candidates: torch.Tensor,
               out: torch.Tensor | None = None) -> torch.Tensor:
        """(N, C) teacher logits sim(u, e) / temperature of instances (rows of `split`) vs candidate items
        (written into `out` when given)."""
        u = self.arrays[split][instance_ids]  # (N, d)
        e = self.arrays["items"][candidates]  # (C, d)
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
        return self.cache.arrays[self.split][batch.users]

    def score_items(self, state: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        return (state @ self.cache.arrays["items"][lo:hi].T) / self.cache.temperature


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
