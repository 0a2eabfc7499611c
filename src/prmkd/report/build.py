"""`build_report(RUN_DIR)`: report.md + report.html (+ PNGs) in RUN_DIR/report/."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .. import __version__
from ..env import now
from . import plots, tables
from .data import RunFolder, load_run_folder, seeds_of
from .findings import findings, variants_table
from .render import Bullets, Heading, Image, Note, Para, to_html, to_markdown


def header(rf: RunFolder) -> list:
    """How every number was made: command, code, machine, dataset, evaluation, seeds."""
    s = rf.summary
    ds = s.get("dataset") or {}
    ev = s.get("eval") or {}
    mach = s.get("machine") or {}
    groups = Counter(r.get("group") or "main" for r in rf.runs)
    items = [
        f"**Command**: `{s.get('command', '?')}`",
        f"**Code**: commit `{s.get('commit', '?')}`, run date {s.get('date', '?')}",
        f"**Machine**: {mach.get('cpu', '?')}, {mach.get('cores', '?')} cores, GPU: {mach.get('gpu') or 'none'}"
        + ("" if "cpu_bf16" not in mach else "; CPU bfloat16: " + (
            "native" if mach["cpu_bf16"] else "none (bf16 = true teachers ran in float32 on the CPU)")),
        f"**Dataset**: {ds.get('name', '?')}: {_n(ds.get('users'))} users, {_n(ds.get('items'))} items, "
        f"{_n(ds.get('interactions'))} interactions" + (f" (avg. length {ds['avg_len']})" if "avg_len" in ds else "")
        + f"; fingerprint `{ds.get('fingerprint', '?')}`",
        "**Evaluation**: leave-one-out test split (last item of each user), full ranking over all "
        f"{_n(ev.get('n_items', ds.get('items')))} items (no sampled negatives), ties counted against the target; "
        f"history items masked: {'yes' if ev.get('mask_history') else 'no'}; "
        f"k in {ev.get('ks', [5, 10, 20])}",
        *_distillation(s.get("config") or {}),
        f"**Seeds**: {s.get('seeds', seeds_of(rf.runs))}; runs: {len(rf.runs)} ("
        + ", ".join(f"{g} {n}" for g, n in groups.items()) + "); several seeds: mean over seeds, ± sample std",
        f"**Sources**: `{rf.root / 'summary.json'}`" + (", `efficiency.json`" if rf.efficiency else "")
        + (", resolved pipeline config `config.json`" if (rf.root / "config.json").exists() else "")
        + "; per-user test metrics from each run's `per_user_test.npz`",
        f"**Report**: made by prmkd {__version__} on {now()}",
    ]
    return [Heading("How every number was made"), Bullets(items)]


DISTILL_SHOWN = [("kd_weight", "λ"), ("temperature", "τ"), ("epsilon", "ε"), ("normalization", "normalization"),
                 ("kl", "KL"), ("student_temperature", "student temperature"), ("candidates", "candidates"),
                 ("fusion", "fusion"), ("max_instances", "KD instances per batch")]


def _distillation(cfg: dict) -> list[str]:
    """The distillation settings of the pipeline config (and each universality model's own overrides), one bullet;
    none when the summary carries no config."""
    d = cfg.get("distill")
    if not d:
        return []

    def show(opts: dict) -> str:
        return ", ".join(f"{label} {opts[k]}" for k, label in DISTILL_SHOWN if k in opts)

    line = f"**Distillation**: {show(d)}"
    for model, o in (cfg.get("distill_overrides") or {}).items():
        line += f"; {model}: {show(o)}"
    return [line]


def _n(v) -> str:
    return f"{v:,}" if isinstance(v, int) else str(v if v is not None else "?")


def main_section(rf: RunFolder) -> list:
    out = [Heading("Main results (cf. paper Table 3)")]
    mt = tables.main_table(rf)
    if mt is None:
        return out + [Note('No main-group runs in summary.json: main table omitted.')]
    out.append(mt.table)
    if mt.std_table is not None:
        out += [Para("Spread over seeds:"), mt.std_table]
    if mt.tests:
        out += [Para("Paired t-tests, PRM-KD vs SASRec (per-user test values):"), tables.tests_table(mt.tests)]
    return out


def efficiency_section(rf: RunFolder) -> list:
    out = [Heading("Efficiency (cf. paper Table 4)")]
    eff = tables.efficiency_tables(rf)
    if eff is None:
        return out + [Note("No efficiency.json in the run folder: efficiency tables omitted.")]
    return out + [eff[0], Para("Absolute numbers:"), eff[1]]


FIGURES = [
    ("Accuracy vs cost (cf. paper Fig. 1)", "fig1_tradeoff.png", plots.fig_tradeoff,
     "Fig. 1. Test NDCG@10 against inference latency per user (ms, lower = faster); bubble area is proportional "
     "to the memory needed to serve the model.", None),
    ("Ablation study (cf. paper Fig. 3)", "fig3_ablation.png", plots.fig_ablation,
     "Fig. 3. PRM-KD against its ablations (only one teacher; w/o IN: all items instead of in-batch candidates; "
     "w/o WA: plain average instead of consistency weighting). Dashed line: plain SASRec.", tables.ablation_table),
    ("Universality (cf. paper Fig. 4)", "fig4_universality.png", plots.fig_universality,
     "Fig. 4. Feature-interaction and graph students trained plain and with PRM-KD.", tables.universality_table),
    ("Parameter analysis (cf. paper Fig. 5)", "fig5_sweeps.png", plots.fig_sweeps,
     "Fig. 5. PRM-KD's test NDCG@10 and Recall@10 against each swept parameter (the others at their configured "
     "values); dashed lines: plain SASRec at its configured settings.", None),
]


def figure_sections(rf: RunFolder, out_dir: Path) -> tuple[list, list[Path]]:
    blocks, pngs = [], []
    for title, fname, draw, caption, table in FIGURES:
        blocks.append(Heading(title))
        path = out_dir / fname
        try:
            draw(rf, path)
        except plots.Omitted as e:
            path.unlink(missing_ok=True)  # no stale figure from an earlier, fuller report
            blocks.append(Note(f"Omitted: {e}."))
            continue
        pngs.append(path)
        blocks.append(Image(path, caption, alt=title))
        if table is not None and (t := table(rf)) is not None:
            blocks.append(t)
    return blocks, pngs


def build_report(run_dir: Path, out_dir: Path | None = None) -> dict:
    """Write report.md, report.html (PNGs inlined) and the PNGs; return {"markdown", "html", "figures"}."""
    rf = load_run_folder(Path(run_dir))
    out_dir = Path(out_dir) if out_dir is not None else rf.root / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    name = (rf.summary.get("dataset") or {}).get("name", "?")
    title = f"PRM-KD report: {name} ({rf.root.name})"
    fig_blocks, pngs = figure_sections(rf, out_dir)
    said = findings(rf)
    blocks = [Heading(title, 1), *([Heading("What this run shows"), Bullets(said)] if said else []), *header(rf),
              *main_section(rf), *efficiency_section(rf), *fig_blocks]
    if (var := variants_table(rf)) is not None:
        blocks += [Heading("Every variant against the full PRM-KD (ablations, sweeps, fused teachers)"), var]
    if (comp := tables.comparisons_table(rf)) is not None:
        blocks += [Heading("Comparisons recorded by the pipeline"), comp]
    blocks += [Heading("Appendix: every run"), tables.appendix_table(rf)]
    md, html = out_dir / "report.md", out_dir / "report.html"
    md.write_text(to_markdown(blocks), encoding="utf-8")
    html.write_text(to_html(blocks, title), encoding="utf-8")
    return {"markdown": md, "html": html, "figures": pngs}
