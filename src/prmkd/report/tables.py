"""The report's tables: main results (paper Table 3), significance, efficiency (Table 4), per-run appendix.

Cells are strings in a small inline markup both renderers understand: `**bold**`, `<u>underline</u>`,
`` `code` `` and `\\*` for a literal star (the significance mark).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


from ..experiment.stats import paired_ttest
from .data import (METRICS, RunFolder, ablation_label, ablation_variants, display_name, field as run_field,
                   mean_std, metric_label, per_user_mean, seeds_of, universality_models)

BASELINE_ORDER = ["gru4rec", "sasrec", "bert4rec"]
STUDENT, BASE = "prmkd-sasrec", "sasrec"
ALPHA = 0.05


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)  # paragraphs printed under the table


@dataclass
class TTest:
    """Paired t-test over users of run set a vs run set b on one metric (per-user values averaged over seeds)."""

    metric: str
    n_users: int
    seeds_a: list
    seeds_b: list
    mean_a: float
    mean_b: float
    t: float
    p: float

    @property
    def significant(self) -> bool:
        """A significant *improvement*: p < 0.05 and a higher mean for a."""
        return bool(self.p < ALPHA and self.mean_a > self.mean_b)


@dataclass
class MainTable:
    table: Table
    std_table: Table | None
    tests: dict[str, TTest]  # metric -> PRM-KD vs SASRec
    columns: list[str]  # run names, in column order
    marks: dict[tuple[str, str], str]  # (metric, run name) -> "best" | "second"


def fmt(v: float, digits: int = 4) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def fmt_p(p: float) -> str:
    if p is None or math.isnan(p):
        return "n/a"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.4f}"


significance = paired_ttest  # (t, p) of the two-sided paired t-test


def paired_test(rf: RunFolder, runs_a: list[dict], runs_b: list[dict], metric: str) -> TTest | None:
    """t-test of `metric` over users, a vs b, each averaged over its seeds; None without per-user files."""
    a, seeds_a = per_user_mean(rf.root, runs_a, metric)
    b, seeds_b = per_user_mean(rf.root, runs_b, metric)
    if a is None or b is None or len(a) != len(b):
        return None
    t, p = significance(a, b)
    return TTest(metric, len(a), seeds_a, seeds_b, float(a.mean()), float(b.mean()), t, p)


# --------------------------------------------------------------------------------------------------
# main table (paper Table 3)


def table_metrics(rf: RunFolder) -> list[str]:
    """Recall@k then NDCG@k for the evaluation's ks (default 5, 10, 20)."""
    ks = (rf.summary.get("eval") or {}).get("ks") or [5, 10, 20]
    return [f"recall@{k}" for k in ks] + [f"ndcg@{k}" for k in ks]


def main_columns(rf: RunFolder) -> list[str]:
    """Run names of the main table: teachers, GRU4Rec/SASRec/BERT4Rec (+ other baselines), PRM-KD (+ others)."""
    main = rf.select(group="main")
    names = list(dict.fromkeys(r["name"] for r in main))
    role = {r["name"]: r.get("role") for r in main}
    teachers = [n for n in names if role[n] == "teacher"]
    baselines = [n for n in BASELINE_ORDER if n in names]
    baselines += [n for n in names if role[n] == "baseline" and n not in baselines]
    distilled = ([STUDENT] if STUDENT in names else []) + [n for n in names if role[n] == "distilled" and n != STUDENT]
    rest = [n for n in names if n not in teachers + baselines + distilled]
    return teachers + baselines + rest + distilled


def rank_marks(row: dict[str, float]) -> dict[str, str]:
    """Best and second-best cells of a row, compared at the 4 decimals shown (ties share the mark)."""
    shown = {n: round(v, 4) for n, v in row.items() if not math.isnan(v)}
    levels = sorted(set(shown.values()), reverse=True)
    marks = {}
    for n, v in shown.items():
        if v == levels[0]:
            marks[n] = "best"
        elif len(levels) > 1 and v == levels[1]:
            marks[n] = "second"
    return marks


def mark(text: str, how: str | None) -> str:
    return {"best": f"**{text}**", "second": f"<u>{text}</u>"}.get(how, text)


def improvement(new: float, base: float) -> float:
    """Relative improvement of new over base, in percent."""
    return (new - base) / base * 100.0 if base and not math.isnan(base) else float("nan")


def main_table(rf: RunFolder) -> MainTable | None:
    """Table 3: mean test metric of every main-group model over seeds, marks, Improv., significance stars."""
    cols = main_columns(rf)
    if not cols:
        return None
    metrics = table_metrics(rf)
    runs = {n: rf.select(group="main", name=n) for n in cols}
    stats = {(m, n): mean_std(runs[n], m) for m in metrics for n in cols}
    has_improv = STUDENT in cols and BASE in cols
    tests = {}
    if has_improv:
        for m in metrics:
            if (t := paired_test(rf, runs[STUDENT], runs[BASE], m)) is not None:
                tests[m] = t
    marks, rows = {}, []
    for m in metrics:
        row_marks = rank_marks({n: stats[m, n][0] for n in cols})
        marks.update({(m, n): v for n, v in row_marks.items()})
        cells = []
        for n in cols:
            star = "\\*" if n == STUDENT and m in tests and tests[m].significant else ""
            cells.append(mark(fmt(stats[m, n][0]) + star, row_marks.get(n)))
        if has_improv:
            imp = improvement(stats[m, STUDENT][0], stats[m, BASE][0])
            cells.append("–" if math.isnan(imp) else f"{imp:+.2f}%")
        rows.append([metric_label(m), *cells])
    header = ["Metric", *(display_name(n) for n in cols)] + (["Improv."] if has_improv else [])
    table = Table(header, rows, _main_notes(rf, runs, cols, has_improv, tests))
    return MainTable(table, _std_table(metrics, cols, stats), tests, cols, marks)


def _main_notes(rf, runs, cols, has_improv, tests) -> list[str]:
    seeds = {n: len(runs[n]) for n in cols}
    notes = ["Test split, full ranking. Each cell is the mean over seeds (" +
             ", ".join(f"{display_name(n)}: {k}" for n, k in seeds.items()) +
             "). Best per row in **bold**, second best <u>underlined</u> (compared at the 4 decimals shown)."]
    if has_improv:
        notes.append("Improv. = relative improvement of PRM-KD over SASRec, (PRM-KD − SASRec) / SASRec.")
        notes.append(significance_note(tests))
    else:
        notes.append(f"Improv. and the significance test need both `{STUDENT}` and `{BASE}` in the main group: "
                     "omitted.")
    return notes


def significance_note(tests: dict[str, TTest]) -> str:
    if not tests:
        return "No significance test: per_user_test.npz of PRM-KD or SASRec not found."
    t0 = next(iter(tests.values()))
    ps = "; ".join(f"{metric_label(m)} p = {fmt_p(t.p)}" for m, t in tests.items())
    return (f"\\* = significant improvement over SASRec: two-sided paired t-test over the {t0.n_users} test users "
            f"(`scipy.stats.ttest_rel` on per-user values, each model's values averaged over its seeds "
            f"{t0.seeds_a} / {t0.seeds_b} first), p < {ALPHA} and PRM-KD's mean higher. {ps}.")


def _std_table(metrics, cols, stats) -> Table | None:
    if all(stats[m, n][2] <= 1 for m in metrics for n in cols):
        return None
    rows = [[metric_label(m), *(f"±{fmt(stats[m, n][1])}" if stats[m, n][2] > 1 else "–" for n in cols)]
            for m in metrics]
    n_row = ["seeds", *(str(stats[metrics[0], n][2]) for n in cols)]
    return Table(["Metric", *(display_name(n) for n in cols)], [*rows, n_row],
                 ["Sample standard deviation (ddof = 1) of each test metric over seeds; – = a single seed."])


def tests_table(tests: dict[str, TTest]) -> Table:
    rows = [[metric_label(m), fmt(t.mean_a), fmt(t.mean_b), f"{t.mean_a - t.mean_b:+.4f}",
             "n/a" if math.isnan(t.t) else f"{t.t:.3f}", fmt_p(t.p), "yes" if t.significant else "no"]
            for m, t in tests.items()]
    return Table(["Metric", "PRM-KD", "SASRec", "difference", "t", "p", "significant (p < 0.05, better)"], rows)


# --------------------------------------------------------------------------------------------------
# efficiency (paper Table 4)


def ratio(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.1f}x" if v >= 0.95 else f"{v:.2f}x"


def _ordered_models(eff: dict) -> list[dict]:
    base = eff.get("relative_to") or BASE
    ms = eff["models"]
    key = {base: 0, STUDENT: 3}
    return sorted(ms, key=lambda m: key.get(m["name"], 1 if m.get("role") == "teacher" else 2))


def _ratios(eff: dict) -> dict[str, dict]:
    """name -> ratios; from `ratios` when written, else computed from the models' absolute numbers."""
    if eff.get("ratios"):
        return {r["name"]: r for r in eff["ratios"]}
    base_name = eff.get("relative_to") or BASE
    base = next((m for m in eff["models"] if m["name"] == base_name), None)
    if base is None:
        return {}

    def div(m, k):
        a, b = m.get(k), base.get(k)
        return a / b if a is not None and b else None

    return {m["name"]: {"training_speed": div(m, "train_epoch_seconds"), "inference_memory": div(m, "inference_bytes"),
                        "inference_speed": div(m, "latency_ms_per_user")} for m in eff["models"]}


def efficiency_tables(rf: RunFolder) -> tuple[Table, Table] | None:
    """(relative to SASRec, absolute) from efficiency.json, or None without it."""
    eff = rf.efficiency
    if not eff or not eff.get("models"):
        return None
    base = eff.get("relative_to") or BASE
    ratios = _ratios(eff)
    models = _ordered_models(eff)
    rel_rows = []
    for m in models:
        r = ratios.get(m["name"], {})
        label = display_name(m["name"]) + (" (Base)" if m["name"] == base else "")
        rel_rows.append([label, ratio(r.get("training_speed")), ratio(r.get("inference_memory")),
                         ratio(r.get("inference_speed"))])
    rel = Table(["Model", "Training speed", "Inference memory", "Inference speed"], rel_rows,
                [f"Cost ratios model / {display_name(base)} measured in one process: training time per epoch, "
                 "memory needed to serve, latency per user; 2.0x = twice the cost, lower is better. "
                 "– = not measured (a teacher not retrained here)."])
    abs_rows = [[display_name(m["name"]), f"{m['parameters']:,}" if m.get("parameters") is not None else "–",
                 _mib(m.get("inference_bytes")), fmt(m.get("latency_ms_per_user"), 3),
                 _per_s(m.get("latency_ms_per_user")), fmt(m.get("train_epoch_seconds"), 2)] for m in models]
    setting = (f"Measured on device {eff.get('device', '?')} (threads: {eff.get('threads', '?')}), latency over "
               f"{eff.get('users_timed', '?')} users.")
    absolute = Table(["Model", "Parameters", "Inference memory (MiB)", "Latency (ms / user)", "Users / s",
                      "Train epoch (s)"], abs_rows, [setting])
    return rel, absolute


def _mib(b) -> str:
    return "–" if b is None else f"{b / 2**20:,.2f}"


def _per_s(ms) -> str:
    return "–" if not ms else f"{1000.0 / ms:,.0f}"


# --------------------------------------------------------------------------------------------------
# ablation and universality (the numbers behind Fig. 3 and Fig. 4)

PAIR = ["ndcg@10", "recall@10"]


def _ms(runs: list[dict], metric: str) -> str:
    m, s, n = mean_std(runs, metric)
    return fmt(m) + (f" ± {fmt(s)}" if n > 1 else "")


def ablation_table(rf: RunFolder) -> Table | None:
    """PRM-KD, each ablation and SASRec: NDCG@10, Recall@10 and the change relative to full PRM-KD."""
    variants = ablation_variants(rf)
    if not variants:
        return None
    full = rf.select(group="main", name=STUDENT)
    rows = []
    entries = [("PRM-KD (full)", full)]
    entries += [(ablation_label(a).replace("\n", " "), rf.select(group="ablation", ablation=a)) for a in variants]
    entries += [("SASRec (no distillation)", rf.select(group="main", name=BASE))]
    for label, runs in entries:
        cells = []
        for m in PAIR:
            rel = improvement(mean_std(runs, m)[0], mean_std(full, m)[0])
            cells += [_ms(runs, m), "–" if math.isnan(rel) else f"{rel:+.2f}%"]
        rows.append([label, str(len(runs)), *cells])
    return Table(["Variant", "Seeds", "NDCG@10", "vs full", "Recall@10", "vs full"], rows,
                 ["Test split, mean (± std over seeds). \"vs full\" = relative change from full PRM-KD."])


def universality_table(rf: RunFolder) -> Table | None:
    """Each non-sequential student plain vs distilled, with Improv. and a paired t-test over users."""
    models = universality_models(rf)
    if not models:
        return None
    rows = []
    for name in models:
        plain = rf.select(group="universality", name=name)
        dist = rf.select(group="universality", name=f"prmkd-{name}")
        for m in PAIR:
            t = paired_test(rf, dist, plain, m) if plain and dist else None
            imp = improvement(mean_std(dist, m)[0], mean_std(plain, m)[0])
            star = "\\*" if t and t.significant else ""
            rows.append([display_name(name), metric_label(m), _ms(plain, m), _ms(dist, m) + star,
                         "–" if math.isnan(imp) else f"{imp:+.2f}%", fmt_p(t.p) if t else "n/a"])
    return Table(["Student", "Metric", "plain", "PRM-KD", "Improv.", "p (paired t-test)"], rows,
                 ["\\* = significant improvement (two-sided paired t-test over users, per-user values averaged over "
                  "seeds, p < 0.05)."])


# --------------------------------------------------------------------------------------------------
# appendix


def _variant(r: dict) -> str:
    if r.get("ablation"):
        return str(r["ablation"])
    sw = r.get("sweep") or {}
    return f"{sw.get('param')} = {sw.get('value')}" + (" (plain)" if sw.get("plain") else "") if sw else ""


def appendix_table(rf: RunFolder) -> Table:
    """One row per run of summary.json."""
    rows = []
    for r in rf.runs:
        test = r["metrics"]["test"]
        timing = r.get("timing") or {}
        ts = timing.get("train_seconds")
        rows.append([f"`{r['name']}`", run_field(r, "group"), _variant(r), str(r.get("seed", "–")),
                     fmt(test.get("ndcg@10")), fmt(test.get("recall@10")), str(timing.get("best_epoch", "–")),
                     "–" if ts is None else f"{ts:,.1f}", f"`{r.get('run_dir', '–')}`"])
    return Table(["Run", "Group", "Variant", "Seed", "NDCG@10", "Recall@10", "Best epoch", "Train (s)", "Run folder"],
                 rows, [f"{len(rows)} runs; seeds {seeds_of(rf.runs)}. Test metrics, full ranking."])


def comparisons_table(rf: RunFolder) -> Table | None:
    """The `comparisons` the pipeline itself recorded, if any."""
    comps = rf.summary.get("comparisons") or []
    if not comps:
        return None
    rows = [[str(c.get("name", "")), display_name(str(c.get("a", ""))), display_name(str(c.get("b", ""))),
             metric_label(str(c.get("metric", ""))), fmt(c.get("value")), fmt_p(c.get("p_value"))] for c in comps]
    return Table(["Comparison", "a", "b", "Metric", "Value", "p"], rows,
                 ["As written by the pipeline into summary.json (for a paired test: value = relative change of the "
                  "mean, (a − b) / b; for a speed comparison: the ratio a / b)."])


__all__ = ["METRICS", "Table", "TTest", "MainTable", "main_table", "significance", "paired_test",
           "efficiency_tables", "appendix_table", "comparisons_table", "tests_table", "improvement", "rank_marks",
           "ablation_table", "universality_table"]
