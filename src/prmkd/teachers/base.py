"""The teacher-family contract and its registry.

A family is one kind of PRM (UniSRec-, Recformer-, UniM2Rec-style). It says how to build a teacher of that kind for
a dataset, how to pre-train its domain-shared part on source domains and carry it over, and how to export a
teacher cache. `teachers.build` drives every family through this class alone; tests/test_contract.py runs the
contract on every registered family.

To add a family: subclass `TeacherFamily`, set `name`, `Config`, `similarity`, implement `build`, `pretrain` and
`load_pretrained` (and `export` when the model is not a plain `item_table()` / `encode` factorisation), then
`TEACHERS.register("name", "module:Class")`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, ClassVar

from ..config import from_dict, to_dict, without_later_options
from ..data.dataset import SeqDataset
from ..registry import Registry


class TeacherFamily:
    name: ClassVar[str] = ""
    Config: ClassVar[type]
    similarity: ClassVar[str] = "cos"  # "dot" | "cos": how the cache's instance and item rows are compared
    # options that only fine-tuning reads: teachers differing only in these share one pre-training run
    finetune_only: ClassVar[tuple[str, ...]] = ()
    # options added after teachers were fingerprinted, each with its "off" value: left out of a fingerprint while
    # off, so the teachers and pre-training runs made before them keep their identity
    added_later: ClassVar[dict] = {}
    # parameters that only pre-training trains (fine-tuning freezes them): the contract test allows them no gradient
    pretrain_only: ClassVar[tuple[str, ...]] = ()
    # pre-training runs on `training.fit`, and so data-parallel like fine-tuning; else rank 0 pre-trains alone
    pretrain_parallel: ClassVar[bool] = True

    # ---- configuration
    def config(self, options: dict, prefix: str = "teacher."):
        """The family's Config from a `teacher` section (unknown keys and bad values are errors naming them)."""
        return from_dict(self.Config, options, prefix=prefix)

    def key(self, cfg) -> dict:
        """The options that identify a teacher (later options left out while off)."""
        return without_later_options(to_dict(cfg), self.added_later)

    def temperature(self, cfg) -> float:
        return float(cfg.temperature)

    # ---- the three stages
    def build(self, cfg, ds: SeqDataset, cache_dir: str | Path):
        """A fresh teacher (a `models.base.Recommender`) for dataset `ds`."""
        raise NotImplementedError

    def pretrain_options(self, cfg, sources: list[SeqDataset]) -> tuple[str, dict]:
        """(family, options) that decide the pre-training computation: the key without fine-tuning-only options.
        Families sharing one pre-training code path return the same family name."""
        return self.name, {k: v for k, v in self.key(cfg).items() if k not in self.finetune_only}

    def pretrain(self, cfg, sources: list[SeqDataset], train_cfg, out_dir: Path, cache_dir, log: Callable) -> Path:
        """Pre-train on the source domains; returns the checkpoint of the domain-shared weights."""
        raise NotImplementedError

    def load_pretrained(self, model, path: Path) -> None:
        raise NotImplementedError

    def export(self, model, ds: SeqDataset) -> dict:
        """Teacher-cache arrays {items, train, valid, test} of a fine-tuned teacher."""
        from .cache import export_arrays

        return export_arrays(model, ds)


TEACHERS = Registry("teacher family", {
    "unisrec": "prmkd.teachers.unisrec:UniSRec",
    "recformer": "prmkd.teachers.recformer:Recformer",
    "unim2rec": "prmkd.teachers.unim2rec:UniM2Rec",
})


def teacher_family(name: str) -> TeacherFamily:
    return TEACHERS.get(name)()
