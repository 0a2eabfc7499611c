"""Reading a pipeline run folder (docs/CONTRACTS.md, "Pipeline output") for the report.

Only the documented files are read: `summary.json`, `efficiency.json` and each run's `per_user_test.npz`.
Everything here is numpy + json, no plotting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import PrmkdError
from ..experiment.stats import per_user_values

METRICS = ["recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20"]

DISPLAY = {
    "sasrec": "SASRec", "gru4rec": "GRU4Rec", "bert4rec": "BERT4Rec", "fm": "FM", "deepfm": "DeepFM",
    "lightgcn": "LightGCN", "teacher-unisrec": "UniSRec", "teacher-recformer": "Recformer",
    "teacher-unim2rec": "UniM²Rec", "prmkd-sasrec": "PRM-KD",
}


def display_name(name: str) -> str:
    """`teacher-unisrec` -> UniSRec, `prmkd-fm` -> PRM-KD (FM), unknown names unchanged."""
    if name in DISPLAY:
        return DISPLAY[name]
    if name.startswith("teacher-"):
        return name[len("teacher-"):]
    if name.startswith("prmkd-"):
        return f"PRM-KD ({DISPLAY.get(name[len('prmkd-'):], name[len('prmkd-'):])})"
    return name


def metric_label(metric: str) -> str:
    """`ndcg@10` -> NDCG@10, `recall@5` -> Recall@5."""
    head, _, k = metric.partition("@")
    head = {"ndcg": "NDCG", "recall": "Recall", "mrr": "MRR"}.get(head, head)
    return f"{head}@{k}" if k else head


@dataclass
class RunFolder:
    """A pipeline run folder: the parsed summary.json (+ efficiency.json when present)."""

    root: Path
    summary: dict
    efficiency: dict | None

    @property
    def runs(self) -> list[dict]:
        return self.summary["runs"]

    def select(self, **want) -> list[dict]:
        """Runs whose fields equal `want` (group defaults to "main", ablation/sweep to None)."""
        return [r for r in self.runs if all(field(r, k) == v for k, v in want.items())]


def field(run: dict, key: str):
    """A run's field with the contract's defaults; `sweep_param` / `sweep_value` / `sweep_plain` reach into `sweep`
    (`plain`: the plain student of a hidden_size sweep)."""
    if key == "group":
        return run.get("group") or "main"
    if key in ("sweep_param", "sweep_value", "sweep_plain"):
        sw = run.get("sweep") or {}
        v = sw.get(key.split("_", 1)[1])
        return bool(v) if key == "sweep_plain" else v
    return run.get(key)


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise PrmkdError(f"{path}: no {what} (is this a `prmkd run` output folder?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PrmkdError(f"{path}: {what} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise PrmkdError(f"{path}: {what} must hold a JSON object, found {type(data).__name__}")
    return data


def _check_summary(path: Path, s: dict) -> None:
    runs = s.get("runs")
    if not isinstance(runs, list):
        raise PrmkdError(f"{path}: summary.json has no 'runs' list")
    for i, r in enumerate(runs):
        where = f"{path}: runs[{i}]"
        if not isinstance(r, dict) or not isinstance(r.get("name"), str):
            raise PrmkdError(f"{where} has no 'name'")
        test = (r.get("metrics") or {}).get("test") if isinstance(r.get("metrics"), dict) else None
        if not isinstance(test, dict):
            raise PrmkdError(f"{where} ('{r['name']}') has no metrics.test object")
        bad = [k for k, v in test.items() if v is not None and not isinstance(v, (int, float))]
        if bad:
            raise PrmkdError(f"{where} ('{r['name']}'): metrics.test['{bad[0]}'] is not a number")


def load_run_folder(run_dir: Path) -> RunFolder:
    """Parse and check RUN_DIR/summary.json (required) and RUN_DIR/efficiency.json (optional)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PrmkdError(f"{run_dir}: not a folder")
    path = run_dir / "summary.json"
    summary = _read_json(path, "summary.json")
    _check_summary(path, summary)
    eff_path = run_dir / "efficiency.json"
    eff = _read_json(eff_path, "efficiency.json") if eff_path.exists() else None
    if eff is not None and not isinstance(eff.get("models"), list):
        raise PrmkdError(f"{eff_path}: efficiency.json has no 'models' list")
    return RunFolder(run_dir, summary, eff)


# --------------------------------------------------------------------------------------------------
# statistics over seeds


def values(runs: list[dict], metric: str, split: str = "test") -> np.ndarray:
    """(n_seeds,) the metric of each run that has it."""
    out = [((r.get("metrics") or {}).get(split) or {}).get(metric) for r in runs]
    return np.array([v for v in out if v is not None], dtype=np.float64)


def mean_std(runs: list[dict], metric: str) -> tuple[float, float, int]:
    """Mean and sample std (ddof=1; 0 with one seed) over the runs (seeds); nan mean when none has it."""
    v = values(runs, metric)
    if len(v) == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v)


def seeds_of(runs: list[dict]) -> list:
    return sorted({r.get("seed") for r in runs}, key=lambda s: (s is None, s))


# --------------------------------------------------------------------------------------------------
# per-user arrays


def resolve_run_dir(root: Path, run: dict) -> Path | None:
    """A run's folder. `run_dir` is used as written (absolute, or relative to the working directory or to
    RUN_DIR); failing that, its trailing components under RUN_DIR (a folder moved or read from elsewhere:
    `runs/demo/baselines/sasrec-seed0` -> RUN_DIR/baselines/sasrec-seed0)."""
    rd = run.get("run_dir")
    if not rd:
        return None
    p = Path(rd)
    cands = [p] if p.is_absolute() else [Path.cwd() / p, root / p]
    cands += [root.joinpath(*p.parts[i:]) for i in range(1, len(p.parts) - 1)]  # suffixes of >= 2 parts
    return next((c for c in cands if c.is_dir()), None)


def per_user(root: Path, run: dict, metric: str) -> np.ndarray | None:
    """(n_users,) test values of one run from <run_dir>/per_user_test.npz, or None when unavailable."""
    folder = resolve_run_dir(root, run)
    return None if folder is None else per_user_values(folder, metric)


def per_user_mean(root: Path, runs: list[dict], metric: str) -> tuple[np.ndarray | None, list]:
    """Per-user values averaged over the runs' seeds, and the seeds used (runs without a file are skipped)."""
    arrays, seeds = [], []
    for r in runs:
        a = per_user(root, r, metric)
        if a is not None:
            arrays.append(a)
            seeds.append(r.get("seed"))
    if not arrays or len({len(a) for a in arrays}) != 1:
        return None, seeds
    return np.mean(arrays, axis=0), seeds


# --------------------------------------------------------------------------------------------------
# which ablations / universality students / sweeps a run folder holds

SWEEP_ORDER = ["temperature", "kd_weight", "epsilon", "hidden_size"]


def ablation_variants(rf: RunFolder) -> list[str]:
    """Ablations present: only-<teacher> (teachers' order), then wo-in, wo-wa, then any other."""
    found = list(dict.fromkeys(r.get("ablation") for r in rf.select(group="ablation") if r.get("ablation")))
    main_teachers = rf.select(group="main", role="teacher")
    teachers = dict.fromkeys("only-" + r["name"].removeprefix("teacher-") for r in main_teachers)
    only = [a for a in teachers if a in found] + sorted(a for a in found if a.startswith("only-") and a not in teachers)
    order = {a: i for i, a in enumerate(only + ["wo-in", "wo-wa"])}
    return sorted(found, key=lambda a: order.get(a, len(order)))


def ablation_label(a: str) -> str:
    """`only-unisrec` -> "only\\nUniSRec", `wo-in` -> "w/o IN\\n(all items)" (two lines, for plot ticks)."""
    if a.startswith("only-"):
        return "only\n" + display_name("teacher-" + a[len("only-"):])
    return {"wo-in": "w/o IN\n(all items)", "wo-wa": "w/o WA\n(average)"}.get(a, a)


def universality_models(rf: RunFolder) -> list[str]:
    """Plain student names of the universality group (fm, deepfm, lightgcn first)."""
    names = {r["name"] for r in rf.select(group="universality")}
    plain = [n for n in ["fm", "deepfm", "lightgcn"] if n in names or f"prmkd-{n}" in names]
    return plain + sorted(n for n in names if not n.startswith("prmkd-") and n not in plain)


def sweep_params(rf: RunFolder) -> list[str]:
    """Swept parameters with numeric values present (temperature, kd_weight, epsilon, hidden_size first)."""
    sweeps = [r.get("sweep") or {} for r in rf.select(group="sweep")]
    numeric = [sw for sw in sweeps if isinstance(sw.get("value"), (int, float)) and not isinstance(sw["value"], bool)]
    found = [p for p in dict.fromkeys(sw.get("param") for sw in numeric) if p]
    return [p for p in SWEEP_ORDER if p in found] + [p for p in found if p not in SWEEP_ORDER]
