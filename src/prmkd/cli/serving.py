"""`prmkd export RUN_DIR --out DIR` and `prmkd serve DIR`: the distilled student out of prmkd, and served."""

from __future__ import annotations


def register(sub) -> None:
    pass
