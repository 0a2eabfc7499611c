"""Models behind one contract (see `base.Recommender`) and a plain registry.

Each model has its own small `Config` dataclass; `build_model({"name": ..., **options}, dataset)` checks the
options against it (an unknown option is an error naming it).
"""

from __future__ import annotations

import importlib

from ..config import from_dict, to_dict
from ..errors import ConfigError

# name -> "module:Class"; imported late so `import prmkd` stays light
REGISTRY: dict[str, str] = {
    "sasrec": "prmkd.models.sasrec:SASRec",
    "gru4rec": "prmkd.models.gru4rec:GRU4Rec",
    "bert4rec": "prmkd.models.bert4rec:BERT4Rec",
    "fm": "prmkd.models.fm:FM",
    "deepfm": "prmkd.models.deepfm:DeepFM",
    "lightgcn": "prmkd.models.lightgcn:LightGCN",
}


def model_class(name: str):
    if name not in REGISTRY:
        raise ConfigError(f"unknown model '{name}' (known: {', '.join(sorted(REGISTRY))})")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def model_config(spec: dict):
    """(class, config) from a `model` section: {"name": "sasrec", "hidden_size": 64, ...}."""
    spec = dict(spec)
    name = spec.pop("name", "sasrec")
    cls = model_class(name)
    return cls, from_dict(cls.Config, spec, prefix="model.")


def build_model(spec: dict, ds):
    cls, cfg = model_config(spec)
    return cls.from_dataset(cfg, ds)


def resolved_spec(spec: dict) -> dict:
    """The model section with every default filled in (what gets recorded with results)."""
    _, cfg = model_config(spec)
    return {"name": spec.get("name", "sasrec"), **to_dict(cfg)}
