"""A recommender over an exported folder (`prmkd export`), with no torch: ONNX Runtime, numpy and faiss.

    rec = prmkd.serving.load("exports/sasrec")
    rec.recommend(["B00X", "B00Y"], k=10)            # a model that reads a history: raw item ids, oldest first
    rec.recommend(user="A2XJ", k=10)                 # a model keyed by user (FM, DeepFM, LightGCN): a user id
    rec.recommend_batch([[...], [...]], k=10)

Each call returns, per request, a list of (raw item id, score), best first. `exclude_seen` leaves out the items of
the history (or the user's known items); unknown item ids are an `UnknownItems` error naming them, or, with
`drop_unknown=True`, dropped and reported in `last_unknown`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import PrmkdError
from ..io import file_sha256


class ServingError(PrmkdError):
    """A request that cannot be served as asked (the HTTP service answers it with a 4xx)."""


class UnknownItems(ServingError):
    def __init__(self, ids: list):
        shown = ", ".join(repr(i) for i in ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
        super().__init__(f"unknown item id(s): {shown}")
        self.ids = ids


@dataclass
class Request:
    history: list | None = None
    user: str | None = None


class Recommender:
    """An exported student, ready to serve."""

    def __init__(self, folder: str | Path, *, threads: int = 1, index: str = "exact", verify: bool = True):
        import onnxruntime as ort

        self.folder = Path(folder)
        mpath = self.folder / "manifest.json"
        if not mpath.exists():
            raise PrmkdError(f"{self.folder}: not a prmkd export (no manifest.json)")
        try:
            self.manifest = json.loads(mpath.read_text())
        except json.JSONDecodeError as e:
            raise PrmkdError(f"{mpath}, line {e.lineno}: not valid JSON ({e.msg})") from None
        if self.manifest.get("format") != "prmkd-export":
            raise PrmkdError(f"{mpath}: not a prmkd export manifest")
        if verify:
            for name, f in self.manifest["files"].items():
                p = self.folder / name
                if not p.exists() or file_sha256(p) != f["sha256"]:
                    raise PrmkdError(f"{p}: missing or changed since export (checksum mismatch)")
        m = self.manifest
        self.n_items, self.keyed_by, self.score = m["n_items"], m["keyed_by"], m["score"]
        self.max_len = (m.get("history") or {}).get("max_len")
        self.item_ids: list[str] = json.loads((self.folder / "item_ids.json").read_text())
        self.item_index = {k: i for i, k in enumerate(self.item_ids, 1)}  # raw id -> internal id 1..n
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.folder / "user.onnx"), opts, providers=["CPUExecutionProvider"])
        self.index = None
        if self.score == "inner_product":
            import faiss

            faiss.omp_set_num_threads(threads)
            chosen = m["index"]["exact"] if index == "exact" else (m["index"].get("approximate") or {})
            name = chosen.get("file")
            if name is None:
                raise PrmkdError(f"{self.folder}: no approximate index was exported (prmkd export --approximate hnsw)")
            self.index = faiss.read_index(str(self.folder / name))
        if self.keyed_by == "user":
            self.user_ids: list[str] = json.loads((self.folder / "users.json").read_text())
            self.user_index = {k: i for i, k in enumerate(self.user_ids)}
            self.seen_offsets = np.load(self.folder / "seen_offsets.npy")
            self.seen_items = np.load(self.folder / "seen_items.npy")
        self.last_unknown: list[list] = []

    # ---- encoding requests
    def _encode_history(self, history: list, drop_unknown: bool) -> tuple[np.ndarray, list]:
        ids, unknown = [], []
        for raw in history:
            i = self.item_index.get(str(raw))
            if i is None:
                unknown.append(raw)
            else:
                ids.append(i)
        if unknown and not drop_unknown:
            raise UnknownItems(unknown)
        if not ids:
            raise ServingError("the history holds no known item" if history else "the history is empty")
        return np.asarray(ids, dtype=np.int64), unknown

    def _user(self, user) -> int:
        u = self.user_index.get(str(user))
        if u is None:
            raise ServingError(f"unknown user id {user!r} (this model is keyed by the users it was trained on)")
        return u

    def _scores_inputs(self, requests: list[Request], drop_unknown: bool):
        """The ONNX inputs of a batch, each request's seen items (internal ids) and dropped unknown ids."""
        if self.keyed_by == "history":
            encoded = [self._encode_history(r.history if r.history is not None else [], drop_unknown)
                       for r in requests]
            seen = [h for h, _ in encoded]
            T = min(self.max_len, max(len(h) for h in seen))
            items = np.zeros((len(seen), T), dtype=np.int64)
            lengths = np.zeros(len(seen), dtype=np.int64)
            for r, h in enumerate(seen):
                h = h[-T:]
                items[r, :len(h)], lengths[r] = h, len(h)
            return {"items": items, "lengths": lengths}, seen, [u for _, u in encoded]
        if any(r.user is None for r in requests):
            raise ServingError("this model is keyed by user: give a user id, not a history")
        users = np.asarray([self._user(r.user) for r in requests], dtype=np.int64)
        seen = [self.seen_items[self.seen_offsets[u]:self.seen_offsets[u + 1]] for u in users]
        return {"users": users}, seen, [[] for _ in requests]

    # ---- scoring
    def user_vectors(self, inputs: dict) -> np.ndarray:
        return self.session.run(None, inputs)[0]

    def _top(self, out: np.ndarray, seen: list[np.ndarray], k: int, exclude_seen: bool):
        """Per row: (internal ids, scores) of the k best items."""
        res = []
        if self.score == "inner_product":
            extra = max((len(s) for s in seen), default=0) if exclude_seen else 0
            scores, ids = self.index.search(np.ascontiguousarray(out, dtype=np.float32), min(k + extra, self.n_items))
            for row_ids, row_s, s in zip(ids, scores, seen):
                ids1 = row_ids + 1  # faiss rows are items 1..n
                keep = ~np.isin(ids1, s) if exclude_seen else np.ones(len(ids1), bool)
                keep &= row_ids >= 0
                res.append((ids1[keep][:k], row_s[keep][:k]))
            return res
        for row, s in zip(out, seen):  # the whole scorer: (n_items,) scores of items 1..n
            row = row.astype(np.float32, copy=True)
            if exclude_seen:
                row[np.asarray(s, dtype=np.int64) - 1] = -np.inf
            kk = min(k, self.n_items)
            top = np.argpartition(-row, kk - 1)[:kk]
            top = top[np.argsort(-row[top], kind="stable")]
            res.append((top + 1, row[top]))
        return res

    def serve(self, requests: list, k: int = 10, exclude_seen: bool = True, drop_unknown: bool = False):
        """(top-k of each request, the unknown ids dropped from each): thread-safe, no state kept."""
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= self.n_items:
            raise ServingError(f"k must be an integer in 1..{self.n_items}, got {k!r}")
        if not requests:
            raise ServingError("no requests")
        reqs = [r if isinstance(r, Request) else
                (Request(user=r) if self.keyed_by == "user" and not isinstance(r, (list, tuple)) else
                 Request(history=list(r))) for r in requests]
        inputs, seen, unknown = self._scores_inputs(reqs, drop_unknown)
        top = self._top(self.user_vectors(inputs), seen, k, exclude_seen)
        return [[(self.item_ids[i - 1], float(s)) for i, s in zip(ids, sc)] for ids, sc in top], unknown

    def recommend_batch(self, requests: list, k: int = 10, exclude_seen: bool = True,
                        drop_unknown: bool = False) -> list[list[tuple[str, float]]]:
        """Top-k of each request: a history (list of raw item ids) or, for models keyed by user, a user id."""
        ranked, self.last_unknown = self.serve(requests, k, exclude_seen, drop_unknown)
        return ranked

    def recommend(self, history: list | None = None, k: int = 10, exclude_seen: bool = True, *, user=None,
                  drop_unknown: bool = False) -> list[tuple[str, float]]:
        req = Request(history=list(history) if history is not None else None, user=user)
        if self.keyed_by == "user" and user is None:
            raise ServingError("this model is keyed by user: recommend(user=USER_ID)")
        if self.keyed_by == "history" and history is None:
            raise ServingError("this model reads a history: recommend([item ids, oldest first])")
        return self.recommend_batch([req], k, exclude_seen, drop_unknown)[0]


def load(folder: str | Path, **options) -> Recommender:
    """The exported student in `folder` (see `prmkd export`), ready to `recommend`."""
    return Recommender(folder, **options)
