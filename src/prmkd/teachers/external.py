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
from .cache import TeacherCache, evaluate_cache, write_cache

MANIFEST_KEYS = {"name": str, "similarity": str, "temperature": (int, float), "family": str,
                 "description": str, "metrics": dict}
REQUIRED = ("name", "similarity", "temperature")


def read_manifest(path: Path) -> dict:
    path = Path(path)
    try:
        m = json.loads(path.read_text())
    except FileNotFoundError:
        raise PrmkdError(f"{path}: manifest not found") from None
    except json.JSONDecodeError as e:
        raise PrmkdError(f"{path}, line {e.lineno}: not valid JSON ({e.msg})") from None
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
        except ValueError as e:
            raise PrmkdError(f"{path}: not a numeric .npy array ({e})") from None
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        arrays = load_file(str(path))
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
    m = read_manifest(manifest_path)
    items = read_array(items_path, "items")
    inst = read_array(instances_path, "instances")
    arrays = {"items": items, **split_instances(inst, ds, str(instances_path))}
    folder = write_cache(out, name=m["name"], family=m.get("family", "external"), ds=ds,
                         similarity=m["similarity"], temperature=m["temperature"], metrics=m.get("metrics"),
                         dtype=dtype, extra={"description": m.get("description", ""),
                                             "imported_from": [str(items_path), str(instances_path)]}, **arrays)
    if not m.get("metrics"):
        cache = TeacherCache(folder, ds)
        metrics = {s: evaluate_cache(cache, ds, s).metrics for s in ("valid", "test")}
        man = json.loads((folder / "manifest.json").read_text())
        man["metrics"] = metrics
        (folder / "manifest.json").write_text(json.dumps(man, indent=2))
    return folder


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
