"""Building a teacher cache: pre-train on source domains -> fine-tune on the target -> export.

Each stage writes under `out/` and is keyed by a fingerprint of its inputs and configuration, so a rerun
reuses finished stages and an interrupted stage resumes from its checkpoint:
  out/pretrain/   training checkpoints, shared.pt (domain-shared weights), done.json
  out/finetune/   a run folder (config.json, best.pt, results.json, per-user metrics)
  out/cache/      the teacher cache (manifest.json written last)
"""

from __future__ import annotations

import hashlib
import importlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import DataConfig, EvalConfig, TrainConfig, from_dict, to_dict, train_key, without_later_options
from ..data.dataset import SeqDataset, cache_root, prepare
from ..env import environment, now
from ..errors import ConfigError, PrmkdError
from ..train import seed_everything
from .cache import TeacherCache, evaluate_cache, export_arrays, write_cache

FAMILIES = {
    "unisrec": "prmkd.teachers.unisrec",
    "recformer": "prmkd.teachers.recformer",
    "unim2rec": "prmkd.teachers.unim2rec",
}


def family_module(name: str):
    if name not in FAMILIES:
        raise ConfigError(f"unknown teacher family '{name}' (known: {', '.join(FAMILIES)})")
    return importlib.import_module(FAMILIES[name])


@dataclass
class TeacherRunConfig:
    family: str = "unisrec"
    name: str = ""  # the cache's name (default: the family)
    teacher: dict = field(default_factory=dict)  # the family's Config options
    data: DataConfig = field(default_factory=DataConfig)  # the target domain
    sources: list[DataConfig] = field(default_factory=list)  # source domains for pre-training ([] = none)
    pretrain: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=10, patience=2))
    train: TrainConfig = field(default_factory=TrainConfig)  # fine-tuning on the target
    eval: EvalConfig = field(default_factory=EvalConfig)
    out: str = ""  # default runs/teachers/<name>-<target dataset>
    cache_dtype: str = "float32"  # float32 | float16
    pretrain_dir: str = ""  # where pre-training runs go, one folder per key (default: out/pretrain); teachers
    # whose pre-training is the same computation (same key) then share it


def teacher_config(cfg: TeacherRunConfig):
    mod = family_module(cfg.family)
    return mod, from_dict(mod.Config, cfg.teacher, prefix="teacher.")


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def teacher_key(mod, tcfg) -> dict:
    """The teacher options that identify a run: options its family added later are left out while off."""
    return without_later_options(to_dict(tcfg), getattr(mod, "ADDED_LATER", {}))


def out_dir(cfg: TeacherRunConfig, ds: SeqDataset) -> Path:
    return Path(cfg.out) if cfg.out else Path("runs") / "teachers" / f"{cfg.name or cfg.family}-{ds.name}"


# --------------------------------------------------------------------------------------------------


def pretrain_key(cfg: TeacherRunConfig, sources: list[SeqDataset]) -> tuple[str, str]:
    """(family, key) of the pre-training computation: what it reads of the teacher options (fine-tuning-only
    options left out), the source datasets and the pre-training loop settings."""
    mod, tcfg = teacher_config(cfg)
    if hasattr(mod, "pretrain_options"):  # what the pre-training computation depends on
        family, shared = mod.pretrain_options(tcfg, sources)
    else:
        family = cfg.family
        shared = {k: v for k, v in teacher_key(mod, tcfg).items() if k not in getattr(mod, "FINETUNE_ONLY", ())}
    return family, _hash({"family": family, "teacher": shared, "sources": [s.fingerprint for s in sources],
                          "train": train_key(cfg.pretrain)})


def run_pretrain(cfg: TeacherRunConfig, log=print) -> tuple[Path | None, dict]:
    """Pre-train on `cfg.sources` (skipped when there are none); returns (shared weights, record)."""
    if not cfg.sources:
        return None, {"pretrained": False}
    mod, tcfg = teacher_config(cfg)
    sources = [prepare(s, log=log) for s in cfg.sources]
    family, key = pretrain_key(cfg, sources)
    target = prepare(cfg.data, log=log)
    folder = Path(cfg.pretrain_dir) / f"{family}-{key}" if cfg.pretrain_dir else out_dir(cfg, target) / "pretrain"
    done = folder / "done.json"
    if done.exists() and json.loads(done.read_text()).get("key") == key:
        rec = json.loads(done.read_text())
        log(f"pre-training already done: {folder}")
        return Path(rec["weights"]), rec
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    log(f"pre-training {cfg.family} on {', '.join(s.name for s in sources)}")
    seed_everything(cfg.pretrain.seed)
    path = mod.pretrain(tcfg, sources, cfg.pretrain, folder, cache_root(cfg.data), log)
    rec = {"key": key, "weights": str(path), "pretrained": True, "sources": [s.summary() for s in sources],
           "train": to_dict(cfg.pretrain), "seconds_this_session": round(time.time() - t0, 2), "finished": now()}
    hist = folder / "checkpoint.pt"
    if hist.exists():
        st = torch.load(hist, map_location="cpu", weights_only=False)["state"]
        rec.update(train_seconds=round(st["elapsed"], 2), epochs=st["epoch"], best_epoch=st["best_epoch"],
                   source_valid=st["best_valid"])
    done.write_text(json.dumps(rec, indent=2))
    return path, rec


def run_finetune(cfg: TeacherRunConfig, pretrained: Path | None, pre_rec: dict, log=print, restart=False):
    """Fine-tune on the target (from the pre-trained weights when given); returns (model, ds, results)."""
    from ..runner import train_and_test

    mod, tcfg = teacher_config(cfg)
    ds = prepare(cfg.data, log=log)
    t0 = time.time()
    seed_everything(cfg.train.seed)  # initial weights depend on the seed alone, not on what ran before
    model = mod.build(tcfg, ds, cache_root(cfg.data))
    inputs_seconds = time.time() - t0
    if pretrained is not None:
        mod.load_pretrained(model, pretrained)
    fp = _hash({"family": cfg.family, "teacher": teacher_key(mod, tcfg), "data": ds.fingerprint,
                "pretrain": pre_rec.get("key"), "train": train_key(cfg.train), "eval": to_dict(cfg.eval)})
    record = {"family": cfg.family, "teacher": to_dict(tcfg), "data": to_dict(cfg.data),
              "sources": [to_dict(s) for s in cfg.sources], "pretrain": to_dict(cfg.pretrain),
              "train": to_dict(cfg.train), "eval": to_dict(cfg.eval)}
    extra = {"pretraining": {k: v for k, v in pre_rec.items() if k != "key"},
             "inputs_seconds": round(inputs_seconds, 2), "buffers": sum(b.numel() for b in model.buffers())}
    res = train_and_test(model, ds, train_cfg=cfg.train, eval_cfg=cfg.eval, out=out_dir(cfg, ds) / "finetune",
                         name=f"teacher-{cfg.name or cfg.family}", role="teacher", config=record, fp=fp,
                         extra=extra, log=log, restart=restart)
    best = out_dir(cfg, ds) / "finetune" / "best.pt"
    model.load_state_dict(torch.load(best, map_location="cpu", weights_only=False)["model"])
    return model, ds, res


def run_export(cfg: TeacherRunConfig, model, ds: SeqDataset, results: dict, log=print) -> Path:
    """Write the teacher cache and check that it reproduces the teacher's own metrics."""
    mod, tcfg = teacher_config(cfg)
    folder = out_dir(cfg, ds) / "cache"
    manifest = folder / "manifest.json"
    if manifest.exists() and json.loads(manifest.read_text()).get("teacher_fingerprint") == results["fingerprint"]:
        log(f"teacher cache already exported: {folder}")
        return folder
    t0 = time.time()
    model.eval()
    with torch.no_grad():
        arrays = mod.export(model, ds) if hasattr(mod, "export") else export_arrays(model, ds)
    export_seconds = time.time() - t0
    write_cache(folder, name=cfg.name or cfg.family, family=cfg.family, ds=ds, similarity=mod.SIMILARITY,
                temperature=tcfg.temperature, metrics=results["metrics"], parameters=results["parameters"],
                config=results["config"], dtype=cfg.cache_dtype, **arrays,
                extra={"teacher_fingerprint": results["fingerprint"], "timing": {
                    **results["timing"], "export_seconds": round(export_seconds, 2),
                    "pretrain_seconds": results.get("pretraining", {}).get("train_seconds"),
                    "inputs_seconds": results.get("inputs_seconds")},
                       "buffers": results.get("buffers"), "environment": environment()})
    check = evaluate_cache(TeacherCache(folder, ds), ds, "test", cfg.eval).metrics
    diff = max(abs(check[k] - results["metrics"]["test"][k]) for k in check)
    log(f"exported {folder} in {export_seconds:.0f}s; metrics recomputed from the cache differ by at most {diff:.2g}")
    if diff > 1e-3:
        raise PrmkdError(f"{folder}: the cache does not reproduce the teacher's test metrics (max difference {diff:.4f})")
    return folder


def build_teacher(cfg: TeacherRunConfig, log=print, restart: bool = False) -> Path:
    """All three stages; returns the cache folder."""
    pretrained, rec = run_pretrain(cfg, log)
    model, ds, res = run_finetune(cfg, pretrained, rec, log, restart=restart)
    return run_export(cfg, model, ds, res, log)

