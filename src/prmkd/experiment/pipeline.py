"""`prmkd run CONFIG`: the whole PRM-KD experiment from one file.

prepare data -> build or reuse teacher caches (pre-training included) -> baselines -> PRM-KD ->
ablations -> universality (FM, DeepFM, LightGCN) -> sweeps -> efficiency -> summary.json -> report.

Every run inside is keyed by a fingerprint of its inputs and configuration (teacher stages by
`teachers.build`, model runs by `runner.train_run`), so a rerun reuses what is finished and an
interrupted run resumes from its last checkpoint. The layout is documented in docs/CONTRACTS.md.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..config import DataConfig, DistillConfig, EvalConfig, RunConfig, TrainConfig, from_dict, to_dict
from ..data.dataset import SeqDataset, prepare
from ..env import environment, git_commit, machine, now
from ..errors import ConfigError, PrmkdError
from ..io import read_json, write_json
from ..log import info, setup_logging
from ..teachers.build import (TeacherRunConfig, build_teacher, pretrain_done, pretrain_key, teacher_built,
                              teacher_config)
from .layout import PipelineLayout, RunDir
from .runner import train_run

STAGES = ("teachers", "baselines", "distill", "ceiling", "ablations", "universality", "sweeps", "efficiency", "report")
TRAINING_STAGES = ("baselines", "distill", "ablations", "universality", "sweeps")  # stages made of `train_run`s
SWEPT = ("temperature", "kd_weight", "epsilon", "hidden_size")


@dataclass
class TeacherSpec:
    """A teacher of the pipeline: a `TeacherRunConfig` whose target data and evaluation are the pipeline's."""

    family: str = "unisrec"
    name: str = ""
    teacher: dict = field(default_factory=dict)
    sources: list[DataConfig] = field(default_factory=list)
    pretrain: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=10, patience=2))
    train: TrainConfig = field(default_factory=TrainConfig)
    cache_dtype: str = "float16"

    @property
    def label(self) -> str:
        """The teacher's name in the pipeline: `name`, else its family."""
        return self.name or self.family


@dataclass
class SweepConfig:
    temperature: list[float] = field(default_factory=list)
    kd_weight: list[float] = field(default_factory=list)
    epsilon: list[float] = field(default_factory=list)
    hidden_size: list[int] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    best_seeds: list[int] = field(default_factory=list)  # more seeds for each parameter's best value on validation


@dataclass
class PipelineConfig:
    name: str = ""  # default: the config file's stem
    seeds: list[int] = field(default_factory=lambda: [0])
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)  # every student run (baselines and distilled)
    models: dict = field(default_factory=dict)  # per model name: its options, e.g. {sasrec = {hidden_size = 64}}
    train_overrides: dict = field(default_factory=dict)  # per model name: TrainConfig keys that differ
    # per universality model: DistillConfig keys that differ from `distill` (e.g. its own lambda, chosen on
    # validation by benchmarks/tune_distill.py --student)
    distill_overrides: dict = field(default_factory=dict)
    teachers: list[TeacherSpec] = field(default_factory=list)
    baselines: list[str] = field(default_factory=lambda: ["gru4rec", "sasrec", "bert4rec"])
    student: str = "sasrec"
    distill: DistillConfig = field(default_factory=DistillConfig)  # its `teachers` are filled in here
    ablations: bool = True  # each teacher alone, w/o IN (all-item candidates), w/o WA (plain average)
    ablation_seeds: list[int] = field(default_factory=list)  # default: `seeds`
    universality: list[str] = field(default_factory=lambda: ["fm", "deepfm", "lightgcn"])
    universality_seeds: list[int] = field(default_factory=list)  # default: `seeds`
    sweep: SweepConfig = field(default_factory=SweepConfig)
    efficiency: bool = True
    ceiling: bool = True  # rank the test users by the fused teacher distribution itself (distillation.ceiling)
    jobs: int = 1  # teachers, then student runs, in this many parallel processes (`prmkd run --jobs` overrides)
    out: str = ""  # default runs/<name>


def load_pipeline(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    from ..config import load
    from ..models import model_config

    cfg = load(PipelineConfig, path, overrides)
    if not cfg.name:
        cfg.name = Path(path).stem
    if not isinstance(cfg.jobs, int) or isinstance(cfg.jobs, bool) or cfg.jobs < 1:
        raise ConfigError(f"{path}: jobs = {cfg.jobs!r}: expected an integer >= 1 (parallel processes)")
    for m in {*cfg.baselines, cfg.student, *cfg.universality}:
        model_config({"name": m, **cfg.models.get(m, {})})
    for m, o in cfg.train_overrides.items():
        from_dict(TrainConfig, {**to_dict(cfg.train), **o}, prefix=f"train_overrides.{m}.")
    for m, o in cfg.distill_overrides.items():
        if m not in cfg.universality:
            raise ConfigError(f"{path}: distill_overrides.{m}: '{m}' is not in universality {cfg.universality} (the "
                              f"student {cfg.student!r} uses [distill] itself)")
        if not isinstance(o, dict) or "teachers" in o:
            raise ConfigError(f"{path}: distill_overrides.{m}: expected a table of [distill] keys other than "
                              "teachers (the teachers are the pipeline's)")
        from_dict(DistillConfig, {**to_dict(cfg.distill), **o}, prefix=f"distill_overrides.{m}.")
    labels = [t.label for t in cfg.teachers]
    for k, t in enumerate(cfg.teachers):
        teacher_config(TeacherRunConfig(family=t.family, teacher=t.teacher), prefix=f"teachers.{t.label}.teacher.")
        if labels.count(t.label) > 1:
            raise ConfigError(f"{path}: two teachers are named '{t.label}' (teachers {labels.index(t.label)} and "
                              f"{k}); give each a distinct name")
    return cfg


class Pipeline:
    def __init__(self, cfg: PipelineConfig, log=None, command: str = "", only_teachers: list[str] | None = None,
                 collect_only: bool = False, jobs: int | None = None):
        self.cfg = cfg
        # teachers, then student runs, in this many parallel processes (`build_teachers_parallel`,
        # `train_runs_parallel`); None: the config's `jobs`
        self.jobs = cfg.jobs if jobs is None else jobs
        self.plan: dict[str, RunConfig] | None = None  # while planning: the unfinished runs the stages would train
        self.only_teachers = only_teachers  # build (or reuse) only these teachers in this process
        self.collect_only = collect_only  # train nothing: summarise and report the finished runs
        self.missing: list[str] = []
        self._main_points: set = set()
        self.best_points: dict = {}  # swept parameter -> its best value on validation (stage_sweeps)
        self._finished: dict[str, Path] | None = None  # see finished_runs
        self.log = log or info
        self.out = Path(cfg.out) if cfg.out else Path("runs") / cfg.name
        self.layout = PipelineLayout(self.out)
        self.command = command
        self.runs: list[dict] = []
        self.caches: dict[str, Path] = {}
        self.ds: SeqDataset | None = None

    # ---- helpers
    def train_cfg(self, model: str, seed: int) -> TrainConfig:
        base = {**to_dict(self.cfg.train), **self.cfg.train_overrides.get(model, {}), "seed": seed}
        return from_dict(TrainConfig, base)

    def run_cfg(self, model: str, seed: int, out: Path, distill: DistillConfig | None = None,
                model_extra: dict | None = None) -> RunConfig:
        return RunConfig(data=self.cfg.data, model={"name": model, **self.cfg.models.get(model, {}),
                                                    **(model_extra or {})},
                         train=self.train_cfg(model, seed), eval=self.cfg.eval,
                         distill=distill or DistillConfig(), out=str(out))

    def train_run(self, rc: RunConfig) -> dict | None:
        """Train (or reuse) one run; with `collect_only`, only a finished run's results (None otherwise). A
        finished run of the same fingerprint elsewhere in the pipeline's folder (a tuning run that is also a
        sweep point, say) is copied, not trained again."""
        from .runner import finished, fingerprint

        fp = fingerprint(rc, self.ds)
        if finished(Path(rc.out), fp) is None and (twin := self.finished_runs().get(fp)) is not None:
            self.log(f"{rc.out}: the same run is finished in {twin}: copied")
            copy_run(twin, Path(rc.out))
        if self.plan is not None:  # planning (train_runs_parallel): note the run, train nothing
            done = finished(Path(rc.out), fp)
            if done is None:
                self.plan.setdefault(fp, rc)  # a twin planned earlier is trained once, then copied
            return done
        if self.collect_only:
            done = finished(Path(rc.out), fp)
            if done is None:
                self.log(f"{rc.out}: not finished, left out (collect only)")
                self.missing.append(str(rc.out))
            return done
        res = train_run(rc, self.ds, log=self.log, replace=True)
        self.finished_runs()[fp] = Path(rc.out)
        return res

    def finished_runs(self, also: list[Path] | tuple = ()) -> dict[str, Path]:
        """fingerprint -> folder of every finished run under the pipeline's folder (read once), and under the
        folders in `also` (added to it; the pipeline's own run comes first for a fingerprint found in both)."""
        if self._finished is None:
            self._finished = {}
            also = [self.out, *also]
        for folder in also:
            for res in sorted(Path(folder).glob("**/results.json")):
                try:
                    fp = read_json(res).get("fingerprint")
                except PrmkdError:
                    continue
                if fp and (res.parent / "best.pt").exists():
                    self._finished.setdefault(fp, res.parent)
        return self._finished

    def record(self, res: dict | None, out: Path | RunDir, group: str, ablation: str | None = None,
               sweep: dict | None = None):
        if res is None:
            return
        keep = ("name", "role", "dataset", "seed", "config", "metrics", "timing", "parameters")
        self.runs.append({**{k: res.get(k) for k in keep}, "group": group, "ablation": ablation, "sweep": sweep,
                          "run_dir": str(out), "budget_ended": bool(res.get("budget_ended"))})

    def kd(self, teachers: list[str] | None = None, **changes) -> DistillConfig:
        names = teachers or list(self.caches)
        return replace(self.cfg.distill, teachers=[str(self.caches[n]) for n in names], **changes)

    def teacher_run_config(self, spec: TeacherSpec) -> TeacherRunConfig:
        return TeacherRunConfig(family=spec.family, name=spec.label, teacher=spec.teacher, data=self.cfg.data,
                                sources=spec.sources, pretrain=spec.pretrain, train=spec.train,
                                eval=self.cfg.eval, out=str(self.layout.teacher(spec.label).path),
                                cache_dtype=spec.cache_dtype, pretrain_dir=str(self.layout.pretrain))

    def selected_teachers(self) -> list[TeacherSpec]:
        """The config's teachers this process builds (or reuses): all, or those named by `only_teachers`."""
        return [t for t in self.cfg.teachers if self.only_teachers is None or t.label in self.only_teachers]

    # ---- stages
    def stage_teachers(self) -> None:
        if self.jobs > 1 and not self.collect_only:
            build_teachers_parallel(self, self.jobs)
        for spec in self.selected_teachers():
            name = spec.label
            tcfg = self.teacher_run_config(spec)
            tdir = self.layout.teacher(name)
            self.log(f"== teacher {name} ({spec.family})")
            if self.collect_only and not tdir.manifest.exists():
                self.log(f"teacher {name}: no cache yet, left out (collect only)")
                self.missing.append(str(tdir.path))
                continue
            folder = build_teacher(tcfg, log=self.log)
            self.caches[name] = folder
            res = read_json(tdir.finetune.results, "results file")
            res["name"] = f"teacher-{name}"
            self.record(res, tdir.finetune, "main")

    def stage_baselines(self) -> None:
        for model in self.cfg.baselines:
            for s in self.cfg.seeds:
                out = self.layout.baseline(model, s).path
                self.log(f"== baseline {model} seed {s}")
                self.record(self.train_run(self.run_cfg(model, s, out)), out, "main")

    def stage_distill(self) -> None:
        if not self.caches:
            self.log("no teachers: skipping distillation")
            return
        for s in self.cfg.seeds:
            out = self.layout.distilled(self.cfg.student, s).path
            self.log(f"== PRM-KD {self.cfg.student} seed {s}")
            self.record(self.train_run(self.run_cfg(self.cfg.student, s, out, self.kd())), out,
                        "main")

    def stage_ablations(self) -> None:
        if not (self.cfg.ablations and self.caches):
            return
        variants = {f"only-{n}": self.kd([n]) for n in self.caches} if len(self.caches) > 1 else {}
        variants["wo-in"] = self.kd(candidates="all")
        if len(self.caches) > 1:  # with one teacher the plain average is the full method itself
            variants["wo-wa"] = self.kd(fusion="average")
        for s in self.cfg.ablation_seeds or self.cfg.seeds:
            for name, kd in variants.items():
                out = self.layout.ablation(name, s).path
                self.log(f"== ablation {name} seed {s}")
                res = self.train_run(self.run_cfg(self.cfg.student, s, out, kd))
                self.record(res, out, "ablation", ablation=name)

    def stage_universality(self) -> None:
        for model in self.cfg.universality:
            for s in self.cfg.universality_seeds or self.cfg.seeds:
                for kd in ([None, self.kd(**self.cfg.distill_overrides.get(model, {}))] if self.caches else [None]):
                    tag = f"prmkd-{model}" if kd else model
                    out = self.layout.universality(model, s, distilled=kd is not None).path
                    self.log(f"== universality {tag} seed {s}")
                    res = self.train_run(self.run_cfg(model, s, out, kd))
                    self.record(res, out, "universality")

    def stage_ceiling(self) -> None:
        """The fused teachers as a ranker (all of them, and every subset of two or more), on the test split."""
        if not (self.cfg.ceiling and len(self.caches) > 1):
            return
        from ..distillation.ceiling import ceiling
        from ..evaluation import EvalResult
        from ..teachers.cache import TeacherCache
        from .runner import save_per_user

        self.log("== ceiling: the fused teacher distribution as a ranker")
        caches = [TeacherCache(self.caches[n], self.ds) for n in self.caches]
        t0 = time.time()
        for entry in ceiling(caches, self.ds, self.cfg.distill, self.cfg.eval):
            name = "fused-" + "+".join(entry["teachers"])
            run = self.layout.extra("ceiling", name, 0)
            run.path.mkdir(parents=True, exist_ok=True)
            save_per_user(run.per_user("test"), EvalResult("test", entry["metrics"], entry["per_user"],
                                                           entry["ranks"]))
            res = {"name": name, "role": "reference", "dataset": self.ds.name, "seed": 0,
                   "config": {"teachers": entry["teachers"], "distill": to_dict(self.cfg.distill)},
                   "metrics": {"test": entry["metrics"]}, "timing": {"seconds": round(time.time() - t0, 2)},
                   "parameters": None}
            write_json(run.results, res)
            self.log(f"{name}: test ndcg@10 {entry['metrics']['ndcg@10']:.4f}  recall@10 "
                     f"{entry['metrics']['recall@10']:.4f}")
            self.record(res, run, "ceiling")

    def main_value(self, param: str):
        """The configured value of a swept parameter (the main runs' setting)."""
        from ..models import model_config

        if param == "hidden_size":
            _, mcfg = model_config({"name": self.cfg.student, **self.cfg.models.get(self.cfg.student, {})})
            return getattr(mcfg, "hidden_size", None)
        return getattr(self.cfg.distill, param)

    def sweep_run(self, param: str, value, seed: int, plain: bool = False) -> dict | None:
        out = self.layout.sweep(param, value, seed, plain=plain).path
        self.log(f"== sweep {'plain ' if plain else ''}{param}={value} seed {seed}")
        if param == "hidden_size":
            rc = self.run_cfg(self.cfg.student, seed, out, None if plain else self.kd(), {"hidden_size": value})
        else:
            rc = self.run_cfg(self.cfg.student, seed, out, self.kd(**{param: value}))
        res = self.train_run(rc)
        self.record(res, out, "sweep", sweep={"param": param, "value": value, **({"plain": True} if plain else {})})
        return res

    def stage_sweeps(self) -> None:
        """Each swept value on `sweep.seeds` (the main setting's value is the main runs, never trained again), then
        the value with the best mean validation NDCG@10 on `sweep.best_seeds` too."""
        sw = self.cfg.sweep
        if not self.caches:
            return
        for param in SWEPT:
            values = getattr(sw, param)
            if not values:
                continue
            main = self.main_value(param)
            valid = {main: self.main_valid(sw.seeds)} if main is not None else {}
            unfinished = False
            for value in values:
                if value == main:
                    continue
                got = [self.sweep_run(param, value, s) for s in sw.seeds]
                unfinished |= any(r is None for r in got)
                valid[value] = [r["metrics"]["valid"]["ndcg@10"] for r in got if r]
                if param == "hidden_size":  # the plain student at each size, for the same plot
                    for s in sw.seeds:
                        self.sweep_run(param, value, s, plain=True)
            self.record_main_point(param)
            scored = {v: sum(x) / len(x) for v, x in valid.items() if x}
            if self.plan is not None and (unfinished or len(scored) < len(valid)):
                continue  # planning: the best value is known once every value's runs have finished
            if sw.best_seeds and scored:
                best = max(scored, key=scored.get)
                self.log(f"== sweep {param}: best on validation {best} ({scored[best]:.4f})")
                self.best_points[param] = {"value": best, "valid_ndcg@10": {str(k): v for k, v in scored.items()}}
                if best != main:
                    for s in sw.best_seeds:
                        self.sweep_run(param, best, s)
                        if param == "hidden_size":
                            self.sweep_run(param, best, s, plain=True)

    def main_valid(self, seeds: list[int]) -> list[float]:
        """Validation NDCG@10 of the finished main PRM-KD runs of `seeds` (nothing is trained here)."""
        runs = [self.layout.distilled(self.cfg.student, s) for s in seeds]
        return [read_json(r.results)["metrics"]["valid"]["ndcg@10"] for r in runs if r.results.exists()]

    def record_main_point(self, param: str) -> None:
        """The main runs (all their seeds) as the sweep's point at the configured value, so each curve passes
        through the setting the main table reports (read from the finished runs; nothing is trained here)."""
        value = self.main_value(param)
        if value is None or (param, value) in self._main_points:
            return
        self._main_points.add((param, value))
        for s in sorted({*self.cfg.seeds, *self.cfg.sweep.seeds}):
            kinds = [(self.layout.distilled(self.cfg.student, s), False)]
            if param == "hidden_size":
                kinds.append((self.layout.baseline(self.cfg.student, s), True))
            for run, plain in kinds:
                if run.results.exists():
                    sweep = {"param": param, "value": value, "main": True, **({"plain": True} if plain else {})}
                    self.record(read_json(run.results), run, "sweep", sweep=sweep)

    def stage_efficiency(self) -> None:
        if not self.cfg.efficiency:
            return
        from .efficiency import measure_pipeline

        self.log("== efficiency (side by side)")
        measure_pipeline(self, self.layout.efficiency)

    def stage_report(self) -> None:
        from ..report import build_report

        paths = build_report(self.out)
        self.log(f"report: {paths}")

    # ---- driver
    def write_summary(self) -> Path:
        comparisons = self.significance()
        summary = {"command": self.command, "commit": git_commit(), "date": now(), "machine": machine(),
                   "dataset": self.ds.summary(), "eval": to_dict(self.cfg.eval), "seeds": self.cfg.seeds,
                   "config": to_dict(self.cfg), "environment": environment(), "runs": self.runs,
                   "not_finished": self.missing, "sweep_best_on_validation": self.best_points,
                   "comparisons": comparisons}
        path = self.layout.summary
        write_json(path, summary)
        return path

    def significance(self) -> list[dict]:
        """Paired t-tests over users (per-user values averaged over seeds) with the relative change of the mean:
        PRM-KD and each distilled student against its plain student; every ablation and swept value against the
        full PRM-KD of the same seeds; the fused teachers (the ceiling) against PRM-KD."""
        from .stats import paired_test

        def test(name, a_runs, b_runs, a, b, **extra) -> None:
            if a_runs and b_runs:
                for metric in ("ndcg@10", "recall@10"):
                    out.append({"name": name, "a": a, "b": b, "metric": metric, **extra,
                                **paired_test([r["run_dir"] for r in a_runs], [r["run_dir"] for r in b_runs],
                                              metric)})

        out: list[dict] = []
        student = "prmkd-" + self.cfg.student
        pairs = [(student, self.cfg.student, "main")]
        pairs += [(f"prmkd-{m}", m, "universality") for m in self.cfg.universality]
        for a, b, group in pairs:
            test(f"{a} vs {b}", [r for r in self.runs if r["name"] == a and r["group"] == group],
                 [r for r in self.runs if r["name"] == b and r["group"] in (group, "main")], a, b)
        full = {r["seed"]: r for r in self.runs if r["name"] == student and r["group"] == "main"}
        variants: dict[str, list[dict]] = {}
        for r in self.runs:
            sw = r.get("sweep") or {}
            if r["group"] == "ablation":
                variants.setdefault(f"ablation {r['ablation']}", []).append(r)
            elif r["group"] == "sweep" and not sw.get("main") and not sw.get("plain"):
                variants.setdefault(f"sweep {sw['param']}={sw['value']}", []).append(r)
        for label, runs in variants.items():
            seeds = sorted(r["seed"] for r in runs if r["seed"] in full)
            test(f"{label} vs {student}", [r for r in runs if r["seed"] in seeds], [full[s] for s in seeds],
                 label, student, seeds=seeds)
        for r in self.runs:
            if r["group"] == "ceiling":
                test(f"{r['name']} vs {student}", [r], list(full.values()), r["name"], student)
        return out

    def plan_runs(self, stages) -> list[RunConfig]:
        """The runs the training stages among `stages` would train now (unfinished ones, one per fingerprint),
        found by going through those stages with training switched off; nothing is recorded or logged."""
        saved = self.runs, self.missing, self.best_points, self._main_points, self.log
        self.runs, self.missing, self.best_points, self._main_points = [], [], {}, set()
        self.log, self.plan = (lambda msg: None), {}
        try:
            for st in TRAINING_STAGES:
                if st in stages:
                    getattr(self, f"stage_{st}")()
            return list(self.plan.values())
        finally:
            self.runs, self.missing, self.best_points, self._main_points, self.log = saved
            self.plan = None

    def run(self, stages=STAGES) -> Path:
        t0 = time.time()
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.layout.config, to_dict(self.cfg))
        self.ds = prepare(self.cfg.data, log=self.log)
        write_json(self.layout.data, self.ds.summary())
        # teachers are needed by every later stage: always built (or reused); with --jobs, a single teacher to
        # build leaves the other processes to the runs that need no teacher meanwhile
        if self.jobs > 1 and not self.collect_only:
            with teacher_free_runs_alongside(self, stages, self.jobs) as beside:
                self.stage_teachers()
            train_runs_parallel(self, stages, self.jobs, beside)
        else:
            self.stage_teachers()
        for st in STAGES[1:-1]:
            if st in stages:
                getattr(self, f"stage_{st}")()
        path = self.write_summary()
        if "report" in stages:
            self.stage_report()
        self.log(f"pipeline {self.cfg.name} done in {time.time() - t0:.0f}s -> {path}")
        return path


def teacher_groups(pipe: Pipeline) -> list[list[TeacherSpec]]:
    """The teachers to build, grouped by pre-training run: teachers whose pre-training is one computation (the
    same `pretrain_key`, e.g. the UniSRec- and UniM2Rec-style ones) are built one after the other in one
    process, until that pre-training has finished (a resumed pipeline): then each is a group of its own.
    Teachers already built (`teacher_built`) are left out, so that a resumed build gives its cores to those left.
    Prepares the source datasets, so that no two processes write one dataset's cache."""
    groups: dict[tuple, list[TeacherSpec]] = {}
    for spec in pipe.selected_teachers():
        name = spec.label
        tcfg = pipe.teacher_run_config(spec)
        if teacher_built(tcfg):
            continue
        if spec.sources:
            sources = [prepare(s, log=pipe.log) for s in spec.sources]
            key = pretrain_key(tcfg, sources)
            if pretrain_done(tcfg, key):
                key = ("teacher", name)
        else:
            key = ("teacher", name)
        groups.setdefault(key, []).append(spec)
    return list(groups.values())


def _build_group(tcfgs: list[TeacherRunConfig], threads: int, queue, parent: int) -> None:
    """Child process: build the teachers of one group in order, logging with the teacher's name. It ends with
    the pipeline process (killed, or stopped by Ctrl-C, which is the pipeline's to handle)."""
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # terminated: unwind, so partial files are removed
    _exit_with_parent(parent)
    torch.set_num_threads(threads)
    name = ""
    try:
        for tcfg in tcfgs:
            name = tcfg.label
            setup_logging(prefix=f"[{name}] ")
            info(f"== teacher {name} ({tcfg.family}), {threads} thread(s)")
            build_teacher(tcfg, log=info)
        queue.put(None)
    except PrmkdError as e:  # a clear error: the parent reports it, naming the teacher
        queue.put(f"teacher {name}: {e}")
        sys.exit(1)
    except BaseException as e:  # anything else is a bug: keep its traceback too
        queue.put(f"teacher {name}: {type(e).__name__}: {e}")
        raise


def _end_processes(procs: list, grace: float = 5.0) -> None:
    """Terminate the processes still running, then kill those that have not ended after `grace` seconds; a second
    Ctrl-C meanwhile does not cut this short."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        alive = [p for p in procs if p.pid is not None and p.is_alive()]
        for p in alive:
            p.terminate()
        deadline = time.time() + grace
        for p in alive:
            p.join(max(0.0, deadline - time.time()))
            if p.is_alive():
                p.kill()
                p.join()
    finally:
        signal.signal(signal.SIGINT, previous)


def build_teachers_parallel(pipe: Pipeline, jobs: int) -> None:
    """Build the pipeline's teachers in up to `jobs` processes (one group of teachers each, torch threads
    split between them). The serial loop in `stage_teachers` then finds every cache finished and reuses it.
    Each stage inside a teacher build is resumable, so an interrupted parallel build resumes like a serial one."""
    import multiprocessing as mp
    import multiprocessing.connection as mpc
    import os
    import queue as queue_mod

    groups = teacher_groups(pipe)
    if len(groups) < 2:
        return
    ctx = mp.get_context("spawn")
    width = min(jobs, len(groups))
    threads = max(1, (os.cpu_count() or 1) // width)
    pipe.log(f"building teachers in up to {width} processes, {threads} torch thread(s) each: "
             + "; ".join(", ".join(s.label for s in g) for g in groups))
    pending, running, errors, procs = list(groups), {}, [], []
    try:
        while pending or running:
            while pending and len(running) < width:  # a freed slot takes the next group
                g = pending.pop(0)
                q = ctx.Queue()
                p = ctx.Process(target=_build_group,
                                args=([pipe.teacher_run_config(s) for s in g], threads, q, os.getpid()))
                procs.append(p)  # before start(): a Ctrl-C between the two must not leave it running
                p.start()
                running[p.sentinel] = (g, p, q)
            for sentinel in mpc.wait(list(running)):  # blocks until a process ends
                g, p, q = running.pop(sentinel)
                p.join()
                try:
                    msg = q.get(timeout=1)
                except queue_mod.Empty:
                    msg = None
                if p.exitcode != 0:
                    names = ", ".join(s.label for s in g)
                    errors.append(msg or f"the process building {names} exited with code {p.exitcode}")
    except BaseException:  # Ctrl-C (or a bug here): no teacher build goes on without the pipeline
        _end_processes(procs)
        raise
    if errors:
        raise PrmkdError("parallel teacher build failed: " + "; ".join(errors) +
                         " (finished stages are kept; rerun to resume, or add --jobs 1 to see the error inline)")


_WORKER_DATA: SeqDataset | None = None  # a run worker's dataset, prepared once per process
_WORKER_THREADS = 1


def _exit_with_parent(parent: int) -> None:
    """A worker whose pipeline process is gone (killed) stops, instead of training on into run folders that a
    rerun of the pipeline is about to train again."""
    import os
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _run_worker_init(data: DataConfig, threads: int, parent: int) -> None:
    import signal

    global _WORKER_DATA, _WORKER_THREADS
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the pipeline's to handle: it stops the workers
    _exit_with_parent(parent)
    _WORKER_THREADS = threads
    setup_logging()
    _WORKER_DATA = prepare(data, log=None)


def _run_worker(rc: RunConfig, label: str) -> tuple[str, float | None, float]:
    """Child process: train one run; returns its label, test NDCG@10 and seconds. Any failure comes back as a
    RuntimeError holding its message (a bug: its traceback too), which always pickles."""
    import traceback

    import torch

    t0 = time.time()
    torch.set_num_threads(_WORKER_THREADS)  # a previous run's own train.threads must not carry over
    setup_logging(prefix=f"[{label}] ")
    try:
        res = train_run(rc, _WORKER_DATA, log=info, replace=True)
    except PrmkdError as e:
        raise RuntimeError(str(e)) from None
    except Exception as e:
        raise RuntimeError(f"{type(e).__name__}: {e}\n{traceback.format_exc()}") from None
    return label, res["metrics"].get("test", {}).get("ndcg@10"), time.time() - t0


def _stop(pool) -> None:
    """Cancel what has not started and end the workers now (Ctrl-C, or the pool broke)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())  # shutdown forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    _end_processes(procs)


def _start_runs(pipe: Pipeline, plan: list[RunConfig], width: int, threads: int):
    """A pool of `width` worker processes (`threads` torch threads each) with `plan` submitted: (pool, futures)."""
    import multiprocessing as mp
    import os
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(width, mp_context=mp.get_context("spawn"), initializer=_run_worker_init,
                               initargs=(pipe.cfg.data, threads, os.getpid()))
    futures = {}
    try:
        for rc in plan:
            label = str(Path(rc.out).relative_to(pipe.out)) if Path(rc.out).is_relative_to(pipe.out) \
                else str(rc.out)
            futures[pool.submit(_run_worker, rc, label)] = label
    except BaseException:
        _stop(pool)
        raise
    return pool, futures


def _finish_runs(pipe: Pipeline, pool, futures: dict) -> None:
    """Wait for the submitted runs, logging each as it ends; a failed run is reported by name after the others
    have finished (PrmkdError). Ctrl-C or a broken pool stops the workers."""
    from concurrent.futures import as_completed
    from concurrent.futures.process import BrokenProcessPool

    n, errors = len(futures), []
    try:
        for k, fut in enumerate(as_completed(futures), 1):
            try:
                label, ndcg, secs = fut.result()
            except BrokenProcessPool:
                left = n - k + 1
                raise PrmkdError(f"a worker process ended abruptly (killed, or out of memory?) with {left} of "
                                 f"{n} run(s) unfinished" +
                                 "".join(f"; also failed: {e}" for e in errors) +
                                 ". Finished runs are kept: rerun to resume, with fewer --jobs if memory "
                                 "is short") from None
            except RuntimeError as e:
                errors.append(f"{futures[fut]}: {e}")
                pipe.log(f"[{k}/{n}] {futures[fut]} failed: {str(e).splitlines()[0]}")
                continue
            got = f"test ndcg@10 {ndcg:.4f}, " if ndcg is not None else ""
            pipe.log(f"[{k}/{n}] {label} finished ({got}{secs:.0f}s)")
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown(wait=True)
    pipe._finished = None  # the new runs, for the twin lookup of `train_run`
    if errors:
        raise PrmkdError(f"{len(errors)} parallel run(s) failed: " + "; ".join(errors) +
                         " (finished runs are kept; rerun to resume, or add --jobs 1 to see the error inline)")


@dataclass
class RunsBeside:
    """The teacher-free runs started beside a teacher build: their pool, {future: label} and {label: run
    folder} (no pool when none were started)."""
    pool: object = None
    futures: dict = field(default_factory=dict)
    outs: dict = field(default_factory=dict)


@contextmanager
def teacher_free_runs_alongside(pipe: Pipeline, stages, jobs: int):
    """While the body builds the pipeline's teachers: when exactly one teacher is left to build (its build is one
    process), the runs that need no teacher (plain baselines, plain universality twins) train in `jobs - 1`
    worker processes beside it, and the teacher gets the remaining share of the cores. On a 2-core CPU that is
    one thread each: ML-100K's teacher takes 1.5x as long on one thread as on two, and its epochs came out the
    same. Otherwise (several teachers to build, all built already, a data-parallel launch) the body runs alone.
    Yields a `RunsBeside` that `train_runs_parallel` takes over when the teacher is built (the runs are not
    waited for here: the freed cores start the distilled runs at once); an error or Ctrl-C in the body stops
    them."""
    import os

    import torch

    from .. import parallel

    beside = RunsBeside()
    to_build = [s for s in pipe.selected_teachers() if not pipe.layout.teacher(s.label).manifest.exists()]
    plan = pipe.plan_runs(stages) if len(to_build) == 1 and not parallel.env().active else []
    if not plan:  # (before the teachers exist, the plan holds only the runs that need none)
        yield beside
        return
    cores = os.cpu_count() or 1
    width = min(jobs - 1, len(plan))
    threads = max(1, cores // jobs)
    pipe.log(f"training {len(plan)} run(s) that need no teacher in up to {width} process(es), {threads} torch "
             f"thread(s) each, while teacher {to_build[0].label} is built with {max(1, cores - width * threads)}")
    pool, futures = _start_runs(pipe, plan, width, threads)
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, cores - width * threads))
    try:
        yield beside
    except BaseException:
        _stop(pool)
        raise
    finally:
        torch.set_num_threads(previous)
    beside.pool, beside.futures = pool, futures
    beside.outs = {label: rc.out for label, rc in zip(futures.values(), plan)}


def _take_over(pipe: Pipeline, beside: RunsBeside | None) -> tuple[object, dict, set[str]] | None:
    """The teacher is built: the runs beside it not yet handed to a worker are cancelled (the next plan trains them
    with the distilled runs, on every process); (pool, futures, run folders) of those finished, training or
    queued at a worker (the executor queues one run or two ahead), or None."""
    if beside is None or beside.pool is None:
        return None
    held = {fut: label for fut, label in beside.futures.items() if not fut.cancel()}
    pipe.log(f"teacher built: {len(held)} run(s) beside it finished, training or queued there, "
             f"{len(beside.futures) - len(held)} not yet queued move to the runs below")
    pipe._finished = None  # runs beside it have finished since the last look: their twins are copied, not trained
    return beside.pool, held, {beside.outs[label] for label in held.values()}


def train_runs_parallel(pipe: Pipeline, stages, jobs: int, beside: RunsBeside | None = None) -> None:
    """Train the student runs of the training stages among `stages` in up to `jobs` processes (torch threads
    split between them; a run's own `train.threads` wins), distilled runs first as the longest. Runs that need
    others' results (a sweep's best value on more seeds) are planned again once those have finished. The
    stages then run as usual and find every run finished, so the summary, the records and every run's
    fingerprint are exactly a serial pipeline's; a run's last digits can differ from one trained with more
    threads. A failed run is reported by name after the others have finished; rerun to resume. Inside a
    data-parallel launch (torchrun) the runs stay serial: each rank must train the same run.

    `beside`: runs started beside the teacher build (`teacher_free_runs_alongside`). Those still training
    finish in their own process while the first pool here starts at full width, so no core waits for them
    (for a while there is one process more than `jobs`; every run keeps its thread count, so its results do
    not change)."""
    from .. import parallel

    if parallel.env().active:  # (no runs beside the teacher there either)
        pipe.log("--jobs is ignored inside a data-parallel launch: every rank trains the same runs in turn")
        return
    held = None
    try:
        held = _take_over(pipe, beside)
        done_before: set[str] = set(held[2]) if held else set()
        while plan := [rc for rc in pipe.plan_runs(stages) if rc.out not in done_before]:
            plan.sort(key=lambda rc: not rc.distill.teachers)  # stable: distilled runs first
            train_planned(pipe, plan, jobs)
            done_before.update(rc.out for rc in plan)
            if held:  # before any plan that may need their results
                _finish_runs(pipe, held[0], held[1])
                held = None
        if held:
            _finish_runs(pipe, held[0], held[1])
    except PrmkdError as e:  # a run failed in the new pool: the runs beside it still end first, then both are named
        if held:
            try:
                _finish_runs(pipe, held[0], held[1])
            except PrmkdError as also:
                raise PrmkdError(f"{e}; {also}") from None
        raise
    except BaseException:
        if held:
            _stop(held[0])
        raise


def train_planned(pipe: Pipeline, plan: list[RunConfig], jobs: int) -> None:
    """Train the given runs in up to `jobs` processes (the torch threads split between them; a run's own
    `train.threads` wins), in the order given; a failed run is reported by name after the others have finished."""
    import os

    if not plan:
        return
    threads = max(1, (os.cpu_count() or 1) // jobs)
    width = min(jobs, len(plan))
    pipe.log(f"training {len(plan)} run(s) in up to {width} processes, {threads} torch thread(s) each")
    pool, futures = _start_runs(pipe, plan, width, threads)
    _finish_runs(pipe, pool, futures)


def copy_run(src: Path, dest: Path) -> None:
    """A finished run folder's files into `dest` (hard links where the file system allows); results.json last, so
    an interrupted copy is an unfinished run. A killed writer's leftover temporary files (io.write_atomic's
    `NAME.PID.tmp.SUFFIX`) and the training lock are not copied."""
    import os
    import re
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    run = RunDir(src)
    files = sorted((f for f in src.iterdir() if f.is_file() and f not in (run.checkpoint, run.lock)
                    and not re.search(r"\.\d+\.tmp(\.|$)", f.name)), key=lambda f: f.name == "results.json")
    for f in files:
        target = dest / f.name
        target.unlink(missing_ok=True)
        try:
            os.link(f, target)
        except OSError:
            shutil.copy2(f, target)


def check_stages(stages: list[str]) -> list[str]:
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise ConfigError(f"unknown stage '{bad[0]}' (known: {', '.join(STAGES)})")
    return stages
