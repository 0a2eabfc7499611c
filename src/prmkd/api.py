"""The Python face of prmkd: a whole experiment in a few calls.

    data = prmkd.prepare("../shared/data/Scientific_UniSRec")
    plain = prmkd.train("sasrec", data, hidden_size=128)
    teacher = prmkd.build_teacher("configs/teachers/unisrec_scientific.toml")   # or prmkd.import_teacher(...)
    student = prmkd.distill("sasrec", data, [teacher], hidden_size=128)
    prmkd.evaluate(student, "test", mask_history=True)

Keyword options go to the section that has them: training (`epochs`, `lr`, `seed`, ...), then distillation
(`kd_weight`, `temperature`, ...; `distill` only), then the model's own options (`hidden_size`, ...). An option no
section knows is an error that lists them. Runs go to the same folders, with the same fingerprints, as the CLI's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from .config import DataConfig, DistillConfig, EvalConfig, RunConfig, TrainConfig, from_dict, to_dict
from .errors import ConfigError


@dataclass
class Run:
    """A finished training run: its folder and results (results.json)."""

    path: Path
    results: dict

    @property
    def metrics(self) -> dict:
        """{"valid": {...}, "test": {...}} of the run's best weights."""
        return self.results["metrics"]

    def model(self):
        """The trained model (a `models.base.Recommender`) with its best weights."""
        from .experiment.runner import load_run

        return load_run(self.path)[0]


def _data_config(data) -> DataConfig:
    from .data.dataset import SeqDataset

    if isinstance(data, DataConfig):
        return data
    if isinstance(data, SeqDataset):
        if "config" not in data.meta:
            raise ConfigError(f"dataset {data.name} was not made by prmkd.prepare: pass its path instead")
        return from_dict(DataConfig, data.meta["config"], prefix="data.")
    return DataConfig(path=str(data))


def prepare(data, **options):
    """A prepared dataset (`data.dataset.SeqDataset`) from a folder, a file, "recbole:ml-100k" or a DataConfig;
    `options` are DataConfig keys (max_len, users, kcore, ...)."""
    from .data.dataset import prepare as _prepare

    cfg = _data_config(data)
    return _prepare(from_dict(DataConfig, {**to_dict(cfg), **options}, prefix="data.") if options else cfg)


def _split(model: str, options: dict, distill: bool) -> tuple[dict, dict, dict]:
    from .models import model_class

    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    kd_keys = {f.name for f in dataclasses.fields(DistillConfig)} - {"teachers"} if distill else set()
    model_keys = {f.name for f in dataclasses.fields(model_class(model).Config)}
    train, kd, mod = {}, {}, {}
    for k, v in options.items():
        if k in train_keys:
            train[k] = v
        elif k in kd_keys:
            kd[k] = v
        elif k in model_keys:
            mod[k] = v
        else:
            known = sorted(train_keys | kd_keys | model_keys)
            raise ConfigError(f"unknown option '{k}' for {model} (known: {', '.join(known)})")
    return train, kd, mod


def _run(model: str, data, teachers: list | None, out, eval: dict | None, options: dict) -> Run:
    from .experiment.runner import default_out, train_run

    train, kd, mod = _split(model, options, distill=bool(teachers))
    cfg = RunConfig(data=_data_config(data), model={"name": model, **mod},
                    train=from_dict(TrainConfig, {"progress": False, **train}, prefix="train."),
                    eval=from_dict(EvalConfig, eval or {}, prefix="eval."),
                    distill=from_dict(DistillConfig, {**kd, "teachers": [str(t) for t in teachers or []]},
                                      prefix="distill."),
                    out=str(out or ""))
    res = train_run(cfg)
    return Run(Path(cfg.out) if cfg.out else default_out(cfg, res["dataset"]), res)


def train(model: str, data, *, out=None, eval: dict | None = None, **options) -> Run:
    """Train a plain model (sasrec, gru4rec, bert4rec, fm, deepfm, lightgcn) and test it; a finished run with the
    same settings is reused."""
    return _run(model, data, None, out, eval, options)


def distill(student: str, data, teachers: list, *, out=None, eval: dict | None = None, **options) -> Run:
    """Train `student` with PRM-KD from teacher caches (folders, e.g. what `build_teacher` returns)."""
    if not teachers:
        raise ConfigError("distill needs at least one teacher cache")
    return _run(student, data, teachers, out, eval, options)


def build_teacher(config, overrides: list[str] | None = None) -> Path:
    """Pre-train (when the config has sources), fine-tune and export a built-in teacher; returns its cache folder.
    `config` is a teacher TOML/YAML file; `overrides` are `key=value` strings as for `--set`."""
    from .config import load
    from .teachers.build import TeacherRunConfig, build_teacher as _build, teacher_config

    cfg = load(TeacherRunConfig, config, overrides or [])
    teacher_config(cfg)
    return _build(cfg)


def import_teacher(items, instances, manifest, data, out, dtype: str = "float32") -> Path:
    """A teacher cache from an external model's arrays (see `teachers.external` for the portable form)."""
    from .teachers.external import import_teacher as _import

    return _import(Path(items), Path(instances), Path(manifest), prepare(data), Path(out), dtype)


def evaluate(run, split: str = "test", **eval_options) -> dict:
    """Full-ranking metrics of a finished run (a `Run` or its folder) on `split`; `eval_options` are EvalConfig keys
    (mask_history, ks, ...)."""
    from .experiment.layout import RunDir
    from .experiment.runner import evaluate_run
    from .io import read_json

    path = run.path if isinstance(run, Run) else Path(run)
    base = read_json(RunDir(path).config, "run config").get("eval", {})
    cfg = from_dict(EvalConfig, {**base, **eval_options}, prefix="eval.")
    return evaluate_run(path, split, cfg).metrics


def run_pipeline(config, overrides: list[str] | None = None, stages: list[str] | None = None) -> Path:
    """`prmkd run CONFIG`: the whole pipeline, resumable; returns the path of its summary.json."""
    from .experiment.pipeline import STAGES, Pipeline, check_stages, load_pipeline

    cfg = load_pipeline(config, overrides)
    return Pipeline(cfg).run(check_stages(stages) if stages else list(STAGES))
