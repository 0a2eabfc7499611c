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
