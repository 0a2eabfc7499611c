"""The `prmkd` command. Each handler parses, calls one library function, and emits its result.

User errors (bad files, bad config, a full disk) print one line `error: ...` on stderr and exit with status 2, no
traceback. Handlers check their configuration before importing what does the work (torch), so a mistyped key or
a value out of range is reported at once, before any folder is written.

Modules: `core` (prepare, train, distill, evaluate), `teacher`, `run` (run, sweep), `report`, `serving`
(export, serve); `common` holds the shared arguments, the logger and the output convention.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import PrmkdError


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    from . import core, report, run, serving, teacher

    parser = argparse.ArgumentParser(prog="prmkd", description="Distil pre-trained recommendation models (PRM-KD).")
    parser.add_argument("--version", action="version", version=f"prmkd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (core, teacher, run, report, serving):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .common import setup_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging()
    try:
        args.func(args)
    except PrmkdError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file the user named or a folder the command writes: say which, and why
        print(f"error: {e.filename or ''}{': ' if e.filename else ''}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume from the last checkpoint", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
