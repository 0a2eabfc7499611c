"""External teachers: any model that can export an item matrix and instance representations.

Portable form (what `prmkd teacher import` reads and `prmkd teacher export --to` writes):
  items      (n_items + 1, d)   row i = the dataset's internal item i (row 0 = padding, ignored);
             `prmkd prepare` prints the folder whose items.json lists the raw id of each internal id
  instances  (n_train_instances + 2 * n_users, d)  training instances in instance-id order, then each
             user's validation instance, then each user's test instance
  as two .npy files, or one .safetensors file with tensors "items" and "instances"
  manifest   JSON: {"name": str, "similarity": "dot" | "cos", "temperature": float > 0,
                    optional "family", "description", "metrics": {"valid": {...}, "test": {...}}}
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..data.dataset import SeqDataset
from ..errors import PrmkdError
from ..io import read_json, write_json
from .cache import TeacherCache, evaluate_cache, write_cache

MANIFEST_KEYS = {"name": str, "similarity": str, "temperature": (int, float), "family": str,
                 "description": str, "metrics": dict}
REQUIRED = ("name", "similarity", "temperature")


def read_manifest(path: Path) -> dict:
    path = Path(path)
    m = read_json(path, "manifest")
    if not isinstance(m, dict):
        raise PrmkdError(f"{path}: expected a JSON object")
    for k in m:
        if k not in MANIFEST_KEYS:
            raise PrmkdError(f"{path}: unknown manifest key '{k}' (known: {', '.join(MANIFEST_KEYS)})")
    for k in REQUIRED:
        if k not in m:
            raise PrmkdError(f"{path}: missing manifest key '{k}'")
    for k, v in m.items():
        if isinstance(v, bool) or not isinstance(v, MANIFEST_KEYS[k]):
            raise PrmkdError(f"{path}: manifest key '{k}' has the wrong type ({type(v).__name__})")
    if m["similarity"] not in ("dot", "cos"):
        raise PrmkdError(f"{path}: manifest key 'similarity' must be \"dot\" or \"cos\", got {m['similarity']!r}")
    if not m["temperature"] > 0:
        raise PrmkdError(f"{path}: manifest key 'temperature' must be > 0, got {m['temperature']}")
    return m


def read_array(path: Path, key: str) -> np.ndarray:
    path = Path(path)
    if not path.exists():
        raise PrmkdError(f"{path}: not found")
    if path.suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, EOFError, OSError) as e:
            raise PrmkdError(f"{path}: not a readable numeric .npy array ({e})") from None
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        try:
            arrays = load_file(str(path))
        except Exception as e:  # safetensors raises its own error type for a damaged header or body
            raise PrmkdError(f"{path}: not a readable .safetensors file ({e})") from None
        if key not in arrays:
            raise PrmkdError(f"{path}: no tensor named '{key}' (found: {', '.join(arrays) or 'none'})")
        return arrays[key]
    raise PrmkdError(f"{path}: unknown array format '{path.suffix}' (expected .npy or .safetensors)")


def split_instances(inst: np.ndarray, ds: SeqDataset, where: str) -> dict[str, np.ndarray]:
    n_t, n_u = ds.n_train_instances, ds.n_users
    if inst.ndim != 2 or inst.shape[0] != n_t + 2 * n_u:
        raise PrmkdError(f"{where}: instances must have shape ({n_t + 2 * n_u}, d) = {n_t} training instances + "
                         f"{n_u} validation + {n_u} test rows for dataset {ds.name}; got {tuple(inst.shape)}")
    return {"train": inst[:n_t], "valid": inst[n_t:n_t + n_u], "test": inst[n_t + n_u:]}


def import_teacher(items_path: Path, instances_path: Path, manifest_path: Path, ds: SeqDataset, out: Path,
                   dtype: str = "float32") -> Path:
    """Validate an external teacher's arrays and manifest, and write a teacher cache for `ds`.
    Metrics not given in the manifest are computed from the arrays (full ranking, same evaluator)."""
    import shutil

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise PrmkdError(f"{out}: the output folder already holds files; choose another --out or remove it")
    m = read_manifest(manifest_path)
    items = read_array(items_path, "items")
    inst = read_array(instances_path, "instances")
    _check_input("items", items, ds.n_items + 1, items_path, " (n_items + 1: row 0 is the padding item)")
    arrays = {"items": items, **split_instances(inst, ds, str(instances_path))}
    for k in ("train", "valid", "test"):
        _check_input(k, arrays[k], len(arrays[k]), instances_path)
    if arrays["train"].shape[1] != items.shape[1]:
        raise PrmkdError(f"{instances_path}: rows are {arrays['train'].shape[1]}-d, the items in {items_path} are "
                         f"{items.shape[1]}-d")
    try:
        folder = write_cache(out, name=m["name"], family=m.get("family", "external"), ds=ds,
                             similarity=m["similarity"], temperature=m["temperature"], metrics=m.get("metrics"),
                             dtype=dtype, extra={"description": m.get("description", ""),
                                                 "imported_from": [str(items_path), str(instances_path)]}, **arrays)
        if not m.get("metrics"):
            cache = TeacherCache(folder, ds)
            metrics = {s: evaluate_cache(cache, ds, s).metrics for s in ("valid", "test")}
            man = read_json(folder / "manifest.json")
            man["metrics"] = metrics
            write_json(folder / "manifest.json", man)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # a failed import leaves no output folder
        raise
    return folder


def _check_input(what: str, a: np.ndarray, rows: int, path: Path, hint: str = "") -> None:
    """An input array's shape, dtype and values, in the words of the file it came from."""
    if a.ndim != 2:
        raise PrmkdError(f"{path}: {what} must be 2-D (rows x dim), got shape {tuple(a.shape)}")
    if not np.issubdtype(a.dtype, np.floating):
        raise PrmkdError(f"{path}: {what} must hold floats, got dtype {a.dtype}")
    if a.shape[0] != rows:
        raise PrmkdError(f"{path}: {what} has {a.shape[0]} rows, expected {rows}{hint}")
    if not np.isfinite(a).all():
        bad = int(np.argwhere(~np.isfinite(a))[0][0])
        raise PrmkdError(f"{path}: {what} row {bad} holds NaN or infinite values")


def export_portable(cache_dir: Path, to: Path) -> list[Path]:
    """A cache in the portable form: `to` ending in .safetensors gives one file, else a folder of .npy files;
    plus manifest.json beside it."""
    cache = TeacherCache(cache_dir)
    man = cache.manifest
    items = np.load(Path(cache_dir) / "items.npy")
    inst = np.concatenate([np.load(Path(cache_dir) / f"{k}.npy") for k in ("train", "valid", "test")])
    manifest = {"name": man["name"], "similarity": man["similarity"], "temperature": man["temperature"],
                "family": man.get("family", ""), "metrics": man.get("metrics", {})}
    to = Path(to)
    if to.suffix == ".safetensors":
        from safetensors.numpy import save_file

        to.parent.mkdir(parents=True, exist_ok=True)
        save_file({"items": np.ascontiguousarray(items), "instances": np.ascontiguousarray(inst)}, str(to))
        mpath = to.with_suffix(".manifest.json")
        files = [to, mpath]
    else:
        to.mkdir(parents=True, exist_ok=True)
        np.save(to / "items.npy", items)
        np.save(to / "instances.npy", inst)
        mpath = to / "manifest.json"
        files = [to / "items.npy", to / "instances.npy", mpath]
    mpath.write_text(json.dumps(manifest, indent=2))
    return files
