"""The folder layouts, each in one place: a training run, a teacher build, a pipeline output (docs/CONTRACTS.md).

    run folder (RunDir)         config.json  checkpoint.pt  best.pt  results.json  per_user_{valid,test}.npz
                                .training.lock (held by the process that trains the run)
    teacher build (TeacherDir)  pretrain/  finetune/ (a run folder)  cache/ (manifest.json last)
    pipeline (PipelineLayout)   config.json  data.json  summary.json  efficiency.json  report/  pretrain/
                                teachers/<name>/  baselines/<model>-seed<s>/  distill/prmkd-<student>-seed<s>/
                                ablations/<ablation>-seed<s>/  universality/[prmkd-]<model>-seed<s>/
                                sweeps/[plain-]<param>=<value>-seed<s>/
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..io import held


@dataclass(frozen=True)
class RunDir:
    """One training run's folder."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def results(self) -> Path:
        return self.path / "results.json"

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    def per_user(self, split: str, masked: bool = False) -> Path:
        return self.path / f"per_user_{split}{'_masked' if masked else ''}.npz"

    @property
    def lock(self) -> Path:
        return self.path / ".training.lock"

    @contextmanager
    def training(self, log):
        """Hold the folder's lock while this process trains the run in it; yields whether it had to wait.

        A second process that comes to train the same run (two pipelines over one out folder, a tuning beside a
        pipeline) waits for the first, with one line saying who holds it, instead of writing into the same
        files (`io.held`)."""
        with held(self.lock, log, f"training {self.path}") as waited:
            yield waited

    def evaluation(self, split: str, masked: bool = False) -> Path:
        return self.path / f"eval_{split}{'_masked' if masked else ''}.json"

    @property
    def finished(self) -> bool:
        return self.results.exists() and self.best.exists()

    def __str__(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class TeacherDir:
    """A teacher build: pre-training (when it has no shared folder), fine-tuning run, cache."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @property
    def pretrain(self) -> Path:
        return self.path / "pretrain"

    @property
    def finetune(self) -> RunDir:
        return RunDir(self.path / "finetune")

    @property
    def cache(self) -> Path:
        return self.path / "cache"

    @property
    def manifest(self) -> Path:
        return self.cache / "manifest.json"


@dataclass(frozen=True)
class PipelineLayout:
    """A `prmkd run` output folder."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    config = property(lambda self: self.root / "config.json")
    data = property(lambda self: self.root / "data.json")
    summary = property(lambda self: self.root / "summary.json")
    efficiency = property(lambda self: self.root / "efficiency.json")
    report = property(lambda self: self.root / "report")
    pretrain = property(lambda self: self.root / "pretrain")  # pre-training runs shared by teachers, one per key

    def teacher(self, name: str) -> TeacherDir:
        return TeacherDir(self.root / "teachers" / name)

    def baseline(self, model: str, seed: int) -> RunDir:
        return RunDir(self.root / "baselines" / f"{model}-seed{seed}")

    def distilled(self, student: str, seed: int) -> RunDir:
        return RunDir(self.root / "distill" / f"prmkd-{student}-seed{seed}")

    def ablation(self, name: str, seed: int) -> RunDir:
        return RunDir(self.root / "ablations" / f"{name}-seed{seed}")

    def universality(self, model: str, seed: int, distilled: bool) -> RunDir:
        return RunDir(self.root / "universality" / f"{'prmkd-' if distilled else ''}{model}-seed{seed}")

    def sweep(self, param: str, value, seed: int, plain: bool = False) -> RunDir:
        return RunDir(self.root / "sweeps" / f"{'plain-' if plain else ''}{param}={value}-seed{seed}")

    def extra(self, group: str, name: str, seed: int) -> RunDir:
        """A run of a further group (a baseline such as RecGURU, a tuning run): <group>/<name>-seed<s>."""
        return RunDir(self.root / group / f"{name}-seed{seed}")
