"""prmkd: distil several pre-trained recommendation models into the small model that runs online (PRM-KD).

The public API (imported on first use, so `import prmkd` stays light):
  prepare, train, distill, build_teacher, import_teacher, evaluate, run_pipeline, Run  (prmkd.api)
  serving.load(EXPORT_DIR)  (prmkd.serving: a torch-free recommender of an exported student)
"""

__version__ = "0.2.0"

_API = ("prepare", "train", "distill", "build_teacher", "import_teacher", "evaluate", "run_pipeline", "Run")
__all__ = [*_API, "serving", "__version__"]


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    if name == "serving":
        import importlib

        return importlib.import_module(".serving", __name__)
    raise AttributeError(f"module 'prmkd' has no attribute '{name}'")
