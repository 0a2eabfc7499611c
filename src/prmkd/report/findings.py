"""What a run shows, in words: the report's first lines, written from summary.json alone.

Every sentence is computed from the runs and the paired tests the pipeline recorded; what did not work (a
distilled student below its plain twin, a teacher below the plain student, a difference that is not significant,
runs that did not finish) is said as plainly as what did.
"""

from __future__ import annotations

import math

from .data import RunFolder, ablation_label, ablation_variants, display_name, mean_std, sweep_params, values
from .tables import ALPHA, BASE, STUDENT, Table, fmt, fmt_p

METRIC = "ndcg@10"


def _test(rf: RunFolder, name: str, metric: str = METRIC) -> dict | None:
    comps = rf.summary.get("comparisons") or []
    return next((c for c in comps if c.get("name") == name and c.get("metric") == metric), None)


def _verdict(c: dict) -> str:
    p = c.get("p_value")
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "no test possible"
    sig = p < ALPHA
    return f"p = {fmt_p(p)}, " + ("significant" if sig else "not significant") + f" at {ALPHA}"


def _pct(c: dict) -> str:
    return f"{100 * c['value']:+.1f}%"


def _power(c: dict, significant: bool) -> str:
    """For a difference the test did not find: how large a change these users could have shown."""
    mde = c.get("detectable_change")
    if significant or mde is None or math.isnan(mde):
        return ""
    return (f" With these {c['n_users']:,} users and the spread of their differences, the paired test finds a change "
            f"of about {100 * mde:.0f}% or more (80% power at {ALPHA}).")


def _seeds(c: dict) -> str:
    """How many seeds each side of a comparison averaged: "3 seed(s) each", or "3 and 2 seeds" when they differ."""
    a, b = c.get("seeds_a", "?"), c.get("seeds_b", c.get("seeds_a", "?"))
    return f"{a} seed(s) each" if a == b else f"{a} and {b} seeds"


def _below_twin(rf: RunFolder, name: str, c: dict) -> str:
    """The end of a distilled student's sentence: whether distillation hurt it, with the validation split's view
    when the test finds no significant difference."""
    p = c.get("p_value")
    if not c["value"] < 0:  # nan (a plain twin at 0) included
        return "."
    if p is None or math.isnan(p):
        return "; below its plain twin on test, with no test possible."
    if p < ALPHA:
        return "; distillation hurt this student."
    valid = [values(rf.select(group="universality", name=n), METRIC, "valid") for n in (name, name[6:])]
    seen = "" if not all(len(v) for v in valid) else \
        f" (validation NDCG@10: distilled {fmt(valid[0].mean())}, plain {fmt(valid[1].mean())})"
    return f"; below its plain twin on test, not significantly{seen}."


def findings(rf: RunFolder) -> list[str]:
    out: list[str] = []
    main = _test(rf, f"{STUDENT} vs {BASE}")
    base = mean_std(rf.select(group="main", name=BASE), METRIC)
    if main:
        worked = main["value"] > 0 and main["p_value"] < ALPHA
        hurt = main["value"] < 0 and main["p_value"] < ALPHA
        said = "improves the student" if worked else "makes the student worse" if hurt else \
            "does not significantly improve the student"
        out.append(f"**PRM-KD {said}**: distilled "
                   f"SASRec reaches test NDCG@10 {fmt(main['mean_a'])} against plain SASRec's {fmt(main['mean_b'])} "
                   f"({_pct(main)}; paired t-test over {main['n_users']:,} users, {_verdict(main)}; "
                   f"{_seeds(main)})." + _power(main, worked))
    teachers = [(r["name"], r) for r in rf.select(group="main", role="teacher")]
    if teachers and not math.isnan(base[0]):
        parts, weak = [], []
        for name, r in teachers:
            v = r["metrics"]["test"][METRIC]
            parts.append(f"{display_name(name)} {fmt(v)} ({100 * (v - base[0]) / base[0]:+.1f}%)")
            if v < base[0]:
                weak.append(display_name(name))
        out.append("Teachers' test NDCG@10 against plain SASRec: " + ", ".join(parts) + "." +
                   (f" Below plain SASRec: {', '.join(weak)}." if weak else ""))
    ceil = rf.select(group="ceiling")
    if ceil and teachers:
        best_t = max(teachers, key=lambda t: t[1]["metrics"]["test"][METRIC])
        best_c = max(ceil, key=lambda r: r["metrics"]["test"][METRIC])
        bt, bc = best_t[1]["metrics"]["test"][METRIC], best_c["metrics"]["test"][METRIC]
        stud = main["mean_a"] if main else float("nan")
        out.append(f"The ceiling: the fused teachers rank at test NDCG@10 {fmt(bc)} ({display_name(best_c['name'])}),"
                   f" the best single teacher at {fmt(bt)} ({display_name(best_t[0])}), the distilled student at "
                   f"{fmt(stud)}: fusing " + ("helps" if bc > bt else "does not beat the best teacher") +
                   (f", and the student closes {100 * (stud - base[0]) / (bc - base[0]):.0f}% of the gap from plain "
                    f"SASRec to the fused teachers." if bc > base[0] and main else "."))
    for name in sorted({r["name"] for r in rf.select(group="universality")} - {""}):
        if name.startswith("prmkd-"):
            c = _test(rf, f"{name} vs {name[6:]}")
            weights = {(r.get("config") or {}).get("distill", {}).get("kd_weight")
                       for r in rf.select(group="universality", name=name)}
            if weights == {0.0}:  # lambda 0: the "distilled" run is its plain twin, whatever the numbers say
                out.append(f"{display_name(name[6:])}: not distilled (lambda = 0 in its settings), so its distilled "
                           "run repeats its plain twin.")
            elif c:
                out.append(f"{display_name(name[6:])}: distilled {fmt(c['mean_a'])} vs plain {fmt(c['mean_b'])} "
                           f"({_pct(c)}; {_verdict(c)}; {_seeds(c)})"
                           + _below_twin(rf, name, c))
    out += [line for pair in method_parts(rf) for line in pair]
    best = rf.summary.get("sweep_best_on_validation") or {}
    if best:
        out.append("Best swept value on validation: " + ", ".join(f"{p} = {v['value']}" for p, v in best.items())
                   + ".")
    if rf.summary.get("not_finished"):
        out.append(f"Not finished (left out): {len(rf.summary['not_finished'])} run(s).")
    budget = [r for r in rf.runs if r.get("budget_ended")]
    if budget:
        out.append(f"{len(budget)} run(s) were ended by a time budget rather than by early stopping: "
                   + ", ".join(sorted({r['name'] for r in budget})) + ".")
    early = list({r.get("run_dir") or id(r): r for r in rf.runs  # a run recorded more than once is named once
                  if r.get("role") != "teacher" and not (r.get("sweep") or {}).get("main")  # sweeps' main points
                  and _stopped_at_the_start(r)}.values())
    if early:
        out.append(f"{len(early)} run(s) were stopped early with their best validation at their first or second "
                   "evaluation, so a dip early in their validation curve may have cut them short: " +
                   ", ".join(_run_label(r) for r in early) +
                   "; `train.min_epochs` or a larger `train.patience` would train them longer.")
    return out


PARAM = {"temperature": "τ", "kd_weight": "λ", "epsilon": "ε", "hidden_size": "the student's hidden size"}
PART = {"wo-in": "the in-batch candidates", "wo-wa": "the consistency weighting"}


def _change(c: dict) -> str:
    """"-4.1% (p = 1.2e-05, significant)": a variant's change against the full PRM-KD, with its verdict."""
    return f"{_pct(c)} ({_verdict(c).removesuffix(f' at {ALPHA}')})"


def _one_line(a: str) -> str:
    """An ablation's label on one line ("only UniSRec", "w/o IN (all items)")."""
    return ablation_label(a).replace("\n", " ")


def _sorted_out(named: dict[str, dict]) -> tuple[list[str], list[str], list[str]]:
    """Names whose variant is significantly worse than the full PRM-KD, significantly better, neither."""
    sig = {n: c["p_value"] is not None and c["p_value"] < ALPHA for n, c in named.items()}
    return ([n for n, c in named.items() if sig[n] and c["value"] < 0],
            [n for n, c in named.items() if sig[n] and c["value"] > 0], [n for n in named if not sig[n]])


def method_parts(rf: RunFolder) -> list[tuple[str, str]]:
    """Which parts of the method matter on this data, as (details, verdict) sentence pairs, one for the ablations and
    one for the sweeps (where present): every ablation or swept value against the full PRM-KD of the same seeds (test
    NDCG@10, paired over users), then in plain words what mattered and what did not. Reads only the summary's runs
    and comparisons, so a results file of the same layout (benchmarks/results/prmkd_<dataset>.json) serves too."""
    comps = {c["a"]: c for c in rf.summary.get("comparisons") or [] if c.get("metric") == METRIC
             and c.get("p_value") is not None and not math.isnan(c["p_value"])}
    out = []
    abl = {a: comps[f"ablation {a}"] for a in ablation_variants(rf) if f"ablation {a}" in comps}
    if abl:
        only = {a: c for a, c in abl.items() if a.startswith("only-")}
        groups = ([("combining the teachers", only)] if only else []) + \
            [(PART.get(a, a), {a: c}) for a, c in abl.items() if a not in only]
        details = ("Ablations, each against the full PRM-KD of the same seeds (test NDCG@10, paired over users): " +
                   "; ".join(f"{part}: " + ", ".join(f"{_one_line(a)} {_change(c)}" for a, c in named.items())
                             for part, named in groups) + ".")
        verdicts = []
        for part, named in groups:
            worse, better, same = _sorted_out(named)
            label = lambda names: " and ".join(map(_one_line, names))  # noqa: E731
            said = ([f"matters (the full method is significantly better than {label(worse)})"] if worse else []) + \
                ([f"hurts here ({label(better)} significantly better than the full method)"] if better else [])
            if same:
                said.append("no significant difference" + (f" against {label(same)}" if said else ""))
            verdicts.append(f"{part}: " + ", ".join(said))
        out.append((details, "So on this data: " + "; ".join(verdicts) + "."))
    swept = []
    for param in sweep_params(rf):
        runs = rf.select(group="sweep", sweep_param=param)
        values = sorted({r["sweep"]["value"] for r in runs  # a value run on several seeds is one comparison
                         if not r["sweep"].get("main") and not r["sweep"].get("plain")})
        named = {f"{v:g}": comps[f"sweep {param}={v}"] for v in values if f"sweep {param}={v}" in comps}
        if named:
            main = next((f"{r['sweep']['value']:g}" for r in runs if r["sweep"].get("main")), None)
            worse, better, same = _sorted_out(named)
            swept.append((param, main, named, worse, better))
    if swept:
        details = ("Sweeps, each value against the main setting's PRM-KD of the same seeds (test NDCG@10, paired "
                   "over users): " + "; ".join(
                       f"{PARAM.get(p, p)}" + (f" (main {main})" if main is not None else "") + ": " +
                       ", ".join(f"{v} {_change(c)}" for v, c in named.items()) for p, main, named, _, _ in swept)
                   + ".")
        sensitive = [PARAM.get(p, p) for p, _, _, worse, better in swept if worse or better]
        flat = [PARAM.get(p, p) for p, _, _, worse, better in swept if not worse and not better]
        verdict = (f"the result depends on {', '.join(sensitive)} (some swept value differs significantly from the "
                   "main setting)" if sensitive else "no swept parameter changes the result significantly")
        out.append((details, f"So on this data, {verdict}" +
                    (f"; no swept value of {', '.join(flat)} differs significantly." if sensitive and flat else ".")))
    return out


def _run_label(r: dict) -> str:
    sweep = r.get("sweep") or {}
    what = f"ablation {r['ablation']}, " if r.get("ablation") else \
        f"{'plain, ' if sweep.get('plain') else ''}{sweep['param']}={sweep['value']}, " if sweep.get("param") else ""
    return f"{r['name']} ({what}seed {r.get('seed')})"


def _stopped_at_the_start(r: dict) -> bool:
    """Stopped by patience (not by the epoch limit or a time budget) with its best at its first or second
    evaluation (validation runs every `train.eval_every` epochs)."""
    t, train = r.get("timing") or {}, (r.get("config") or {}).get("train") or {}
    best, epochs, limit = t.get("best_epoch"), t.get("epochs"), train.get("epochs")
    every = max(1, int(train.get("eval_every") or 1))
    return (best is not None and best + 1 <= 2 * every and epochs is not None and limit is not None
            and epochs < limit and not r.get("budget_ended"))


def variants_table(rf: RunFolder) -> Table | None:
    """Every ablation and swept value against the full PRM-KD: mean ± std over seeds, change, paired p."""
    rows = []
    for c in rf.summary.get("comparisons") or []:
        name = str(c.get("name", ""))
        if c.get("metric") != METRIC or not name.startswith(("ablation ", "sweep ", "fused-")):
            continue
        label = c["a"]
        runs = ([r for r in rf.select(group="ablation") if f"ablation {r.get('ablation')}" == label] or
                [r for r in rf.select(group="sweep") if not (r.get("sweep") or {}).get("main")
                 and not (r.get("sweep") or {}).get("plain")
                 and f"sweep {r['sweep']['param']}={r['sweep']['value']}" == label] or
                [r for r in rf.select(group="ceiling") if r["name"] == label])
        m, s, n = mean_std(runs, METRIC)
        spread = f" ± {fmt(s)}" if n > 1 else ""
        rows.append([label.removeprefix("ablation ").removeprefix("sweep "), str(n), fmt(m) + spread,
                     fmt(c["mean_b"]), f"{100 * c['value']:+.2f}%", fmt_p(c["p_value"])])
    if not rows:
        return None
    return Table(["Variant", "Seeds", "test NDCG@10", "full PRM-KD (same seeds)", "change", "p (paired t-test)"],
                 rows, ["Each variant against the full PRM-KD of the same seeds: relative change of the mean and a "
                        "two-sided paired t-test over users (per-user values averaged over seeds)."])
