"""Building a teacher cache: pre-train on source domains -> fine-tune on the target -> export (`build_teacher`).

Each stage writes under `out/` and is keyed by a fingerprint of its inputs and configuration, so a rerun
reuses finished stages and an interrupted stage resumes from its checkpoint:
  out/pretrain/   training checkpoints, shared.pt (domain-shared weights), done.json
  out/finetune/   a run folder (config.json, best.pt, results.json, per-user metrics)
  out/cache/      the teacher cache (manifest.json written last)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import parallel
from ..config import DataConfig, EvalConfig, TrainConfig, to_dict, train_key
from ..data.dataset import SeqDataset, cache_root, prepare
from ..env import environment, now
from ..errors import PrmkdError
from ..experiment.layout import TeacherDir
from ..io import content_hash, read_json, write_json
from ..training import seed_everything
from .base import TeacherFamily, teacher_family
from .cache import TeacherCache, evaluate_cache, float16_overflow, write_cache

logger = logging.getLogger("prmkd")


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
    cache_dtype: str = "float16"  # float16 | float32 (float16 gave the same students: cache_dtype_scientific.json)
    pretrain_dir: str = ""  # where pre-training runs go, one folder per key (default: out/pretrain); teachers
    # whose pre-training is the same computation (same key) then share it

    @property
    def label(self) -> str:
        """The teacher's name: `name`, else its family."""
        return self.name or self.family


def teacher_config(cfg: TeacherRunConfig, prefix: str = "teacher.") -> tuple[TeacherFamily, object]:
    """(family, the family's Config from cfg.teacher); an unknown family, option or bad value fails here."""
    family = teacher_family(cfg.family)
    return family, family.config(cfg.teacher, prefix)


def teacher_key(family: TeacherFamily, tcfg) -> dict:
    """The teacher options that identify a run: options its family added later are left out while off."""
    return family.key(tcfg)


def teacher_dir(cfg: TeacherRunConfig, ds: SeqDataset) -> TeacherDir:
    return TeacherDir(Path(cfg.out) if cfg.out else Path("runs") / "teachers" / f"{cfg.label}-{ds.name}")


# --------------------------------------------------------------------------------------------------


def pretrain_key(cfg: TeacherRunConfig, sources: list[SeqDataset]) -> tuple[str, str]:
    """(family, key) of the pre-training computation: what it reads of the teacher options (fine-tuning-only
    options left out), the source datasets and the pre-training loop settings."""
    fam, tcfg = teacher_config(cfg)
    family, shared = fam.pretrain_options(tcfg, sources)
    return family, content_hash({"family": family, "teacher": shared, "sources": [s.fingerprint for s in sources],
                                 "train": train_key(cfg.pretrain)})


def finished_pretrain(folder: Path, key: str) -> dict | None:
    """The record of the pre-training in `folder` if it finished with this `key`, else None."""
    done = Path(folder) / "done.json"
    if done.exists() and (rec := read_json(done)).get("key") == key:
        return rec
    return None


def pretrain_folder(cfg: TeacherRunConfig, family_key: tuple[str, str], target: SeqDataset) -> Path:
    """Where the pre-training `family_key` of `cfg` runs: its shared `pretrain_dir`, else the teacher's own folder."""
    family, key = family_key
    return Path(cfg.pretrain_dir) / f"{family}-{key}" if cfg.pretrain_dir else teacher_dir(cfg, target).pretrain


def pretrain_done(cfg: TeacherRunConfig, family_key: tuple[str, str]) -> bool:
    """Whether the pre-training `family_key` (`pretrain_key`) of `cfg`, in its shared `pretrain_dir`, has already
    finished, so the teachers that share it no longer depend on one another."""
    family, key = family_key
    return bool(cfg.sources and cfg.pretrain_dir and finished_pretrain(Path(cfg.pretrain_dir) / f"{family}-{key}", key))


def run_pretrain(cfg: TeacherRunConfig, log=logger.info) -> tuple[Path | None, dict]:
    """Pre-train on `cfg.sources` (skipped when there are none); returns (shared weights, record)."""
    if not cfg.sources:
        return None, {"pretrained": False}
    fam, tcfg = teacher_config(cfg)
    sources = [prepare(s, log=log) for s in cfg.sources]
    family, key = pretrain_key(cfg, sources)
    folder = pretrain_folder(cfg, (family, key), prepare(cfg.data, log=log))
    done = folder / "done.json"
    if (rec := finished_pretrain(folder, key)) is not None:
        log(f"pre-training already done: {folder}")
        return Path(rec["weights"]), rec
    folder.mkdir(parents=True, exist_ok=True)
    from ..env import resolve_device

    d = parallel.init(resolve_device(cfg.pretrain.device).type)
    if d.active and not fam.pretrain_parallel:  # rank 0 pre-trains alone, the others wait and read its record
        if d.main:
            run_pretrain_alone(cfg, log)
        parallel.barrier()
        return run_pretrain(cfg, log)
    t0 = time.time()
    log(f"pre-training {cfg.family} on {', '.join(s.name for s in sources)}")
    seed_everything(cfg.pretrain.seed)
    path = fam.pretrain(tcfg, sources, cfg.pretrain, folder, cache_root(cfg.data), log)
    rec = {"key": key, "weights": str(path), "pretrained": True, "sources": [s.summary() for s in sources],
           "train": to_dict(cfg.pretrain), "seconds_this_session": round(time.time() - t0, 2), "finished": now()}
    hist = folder / "checkpoint.pt"
    if hist.exists():
        st = torch.load(hist, map_location="cpu", weights_only=False)["state"]
        rec.update(train_seconds=round(st["elapsed"], 2), epochs=st["epoch"], best_epoch=st["best_epoch"],
                   source_valid=st["best_valid"], budget_ended=bool(st.get("budget_ended")))
    elif path.suffix == ".pt" and path.exists():  # a step-based pre-training records its own budget
        ck = torch.load(path, map_location="cpu", weights_only=False)
        if isinstance(ck, dict) and "steps" in ck:
            rec.update(train_seconds=ck.get("train_seconds"), steps=ck["steps"],
                       budget_ended=bool(ck.get("budget_ended")))
    if d.main:
        write_json(done, rec)
    parallel.barrier()
    return path, rec


def run_pretrain_alone(cfg: TeacherRunConfig, log) -> None:
    """`run_pretrain` in this process only (rank 0 of a data-parallel run whose family pre-trains in one process)."""
    import os

    saved = {k: os.environ.pop(k) for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK") if k in os.environ}
    try:
        run_pretrain(cfg, log)
    finally:
        os.environ.update(saved)


def run_finetune(cfg: TeacherRunConfig, pretrained: Path | None, pre_rec: dict, log=logger.info, restart=False):
    """Fine-tune on the target (from the pre-trained weights when given); returns (model, ds, results)."""
    from ..experiment.runner import train_and_test

    fam, tcfg = teacher_config(cfg)
    ds = prepare(cfg.data, log=log)
    t0 = time.time()
    seed_everything(cfg.train.seed)  # initial weights depend on the seed alone, not on what ran before
    model = fam.build(tcfg, ds, cache_root(cfg.data))
    inputs_seconds = time.time() - t0
    if pretrained is not None:
        fam.load_pretrained(model, pretrained)
    fp = finetune_fingerprint(cfg, ds, pre_rec.get("key"))
    record = {"family": cfg.family, "teacher": to_dict(tcfg), "data": to_dict(cfg.data),
              "sources": [to_dict(s) for s in cfg.sources], "pretrain": to_dict(cfg.pretrain),
              "train": to_dict(cfg.train), "eval": to_dict(cfg.eval)}
    extra = {"pretraining": {k: v for k, v in pre_rec.items() if k != "key"},
             "inputs_seconds": round(inputs_seconds, 2), "buffers": sum(b.numel() for b in model.buffers())}
    run = teacher_dir(cfg, ds).finetune
    res = train_and_test(model, ds, train_cfg=cfg.train, eval_cfg=cfg.eval, out=run.path,
                         name=f"teacher-{cfg.label}", role="teacher", config=record, fp=fp,
                         extra=extra, log=log, restart=restart, replace=True)
    model.load_state_dict(torch.load(run.best, map_location="cpu", weights_only=False)["model"])
    return model, ds, res


def finetune_fingerprint(cfg: TeacherRunConfig, ds: SeqDataset, pretrain: str | None) -> str:
    """The fine-tuning run's fingerprint: the teacher options, the target data, the pre-training's key (None
    without one) and the training and evaluation settings."""
    fam, tcfg = teacher_config(cfg)
    return content_hash({"family": cfg.family, "teacher": teacher_key(fam, tcfg), "data": ds.fingerprint,
                         "pretrain": pretrain, "train": train_key(cfg.train), "eval": to_dict(cfg.eval)})


def _exported(man: dict, fingerprint: str, cfg: TeacherRunConfig) -> bool:
    requested = man.get("requested_dtype", man.get("dtype"))  # float16 asked, float32 stored on overflow
    return man.get("teacher_fingerprint") == fingerprint and requested == cfg.cache_dtype


def teacher_built(cfg: TeacherRunConfig) -> bool:
    """Whether `build_teacher(cfg)` would only find its work done: the pre-training (if any) finished, and a cache
    exported from the fine-tuning run of this very configuration. Reads records only; trains nothing."""
    ds = prepare(cfg.data, log=None)
    tdir = teacher_dir(cfg, ds)
    if not tdir.manifest.exists():
        return False
    pre = None
    if cfg.sources:
        family, pre = pretrain_key(cfg, [prepare(s, log=None) for s in cfg.sources])
        if finished_pretrain(pretrain_folder(cfg, (family, pre), ds), pre) is None:
            return False
    try:
        return _exported(read_json(tdir.manifest, "teacher cache manifest"), finetune_fingerprint(cfg, ds, pre), cfg)
    except PrmkdError:
        return False


def run_export(cfg: TeacherRunConfig, model, ds: SeqDataset, results: dict, log=logger.info) -> Path:
    """Write the teacher cache and check that it reproduces the teacher's own metrics."""
    fam, tcfg = teacher_config(cfg)
    tdir = teacher_dir(cfg, ds)
    folder = tdir.cache
    if tdir.manifest.exists():
        if _exported(read_json(tdir.manifest, "teacher cache manifest"), results["fingerprint"], cfg):
            log(f"teacher cache already exported: {folder}")
            return folder
    t0 = time.time()
    model.eval()
    with torch.no_grad():
        arrays = fam.export(model, ds)
    export_seconds = time.time() - t0
    dtype = cfg.cache_dtype
    if dtype == "float16" and (over := float16_overflow(arrays)):
        log(f"{folder}: array '{over[0]}' holds values up to {over[1]:.4g}, beyond float16's range: "
            f"stored as float32 (set cache_dtype = \"float32\" to say so)")
        dtype = "float32"
    write_cache(folder, name=cfg.label, family=cfg.family, ds=ds, similarity=fam.similarity,
                temperature=fam.temperature(tcfg), metrics=results["metrics"], parameters=results["parameters"],
                config=results["config"], dtype=dtype, **arrays,
                extra={"teacher_fingerprint": results["fingerprint"], "requested_dtype": cfg.cache_dtype, "timing": {
                    **results["timing"], "export_seconds": round(export_seconds, 2),
                    "pretrain_seconds": results.get("pretraining", {}).get("train_seconds"),
                    "inputs_seconds": results.get("inputs_seconds")},
                       "buffers": results.get("buffers"), "environment": environment()})
    check = evaluate_cache(TeacherCache(folder, ds), ds, "test", cfg.eval).metrics
    diff = max(abs(check[k] - results["metrics"]["test"][k]) for k in check)
    log(f"exported {folder} in {export_seconds:.0f}s; metrics recomputed from the cache differ by at most {diff:.2g}")
    # float16 rows round the scores: a near-tie may change order, moving a user's metric (1 / n_users of the mean)
    tol = 1e-3 if dtype == "float32" else max(1e-3, 3 / max(ds.n_users, 1))
    if diff > tol:
        raise PrmkdError(f"{folder}: the cache does not reproduce the teacher's test metrics "
                         f"(max difference {diff:.4f})")
    return folder


def build_teacher(cfg: TeacherRunConfig, log=logger.info, restart: bool = False) -> Path:
    """All three stages; returns the cache folder. With several ranks, rank 0 exports."""
    pretrained, rec = run_pretrain(cfg, log)
    model, ds, res = run_finetune(cfg, pretrained, rec, log, restart=restart)
    folder = teacher_dir(cfg, ds).cache
    if parallel.env().main:
        folder = run_export(cfg, model, ds, res, log)
    parallel.barrier()
    return folder

