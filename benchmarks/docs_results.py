"""Write the generated blocks of README.md and docs/results.md from the committed results JSON.

    python benchmarks/docs_results.py           # rewrite every block between its markers
    python benchmarks/docs_results.py --check   # exit 1 (and name the block) if a rewrite would change anything

A block is the text between `<!-- generated: NAME [SOURCE] -->` and `<!-- /generated -->` (SOURCE: the results file
the block reads, when not its default); everything outside the markers
is written by hand and never touched. Every number inside a block is read from benchmarks/results/*.json or
benchmarks/report/*/ (each written by the command it records), so no number in these pages is pasted by hand.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT  # noqa: E402

PAGES = [ROOT / "README.md", ROOT / "docs" / "results.md"]
BLOCK = re.compile(r"(<!-- generated: ([a-z0-9_-]+)(?: ([\w./-]+))? -->\n)(.*?)(<!-- /generated -->)", re.S)
METRICS = ["recall@5", "ndcg@5", "recall@10", "ndcg@10", "recall@20", "ndcg@20"]
LABEL = {"sasrec": "SASRec", "gru4rec": "GRU4Rec", "bert4rec": "BERT4Rec", "fm": "FM", "deepfm": "DeepFM",
         "lightgcn": "LightGCN", "recguru": "RecGURU", "teacher-unisrec": "UniSRec-style teacher",
         "teacher-recformer": "Recformer-style teacher", "teacher-unim2rec": "UniM²Rec-style teacher",
         "prmkd-sasrec": "**PRM-KD (SASRec)**"}


def load(name: str) -> dict | None:
    p = RESULTS / name if not name.startswith("benchmarks/") else ROOT / name
    return json.loads(p.read_text()) if p.exists() else None


def missing(name: str) -> str:
    return f"*(not measured yet: `{name}` is not committed)*\n"


def ms(d: dict | None, digits: int = 4) -> str:
    if not d:
        return "–"
    return f"{d['mean']:.{digits}f} ± {d['std']:.{digits}f}" if d.get("n", 1) > 1 else f"{d['mean']:.{digits}f}"


def pct(x: float | None) -> str:
    return "–" if x is None else f"{x:+.1%}"


def p_value(p: float | None) -> str:
    if p is None or p != p:
        return "–"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def machine(d: dict) -> str:
    m = d.get("machine") or {}
    gpu = m.get("gpu") or "no GPU"
    return f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, {gpu}; {d.get('date', '?')[:10]}"


def source(name: str, d: dict) -> str:
    return f"Source: `benchmarks/results/{name}`, made by `{d.get('command', '?')}` ({machine(d)}).\n"


# ---------------------------------------------------------------------------------------------- blocks


def headline(name: str = "prmkd_scientific.json") -> str:
    """The main Scientific table, NDCG@10 and Recall@10 only (README)."""
    d = load(name)
    if not d:
        return missing(name)
    main, rows = d["main"], []
    for t, v in d.get("teachers", {}).items():
        rows.append((LABEL.get(t, t), ms({"mean": v["test"]["ndcg@10"], "n": 1}),
                     ms({"mean": v["test"]["recall@10"], "n": 1}), "teacher, served at its own cost"))
    for m in ("gru4rec", "bert4rec", "recguru"):
        if m in d.get("baselines", {}):
            b = d["baselines"][m]["test"]
            n = b["ndcg@10"].get("n", 1)
            rows.append((LABEL[m], ms(b["ndcg@10"]), ms(b["recall@10"]), "baseline" + (" (1 seed)" if n == 1 else "")))
    rows.append((LABEL["sasrec"], ms(main["plain"]["test"]["ndcg@10"]), ms(main["plain"]["test"]["recall@10"]),
                 "the student, plain"))
    cmp = {c["metric"]: c for c in d["comparisons"] if c["name"] == "prmkd-sasrec vs sasrec"}
    rows.append((LABEL["prmkd-sasrec"], ms(main["prmkd"]["test"]["ndcg@10"]),
                 ms(main["prmkd"]["test"]["recall@10"]),
                 f"{pct(cmp['ndcg@10']['value'])} NDCG@10 over SASRec (p = {p_value(cmp['ndcg@10']['p_value'])}), "
                 f"same size and cost as SASRec"))
    out = ["| model (Scientific, test split) | NDCG@10 | Recall@10 | |", "|---|---:|---:|---|"]
    out += [f"| {a} | {b} | {c} | {e} |" for a, b, c, e in rows]
    seeds = len(main["plain"].get("seeds", []))
    out.append(f"\n{seeds} seeds (mean ± std) for the students; teachers one build. Full ranking over all "
               f"{d['dataset']['items']:,} items, {d['dataset']['users']:,} test users. " + source(name, d))
    return "\n".join(out) + "\n"


def main_table(name: str = "prmkd_scientific.json") -> str:
    d = load(name)
    if not d:
        return missing(name)
    head = "| model | " + " | ".join(METRICS) + " |\n|---|" + "---:|" * len(METRICS)
    lines = [head]

    def row(label, test, single=False):
        cells = [ms({"mean": test[m], "n": 1}) if single else ms(test[m]) for m in METRICS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    for t, v in d.get("teachers", {}).items():
        row(LABEL.get(t, t), v["test"], single=True)
    for m, v in d.get("baselines", {}).items():
        if m != d["main"]["student"]:
            row(LABEL.get(m, m), v["test"])
    row(LABEL["sasrec"], d["main"]["plain"]["test"])
    row(LABEL["prmkd-sasrec"], d["main"]["prmkd"]["test"])
    tests = [c for c in d["comparisons"] if c["name"] == "prmkd-sasrec vs sasrec"]
    lines.append("")
    lines += [f"PRM-KD vs SASRec, {c['metric']}: {pct(c['value'])} (paired t-test over {c['n_users']:,} users, "
              f"p = {p_value(c['p_value'])})." for c in tests]
    if d.get("distill"):
        k = d["distill"]
        lines.append(f"\nDistillation settings: tau {k['temperature']}, lambda {k['kd_weight']}, epsilon "
                     f"{k['epsilon']}, {k['normalization']} normalization, {k['kl']} KL, student temperature "
                     f"{k['student_temperature']}, {k['candidates']} candidates, {k['fusion']} fusion.")
    if (rule := d["main"].get("consistency_rule")) and len(d.get("teachers") or {}) < 2:
        lines.append("One teacher: the consistency rule has no other teacher to weigh it against.")
    elif rule:
        shares = ", ".join(f"{t} {s:.0%}" for t, s in rule.get("dropped_share_of_fired", {}).items())
        lines.append(f"The consistency rule fired on {rule['rule_fired'] / rule['training_instances_seen']:.1%} of "
                     f"the training instances; the teacher it dropped: {shares}.")
    lines.append("\n" + source(name, d))
    return "\n".join(lines) + "\n"


def efficiency(name: str = "prmkd_scientific.json") -> str:
    d = load(name)
    if not d or not d.get("efficiency"):
        return missing(name)
    lines = ["| model | training time / SASRec | inference memory / SASRec | inference latency / SASRec |",
             "|---|---:|---:|---:|"]
    for r in d["efficiency"]["ratios"]:
        lines.append(f"| {LABEL.get(r['name'], r['name'])} | {r['training_speed']:.2f}x | "
                     f"{r['inference_memory']:.2f}x | {r['inference_speed']:.2f}x |")
    lines.append("\nMeasured side by side in one process (cost ratios: 2.00x = twice SASRec's). " + source(name, d))
    return "\n".join(lines) + "\n"


def teacher_build(name: str = "teacher_build_scientific.json") -> str:
    d = load(name)
    if not d:
        return missing(name)
    lines = [f"`{d['build_command']}` from a fresh output folder and data cache: **{d['wall_minutes']} min** "
             f"({d['wall_seconds']:,.0f} s).", "",
             "| teacher | pre-training s | fine-tuning s (epochs) | test NDCG@10 | test Recall@10 |",
             "|---|---:|---:|---:|---:|"]
    for t, v in d.get("teachers", {}).items():
        ft = v.get("finetune_timing", {})
        pre = v.get("pretraining_seconds")
        lines.append(f"| {LABEL.get('teacher-' + t, t)} | {'–' if pre is None else f'{pre:,.0f}'} | "
                     f"{ft.get('train_seconds', 0):,.0f} ({ft.get('epochs', '?')}) | {v['test']['ndcg@10']:.4f} | "
                     f"{v['test']['recall@10']:.4f} |")
    lines.append("\n" + source(name, d))
    return "\n".join(lines) + "\n"


def recbole(name: str = "recbole_vs_prmkd_sasrec.json") -> str:
    d = load(name)
    if not d:
        return missing(name)
    a, b = d["summary"]["prmkd-sasrec"], d["summary"]["recbole-sasrec"]
    lines = ["| SASRec on Scientific, same settings | prmkd | RecBole 1.2.1 |", "|---|---:|---:|",
             f"| test NDCG@10 | {ms(a['test']['ndcg@10'])} | {ms(b['test']['ndcg@10'])} |",
             f"| test Recall@10 | {ms(a['test']['recall@10'])} | {ms(b['test']['recall@10'])} |",
             f"| seconds to the best validation epoch | {ms(a['time_to_best_seconds'], 1)} | "
             f"{ms(b['time_to_best_seconds'], 1)} |",
             f"| seconds per training epoch | {ms(a['epoch_seconds'], 2)} | {ms(b['epoch_seconds'], 2)} |", ""]
    lines += [f"- {c['name']}: **{c['value']:.2f}**" for c in d["comparisons"] if "seed 0" not in c["name"]]
    lines.append("\n" + source(name, d))
    return "\n".join(lines) + "\n"


def eval_speed(name: str = "eval_speed_scientific.json") -> str:
    d = load(name)
    if not d:
        return missing(name)
    lines = [f"- {r['name']}: {r['timing']['median_seconds']:.2f} s (median) to rank all {d['dataset']} test users "
             f"against every item, {r['timing'].get('torch_threads', '?')} thread(s)" for r in d["runs"]
             if "median_seconds" in r.get("timing", {})]
    lines += [f"- {c['name']}: **{c['value']:.1f}x**" for c in d["comparisons"]]
    return "\n".join(lines) + "\n\n" + source(name, d)


def pipeline_seconds(run: dict) -> int | None:
    """`prmkd run`'s own seconds in one wall_time.json entry (from its 'pipeline ... done in Ns' line)."""
    m = re.search(r"done in (\d+)s", run.get("pipeline_line") or "")
    return int(m[1]) if m else None


def main_job(name: str = "benchmarks/report/ml100k/wall_time.json") -> str:
    d = load(name)
    s = load("benchmarks/report/ml100k/summary.json")
    if not d or not s:
        return missing(name)
    last = d["runs"][-1]
    pipeline = pipeline_seconds(last)
    lines = [f"Last timed run from a fresh clone (`python benchmarks/main_job.py`): **{last['wall_seconds']:,.0f} s** "
             "(environment, install and pipeline"
             + (f"; `prmkd run` itself {pipeline:,} s" if pipeline else "") + ")."
             + earlier_runs(d["runs"][:-1]), "",
             "| student | seeds | plain test NDCG@10 | PRM-KD test NDCG@10 | change | paired p |",
             "|---|---:|---:|---:|---:|---:|"]
    for c in s["comparisons"]:  # each student distilled against its plain twin (ablations and sweeps: docs/results.md)
        if c["metric"] != "ndcg@10" or c["a"] != f"prmkd-{c['b']}":
            continue
        lines.append(f"| {LABEL.get(c['b'], c['b'])} | {c.get('seeds_a', '')} | {c['mean_b']:.4f} | "
                     f"{c['mean_a']:.4f} | {pct(c['value'])} | {p_value(c['p_value'])} |")
    lines += ["", *main_job_details(s)]
    lines.append(f"\nSource: `{name}` and `benchmarks/report/ml100k/summary.json` ({machine(s)}).")
    return "\n".join(lines) + "\n"


def earlier_runs(runs: list[dict], n: int = 2) -> str:
    """' Before it, `prmkd run` took A s (commit) and B s (commit).' for the last n runs whose pipeline finished:
    one run's time on a shared machine says little about the next one's."""
    took = [(t, r.get("commit", "?")) for r in runs if (t := pipeline_seconds(r))][-n:]
    if not took:
        return ""
    return " Before it, `prmkd run` took " + " and ".join(f"{t:,} s ({c})" for t, c in reversed(took)) + "."


def main_job_details(s: dict) -> list[str]:
    """What stands behind the SASRec row: each seed's test NDCG@10, plain SASRec and the teachers on both splits,
    and the smallest change the paired test can find with this many users (a part missing from the summary is left
    out)."""
    # the main table's runs: ablation and sweep runs carry the same names in other groups (no group means main)
    def main_runs(name):
        return sorted((r for r in s.get("runs", []) if r.get("name") == name and (r.get("group") or "main") == "main"
                       and "valid" in r.get("metrics", {}) and "test" in r["metrics"]), key=lambda r: r.get("seed", 0))

    def ndcg(r, split):
        return r["metrics"][split]["ndcg@10"]

    plain, kd = main_runs("sasrec"), main_runs("prmkd-sasrec")
    if not plain or not kd:
        return []
    out = ["Test NDCG@10 per seed: SASRec " + " / ".join(f"{ndcg(r, 'test'):.4f}" for r in plain)
           + ", PRM-KD " + " / ".join(f"{ndcg(r, 'test'):.4f}" for r in kd) + "."]
    sides = [f"plain SASRec {sum(ndcg(r, 'valid') for r in plain) / len(plain):.4f} / "
             f"{sum(ndcg(r, 'test') for r in plain) / len(plain):.4f} (mean of its seeds)"]
    names = sorted({r["name"] for r in s.get("runs", []) if r.get("role") == "teacher"})
    sides += [f"{LABEL.get(n, n)} {ndcg(t, 'valid'):.4f} / {ndcg(t, 'test'):.4f}" for n in names
              for t in main_runs(n)[:1]]
    out.append("Validation / test NDCG@10: " + "; ".join(sides) + ".")
    c = next((c for c in s.get("comparisons", []) if c.get("a") == "prmkd-sasrec" and c.get("b") == "sasrec"
              and c.get("metric") == "ndcg@10"), None)
    if c and c.get("detectable_change") and c.get("n_users"):
        out.append(f"With {c['n_users']:,} test users the paired test finds a change of about "
                   f"{100 * c['detectable_change']:.0f}% or more (80% power at 0.05).")
    return [" ".join(out)]


def variants(name: str = "prmkd_scientific.json") -> str:
    """Ablations, swept values and fused-teacher rankers against the full PRM-KD (paired tests)."""
    d = load(name)
    if not d:
        return missing(name)
    lines = ["| variant | seeds | test NDCG@10 | full PRM-KD (same seeds) | change | paired p |",
             "|---|---:|---:|---:|---:|---:|"]
    for c in d["comparisons"]:
        n = str(c.get("name", ""))
        if c.get("metric") != "ndcg@10" or not n.startswith(("ablation ", "sweep ", "fused-")):
            continue
        seeds = c.get("seeds") or [0]
        lines.append(f"| {c['a'].removeprefix('ablation ').removeprefix('sweep ')} | {len(seeds)} | "
                     f"{c['mean_a']:.4f} | {c['mean_b']:.4f} | {pct(c['value'])} | {p_value(c['p_value'])} |")
    if len(lines) == 2:
        return missing(name + " (ablations / sweeps)")
    lines.append("\nEach variant against the full PRM-KD of the same seeds: two-sided paired t-test over users, "
                 "per-user values averaged over seeds. " + source(name, d))
    return "\n".join(lines) + "\n"


def parts(name: str = "prmkd_scientific.json") -> str:
    """In words, which parts of the method mattered: the report's own sentences (prmkd.report.findings), from the
    runs and paired tests of the results file."""
    from prmkd.report.data import RunFolder
    from prmkd.report.findings import method_parts

    d = load(name)
    if not d:
        return missing(name)
    said = [verdict for _, verdict in method_parts(RunFolder(RESULTS, d, None))]
    if not said:
        return missing(name + " (ablations / sweeps)")
    seeds = sorted({r.get("seed") for r in d["runs"] if r.get("group") in ("ablation", "sweep")})
    return ("\n".join(f"- {line}" for line in said) + f"\n\nRuns of seeds {seeds}; a variant with fewer seeds is "
            "compared with the full PRM-KD of the same seeds (the table above gives each one's count). " +
            source(name, d) + "\n")


def universality(name: str = "prmkd_scientific.json") -> str:
    d = load(name)
    if not d or not d.get("universality"):
        return missing(name)
    lines = ["| student | plain test NDCG@10 | PRM-KD test NDCG@10 | change | paired p |", "|---|---:|---:|---:|---:|"]
    for m, u in d["universality"].items():
        t = next((c for c in u.get("t_test", []) if c["metric"] == "ndcg@10"), None)
        lines.append(f"| {LABEL.get(m, m)} | {ms(u['plain']['test']['ndcg@10'])} | "
                     f"{ms(u['distilled']['test']['ndcg@10'])} | {pct(u['relative']['ndcg@10'])} | "
                     f"{p_value(t['p_value']) if t else '–'} |")
    return "\n".join(lines) + "\n\n" + source(name, d)


def ceiling(name: str = "prmkd_scientific.json") -> str:
    d = load(name)
    if not d or not d.get("ceiling"):
        return missing(name + " (ceiling)")
    best = max(d["teachers"].items(), key=lambda kv: kv[1]["test"]["ndcg@10"])
    lines = ["| ranker | test NDCG@10 | test Recall@10 |", "|---|---:|---:|",
             f"| plain SASRec | {ms(d['main']['plain']['test']['ndcg@10'])} | "
             f"{ms(d['main']['plain']['test']['recall@10'])} |",
             f"| PRM-KD SASRec | {ms(d['main']['prmkd']['test']['ndcg@10'])} | "
             f"{ms(d['main']['prmkd']['test']['recall@10'])} |",
             f"| best single teacher ({LABEL.get(best[0], best[0])}) | {best[1]['test']['ndcg@10']:.4f} | "
             f"{best[1]['test']['recall@10']:.4f} |"]
    for n, c in d["ceiling"].items():
        lines.append(f"| fused: {' + '.join(c['teachers'])} | {c['test']['ndcg@10']:.4f} | "
                     f"{c['test']['recall@10']:.4f} |")
    return "\n".join(lines) + "\n\nFused = Eq. 1-4 over every item, the distillation settings of the main runs. " + \
        source(name, d)


def tuning(name: str = "tuning_scientific.json") -> str:
    d = load(name)
    if not d:
        return missing(name)
    student = d.get("student")  # absent: the pipeline's main student
    plain = f"plain {LABEL.get(student, student)} of {d.get('pipeline_config')}" if student else \
        f"plain {d.get('pipeline_config')} student"
    changed = [o for o in d.get("overrides", []) if "threads=" not in o]  # (thread counts change no result)
    start = [o for o in changed if o.startswith("distill.")]  # where the ascent starts (no plain run reads them)
    if len(start) < len(changed):
        plain += " with " + ", ".join(f"`{o}`" for o in changed if o not in start)
    lines = [f"Coordinate ascent on validation NDCG@10 (mean over seeds {d['seeds']}), in this order" +
             (f", from {', '.join(f'`{o}`' for o in start)}" if start else "") +
             f"; {plain}: {d['plain_student_valid_ndcg@10']:.4f}.", "",
             "| coordinate | validation NDCG@10 of each value | chosen |", "|---|---|---|"]
    for st in d["steps"]:
        vals = ", ".join(f"{k}: {v:.4f}" for k, v in st["valid_ndcg@10"].items())
        lines.append(f"| {st['coordinate']} | {vals} | {st['chosen']} |")
    if d.get("unfinished"):
        lines += ["", f"Not tuned yet (the tuning was stopped before them): {', '.join(d['unfinished'])}. Until "
                      f"they are, nothing chosen here is applied to {d.get('pipeline_config')}: its values stand."]
    return "\n".join(lines) + "\n\n" + source(name, d)


def serving(name: str = "serve_scientific.json") -> str:
    d = load(name)
    if not d:
        return missing(name)
    lines = ["| | plain SASRec | PRM-KD SASRec |", "|---|---:|---:|"]
    par = d["parity"]
    for key, label in (("max_relative_score_difference", "max relative score difference, ONNX Runtime vs torch"),
                       ("top10_equal_share", "test users whose served top-10 equals the evaluator's"),
                       ("top10_differ_otherwise", "users whose top-10 differs other than inside ties"),
                       ("ndcg@10_serving_path", "test NDCG@10 through the serving path"),
                       ("ndcg@10_run", "test NDCG@10 of the run")):
        a, b = par["sasrec"][key], par["prmkd-sasrec"][key]
        f = (lambda x: f"{x:.1e}") if "difference" in key else \
            (lambda x: f"{x:.4f}" if isinstance(x, float) else str(x))
        lines.append(f"| {label} | {f(a)} | {f(b)} |")
    lines.append(f"| export size (bytes) | {sum(d['files']['sasrec'].values()):,} | "
                 f"{sum(d['files']['prmkd-sasrec'].values()):,} |")
    lines.append(f"| resident memory after the load test (MiB) | {d['memory']['sasrec']['rss_mib_after_load']} | "
                 f"{d['memory']['prmkd-sasrec']['rss_mib_after_load']} |")
    ap = d["approximate_index"]
    lines.append(f"| HNSW recall@10 against the exact index | {ap['sasrec']['recall@10_vs_exact']} | "
                 f"{ap['prmkd-sasrec']['recall@10_vs_exact']} |")
    lines += ["", "| model | runtime | endpoint | concurrency | p50 ms | p95 ms | p99 ms | recommendations/s |",
              "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in d["latency"]:
        lines.append(f"| {LABEL.get(r['model'], r['model'])} | {r['runtime']} | {r['endpoint']} | {r['concurrency']} | "
                     f"{r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | {r.get('recommendations_per_second', '–')} |")
    lines += [""] + [f"- {c['name']}: **{c['value']:.2f}**" for c in d["comparisons"]]
    return "\n".join(lines) + "\n\n" + source(name, d)


def scaling(name: str = "scaling.json") -> str:
    d = load(name)
    if not d:
        return missing(name)
    f = d["fitted_exponents"]
    modes = [k.removeprefix("epoch_seconds_") for k in f if k.startswith("epoch_seconds_")]
    lines = ["Fitted exponents (least-squares slope of log cost against log interactions, over the real datasets):",
             "", "| training | epoch time | peak memory |", "|---|---:|---:|"]
    lines += [f"| {m} | {f['epoch_seconds_' + m]:.2f} | {f['peak_rss_' + m]:.2f} |" for m in modes]
    plain = [r for r in d["real"] if r["mode"] == "plain"]
    if len(plain) > 1:  # the full softmax passes over the catalogue for every instance
        import numpy as np

        x = np.log([r["interactions"] * r["items_n"] for r in plain])
        k = float(np.polyfit(x, np.log([r["epoch_seconds"] for r in plain]), 1)[0])
        lines += ["", f"Plain epoch time against interactions x catalogue size (the full softmax scores every item "
                      f"for every instance): exponent {k:.2f}."]
    lines += ["", f"Full-ranking evaluation time against users x items scored: exponent "
              f"{f['eval_seconds_vs_users_x_items']:.2f}.", "",
              "| dataset | users | items | interactions | mode | epoch s | eval s | gather ms/batch | peak MiB |",
              "|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in d["real"] + d["synthetic"]:
        name_ = r.get("name") or "synthetic"
        lines.append(f"| {name_} | {r['users_n']:,} | {r['items_n']:,} | {r['interactions']:,} | {r['mode']} | "
                     f"{r.get('epoch_seconds', '–')} | {r.get('eval_seconds', '–')} | "
                     f"{r.get('gather_ms_per_batch', '–')} | {r['peak_rss_mib']} |")
    for r in d.get("data_parallel") or []:
        lines.append(f"| {r['dataset']} ({r['processes']} process(es) x 1 thread) | | | | plain | "
                     f"{r['epoch_seconds']} | | | |")
    lines += [""] + [f"- {c['name']}: **{c['value']:.2f}**" for c in d["comparisons"]]
    lines.append(f"\n![scaling](../benchmarks/results/{d['plot']})\n")
    return "\n".join(lines) + "\n" + source(name, d)


def variant_vs_main(name: str) -> str:
    """One variant of the main distilled student against it, seed by seed (benchmarks/_common.student_variant)."""
    d = load(name)
    if not d:
        return missing(name)
    (label,) = [k for k in d["summary"] if k != "main"]
    lines = ["| | valid NDCG@10 (mean of seeds) | test NDCG@10 | test Recall@10 | per seed (test NDCG@10) |",
             "|---|---:|---:|---:|---|"]
    for k in ("main", label):
        sm = d["summary"][k]
        valid = [r["metrics"]["valid"]["ndcg@10"] for r in d["runs"] if r["variant"] == k]
        lines.append(f"| {d.get('main_label', 'main PRM-KD') if k == 'main' else label} | "
                     f"{f'{sum(valid) / len(valid):.4f}' if valid else '–'} | "
                     f"{ms(sm['ndcg@10'])} | {ms(sm['recall@10'])} | "
                     + ", ".join(f"{v:.4f}" for v in sm["ndcg@10"]["values"]) + " |")
    lines += [""] + [f"- {c['name']}: {c['value']:+.2%} (paired t-test over {c['n_users']:,} users, p = "
                     f"{p_value(c['p_value'])})" for c in d["comparisons"]]
    lines.append(f"- the variant's mean within one seed std of the main one on both metrics: "
                 f"**{'yes' if d['difference_within_one_seed_std'] else 'no'}**")
    lines += [f"- {c['name']}: **{c['value']:.2f}**" for c in d.get("speed", [])]
    return "\n".join(lines) + "\n\n" + source(name, d)


def simple_comparisons(name: str) -> str:
    d = load(name)
    if not d:
        return missing(name)
    return "\n".join(f"- {c['name']}: **{c['value']:.3f}**" + (f" (p = {p_value(c.get('p_value'))})"
                                                              if c.get("p_value") is not None else "")
                     for c in d["comparisons"]) + "\n\n" + source(name, d)


def rebuilt(name: str = "rebuilt_scientific.json") -> str:
    d = load(name)
    if not d:
        return missing(name)
    made = d["committed_made_by"]
    build = {(r["build"], r["name"], r["seed"]): r for r in d["runs"]}
    new_cpu = next(r["machine"].get("cpu", "?") for r in d["runs"] if r["build"] == "rebuilt")
    bf16 = d["machine"].get("cpu_bf16")
    old_cpu = (made["machine"] or {}).get("cpu", "?")
    lines = [f"The same runs (same fingerprints) built on two machines: committed ({old_cpu}, "
             f"`{made.get('command', '?')}` at {str(made.get('commit'))[:7]}, {str(made.get('date', '?'))[:10]}) and "
             f"rebuilt ({new_cpu}" + ("" if bf16 is None else
                                      f", CPU bfloat16 {'native' if bf16 else 'none: bf16 = true ran in float32'}")
             + "). Test NDCG@10 and epochs trained (best epoch):", "",
             "| run | seed | rebuilt | committed | difference | epochs rebuilt | epochs committed | s/epoch rebuilt | "
             "s/epoch committed |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in d["comparisons"]:
        a, b = build["rebuilt", c["a"], c["seed"]], build["committed", c["b"], c["seed"]]
        ta, tb = a["timing"], b["timing"]
        lines.append(f"| {LABEL.get(c['a'], c['a'])} | {c['seed']} | {a['metrics']['test']['ndcg@10']:.4f} | "
                     f"{b['metrics']['test']['ndcg@10']:.4f} | {c['value']:+.6f} | "
                     f"{ta['epochs']} ({ta['best_epoch']}) | {tb['epochs']} ({tb['best_epoch']}) | "
                     f"{ta['epoch_seconds']:.0f} | {tb['epoch_seconds']:.0f} |")
    return "\n".join(lines) + "\n\n" + source(name, d)


def student_size(name: str = "student_size_ml100k.json") -> str:
    d = load(name)
    if not d:
        return missing(name)
    student = LABEL.get(d["student"], d["student"])
    recipes = "; ".join(f"{r}: " + (", ".join(f"{k} {v}" for k, v in ch.items()) or "the config's [train]")
                        for r, ch in d["recipes"].items())
    head = ["| recipe | hidden size | split | plain | PRM-KD | change | p |", "|---|---:|---|---:|---:|---:|---:|"]

    def line(recipe: str, size: int, plain: dict, kd: dict, c: dict) -> list[str]:
        return [f"| {recipe} | {size} | {split} | {ms(plain[split])} | {ms(kd[split])} | {pct(c[split]['value'])} | "
                f"{p_value(c[split]['p_value'])} |" for split in ("valid", "test")]

    lines = [f"Plain and distilled {student} by training recipe ({recipes}) and hidden size, seeds {d['seeds']} "
             "(mean ± std over seeds); change and paired p over users (per-user NDCG@10 averaged over the seeds).",
             "", *head]
    for r in d["rows"]:
        lines += line(r["recipe"], r["hidden_size"], r["plain"], r["distilled"], r["distilled_vs_plain"])
    lines += ["", d["fair_rule"][0].upper() + d["fair_rule"][1:] + ":", "", *head]
    for f in d["fair"]:
        lines += line(f"plain: {f['plain_recipe']}; PRM-KD: {f['distilled_recipe']}", f["hidden_size"],
                      f["plain"], f["distilled"], f["distilled_vs_plain"])
    teachers = "; ".join(f"{LABEL.get('teacher-' + n, n)}: validation {t['valid']:.4f}, test {t['test']:.4f}"
                         for n, t in d["teachers_ndcg@10"].items())
    base = d.get("train")  # the config's [train] as the study ran (recorded since the study's first run)
    base = "" if not base else " The config's [train] then: " + ", ".join(
        f"{k} {base[k]}" for k in ("epochs", "patience", "lr", "batch_size") if k in base) + "."
    return "\n".join(lines) + f"\n\nTeacher NDCG@10 ({teachers}).{base} " + source(name, d)


BLOCKS = {"headline": headline, "main-scientific": main_table, "efficiency": efficiency,
          "teacher-build": teacher_build, "recbole": recbole, "eval-speed": eval_speed, "main-job": main_job,
          "variants": variants, "parts": parts, "universality": universality, "ceiling": ceiling, "tuning": tuning,
          "serving": serving, "scaling": scaling, "comparisons": simple_comparisons, "variant": variant_vs_main,
          "student-size": student_size, "rebuilt": rebuilt}


def render(text: str) -> str:
    def fill(m: re.Match) -> str:
        name = m.group(2)
        if name not in BLOCKS:
            raise SystemExit(f"unknown generated block '{name}' (known: {', '.join(BLOCKS)})")
        arg = m.group(3)
        return m.group(1) + (BLOCKS[name](arg) if arg else BLOCKS[name]()) + m.group(5)

    return BLOCK.sub(fill, text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a page is out of date")
    args = ap.parse_args()
    stale = []
    for page in PAGES:
        old = page.read_text(encoding="utf-8")
        new = render(old)
        if new != old:
            stale.append(page)
            if not args.check:
                page.write_text(new, encoding="utf-8")
                print(f"wrote {page.relative_to(ROOT)}")
    if args.check and stale:
        print("out of date: " + ", ".join(str(p.relative_to(ROOT)) for p in stale) +
              " (run python benchmarks/docs_results.py)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
