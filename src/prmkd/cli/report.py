"""`prmkd report RUN_DIR [--out DIR]`: tables and plots of a pipeline run folder (Markdown + one HTML page)."""

from __future__ import annotations

from .common import emit


def cmd_report(args) -> None:
    from ..report import build_report

    paths = build_report(args.run_dir, args.out)
    emit({"markdown": str(paths["markdown"]), "html": str(paths["html"]),
          "figures": [str(p) for p in paths["figures"]]})


def register(sub) -> None:
    p = sub.add_parser("report", help="tables (Table 3/4 style) and plots (Fig. 1/3/4/5 style) from a `prmkd run` "
                                      "folder, as report.md and a self-contained report.html")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a pipeline output folder (runs/<name>/ with summary.json)")
    p.add_argument("--out", metavar="DIR", help="where to write the report (default: RUN_DIR/report)")
    p.set_defaults(func=cmd_report)
