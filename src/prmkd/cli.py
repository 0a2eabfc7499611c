"""The `prmkd` command. Each handler parses, calls one library function, prints or writes.

User errors (bad files, bad config) print one line `error: ...` and exit with status 2, no traceback.
Handlers check their configuration before importing what does the work (torch), so a mistyped key is
reported at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import PrmkdError


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="TOML or YAML file with [data] [model] [train] [eval] [distill] sections")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set train.lr=5e-4 (repeatable)")


def _run_config(args, extra: list[str] | None = None):
    from .config import RunConfig, load
    from .models import model_config

    cfg = load(RunConfig, args.config, [*(extra or []), *args.overrides])
    model_config(cfg.model)  # an unknown model or model option fails here, before any work
    return cfg


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2))


# --------------------------------------------------------------------------------------------------


def cmd_prepare(args) -> None:
    cfg = _run_config(args, [f"data.path={json.dumps(args.path)}"] if args.path else [])
    from .data.dataset import prepare

    ds = prepare(cfg.data, log=lambda m: print(m, file=sys.stderr))
    _print_json({**ds.summary(), "folder": ds.meta.get("folder"), "notes": ds.meta.get("notes", [])})


def cmd_train(args) -> None:
    extra = [f"model.name={json.dumps(args.model)}"] if args.model else []
    cfg = _run_config(args, extra)
    if cfg.distill.teachers:
        raise PrmkdError("this config lists distill.teachers: use `prmkd distill` for a distilled student")
    from .runner import train_run

    res = train_run(cfg, restart=args.restart, log=_log)
    _print_json({"run": res["name"], "metrics": res["metrics"], "timing": res["timing"]})


def cmd_distill(args) -> None:
    extra = []
    if args.student:
        extra.append(f"model.name={json.dumps(args.student)}")
    if args.teachers:
        extra.append(f"distill.teachers={json.dumps(args.teachers)}")
    cfg = _run_config(args, extra)
    if not cfg.distill.teachers:
        raise PrmkdError("no teachers: pass --teachers CACHE_DIR [CACHE_DIR ...] or set distill.teachers")
    from .runner import train_run

    res = train_run(cfg, restart=args.restart, log=_log)
    _print_json({"run": res["name"], "metrics": res["metrics"], "timing": res["timing"],
                 "distill": res.get("distill")})


def cmd_evaluate(args) -> None:
    from .config import EvalConfig, from_dict, load_file, to_dict, apply_override

    run_dir = Path(args.run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        raise PrmkdError(f"{run_dir}: not a run folder (no config.json)")
    data = {"eval": json.loads(cfg_path.read_text()).get("eval", {})}
    if args.config:
        data["eval"].update(load_file(args.config).get("eval", {}))
    for o in args.overrides:
        if not o.startswith("eval."):
            raise PrmkdError(f"evaluate only takes eval.* overrides, got '{o}'")
        apply_override(data, o)
    eval_cfg = from_dict(EvalConfig, data["eval"], prefix="eval.")
    from .runner import evaluate_run
    from .train import write_json

    res = evaluate_run(run_dir, args.split, eval_cfg, args.device, log=_log)
    tag = f"{args.split}{'_masked' if eval_cfg.mask_history else ''}"
    import numpy as np

    np.savez_compressed(run_dir / f"per_user_{tag}.npz", ranks=res.ranks, **res.per_user)
    write_json(run_dir / f"eval_{tag}.json", {**res.to_json(), "eval": to_dict(eval_cfg)})
    _print_json(res.to_json())


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="prmkd", description="Distil pre-trained recommendation models (PRM-KD).")
    parser.add_argument("--version", action="version", version=f"prmkd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prepare", help="read a dataset, remap ids, split; cache the prepared dataset")
    p.add_argument("path", nargs="?", help="dataset folder or file (or set data.path)")
    _config_args(p)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", help="train a plain model (a baseline student)")
    p.add_argument("--model", help="sasrec | gru4rec | bert4rec | fm | deepfm | lightgcn (or set model.name)")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint or result and start over")
    _config_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("distill", help="train a student with PRM-KD from teacher caches")
    p.add_argument("--student", help="student model name (or set model.name)")
    p.add_argument("--teachers", nargs="+", help="teacher cache folders")
    p.add_argument("--restart", action="store_true")
    _config_args(p)
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("evaluate", help="evaluate a saved run on a split (full ranking)")
    p.add_argument("run_dir")
    p.add_argument("--split", default="test", choices=["valid", "test"])
    p.add_argument("--device", default="auto")
    _config_args(p)
    p.set_defaults(func=cmd_evaluate)

    for register in _extra_commands():
        register(sub)
    return parser


def _extra_commands():
    """Subcommands defined next to the code they drive (teacher, run, report, sweep)."""
    from . import commands

    return commands.REGISTER


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except PrmkdError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume from the last checkpoint", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
