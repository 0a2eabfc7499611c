"""The report's figures (paper Fig. 1, 3, 4, 5) as PNG files, drawn with matplotlib's Agg canvas.

matplotlib is imported inside the functions (no pyplot, no global backend state), so importing this module is
cheap. Each `fig_*` function writes one PNG and returns its path, or raises `Omitted(reason)` when the run folder
lacks the runs it needs.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .data import (RunFolder, ablation_label, ablation_variants, display_name, mean_std, sweep_params,
                   universality_models)
from .tables import BASE, STUDENT

DPI = 150
STYLE = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
         "xtick.labelsize": 10, "ytick.labelsize": 10, "axes.spines.top": False, "axes.spines.right": False}
ROLE_COLOR = {"teacher": "#e6862b", "baseline": "#4c78a8", "distilled": "#2e9e5b"}
METRIC_COLOR = {"ndcg@10": "#4c78a8", "recall@10": "#d1495b"}
PANEL_METRICS = [("ndcg@10", "NDCG@10"), ("recall@10", "Recall@10")]
SWEEP_LABEL = {"temperature": "temperature τ", "kd_weight": "distillation weight λ",
               "epsilon": "consistency threshold ε", "hidden_size": "hidden size d"}


class Omitted(Exception):
    """A figure was left out; the message says why (one line in the report)."""


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, facecolor="white")
    return path


def _style():
    import matplotlib

    return matplotlib.rc_context(STYLE)


# --------------------------------------------------------------------------------------------------
# Fig. 1: trade-off between inference speed, accuracy and memory


def _tradeoff_points(rf: RunFolder) -> list[dict]:
    pts = []
    for m in (rf.efficiency or {}).get("models", []):
        ndcg = mean_std(rf.select(group="main", name=m["name"]), "ndcg@10")[0]
        if m.get("latency_ms_per_user") and m.get("inference_bytes") and not math.isnan(ndcg):
            pts.append({"name": m["name"], "role": m.get("role") or "baseline", "x": float(m["latency_ms_per_user"]),
                        "y": ndcg, "bytes": float(m["inference_bytes"])})
    return pts


def _limits(vals: np.ndarray, log: bool, pad: float) -> tuple[float, float]:
    v = np.log10(vals) if log else vals
    lo, hi = float(v.min()), float(v.max())
    span = hi - lo if hi > lo else (0.5 if log else max(abs(hi) * 0.2, 1e-3))
    lo, hi = lo - pad * span, hi + pad * span
    return (10 ** lo, 10 ** hi) if log else (lo, hi)


def fig_tradeoff(rf: RunFolder, path: Path) -> Path:
    """x: inference latency per user (ms), y: test NDCG@10, bubble area proportional to inference memory."""
    pts = _tradeoff_points(rf)
    if not pts:
        raise Omitted("no model has both efficiency measurements (efficiency.json) and test metrics (main group)")
    from matplotlib.lines import Line2D

    xs, ys = np.array([p["x"] for p in pts]), np.array([p["y"] for p in pts])
    mem = np.array([p["bytes"] for p in pts])
    sizes = np.maximum(2200.0 * mem / mem.max(), 40.0)  # marker area in pt^2, proportional to memory
    log = xs.max() / xs.min() >= 10
    with _style():
        fig = _figure(9.0, 5.4)
        ax = fig.add_subplot()
        ax.scatter(xs, ys, s=sizes, c=[ROLE_COLOR.get(p["role"], "#888") for p in pts], alpha=0.55,
                   edgecolors="black", linewidths=0.8, zorder=3)
        if log:
            _log_axis(ax.xaxis)
        ax.set_xlim(*_limits(xs, log, 0.22))
        ax.set_ylim(*_limits(ys, False, 0.3))
        ax.grid(True, alpha=0.3, zorder=0)
        ax.set_xlabel("inference latency per user (ms" + (", log scale" if log else "") + ") — left is faster")
        ax.set_ylabel("test NDCG@10")
        ax.set_title("Accuracy vs inference cost (bubble area ∝ inference memory)")
        roles = [r for r in ("teacher", "baseline", "distilled") if any(p["role"] == r for p in pts)]
        role_names = {"teacher": "teacher (PRM)", "baseline": "plain student", "distilled": "PRM-KD student"}
        h1 = [Line2D([], [], ls="", marker="o", ms=10, mfc=ROLE_COLOR[r], alpha=0.7, mec="black", label=role_names[r])
              for r in roles]
        leg = ax.legend(handles=h1, title="model", loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
        ax.add_artist(leg)
        ax.legend(handles=_memory_handles(mem, sizes), title="inference memory", loc="lower left",
                  bbox_to_anchor=(1.02, 0.0), frameon=False, labelspacing=2.2, borderpad=1.0,
                  handlelength=math.sqrt(sizes.max()) / 10 + 0.5, handletextpad=1.0)
        fig.tight_layout()
        place_labels(fig, ax, xs, ys, sizes, [display_name(p["name"]) for p in pts])
        return _save(fig, path)


def _log_axis(axis, base: float = 10) -> None:
    """Log scale with plain-number tick labels (0.05, 0.1, 0.2, ...) instead of powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.axes.set_xscale("log", base=base) if axis.axis_name == "x" else axis.axes.set_yscale("log", base=base)
    subs = (1.0, 2.0, 5.0) if base == 10 else (1.0,)
    axis.set_major_locator(LogLocator(base=base, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _memory_handles(mem: np.ndarray, sizes: np.ndarray) -> list:
    from matplotlib.lines import Line2D

    picks = sorted({int(np.argmin(mem)), int(np.argmax(mem))}, key=lambda i: mem[i])
    return [Line2D([], [], ls="", marker="o", ms=math.sqrt(sizes[i]), mfc="none", mec="black",
                   label=f"{mem[i] / 2**20:,.1f} MiB") for i in picks]


def place_labels(fig, ax, xs, ys, sizes, labels, fontsize: float = 10.0) -> list:
    """Label each bubble next to it: try 8 directions at growing distances, keep the first spot that overlaps no
    bubble, no placed label and stays inside the axes (else the least bad one); far spots get a leader line."""
    renderer = fig.canvas.get_renderer()
    scale = fig.dpi / 72.0  # px per point
    centers = ax.transData.transform(np.c_[xs, ys])  # (N, 2) display px
    radii = np.sqrt(sizes) / 2.0 * scale  # (N,) px
    axbox = ax.get_window_extent(renderer)
    angles = [45, 135, -45, -135, 90, -90, 0, 180]
    placed, artists = [], []
    for i in np.argsort(-np.asarray(sizes)):  # big bubbles first: they have the fewest free spots
        best = None
        for step in range(5):
            for a in angles:
                c, s = math.cos(math.radians(a)), math.sin(math.radians(a))
                d = (radii[i] + (4 + 16 * step) * scale) / scale  # points
                kw = dict(xytext=(d * c, d * s), textcoords="offset points", fontsize=fontsize,
                          ha="left" if c > 0.3 else "right" if c < -0.3 else "center",
                          va="bottom" if s > 0.3 else "top" if s < -0.3 else "center")
                ann = ax.annotate(labels[i], (xs[i], ys[i]), **kw)
                bb = ann.get_window_extent(renderer).padded(2 * scale)
                ann.remove()
                cost = _collisions(bb, centers, radii, placed, axbox) + 0.01 * step
                if best is None or cost < best[0]:
                    best = (cost, kw, bb, step)
            if best[0] < 1:
                break
        _, kw, bb, step = best
        if step > 0:
            kw["arrowprops"] = dict(arrowstyle="-", color="#555", lw=0.7, shrinkA=0, shrinkB=radii[i] / scale)
        artists.append(ax.annotate(labels[i], (xs[i], ys[i]), zorder=4, **kw))
        placed.append(bb)
    return artists


def _collisions(bb, centers, radii, placed, axbox) -> float:
    """How badly a label box collides: 1 per bubble or label it touches, 5 when it leaves the axes."""
    cost = 0.0
    for (cx, cy), r in zip(centers, radii):
        nx, ny = min(max(cx, bb.x0), bb.x1), min(max(cy, bb.y0), bb.y1)  # nearest point of the box
        if (nx - cx) ** 2 + (ny - cy) ** 2 < r * r:
            cost += 1
    cost += sum(1 for p in placed if bb.overlaps(p))
    if bb.x0 < axbox.x0 or bb.x1 > axbox.x1 or bb.y0 < axbox.y0 or bb.y1 > axbox.y1:
        cost += 5
    return cost


# --------------------------------------------------------------------------------------------------
# bar panels (Fig. 3, Fig. 4)


def _bar_panels(path: Path, title: str, groups: list[str], series: list[tuple[str, str, list[list[dict]]]],
                reference: list[dict] | None, several: bool) -> Path:
    """One panel per metric; `series` = (label, color, runs per group); SASRec `reference` as a dashed line."""
    n_s = len(series)
    width = 0.8 / n_s
    with _style():
        fig = _figure(max(9.0, 1.6 * len(groups) * n_s + 3), 4.6)
        axes = fig.subplots(1, 2)
        for ax, (metric, label) in zip(axes, PANEL_METRICS):
            top = 0.0
            for j, (name, color, runs) in enumerate(series):
                st = [mean_std(r, metric) for r in runs]
                mean = np.array([s[0] for s in st])
                err = np.array([s[1] for s in st]) if several else None
                x = np.arange(len(groups)) + (j - (n_s - 1) / 2) * width
                bars = ax.bar(x, np.nan_to_num(mean), width * 0.92, yerr=err, color=color, label=name, capsize=3,
                              edgecolor="black", linewidth=0.5, zorder=2)
                ax.bar_label(bars, labels=["not run" if math.isnan(v) else f"{v:.4f}" for v in mean], fontsize=8,
                             padding=2 if err is None else 6)
                tops = mean + (err if err is not None else 0)
                top = max([top, *tops[np.isfinite(tops)]])
            if reference:
                ref = mean_std(reference, metric)[0]
                ax.axhline(ref, color="#c0392b", ls="--", lw=1.3, label=f"SASRec ({ref:.4f})", zorder=3)
                top = max(top, ref)
            ax.set_ylim(0, top * 1.18 if top > 0 else 1.0)
            ax.set_xticks(np.arange(len(groups)), groups)
            ax.set_ylabel(f"test {label}")
            ax.set_title(label)
            ax.grid(True, axis="y", alpha=0.3, zorder=0)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
        fig.suptitle(title)
        fig.tight_layout(rect=(0, 0.08, 1, 1))
        return _save(fig, path)


def fig_ablation(rf: RunFolder, path: Path) -> Path:
    variants = ablation_variants(rf)
    if not variants:
        raise Omitted("no ablation runs (group \"ablation\") in summary.json")
    full = rf.select(group="main", name=STUDENT)
    runs = ([full] if full else []) + [rf.select(group="ablation", ablation=a) for a in variants]
    labels = (["PRM-KD\n(full)"] if full else []) + [ablation_label(a) for a in variants]
    several = max(len(r) for r in runs) > 1
    return _bar_panels(path, "Ablation study of PRM-KD" + (" (mean ± std over seeds)" if several else ""), labels,
                       [("PRM-KD variant", ROLE_COLOR["distilled"], runs)], rf.select(group="main", name=BASE),
                       several)


def fig_universality(rf: RunFolder, path: Path) -> Path:
    models = universality_models(rf)
    if not models:
        raise Omitted("no universality runs (group \"universality\") in summary.json")
    plain = [rf.select(group="universality", name=m) for m in models]
    dist = [rf.select(group="universality", name=f"prmkd-{m}") for m in models]
    several = max(len(r) for r in plain + dist) > 1
    series = [("plain student", ROLE_COLOR["baseline"], plain), ("PRM-KD student", ROLE_COLOR["distilled"], dist)]
    return _bar_panels(path, "Universality: PRM-KD with other student families" +
                       (" (mean ± std over seeds)" if several else ""), [display_name(m) for m in models], series,
                       None, several)


# --------------------------------------------------------------------------------------------------
# Fig. 5: parameter sweeps


def _sweep_scale(param: str, x: np.ndarray) -> str:
    """log for temperature / kd_weight / wide ranges (symlog when 0 is swept), log2 for hidden sizes."""
    if param == "hidden_size" and np.all(x > 0) and x.max() / x.min() >= 4:
        return "log2"
    if param in ("temperature", "kd_weight") or (np.all(x > 0) and x.max() / x.min() >= 50):
        return "log" if np.all(x > 0) else "symlog"
    return "linear"


def fig_sweeps(rf: RunFolder, path: Path) -> Path:
    params = sweep_params(rf)
    if not params:
        raise Omitted("no parameter sweep runs (group \"sweep\") in summary.json")
    base = rf.select(group="main", name=BASE)
    ncol = 2 if len(params) == 4 else min(len(params), 3)
    nrow = math.ceil(len(params) / ncol)
    leg_cols = 4 if ncol > 1 else 2  # one panel is too narrow for the four entries in one row
    leg_h = 0.3 * (4 // leg_cols) + 0.15  # inches under the panels for the legend
    with _style():
        fig = _figure(max(5.4 * ncol, 6.4), 4.0 * nrow + leg_h)
        axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False)).ravel()
        for ax, param in zip(axes, params):
            _sweep_panel(ax, rf, param, base)
        for ax in axes[len(params):]:
            ax.set_visible(False)
        handles, labels = axes[0].get_legend_handles_labels()
        order = sorted(range(len(labels)), key=lambda i: (not labels[i].startswith("PRM-KD"), labels[i]))
        fig.legend([handles[i] for i in order], [labels[i] for i in order], loc="lower center", ncol=leg_cols,
                   frameon=False)
        fig.suptitle("Parameter analysis of PRM-KD")
        fig.tight_layout(rect=(0, leg_h / (4.0 * nrow + leg_h), 1, 1))
        return _save(fig, path)


def _series(runs: list[dict], xs: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """Mean and std over seeds of `metric` at each swept value (nan where no run has it)."""
    st = [mean_std([r for r in runs if float(r["sweep"]["value"]) == x], metric) for x in xs]
    return np.array([s[0] for s in st]), np.array([s[1] for s in st]), max(s[2] for s in st) > 1


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _sweep_panel(ax, rf: RunFolder, param: str, base: list[dict]) -> None:
    """PRM-KD's NDCG@10 and Recall@10 against the value; plain SASRec dashed (a curve when the sweep trained
    the plain student at each value too, as the pipeline does for hidden_size)."""
    numeric = [r for r in rf.select(group="sweep", sweep_param=param) if _is_num(r["sweep"].get("value"))]
    runs = [r for r in numeric if not r["sweep"].get("plain")]
    plain = [r for r in numeric if r["sweep"].get("plain")]
    xs = np.array(sorted({float(r["sweep"]["value"]) for r in runs + plain}))
    scale = _sweep_scale(param, xs)
    for metric, label in PANEL_METRICS:
        color = METRIC_COLOR[metric]
        mean, std, several = _series(runs, xs, metric)
        ax.errorbar(xs, mean, yerr=std if several else None, marker="o", color=color, capsize=3,
                    label=f"PRM-KD {label}", zorder=3)
        if plain:
            mean, std, several = _series(plain, xs, metric)
            ax.errorbar(xs, mean, yerr=std if several else None, marker="s", ms=4, ls="--", color=color,
                        alpha=0.8, capsize=3, label=f"SASRec {label}", zorder=2)
        elif base:
            ax.axhline(mean_std(base, metric)[0], color=color, ls="--", lw=1.2, alpha=0.8, label=f"SASRec {label}")
    if scale == "symlog":
        ax.set_xscale("symlog", linthresh=float(xs[xs > 0].min()) if np.any(xs > 0) else 1.0)
    elif scale in ("log", "log2"):
        _log_axis(ax.xaxis, base=2 if scale == "log2" else 10)
    if scale == "linear" or len(xs) <= 8:  # few values: tick exactly the swept ones
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.minorticks_off()
    name = SWEEP_LABEL.get(param, param)
    ax.set_xlabel(name + (" (log scale)" if scale != "linear" else ""))
    ax.set_ylabel("test metric")
    ax.set_title(f"PRM-KD vs {name}")
    ax.grid(True, alpha=0.3)
