"""Serving an exported student: `prmkd.serving.load(DIR)` (ONNX Runtime, numpy, faiss; no torch) and the HTTP
service (`serving.app`, FastAPI). Exporting (`serving.export.export_run`) needs torch; loading does not.
The optional dependencies come with `pip install 'prmkd[serve]'`."""

from __future__ import annotations


def load(folder, **options):
    """An exported student (a folder written by `prmkd export`), ready to `recommend`; see `serving.runtime`."""
    from .runtime import Recommender

    return Recommender(folder, **options)


def export_run(run_dir, out, **options):
    """`prmkd export RUN_DIR --out DIR` from Python; see `serving.export`."""
    from .export import export_run as _export

    return _export(run_dir, out, **options)
