"""What every command shares: `--config` / `--set` arguments, the logger, and the output convention.

Output convention: progress and human-readable messages go to stderr (the `prmkd` logger); the result of a command
goes to stdout as one JSON document (`emit`), so `prmkd ... | jq` always works.
"""

from __future__ import annotations

import json
import shlex
import sys

from ..log import info as log  # noqa: F401  (the commands' logger)
from ..log import setup_logging  # noqa: F401


def emit(obj) -> None:
    """The command's result, as JSON on stdout."""
    from ..io import jsonable

    print(json.dumps(obj, indent=2, default=jsonable), flush=True)


def set_args(p, help_extra: str = "") -> None:
    """The one `--set KEY=VALUE` option (repeatable)."""
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set train.lr=5e-4 (repeatable)" + help_extra)


def config_args(p) -> None:
    p.add_argument("--config", "-c", help="TOML or YAML file with [data] [model] [train] [eval] [distill] sections")
    set_args(p)


def only_overrides(overrides: list[str], section: str, command: str) -> None:
    """Commands that take one section only refuse any other override, naming it."""
    from ..errors import ConfigError

    for o in overrides:
        if not o.startswith(section + "."):
            raise ConfigError(f"{command} only takes {section}.* overrides, got '{o}'")


def command_line() -> str:
    return "prmkd " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def nproc_arg(p) -> None:
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="train data-parallel in N processes (torchrun on this machine; gloo on CPU, nccl on GPU)")


def relaunched(args) -> bool:
    """With --nproc N > 1 outside torchrun: run this same command in N processes and exit with their status."""
    import sys

    from .. import parallel

    if args.nproc < 1:
        from ..errors import ConfigError

        raise ConfigError(f"--nproc {args.nproc}: expected 1 or more processes")
    if args.nproc == 1 or parallel.env().active:
        return False
    argv = sys.argv[1:]
    i = next(k for k, a in enumerate(argv) if a == "--nproc" or a.startswith("--nproc="))
    argv = argv[:i] + argv[i + (1 if "=" in argv[i] else 2):]
    raise SystemExit(parallel.launch(args.nproc, argv))


def emit_main(obj) -> None:
    """`emit` on rank 0 only (the other ranks of a data-parallel run say nothing)."""
    from .. import parallel

    if parallel.env().main:
        emit(obj)
