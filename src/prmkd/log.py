"""The one logger: library code reports through `logging.getLogger("prmkd")`; the CLI (and each worker process
it spawns) shows it on stderr as plain lines, so stdout stays for results."""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("prmkd")


def setup_logging(level: int = logging.INFO, prefix: str = "") -> None:
    """Plain messages (after `prefix`) on stderr, configured once per process."""
    for h in list(logger.handlers):
        if getattr(h, "_prmkd", False):
            logger.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(prefix.replace("%", "%%") + "%(message)s"))
    handler._prmkd = True
    logger.addHandler(handler)
    logger.setLevel(level)


def info(msg: str) -> None:
    logger.info(msg)
