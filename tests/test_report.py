"""`prmkd report`: tables, significance marks and plots built from a fabricated pipeline run folder.

`fabricate_run` writes a small `runs/<name>/` in the documented format (docs/CONTRACTS.md, "Pipeline output"):
summary.json, efficiency.json and a per_user_test.npz per run, with plausible random numbers. Per-user ranks share
a per-user difficulty across models, as real runs do, so paired tests behave as they would on real data.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import ttest_rel

from prmkd.errors import PrmkdError
from prmkd.report import build_report, load_run_folder, main_table, paired_test, rank_marks, significance

TEACHERS = ["unisrec", "recformer", "unim2rec"]
N_ITEMS = 2000


def per_user_metrics(ranks: np.ndarray) -> dict[str, np.ndarray]:
    """Recall@k / NDCG@k / MRR@10 from 0-based ranks, written out plainly."""
    r = ranks.astype(np.float64)
    out = {"ranks": ranks}
    for k in (5, 10, 20):
        out[f"recall@{k}"] = (r < k).astype(np.float64)
        out[f"ndcg@{k}"] = np.where(r < k, 1.0 / np.log2(r + 2.0), 0.0)
    out["mrr@10"] = np.where(r < 10, 1.0 / (r + 1.0), 0.0)
    return out


class Fabricator:
    """Writes the run folders and collects the summary entries."""

    def __init__(self, root: Path, n_users: int, seed: int):
        self.root = root
        self.prefix = f"runs/{root.name}"  # run_dir as the pipeline writes it: relative to where it ran
        self.rng = np.random.default_rng(seed)
        self.difficulty = self.rng.normal(0.0, 1.6, n_users)  # shared by every model: paired data
        self.runs: list[dict] = []

    def draw_ranks(self, quality: float) -> np.ndarray:
        """Higher quality -> lower ranks; quality 0 gives Recall@10 near 0.1."""
        z = 4.3 - quality + self.difficulty + self.rng.normal(0.0, 0.7, len(self.difficulty))
        return np.clip(np.floor(np.exp(z)), 0, N_ITEMS - 1).astype(np.int64)

    def add(self, ranks: np.ndarray, name: str, role: str, seed: int, folder: str, group: str = "main",
            ablation: str | None = None, sweep: dict | None = None) -> dict:
        pu = per_user_metrics(ranks)
        (self.root / folder).mkdir(parents=True, exist_ok=True)
        np.savez_compressed(self.root / folder / "per_user_test.npz", **pu)
        test = {k: float(v.mean()) for k, v in pu.items() if k != "ranks"}
        run = {"name": name, "role": role, "group": group, "ablation": ablation, "sweep": sweep,
               "dataset": "Scientific_UniSRec", "seed": seed, "run_dir": f"{self.prefix}/{folder}", "config": {},
               "metrics": {"valid": {k: v * 1.04 for k, v in test.items()}, "test": test},
               "timing": {"train_seconds": float(self.rng.uniform(30, 300)), "epoch_seconds": 9.5,
                          "best_epoch": int(self.rng.integers(5, 40))}, "parameters": 400_000}
        self.runs.append(run)
        return run


def fabricate_run(tmp: Path, name: str = "demo", seeds=(0,), effect: str = "strong", ablations: bool = True,
                  universality: bool = True, sweeps: bool = True, efficiency: bool = True, n_users: int = 400) -> Path:
    """A `runs/<name>/` folder. effect: how PRM-KD's ranks relate to SASRec's ("strong": every user improves,
    "weak": 2 users improve (positive but not significant), "negative": every user gets worse)."""
    root = tmp / "runs" / name
    root.mkdir(parents=True)
    fab = Fabricator(root, n_users, seed=1)
    for s in seeds:
        for t, q in zip(TEACHERS, (0.25, 0.35, 0.3)):
            fab.add(fab.draw_ranks(q), f"teacher-{t}", "teacher", s, f"teachers/{t}/finetune-seed{s}")
        for m, q in (("gru4rec", -0.4), ("bert4rec", -0.2)):
            fab.add(fab.draw_ranks(q), m, "baseline", s, f"baselines/{m}-seed{s}")
        base = fab.draw_ranks(0.0)
        fab.add(base, "sasrec", "baseline", s, f"baselines/sasrec-seed{s}")
        fab.add(_student(base, effect), "prmkd-sasrec", "distilled", s, f"distill/prmkd-sasrec-seed{s}")
        if ablations:
            for a, q in [(f"only-{t}", 0.1) for t in TEACHERS] + [("wo-in", 0.05), ("wo-wa", 0.12)]:
                fab.add(fab.draw_ranks(q), "prmkd-sasrec", "distilled", s, f"ablations/{a}-seed{s}", "ablation", a)
        if universality:
            for m, q in (("fm", -0.9), ("deepfm", -0.7), ("lightgcn", -0.5)):
                plain = fab.draw_ranks(q)
                fab.add(plain, m, "baseline", s, f"universality/{m}-seed{s}", "universality")
                fab.add((plain * 0.8).astype(np.int64), f"prmkd-{m}", "distilled", s,
                        f"universality/prmkd-{m}-seed{s}", "universality")
        if sweeps:
            grid = {"temperature": [0.02, 0.1, 0.5, 1.0, 2.0, 5.0], "kd_weight": [0.1, 0.3, 1.0, 3.0],
                    "epsilon": [0.001, 0.01, 0.1, 1.0], "hidden_size": [32, 64, 128, 256]}
            for param, vals in grid.items():
                for i, v in enumerate(vals):
                    fab.add(fab.draw_ranks(0.2 - 0.05 * abs(i - 2)), "prmkd-sasrec", "distilled", s,
                            f"sweeps/{param}={v}-seed{s}", "sweep", sweep={"param": param, "value": v})
                    if param == "hidden_size":  # the pipeline also trains the plain student at each size
                        fab.add(fab.draw_ranks(0.1 * i - 0.2), "sasrec", "baseline", s,
                                f"sweeps/plain-hidden_size={v}-seed{s}", "sweep",
                                sweep={"param": param, "value": v, "plain": True})
    summary = {"command": "prmkd run configs/scientific.toml", "commit": "0123abc", "date": "2025-01-01T00:00:00+00:00",
               "machine": {"cpu": "Test CPU", "cores": 2, "gpu": None, "cpu_bf16": False},
               "dataset": {"name": "Scientific_UniSRec", "users": n_users, "items": N_ITEMS,
                           "interactions": 9 * n_users, "avg_len": 9.0, "fingerprint": "fp1234"},
               "eval": {"ks": [5, 10, 20], "mask_history": False}, "seeds": list(seeds), "runs": fab.runs,
               "comparisons": []}
    (root / "summary.json").write_text(json.dumps(summary, indent=1))
    if efficiency:
        (root / "efficiency.json").write_text(json.dumps(_efficiency()))
    return root


def _student(base: np.ndarray, effect: str) -> np.ndarray:
    if effect == "strong":
        return (base * 0.75).astype(np.int64)
    if effect == "negative":
        return base * 2 + 3
    out = base.copy()  # weak: 2 users move from outside the top 20 to rank 2
    out[np.flatnonzero(base >= 20)[:2]] = 2
    return out


def _efficiency() -> dict:
    mib = 2**20
    models = [("sasrec", "baseline", 4.0 * mib, 0.05, 9.5), ("prmkd-sasrec", "distilled", 4.0 * mib, 0.05, 11.0),
              ("teacher-unisrec", "teacher", 210 * mib, 0.1, 26.0),
              ("teacher-recformer", "teacher", 330 * mib, 1.6, None),
              ("teacher-unim2rec", "teacher", 260 * mib, 0.11, 24.0)]
    out = [{"name": n, "role": r, "parameters": int(b / 4), "inference_bytes": b, "latency_ms_per_user": lat,
            "train_epoch_seconds": ep} for n, r, b, lat, ep in models]
    ratios = [{"name": m["name"], "training_speed": None if m["train_epoch_seconds"] is None else
               m["train_epoch_seconds"] / 9.5, "inference_memory": m["inference_bytes"] / (4.0 * mib),
               "inference_speed": m["latency_ms_per_user"] / 0.05} for m in out]
    return {"device": "cpu", "threads": 1, "users_timed": 400, "models": out, "relative_to": "sasrec", "ratios": ratios}


def npz(root: Path, folder: str, metric: str) -> np.ndarray:
    return np.load(root / folder / "per_user_test.npz")[metric]


# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    root = fabricate_run(tmp_path_factory.mktemp("full"))
    return root, build_report(root)


def test_report_files_exist(full):
    root, paths = full
    assert paths["markdown"] == root / "report" / "report.md" and paths["markdown"].stat().st_size > 0
    assert paths["html"].exists()
    names = sorted(p.name for p in paths["figures"])
    assert names == ["fig1_tradeoff.png", "fig3_ablation.png", "fig4_universality.png", "fig5_sweeps.png"]
    for p in paths["figures"]:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = paths["markdown"].read_text()
    for word in ("prmkd run configs/scientific.toml", "0123abc", "fp1234", "Test CPU", "history items masked: no",
                 "CPU bfloat16: none (bf16 = true teachers ran in float32 on the CPU)"):
        assert word in md
    assert "Omitted" not in md


def test_html_is_self_contained(full):
    _, paths = full
    html = paths["html"].read_text()
    assert html.count("data:image/png;base64,") == 4
    srcs = re.findall(r'src="([^"]*)"', html)
    assert len(srcs) == 4 and all(s.startswith("data:image/png;base64,") for s in srcs)
    for bad in ("http://", "https://", "<script", "<link", "href=", "url("):
        assert bad not in html
    assert "<strong>" in html and "<u>" in html


# the Scientific rows of the paper's Table 3 (RecGURU left out): a case worked by hand
PAPER = {  # model: (recall@5, recall@10, recall@20, ndcg@5, ndcg@10, ndcg@20)
    "teacher-unisrec": (0.0884, 0.1215, 0.1674, 0.0553, 0.0668, 0.0781),
    "teacher-recformer": (0.0875, 0.1391, 0.1695, 0.0589, 0.0764, 0.0979),
    "teacher-unim2rec": (0.0907, 0.1249, 0.1723, 0.0594, 0.0895, 0.1012),
    "gru4rec": (0.0373, 0.0588, 0.0843, 0.0242, 0.0311, 0.0376),
    "sasrec": (0.0783, 0.1064, 0.1408, 0.0457, 0.0549, 0.0635),
    "bert4rec": (0.0314, 0.0488, 0.0721, 0.0187, 0.0243, 0.0302),
    "prmkd-sasrec": (0.0754, 0.1231, 0.1534, 0.0534, 0.0627, 0.0715),
}


def paper_folder(tmp: Path) -> Path:
    keys = ["recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20"]
    runs = [{"name": n, "role": "teacher" if n.startswith("teacher") else "distilled" if n.startswith("prmkd")
             else "baseline", "group": "main", "seed": 0, "run_dir": f"x/{n}",
             "metrics": {"test": dict(zip(keys, v))}} for n, v in PAPER.items()]
    (tmp / "summary.json").write_text(json.dumps({"runs": runs}))
    return tmp


def cell(mt, metric_label: str, column: str) -> str:
    row = next(r for r in mt.table.rows if r[0] == metric_label)
    return row[mt.table.columns.index(column)]


def test_main_table_marks_and_improvement_by_hand(tmp_path):
    mt = main_table(load_run_folder(paper_folder(tmp_path)))
    assert mt.table.columns == ["Metric", "UniSRec", "Recformer", "UniM²Rec", "GRU4Rec", "SASRec", "BERT4Rec",
                                "PRM-KD", "Improv."]
    # Recall@10: Recformer 0.1391 best, UniM2Rec 0.1249 second, PRM-KD 0.1231 third
    assert cell(mt, "Recall@10", "Recformer") == "**0.1391**"
    assert cell(mt, "Recall@10", "UniM²Rec") == "<u>0.1249</u>"
    assert cell(mt, "Recall@10", "PRM-KD") == "0.1231"  # no per-user files: no test, no star
    assert cell(mt, "Recall@10", "Improv.") == "+15.70%"  # (0.1231 - 0.1064) / 0.1064, as in the paper
    # NDCG@10: UniM2Rec 0.0895 best, Recformer 0.0764 second; (0.0627 - 0.0549) / 0.0549 = +14.21%
    assert cell(mt, "NDCG@10", "UniM²Rec") == "**0.0895**"
    assert cell(mt, "NDCG@10", "Recformer") == "<u>0.0764</u>"
    assert cell(mt, "NDCG@10", "Improv.") == "+14.21%"
    assert cell(mt, "Recall@5", "Improv.") == "-3.70%"  # PRM-KD below SASRec
    assert mt.marks[("recall@20", "teacher-unim2rec")] == "best"
    assert mt.marks[("recall@20", "teacher-recformer")] == "second"
    assert mt.tests == {} and mt.std_table is None


def test_rank_marks_ties_share_the_mark():
    assert rank_marks({"a": 0.1, "b": 0.10001, "c": 0.05, "d": 0.01}) == {"a": "best", "b": "best", "c": "second"}
    assert rank_marks({"a": 0.1, "b": float("nan")}) == {"a": "best"}


def test_pvalue_equals_scipy_and_significant_gets_star(full):
    root, _ = full
    rf = load_run_folder(root)
    mt = main_table(rf)
    a = npz(root, "distill/prmkd-sasrec-seed0", "ndcg@10")
    b = npz(root, "baselines/sasrec-seed0", "ndcg@10")
    assert mt.tests["ndcg@10"].p == pytest.approx(ttest_rel(a, b).pvalue, rel=1e-12)
    assert significance(a, b)[1] == pytest.approx(ttest_rel(a, b).pvalue, rel=1e-12)
    for metric, t in mt.tests.items():
        assert t.p < 0.05 and t.mean_a > t.mean_b, metric
    for row in mt.table.rows:
        assert re.sub(r"\*\*|</?u>", "", row[mt.table.columns.index("PRM-KD")]).endswith("\\*")
    md = (root / "report" / "report.md").read_text()
    assert "ttest_rel" in md and "p = " in md


@pytest.mark.parametrize("effect", ["weak", "negative"])
def test_no_star_without_significant_improvement(tmp_path, effect):
    root = fabricate_run(tmp_path, effect=effect, ablations=False, universality=False, sweeps=False)
    mt = main_table(load_run_folder(root))
    t = mt.tests["ndcg@10"]
    if effect == "weak":
        assert t.mean_a > t.mean_b and t.p >= 0.05  # better, but not significantly
    else:
        assert t.p < 0.05 and t.mean_a < t.mean_b  # significant, but worse: no star either
    assert not any("\\*" in r[mt.table.columns.index("PRM-KD")] for r in mt.table.rows)


def test_several_seeds_average_per_user_values_first(tmp_path):
    root = fabricate_run(tmp_path, seeds=(0, 1, 2), ablations=False, universality=False, sweeps=False,
                         efficiency=False)
    rf = load_run_folder(root)
    a = np.mean([npz(root, f"distill/prmkd-sasrec-seed{s}", "recall@10") for s in range(3)], axis=0)
    b = np.mean([npz(root, f"baselines/sasrec-seed{s}", "recall@10") for s in range(3)], axis=0)
    t = paired_test(rf, rf.select(name="prmkd-sasrec"), rf.select(name="sasrec"), "recall@10")
    assert t.seeds_a == [0, 1, 2] and t.p == pytest.approx(ttest_rel(a, b).pvalue, rel=1e-12)
    mt = main_table(rf)
    sasrec = [r["metrics"]["test"]["ndcg@10"] for r in rf.select(name="sasrec")]
    assert cell(mt, "NDCG@10", "SASRec").strip("*").removeprefix("<u>").removesuffix("</u>") == \
        f"{np.mean(sasrec):.4f}"
    assert mt.std_table is not None
    std_row = next(r for r in mt.std_table.rows if r[0] == "NDCG@10")
    assert std_row[mt.std_table.columns.index("SASRec")] == f"±{np.std(sasrec, ddof=1):.4f}"


def test_bubble_labels_overlap_nothing():
    """Fig. 1's labels: in a crowded chart (SASRec and PRM-KD at the same latency, near-equal NDCG) no label box
    touches another label, any bubble, or the axes' edge."""
    from prmkd.report import plots

    xs = np.array([0.05, 0.05, 0.045, 0.055, 0.1, 0.1, 1.6])
    ys = np.array([0.047, 0.049, 0.026, 0.049, 0.079, 0.067, 0.073])
    sizes = np.array([40.0, 40.0, 40.0, 45.0, 1400.0, 1730.0, 2200.0])
    fig = plots._figure(9.0, 5.4)
    ax = fig.add_subplot()
    ax.scatter(xs, ys, s=sizes)
    ax.set_xscale("log")
    ax.set_xlim(0.02, 4.0)
    ax.set_ylim(0.01, 0.095)
    fig.tight_layout()
    arts = plots.place_labels(fig, ax, xs, ys, sizes, [f"model {i}" for i in range(len(xs))])
    renderer = fig.canvas.get_renderer()
    boxes = [a.get_window_extent(renderer) for a in arts]
    centers = ax.transData.transform(np.c_[xs, ys])
    radii = np.sqrt(sizes) / 2 * fig.dpi / 72
    axbox = ax.get_window_extent(renderer)
    for i, bb in enumerate(boxes):
        assert plots._collisions(bb, centers, radii, boxes[:i] + boxes[i + 1:], axbox) == 0, arts[i].get_text()


def test_partial_run_folder_builds_with_notes(tmp_path):
    root = fabricate_run(tmp_path, ablations=False, universality=False, sweeps=False, efficiency=False)
    paths = build_report(root, tmp_path / "out")
    assert [p.name for p in paths["figures"]] == []  # no efficiency.json: no Fig. 1 either
    md = paths["markdown"].read_text()
    assert "No efficiency.json" in md
    assert "Omitted: no ablation runs" in md and "Omitted: no universality runs" in md
    assert "Omitted: no parameter sweep runs" in md
    assert "**" in md and "Appendix: every run" in md


def test_missing_or_malformed_summary_is_a_user_error(tmp_path):
    with pytest.raises(PrmkdError, match="no summary.json"):
        build_report(tmp_path)
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(PrmkdError, match="not valid JSON"):
        build_report(tmp_path)
    (tmp_path / "summary.json").write_text(json.dumps({"runs": [{"name": "sasrec", "metrics": {}}]}))
    with pytest.raises(PrmkdError, match=r"runs\[0\].*metrics.test"):
        build_report(tmp_path)


def test_cli_report(tmp_path, full):
    root, _ = full
    out = tmp_path / "cli-out"
    proc = subprocess.run([sys.executable, "-m", "prmkd.cli", "report", str(root), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["html"] == str(out / "report.html") and (out / "report.html").exists()
    bad = subprocess.run([sys.executable, "-m", "prmkd.cli", "report", str(tmp_path)], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "summary.json" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_detectable_change_is_found_four_times_in_five():
    """A true change of exactly `detectable_change` is significant in about 80% of simulated test sets (the power it
    states); half of it in far fewer."""
    from prmkd.experiment.stats import detectable_change, paired_ttest

    rng = np.random.default_rng(0)
    n, base = 900, 0.05
    b = rng.exponential(base, n)
    noise = lambda: rng.normal(0.0, 0.09, n)  # noqa: E731  (the spread of per-user NDCG@10 differences on ML-100K)
    mde = detectable_change(b + noise(), b)
    assert 0.1 < mde < 0.3
    found = [paired_ttest(b * (1 + f) + noise(), b)[1] < 0.05 for f in (mde, mde / 2) for _ in range(400)]
    full, half = np.mean(found[:400]), np.mean(found[400:])
    assert 0.72 < full < 0.88 and half < 0.45


def test_a_distilled_student_below_its_twin_is_said_to_be_hurt_only_when_the_test_finds_it(tmp_path):
    from prmkd.report.findings import findings

    root = fabricate_run(tmp_path, ablations=False, sweeps=False, efficiency=False)
    summary = json.loads((root / "summary.json").read_text())

    def comp(m: str, value: float, p: float) -> dict:
        return {"name": f"prmkd-{m} vs {m}", "a": f"prmkd-{m}", "b": m, "metric": "ndcg@10", "value": value,
                "p_value": p, "mean_a": 0.02, "mean_b": 0.02, "n_users": 400, "seeds_a": 1}

    summary["comparisons"] = [comp("fm", -0.06, 0.78), comp("lightgcn", -0.2, 0.001),
                              {**comp("deepfm", 0.5, 0.09), "seeds_a": 2, "seeds_b": 3}]
    for r in summary["runs"]:  # every run went its 20 epochs, but one plain FM stopped at its 5th, best at epoch 1
        r["config"] = {"train": {"epochs": 20}}
        r["timing"].update(best_epoch=16, epochs=20)
    fm = next(r for r in summary["runs"] if r["name"] == "fm")
    fm["timing"].update(best_epoch=1, epochs=5)
    teacher = next(r for r in summary["runs"] if r["role"] == "teacher")  # a teacher's settings are elsewhere
    teacher["timing"].update(best_epoch=0, epochs=4)
    summary["runs"].append({**fm, "group": "sweep", "sweep": {"param": "hidden_size", "value": 64, "main": True}})
    every2 = next(r for r in summary["runs"] if r["name"] == "lightgcn")  # validated every 2nd epoch: 1st and 3rd
    every2["config"]["train"]["eval_every"] = 2
    every2["timing"].update(best_epoch=3, epochs=9)
    (root / "summary.json").write_text(json.dumps(summary))
    rf = load_run_folder(root)
    said = {line.split(":", 1)[0]: line for line in findings(rf)}
    valid = {n: rf.select(group="universality", name=n)[0]["metrics"]["valid"]["ndcg@10"] for n in ("prmkd-fm", "fm")}
    assert said["FM"].endswith(f"; below its plain twin on test, not significantly (validation NDCG@10: distilled "
                               f"{valid['prmkd-fm']:.4f}, plain {valid['fm']:.4f}).")
    assert "hurt" not in said["FM"] and "1 seed(s) each" in said["FM"]
    assert said["LightGCN"].endswith("; distillation hurt this student.")
    assert said["DeepFM"].endswith("2 and 3 seeds).") and "below" not in said["DeepFM"]  # each side's count
    early = [line for line in findings(rf) if "stopped early" in line]
    assert len(early) == 1 and early[0].startswith("2 run(s)")
    assert ": fm (seed 0), lightgcn (seed 0); " in early[0] and "teacher" not in early[0]


def test_the_first_finding_says_whether_prmkd_improved_hurt_or_did_neither(tmp_path):
    from prmkd.report.findings import findings

    root = fabricate_run(tmp_path, ablations=False, sweeps=False, efficiency=False)
    summary = json.loads((root / "summary.json").read_text())
    for value, p, said in ((0.2, 1e-5, "**PRM-KD improves the student**"),
                           (-0.16, 1e-30, "**PRM-KD makes the student worse**"),
                           (-0.05, 0.4, "**PRM-KD does not significantly improve the student**"),
                           (0.05, 0.4, "**PRM-KD does not significantly improve the student**")):
        summary["comparisons"] = [{"name": "prmkd-sasrec vs sasrec", "a": "prmkd-sasrec", "b": "sasrec",
                                   "metric": "ndcg@10", "value": value, "p_value": p, "mean_a": 0.03 * (1 + value),
                                   "mean_b": 0.03, "n_users": 5000, "seeds_a": 3, "seeds_b": 3,
                                   "detectable_change": 0.04}]
        (root / "summary.json").write_text(json.dumps(summary))
        assert findings(load_run_folder(root))[0].startswith(said + ": distilled SASRec")


def test_the_report_says_which_distillation_settings_made_it(tmp_path):
    """The header names lambda, tau and the rest from the pipeline config, and each universality model's own
    overrides; a summary without a config (an older run folder) leaves the line out."""
    from prmkd.report.build import header
    from prmkd.report.render import to_markdown

    root = fabricate_run(tmp_path, ablations=False, sweeps=False, efficiency=False)
    assert "**Distillation**" not in to_markdown(header(load_run_folder(root)))
    summary = json.loads((root / "summary.json").read_text())
    summary["config"] = {"distill": {"kd_weight": 10.0, "temperature": 4.0, "epsilon": 0.1, "teachers": []},
                         "distill_overrides": {"fm": {"kd_weight": 0.3}}}
    (root / "summary.json").write_text(json.dumps(summary))
    md = to_markdown(header(load_run_folder(root)))
    assert "**Distillation**: λ 10.0, τ 4.0, ε 0.1; fm: λ 0.3" in md


def test_a_universality_student_at_lambda_zero_is_said_not_to_be_distilled(tmp_path):
    """lambda = 0 makes the "distilled" run its plain twin: the finding says so instead of comparing the two."""
    from prmkd.report.findings import findings

    root = fabricate_run(tmp_path, ablations=False, sweeps=False, efficiency=False)
    summary = json.loads((root / "summary.json").read_text())
    for r in summary["runs"]:
        if r["name"] in ("prmkd-fm", "prmkd-lightgcn"):
            r["config"] = {"distill": {"kd_weight": 0.0 if r["name"] == "prmkd-fm" else 3.0}}
    summary["comparisons"] = [{"name": f"prmkd-{m} vs {m}", "a": f"prmkd-{m}", "b": m, "metric": "ndcg@10",
                               "value": 0.01, "p_value": 0.5, "mean_a": 0.0202, "mean_b": 0.02, "n_users": 400,
                               "seeds_a": 1} for m in ("fm", "lightgcn")]
    (root / "summary.json").write_text(json.dumps(summary))
    said = {line.split(":", 1)[0]: line for line in findings(load_run_folder(root))}
    assert said["FM"] == "FM: not distilled (lambda = 0 in its settings), so its distilled run repeats its plain twin."
    assert said["LightGCN"].startswith("LightGCN: distilled ")


def test_the_report_says_which_parts_of_the_method_matter(tmp_path):
    """Each ablation and swept value is named with its change and verdict, then sorted into what mattered (the full
    method significantly better), what hurt (the variant significantly better) and what made no difference."""
    from prmkd.report.findings import findings

    root = fabricate_run(tmp_path, universality=False, efficiency=False)
    summary = json.loads((root / "summary.json").read_text())
    main = next(r for r in summary["runs"] if r["name"] == "prmkd-sasrec" and r["group"] == "main")
    summary["runs"].append({**main, "group": "sweep", "sweep": {"param": "temperature", "value": 1.0, "main": True}})

    def comp(a: str, value: float, p: float) -> dict:
        return {"name": f"{a} vs prmkd-sasrec", "a": a, "b": "prmkd-sasrec", "metric": "ndcg@10", "value": value,
                "p_value": p, "mean_a": 0.05 * (1 + value), "mean_b": 0.05, "n_users": 400, "seeds": [0]}

    summary["comparisons"] = [comp("ablation only-unisrec", -0.041, 1e-4), comp("ablation only-recformer", -0.003, 0.8),
                              comp("ablation only-unim2rec", -0.056, 2e-7), comp("ablation wo-in", 0.005, 0.48),
                              comp("ablation wo-wa", 0.021, 9e-4), comp("sweep temperature=0.5", -0.001, 0.95),
                              comp("sweep temperature=5.0", -0.054, 7e-4), comp("sweep epsilon=0.01", -0.004, 0.56),
                              {**comp("sweep epsilon=1.0", 0.3, 1e-9), "metric": "recall@10"}]  # another metric
    (root / "summary.json").write_text(json.dumps(summary))
    said = findings(load_run_folder(root))
    abl = next(line for line in said if line.startswith("Ablations"))
    assert ("combining the teachers: only UniSRec -4.1% (p = 1.00e-04, significant), only Recformer -0.3% "
            "(p = 0.8000, not significant), only UniM²Rec -5.6% (p = 2.00e-07, significant); the in-batch "
            "candidates: w/o IN (all items) +0.5% (p = 0.4800, not significant); the consistency weighting: w/o WA "
            "(average) +2.1% (p = 9.00e-04, significant).") in abl
    assert said[said.index(abl) + 1] == (
        "So on this data: combining the teachers: matters (the full method is significantly better than only UniSRec "
        "and only UniM²Rec), no significant difference against only Recformer; the in-batch candidates: no "
        "significant difference; the consistency weighting: hurts here (w/o WA (average) significantly better than "
        "the full method).")
    sweeps = next(line for line in said if line.startswith("Sweeps"))
    assert sweeps.endswith("τ (main 1): 0.5 -0.1% (p = 0.9500, not significant), 5 -5.4% (p = 7.00e-04, "
                           "significant); ε: 0.01 -0.4% (p = 0.5600, not significant).")
    assert said[said.index(sweeps) + 1] == ("So on this data, the result depends on τ (some swept value differs "
                                            "significantly from the main setting); no swept value of ε differs "
                                            "significantly.")
