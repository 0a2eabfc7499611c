"""Export -> load -> recommend for every registered student, parity with torch and with the evaluator, refusals
with one-line reasons, and the HTTP service (started on a free loopback port) answering every kind of bad request
with its 4xx and a one-line reason."""

from __future__ import annotations

import json
import socket
import threading
import time

import numpy as np
import pytest
import torch

from prmkd.cli import main
from prmkd.config import RunConfig, TrainConfig
from prmkd.data.batches import eval_batches
from prmkd.evaluation import evaluate, metrics_from_ranks
from prmkd.experiment.runner import load_run, train_run
from prmkd.models import MODELS
from prmkd.serving import export_run, load
from prmkd.serving.runtime import ServingError, UnknownItems
from test_contract import STUDENT_OPTIONS


@pytest.fixture(scope="module")
def runs(small_ds, tmp_path_factory):
    """A finished two-epoch run of every registered student on the small dataset."""
    root = tmp_path_factory.mktemp("serving-runs")
    out = {}
    for name in MODELS.names():
        cfg = RunConfig(model={"name": name, **STUDENT_OPTIONS[name]},
                        train=TrainConfig(epochs=2, batch_size=8, progress=False), out=str(root / name))
        train_run(cfg, small_ds, log=lambda m: None)
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def exports(runs, small_ds, tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    return {name: export_run(run, root / name, approximate="hnsw" if name != "deepfm" else None,
                             log=lambda m: None, ds=small_ds) for name, run in runs.items()}


def requests_of(rec, ds, users) -> list:
    if rec.keyed_by == "user":
        return [ds.user_keys[u] for u in users]
    return [[ds.item_keys[i - 1] for i in ds.split_history(int(u), "test")] for u in users]


@pytest.mark.parametrize("name", MODELS.names())
def test_served_scores_and_rankings_equal_the_evaluators(name, runs, exports, small_ds):
    rec = load(exports[name])
    model, _, ds = load_run(runs[name], small_ds)
    model.eval()
    users = np.arange(ds.n_users)
    batch = next(eval_batches(ds, "test", ds.n_users, users))
    with torch.no_grad():
        ref = model.score_items(model.eval_state(batch), 1, ds.n_items + 1).numpy()  # (U, n) torch scores
    reqs = requests_of(rec, ds, users)
    from prmkd.serving.runtime import Request

    inputs, _, _ = rec._scores_inputs([Request(user=r) if rec.keyed_by == "user" else Request(history=r)
                                       for r in reqs], False)
    out = rec.user_vectors(inputs)
    served = out @ np.load(exports[name] / "items.npy").T if rec.score == "inner_product" else out
    assert np.abs(served - ref).max() <= 1e-4 * np.abs(ref).max()
    # top-10 and NDCG@10 through the serving path, history not masked (as the evaluator's default)
    ranked = rec.recommend_batch(reqs, k=10, exclude_seen=False)
    targets = [ds.item_keys[t - 1] for t in ds.split_targets("test")]
    ranks = np.array([next((p for p, (i, _) in enumerate(r) if i == t), 10) for r, t in zip(ranked, targets)])
    ndcg = metrics_from_ranks(ranks, ks=(10,))["ndcg@10"].mean()
    assert ndcg == pytest.approx(evaluate(model, ds, "test").metrics["ndcg@10"], abs=1e-12)
    order = np.argsort(-ref, axis=1, kind="stable")[:, :10] + 1
    agree = [[ds.item_keys[i - 1] for i in row] == [i for i, _ in r] for row, r in zip(order, ranked)]
    ties = [len(np.unique(np.round(row[o - 1], 5))) < 10 for row, o in zip(ref, order)]
    assert all(a or t for a, t in zip(agree, ties))


@pytest.mark.parametrize("name", MODELS.names())
def test_exclude_seen_and_the_manifest(name, exports, small_ds):
    rec = load(exports[name])
    m = rec.manifest
    assert m["model"] == name and m["dataset_fingerprint"] == small_ds.fingerprint
    assert m["keyed_by"] == MODELS.get(name).keyed_by and set(m["files"]) <= {p.name for p in exports[name].iterdir()}
    assert m["source"]["test_metrics"]["ndcg@10"] >= 0
    u = 3
    req = requests_of(rec, small_ds, [u])[0]
    seen = set(small_ds.item_keys[i - 1] for i in small_ds.seq(u)) if rec.keyed_by == "user" else set(req)
    top = rec.recommend(user=req, k=small_ds.n_items - len(seen)) if rec.keyed_by == "user" else \
        rec.recommend(req, k=small_ds.n_items - len(seen))
    assert not seen & {i for i, _ in top} and len(top) == small_ds.n_items - len(seen)
    scores = [s for _, s in top]
    assert scores == sorted(scores, reverse=True)
    if name != "deepfm":
        approx = m["index"]["approximate"]
        assert approx["type"] == "hnsw" and 0.0 <= approx["recall@10_vs_exact"] <= 1.0


def test_history_requests(exports, small_ds):
    rec = load(exports["sasrec"])
    h = [small_ds.item_keys[i - 1] for i in small_ds.seq(0)[:4]]
    with pytest.raises(UnknownItems, match="'zz', 'yy'"):
        rec.recommend([*h, "zz", "yy"], k=5)
    kept = rec.recommend([*h, "zz"], k=5, drop_unknown=True)
    assert rec.last_unknown == [["zz"]] and kept == rec.recommend(h, k=5)
    long = h * 40  # longer than max_len: only the most recent max_len items are read
    assert [i for i, _ in rec.recommend(long, k=5, exclude_seen=False)] == \
        [i for i, _ in rec.recommend(long[-small_ds.max_len:], k=5, exclude_seen=False)]
    for bad in (0, small_ds.n_items + 1, "3"):
        with pytest.raises(ServingError, match="k must be an integer"):
            rec.recommend(h, k=bad)
    with pytest.raises(ServingError, match="keyed by user"):
        load(exports["fm"]).recommend(h)


def test_float16_items(runs, tmp_path, small_ds):
    out = export_run(runs["sasrec"], tmp_path / "f16", dtype="float16", log=lambda m: None, ds=small_ds)
    assert np.load(out / "items.npy").dtype == np.float16
    rec16, rec32 = load(out), load(export_run(runs["sasrec"], tmp_path / "f32", log=lambda m: None, ds=small_ds))
    req = requests_of(rec16, small_ds, [1])[0]
    assert len(rec16.recommend(req, k=5)) == 5 and rec16.manifest["dtype"] == "float16"
    assert rec32.manifest["files"]["items.npy"]["bytes"] > rec16.manifest["files"]["items.npy"]["bytes"]


# ---------------------------------------------------------------------------------------------- refusals


def _cli(capsys, *args) -> tuple[int, str]:
    rc = main([str(a) for a in args])
    return rc, capsys.readouterr().err.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def disk_runs(tmp_path_factory):
    """SASRec and GRU4Rec on the tiny table dataset (on disk, so the CLI can prepare it)."""
    from conftest import write_tiny_table
    from prmkd.config import DataConfig

    root = tmp_path_factory.mktemp("disk-runs")
    inter, items = write_tiny_table(root)
    data = DataConfig(path=str(inter), items=str(items), max_len=8, cache_dir=str(root / "cache"))
    out = {}
    for name in ("sasrec", "gru4rec"):
        cfg = RunConfig(data=data, model={"name": name, **STUDENT_OPTIONS[name]},
                        train=TrainConfig(epochs=1, batch_size=16, progress=False), out=str(root / name))
        train_run(cfg, log=lambda m: None)
        out[name] = root / name
    return out


def test_export_refuses_with_one_line(capsys, disk_runs, tmp_path):
    runs = disk_runs
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    rc, err = _cli(capsys, "export", runs["sasrec"], "--out", tmp_path / "other")
    assert rc == 2 and "holds other files" in err and (tmp_path / "other" / "notes.txt").exists()
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text((runs["sasrec"] / "config.json").read_text())
    rc, err = _cli(capsys, "export", unfinished, "--out", tmp_path / "e1")
    assert rc == 2 and "not finished" in err and not (tmp_path / "e1").exists()
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for f in ("config.json", "best.pt"):
        (mixed / f).write_bytes((runs["sasrec"] / f).read_bytes())
    (mixed / "results.json").write_text((runs["gru4rec"] / "results.json").read_text())
    rc, err = _cli(capsys, "export", mixed, "--out", tmp_path / "e2")
    assert rc == 2 and "another configuration" in err and not (tmp_path / "e2").exists()
    # an earlier export is replaced; a tampered one is refused at load
    assert _cli(capsys, "export", runs["sasrec"], "--out", tmp_path / "ok")[0] == 0
    assert _cli(capsys, "export", runs["sasrec"], "--out", tmp_path / "ok")[0] == 0
    (tmp_path / "ok" / "items.npy").write_bytes(b"x")
    with pytest.raises(Exception, match="checksum mismatch"):
        load(tmp_path / "ok")


# ---------------------------------------------------------------------------------------------- HTTP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def service(exports):
    """The service of the exported SASRec on a free loopback port, in a thread; stopped after the tests."""
    import httpx
    import uvicorn

    from prmkd.serving.app import create_app

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(load(exports["sasrec"]), max_body=8192), host="127.0.0.1",
                                           port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        yield client
    server.should_exit = True
    thread.join(timeout=10)


def test_service_answers(service, small_ds):
    h = [small_ds.item_keys[i - 1] for i in small_ds.seq(0)[:4]]
    assert service.get("/health").json()["status"] == "ok"
    meta = service.get("/metadata").json()
    assert meta["model"] == "sasrec" and meta["history"]["max_len"] == small_ds.max_len
    r = service.post("/recommend", json={"history": h, "k": 10})
    assert r.status_code == 200 and len(r.json()["items"]) == 10
    assert not set(h) & {x["item"] for x in r.json()["items"]}
    r = service.post("/recommend", json={"history": [*h, "zz"], "k": 3, "drop_unknown": True})
    assert r.status_code == 200 and r.json()["unknown"] == ["zz"]
    r = service.post("/recommend/batch", json={"histories": [h, h[:2]], "k": 4})
    assert r.status_code == 200 and [len(x["items"]) for x in r.json()["results"]] == [4, 4]


@pytest.mark.parametrize("body, status, words", [
    (b"{bad", 400, "malformed JSON"),
    (b"[1, 2]", 422, "JSON object"),
    (json.dumps({"history": "i1"}).encode(), 422, "field 'history' must be a list"),
    (json.dumps({"history": ["i1"], "k": "10"}).encode(), 422, "field 'k' must be an integer"),
    (json.dumps({"history": ["i1"], "k": True}).encode(), 422, "field 'k' must be an integer"),
    (json.dumps({"history": []}).encode(), 422, "'history' is empty"),
    (json.dumps({"history": ["i1"] * 1001}).encode(), 422, "more than the 1000"),
    (json.dumps({"history": ["i1", "nope", "gone"]}).encode(), 422, "unknown item id(s): 'nope', 'gone'"),
    (json.dumps({"history": ["i1"], "k": 0}).encode(), 422, "k must be an integer in 1..32"),
    (json.dumps({"history": ["i1"], "k": 33}).encode(), 422, "k must be an integer in 1..32"),
    (json.dumps({"history": [["i1"]]}).encode(), 422, "must hold item ids"),
    (json.dumps({"history": ["i1"], "extra": 1}).encode(), 422, "unknown field 'extra'"),
    (json.dumps({"k": 3}).encode(), 422, "send {\"history\""),
    (json.dumps({"history": ["i1"] * 2000}).encode(), 413, "over the limit of 8192 bytes"),
])
def test_service_refuses_every_bad_request_with_one_line(service, body, status, words):
    r = service.post("/recommend", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert words in err and "\n" not in err


def test_service_refuses_bad_batches(service):
    r = service.post("/recommend/batch", json={"histories": []})
    assert r.status_code == 422 and "'histories' is empty" in r.json()["error"]
    r = service.post("/recommend/batch", json={"histories": [["i1"], []]})
    assert r.status_code == 422 and "'histories[1]' is empty" in r.json()["error"]
    r = service.post("/recommend", content=b"x" * 20000, headers={"transfer-encoding": "chunked"})
    assert r.status_code == 413
    assert service.get("/nowhere").status_code == 404
