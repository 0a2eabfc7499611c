"""Serving the distilled student at the plain student's cost: parity, size, memory, latency and throughput.

    python benchmarks/serve.py                     # -> benchmarks/results/serve_scientific.json

For the plain SASRec and the PRM-KD SASRec of a finished `prmkd run configs/scientific.toml` (run folders given by
--plain / --distilled), side by side in one invocation:

1. export each (`prmkd export`, exact index + HNSW, whose recall@10 against the exact index is measured there);
2. parity over every test user: ONNX Runtime scores against torch's (max relative difference), the top-10 of the
   exact index against the full-ranking evaluator's (share equal, and the rows that differ only inside ties), and
   NDCG@10 recomputed from the served top-10 against the run's own test NDCG@10;
3. in-process latency of one request (history -> top-10) through ONNX Runtime + faiss and through torch eager
   (eval_state + score_items + topk) for the same model, interleaved;
4. a bounded HTTP load test on loopback: `prmkd serve` started as its own process (its resident memory read from
   /proc after warm-up), then a fixed number of requests at concurrency 1, 8 and 32 on /recommend, and batches of
   64 histories on /recommend/batch, each phase stopping at --requests or --seconds, whichever comes first; the two
   models alternate phase by phase so that both see the same machine.
Distilled / plain ratios of every cost are the `comparisons`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, header, load_average, write_json  # noqa: E402


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def latency_row(ms: list[float], seconds: float, extra: dict) -> dict:
    return {**extra, "requests": len(ms), "p50_ms": round(pct(ms, 50), 3), "p95_ms": round(pct(ms, 95), 3),
            "p99_ms": round(pct(ms, 99), 3), "requests_per_second": round(len(ms) / seconds, 1)}


def parity(export: Path, run: Path) -> dict:
    """Serving path against torch and the evaluator, over every test user."""
    import torch

    from prmkd.data.batches import eval_batches
    from prmkd.evaluation import evaluate, metrics_from_ranks
    from prmkd.experiment.runner import load_run
    from prmkd.serving import load
    from prmkd.serving.runtime import Request

    rec = load(export)
    model, _, ds = load_run(run, log=lambda m: None)
    model.eval()
    items = np.load(export / "items.npy").astype(np.float32)
    rel, agree, tie_only, ranks = 0.0, 0, 0, []
    targets = ds.split_targets("test")
    for batch in eval_batches(ds, "test", 512):
        users = batch.users.numpy()
        with torch.no_grad():
            ref = model.score_items(model.eval_state(batch), 1, ds.n_items + 1).numpy()
        reqs = [[ds.item_keys[i - 1] for i in ds.split_history(int(u), "test")] for u in users]
        inputs, _, _ = rec._scores_inputs([Request(history=h) for h in reqs], False)
        served = rec.user_vectors(inputs) @ items.T
        rel = max(rel, float(np.abs(served - ref).max() / np.abs(ref).max()))
        top = rec.recommend_batch(reqs, k=10, exclude_seen=False)
        want = np.argsort(-ref, axis=1, kind="stable")[:, :10] + 1
        for u, row, got, scores in zip(users, want, top, ref):
            got_ids = [rec.item_index[i] for i, _ in got]
            if got_ids == row.tolist():
                agree += 1
            elif np.isclose(np.sort(scores[np.asarray(got_ids) - 1]), np.sort(scores[row - 1]), rtol=0,
                            atol=1e-5).all():
                tie_only += 1
            t = int(targets[u])
            ranks.append(got_ids.index(t) if t in got_ids else 10)
    ndcg = float(metrics_from_ranks(np.asarray(ranks), ks=(10,))["ndcg@10"].mean())
    own = evaluate(model, ds, "test").metrics["ndcg@10"]
    n = ds.n_users
    return {"users": n, "max_relative_score_difference": rel, "top10_equal_share": round(agree / n, 6),
            "top10_differ_only_inside_ties": tie_only, "top10_differ_otherwise": n - agree - tie_only,
            "ndcg@10_serving_path": ndcg, "ndcg@10_run": own, "ndcg@10_difference": ndcg - own}


def inprocess_latency(export: Path, run: Path, histories: list, repeats: int) -> dict:
    """One request (history -> top-10) through ONNX Runtime + faiss and through torch eager, interleaved."""
    import torch

    from prmkd.data.batches import EvalBatch
    from prmkd.experiment.runner import load_run
    from prmkd.serving import load

    rec = load(export)
    model, _, ds = load_run(run, log=lambda m: None)
    model.eval()
    torch.set_num_threads(1)
    times = {"onnxruntime": [], "torch": []}
    for r in range(repeats):
        h = histories[r % len(histories)]
        t0 = time.perf_counter()
        rec.recommend(h, k=10, exclude_seen=False)
        times["onnxruntime"].append(1000 * (time.perf_counter() - t0))
        t0 = time.perf_counter()
        ids = torch.tensor([[rec.item_index[i] for i in h[-ds.max_len:]]])
        with torch.no_grad():
            s = model.score_items(model.eval_state(EvalBatch(ids, torch.tensor([ids.shape[1]]), ids[:, 0],
                                                             ids[:, 0])), 1, ds.n_items + 1)
            s.topk(10)
        times["torch"].append(1000 * (time.perf_counter() - t0))
    return {k: {"p50_ms": round(pct(v[5:], 50), 3), "p95_ms": round(pct(v[5:], 95), 3),
                "p99_ms": round(pct(v[5:], 99), 3), "requests": len(v) - 5} for k, v in times.items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    def __init__(self, export: Path, threads: int):
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "prmkd.cli", "serve", str(export), "--host", "127.0.0.1",
                                      "--port", str(self.port), "--threads", str(threads)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait(self, timeout: float = 60.0) -> None:
        import httpx

        t0 = time.time()
        while time.time() - t0 < timeout:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise SystemExit(f"the server at {self.url} did not start within {timeout} s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def load_phase(url: str, path: str, bodies: list[dict], concurrency: int, n: int, seconds: float) -> dict:
    """n requests (cycling through `bodies`) at `concurrency`, stopping early after `seconds`."""
    import httpx

    latencies: list[float] = []
    errors = 0
    sem = asyncio.Semaphore(concurrency)
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        async def one(i: int):
            nonlocal errors
            async with sem:
                if time.perf_counter() > deadline:
                    return
                t0 = time.perf_counter()
                r = await client.post(path, json=bodies[i % len(bodies)])
                latencies.append(1000 * (time.perf_counter() - t0))
                errors += r.status_code != 200

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = time.perf_counter() - t0
    return {"latencies": latencies, "seconds": elapsed, "errors": errors}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plain", default="runs/scientific/baselines/sasrec-seed0")
    ap.add_argument("--distilled", default="runs/scientific/distill/prmkd-sasrec-seed0")
    ap.add_argument("--work", default="runs/serve-bench", help="where the exports go")
    ap.add_argument("--requests", type=int, default=2000, help="requests per load phase at most")
    ap.add_argument("--seconds", type=float, default=60.0, help="each load phase stops after this long")
    ap.add_argument("--batch", type=int, default=64, help="histories per /recommend/batch request")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime / faiss threads of the server")
    ap.add_argument("--inprocess", type=int, default=500, help="in-process requests per runtime")
    ap.add_argument("--out", default=str(RESULTS / "serve_scientific.json"))
    args = ap.parse_args()
    os.chdir(ROOT)
    hdr = header()
    t_start = time.time()
    from prmkd.io import read_json
    from prmkd.serving.export import export_run

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    models = {"sasrec": Path(args.plain), "prmkd-sasrec": Path(args.distilled)}
    exports, runs, par, inproc, files, approx = {}, [], {}, {}, {}, {}
    for name, run in models.items():
        exports[name] = export_run(run, work / name, approximate="hnsw", log=print)
        man = read_json(exports[name] / "manifest.json")
        files[name] = {k: v["bytes"] for k, v in man["files"].items()}
        approx[name] = man["index"]["approximate"]
        res = read_json(run / "results.json")
        runs.append({"name": name, "role": res["role"], "dataset": res["dataset"], "seed": res["seed"],
                     "run_dir": str(run), "config": res["config"]["model"], "metrics": res["metrics"]})
    from prmkd.experiment.runner import load_run

    _, _, ds = load_run(models["sasrec"], log=lambda m: None)
    histories = [[ds.item_keys[i - 1] for i in ds.split_history(u, "test")] for u in range(ds.n_users)]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(histories))
    single = [{"history": histories[u], "k": 10} for u in order]
    batches = [{"histories": [histories[u] for u in order[i:i + args.batch]], "k": 10}
               for i in range(0, len(order) - args.batch, args.batch)]
    for name in models:
        print(f"parity {name}", flush=True)
        par[name] = parity(exports[name], models[name])
        inproc[name] = inprocess_latency(exports[name], models[name], [histories[u] for u in order[:200]],
                                         args.inprocess)
    latency, memory = [], {}
    servers = {name: Server(exports[name], args.threads) for name in models}
    try:
        for s in servers.values():
            s.wait()
        for name, s in servers.items():  # warm-up, then resident memory
            asyncio.run(load_phase(s.url, "/recommend", single, 1, 50, 30))
            memory[name] = {"rss_mib_after_warmup": round(rss_mib(s.proc.pid), 1)}
        for conc in (1, 8, 32):
            for name, s in servers.items():
                r = asyncio.run(load_phase(s.url, "/recommend", single, conc, args.requests, args.seconds))
                latency.append(latency_row(r["latencies"], r["seconds"], {
                    "model": name, "runtime": "onnxruntime+faiss over HTTP", "endpoint": "/recommend",
                    "concurrency": conc, "errors": r["errors"], "recommendations_per_second":
                        round(len(r["latencies"]) / r["seconds"], 1)}))
                print(json.dumps(latency[-1]), flush=True)
        for name, s in servers.items():
            r = asyncio.run(load_phase(s.url, "/recommend/batch", batches, 1, max(1, args.requests // args.batch),
                                       args.seconds))
            latency.append(latency_row(r["latencies"], r["seconds"], {
                "model": name, "runtime": "onnxruntime+faiss over HTTP", "endpoint": "/recommend/batch",
                "concurrency": 1, "batch": args.batch, "errors": r["errors"],
                "recommendations_per_second": round(len(r["latencies"]) * args.batch / r["seconds"], 1)}))
            print(json.dumps(latency[-1]), flush=True)
        for name, s in servers.items():
            memory[name]["rss_mib_after_load"] = round(rss_mib(s.proc.pid), 1)
    finally:
        for s in servers.values():
            s.stop()
    for name in models:
        for rt, v in inproc[name].items():
            latency.append({"model": name, "runtime": f"{rt} in process", "endpoint": "recommend(history, k=10)",
                            "concurrency": 1, **v})

    def ratio(key, sel):
        a = next(r for r in latency if r["model"] == "prmkd-sasrec" and sel(r))[key]
        b = next(r for r in latency if r["model"] == "sasrec" and sel(r))[key]
        return round(a / b, 3)

    comps = []
    for conc in (1, 8, 32):
        for key in ("p50_ms", "p99_ms", "requests_per_second"):
            comps.append({"name": f"/recommend at concurrency {conc}, {key}: distilled / plain", "a": "prmkd-sasrec",
                          "b": "sasrec", "metric": key, "value": ratio(key, lambda r, c=conc: r["endpoint"] ==
                                                                        "/recommend" and r["concurrency"] == c)})
    comps.append({"name": "/recommend/batch recommendations per second: distilled / plain", "a": "prmkd-sasrec",
                  "b": "sasrec", "metric": "recommendations_per_second",
                  "value": ratio("recommendations_per_second", lambda r: r["endpoint"] == "/recommend/batch")})
    comps.append({"name": "resident memory after load: distilled / plain", "a": "prmkd-sasrec", "b": "sasrec",
                  "metric": "rss_mib", "value": round(memory["prmkd-sasrec"]["rss_mib_after_load"] /
                                                      memory["sasrec"]["rss_mib_after_load"], 3)})
    comps.append({"name": "export size: distilled / plain", "a": "prmkd-sasrec", "b": "sasrec", "metric": "bytes",
                  "value": round(sum(files["prmkd-sasrec"].values()) / sum(files["sasrec"].values()), 3)})
    for name in models:
        ort, eager = inproc[name]["onnxruntime"], inproc[name]["torch"]
        comps.append({"name": f"{name}, one request in process, p50: torch eager / onnxruntime+faiss", "a": "torch",
                      "b": "onnxruntime", "metric": "p50_ms", "value": round(eager["p50_ms"] / ort["p50_ms"], 3)})
    hdr["machine"]["load_average_at_end"] = load_average()
    out = {**hdr, "dataset": ds.name, "what": __doc__.strip().splitlines()[0], "settings": vars(args),
           "runs": runs, "parity": par, "latency": latency, "memory": memory, "files": files,
           "approximate_index": approx, "comparisons": comps, "script_seconds": round(time.time() - t_start, 1)}
    write_json(Path(args.out), out)


if __name__ == "__main__":
    main()
