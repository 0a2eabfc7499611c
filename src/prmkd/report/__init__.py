"""Reports of a pipeline run folder: tables like the paper's Table 3 / 4 and plots like its Fig. 1, 3, 4, 5.

`build_report(RUN_DIR)` writes RUN_DIR/report/report.md, report.html (one self-contained page, images inlined)
and the PNGs. The input is the documented pipeline output only (docs/CONTRACTS.md, "Pipeline output").
matplotlib and scipy are imported where used.
"""

from .build import build_report
from .data import RunFolder, load_run_folder
from .plots import fig_ablation, fig_sweeps, fig_tradeoff, fig_universality, place_labels
from .tables import (MainTable, Table, TTest, appendix_table, efficiency_tables, improvement, main_table, paired_test,
                     rank_marks, significance)

__all__ = ["build_report", "RunFolder", "load_run_folder", "main_table", "significance", "paired_test",
           "efficiency_tables", "appendix_table", "improvement", "rank_marks", "MainTable", "Table", "TTest",
           "fig_tradeoff", "fig_ablation", "fig_universality", "fig_sweeps", "place_labels"]
