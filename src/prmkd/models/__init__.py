"""Models behind one contract (see `base.Recommender`) and one registry (`prmkd.registry.Registry`).

Each model has its own small `Config` dataclass; `build_model({"name": ..., **options}, dataset)` checks the
options against it (an unknown option, or a value out of range, is an error naming it).
To add a student: write the class (the contract of `base.Recommender`, a `Config`, `from_dataset`) and
`MODELS.register("name", "module:Class")`; tests/test_contract.py then runs the contract on it.
"""

from __future__ import annotations

from ..config import check_values, from_dict, to_dict
from ..registry import Registry

# imported late, so `import prmkd` stays light
MODELS = Registry("model", {
    "sasrec": "prmkd.models.sasrec:SASRec",
    "gru4rec": "prmkd.models.gru4rec:GRU4Rec",
    "bert4rec": "prmkd.models.bert4rec:BERT4Rec",
    "fm": "prmkd.models.fm:FM",
    "deepfm": "prmkd.models.deepfm:DeepFM",
    "lightgcn": "prmkd.models.lightgcn:LightGCN",
    "recguru": "prmkd.models.recguru:RecGURU",  # a cross-domain baseline (reads a source domain), not a student
})


def model_class(name: str):
    return MODELS.get(name)


def model_config(spec: dict):
    """(class, config) from a `model` section: {"name": "sasrec", "hidden_size": 64, ...}."""
    spec = dict(spec)
    name = spec.pop("name", "sasrec")
    cls = model_class(name)
    cfg = from_dict(cls.Config, spec, prefix="model.")
    check_values(cfg, "model.")
    return cls, cfg


def build_model(spec: dict, ds):
    cls, cfg = model_config(spec)
    return cls.from_dataset(cfg, ds)


def resolved_spec(spec: dict) -> dict:
    """The model section with every default filled in (what gets recorded with results)."""
    _, cfg = model_config(spec)
    return {"name": spec.get("name", "sasrec"), **to_dict(cfg)}
