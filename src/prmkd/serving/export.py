"""`export_run(RUN_DIR, OUT)`: a finished student run (plain or distilled, one code path) as a folder that serves
without torch.

    manifest.json    what was exported and how to use it (below), with the SHA-256 of every file
    user.onnx        the user side: histories (items (B, T) int64 right-padded with 0, lengths (B,) int64) -> (B, d)
                     user vectors for models that read a history; user rows (B,) int64 -> (B, d) for models keyed
                     by user; for a score that is not an inner product (DeepFM), users (B,) -> (B, n_items) scores
    items.npy        (n_items, d) item vectors, row r = internal item r + 1, biases folded in (inner-product models)
    item_ids.json    the raw id of every item row
    index.faiss      exact inner-product index over items.npy (IndexFlatIP)
    index_hnsw.faiss approximate index (option), its recall@10 against the exact index measured here and recorded
    users.json, seen_offsets.npy, seen_items.npy   (models keyed by user) raw user ids and every user's known items

Refused with a one-line reason: an unfinished run, a run folder whose files do not match (results of another
configuration, weights that do not load), an output folder that holds anything but an earlier export. The export
is written to a temporary folder beside OUT and moved into place whole.
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..data.batches import EvalBatch, eval_batches
from ..errors import PrmkdError
from ..experiment.layout import RunDir
from ..io import file_sha256, read_json, write_json
from ..log import info

FORMAT = "prmkd-export"
FORMAT_VERSION = 1
OPSET = 17


def check_out(out: Path) -> None:
    """OUT must be absent, empty, or an earlier export (then it is replaced)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise PrmkdError(f"{out}: exists and is not a folder")
    if not any(out.iterdir()):
        return
    man = out / "manifest.json"
    if not (man.exists() and read_json(man).get("format") == FORMAT):
        raise PrmkdError(f"{out}: the output folder holds other files (not a prmkd export); choose another --out")


def load_finished(run_dir: Path, ds=None):
    """(model in eval mode, RunConfig, dataset, results) of a finished run whose files agree with each other."""
    from ..experiment.runner import fingerprint, load_run

    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise PrmkdError(f"{run.path}: no such run folder")
    if not run.results.exists():
        raise PrmkdError(f"{run.path}: the run is not finished (no results.json): finish it first (rerun its command)")
    results = read_json(run.results, "results file")
    model, cfg, ds = load_run(run.path, ds, log=lambda m: None)
    if results.get("fingerprint") != fingerprint(cfg, ds):
        raise PrmkdError(f"{run.path}: results.json belongs to another configuration or dataset than config.json "
                         f"(fingerprint {results.get('fingerprint')} vs {fingerprint(cfg, ds)})")
    return model.eval(), cfg, ds, results


class _HistoryUser(torch.nn.Module):
    """items (B, T), lengths (B,) -> (B, d') serving user vectors."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        state = self.model.eval_state(EvalBatch(items, lengths, lengths, lengths))
        return self.model.serving_user(state)


class _TableUser(torch.nn.Module):
    """users (B,) -> (B, d') rows of a precomputed user table."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        return self.table[users]


def _onnx(module: torch.nn.Module, args: tuple, path: Path, names: list[str], axes: dict) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and indexing notices
        torch.onnx.export(module, args, str(path), input_names=names, output_names=["output"],
                          dynamic_axes={**axes, "output": {0: "batch"}}, opset_version=OPSET, dynamo=False)


@torch.no_grad()
def user_table(model, ds) -> torch.Tensor:
    """(n_users, d') serving user vectors of every user (models keyed by user)."""
    rows = []
    for lo in range(0, ds.n_users, 4096):
        users = torch.arange(lo, min(lo + 4096, ds.n_users))
        batch = EvalBatch(users[:, None], torch.ones_like(users), users, users)
        rows.append(model.serving_user(model.eval_state(batch)))
    return torch.cat(rows).float()


def _approximate(items: np.ndarray, queries: np.ndarray, kind: str, k: int = 10):
    """(index, recall@k of its top-k against the exact inner-product top-k on `queries`)."""
    import faiss

    d = items.shape[1]
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction, index.hnsw.efSearch = 80, 64
        index.add(items)
    elif kind == "ivf":
        nlist = max(1, int(np.sqrt(len(items))))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(items)
        index.add(items)
        index.nprobe = max(1, nlist // 8)
    else:
        raise PrmkdError(f"unknown approximate index '{kind}' (expected hnsw or ivf)")
    exact = faiss.IndexFlatIP(d)
    exact.add(items)
    _, want = exact.search(queries, k)
    _, got = index.search(queries, k)
    recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(want, got)]))
    return index, recall


def export_run(run_dir: Path, out: Path, *, dtype: str = "float32", approximate: str | None = None,
               log=info, ds=None) -> Path:
    """Export the finished run in `run_dir` to `out` (see the module docstring); returns `out`. `ds`: the run's
    dataset when it is already in memory (else prepared from the run's config)."""
    import faiss

    faiss.omp_set_num_threads(1)  # an index built on one thread is the same index every time
    if dtype not in ("float32", "float16"):
        raise PrmkdError(f"--dtype {dtype}: expected float32 or float16")
    out = Path(out)
    check_out(out)
    t0 = time.time()
    model, cfg, ds, results = load_finished(run_dir, ds)
    model.to("cpu")
    tmp = out.with_name(out.name + ".exporting")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        items = model.serving_items()
        kind = "inner_product" if items is not None else "scorer"
        files: dict[str, dict] = {}
        index_info: dict = {}
        if model.keyed_by == "history":
            sample = next(eval_batches(ds, "test", 4))
            _onnx(_HistoryUser(model), (sample.items, sample.lengths), tmp / "user.onnx", ["items", "lengths"],
                  {"items": {0: "batch", 1: "length"}, "lengths": {0: "batch"}})
        elif kind == "scorer":
            _onnx(model.serving_scorer().eval(), (torch.arange(3),), tmp / "user.onnx", ["users"],
                  {"users": {0: "batch"}})
        else:
            _onnx(_TableUser(user_table(model, ds)), (torch.arange(3),), tmp / "user.onnx", ["users"],
                  {"users": {0: "batch"}})
        if kind == "inner_product":
            with torch.no_grad():
                mat = items.detach().float().numpy().astype(dtype)
            np.save(tmp / "items.npy", mat)
            served = np.ascontiguousarray(mat, dtype=np.float32)  # what the index holds: the stored values
            exact = faiss.IndexFlatIP(served.shape[1])
            exact.add(served)
            faiss.write_index(exact, str(tmp / "index.faiss"))
            index_info = {"exact": {"file": "index.faiss", "type": "IndexFlatIP"}}
            if approximate:
                queries = _queries(model, ds)
                index, recall = _approximate(served, queries, approximate)
                faiss.write_index(index, str(tmp / f"index_{approximate}.faiss"))
                index_info["approximate"] = {"file": f"index_{approximate}.faiss", "type": approximate,
                                             "recall@10_vs_exact": round(recall, 4),
                                             "measured_on": f"{len(queries)} test users of {ds.name}"}
                log(f"approximate index ({approximate}): recall@10 against the exact index {recall:.4f}")
        (tmp / "item_ids.json").write_text(json.dumps(ds.item_keys))
        if model.keyed_by == "user":
            (tmp / "users.json").write_text(json.dumps(ds.user_keys))
            np.save(tmp / "seen_offsets.npy", ds.seq_offsets.astype(np.int64))
            np.save(tmp / "seen_items.npy", ds.seq_items.astype(np.int32))
        for f in sorted(tmp.iterdir()):
            files[f.name] = {"sha256": file_sha256(f), "bytes": f.stat().st_size}
        manifest = {
            "format": FORMAT, "version": FORMAT_VERSION, "prmkd_version": __version__,
            "model": cfg.model.get("name"), "model_config": results["config"]["model"], "role": results["role"],
            "score": kind, "keyed_by": model.keyed_by, "n_items": ds.n_items, "n_users": ds.n_users,
            "dim": int(items.shape[1]) if items is not None else None, "dtype": dtype if items is not None else None,
            "similarity": "inner product (biases folded in)" if kind == "inner_product" else
                          "the model's own scorer over every item (exact)",
            "history": {"max_len": ds.max_len, "padding": "right, with 0", "order": "oldest first, most recent last",
                        "ids": "raw item ids as in item_ids.json"} if model.keyed_by == "history" else None,
            "index": index_info, "onnx_opset": OPSET, "dataset": ds.name, "dataset_fingerprint": ds.fingerprint,
            "source": {"run": str(Path(run_dir).resolve()), "name": results["name"],
                       "fingerprint": results["fingerprint"], "test_metrics": results["metrics"]["test"],
                       "eval": results.get("eval")},
            "files": files, "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "export_seconds": round(time.time() - t0, 2),
        }
        write_json(tmp / "manifest.json", manifest)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"exported {results['name']} ({kind}, keyed by {model.keyed_by}) -> {out}")
    return out


@torch.no_grad()
def _queries(model, ds, n: int = 1000) -> np.ndarray:
    """Serving user vectors of up to `n` test users (to measure an approximate index against the exact one)."""
    users = np.arange(min(n, ds.n_users))
    batch = next(eval_batches(ds, "test", len(users), users))
    return model.serving_user(model.eval_state(batch)).float().numpy()
