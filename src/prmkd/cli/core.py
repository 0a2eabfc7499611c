"""`prmkd prepare | train | distill | evaluate`."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import PrmkdError
from .common import config_args, emit, emit_main, log, nproc_arg, only_overrides, relaunched


def _run_config(args, extra: list[str] | None = None):
    from ..config import RunConfig, load
    from ..models import model_config

    cfg = load(RunConfig, args.config, [*(extra or []), *args.overrides])
    model_config(cfg.model)  # an unknown model, option or value fails here, before any work
    return cfg


def cmd_prepare(args) -> None:
    cfg = _run_config(args, [f"data.path={json.dumps(args.path)}"] if args.path else [])
    from ..data.dataset import prepare

    ds = prepare(cfg.data, log=log)
    emit({**ds.summary(), "folder": ds.meta.get("folder"), "notes": ds.meta.get("notes", [])})


def cmd_train(args) -> None:
    relaunched(args)
    extra = [f"model.name={json.dumps(args.model)}"] if args.model else []
    cfg = _run_config(args, extra)
    if cfg.distill.teachers:
        raise PrmkdError("this config lists distill.teachers: use `prmkd distill` for a distilled student")
    from ..experiment.runner import train_run

    res = train_run(cfg, restart=args.restart, log=log)
    emit_main({"run": res["name"], "metrics": res.get("metrics"), "timing": res.get("timing")})


def cmd_distill(args) -> None:
    relaunched(args)
    extra = []
    if args.student:
        extra.append(f"model.name={json.dumps(args.student)}")
    if args.teachers:
        extra.append(f"distill.teachers={json.dumps(args.teachers)}")
    cfg = _run_config(args, extra)
    if not cfg.distill.teachers:
        raise PrmkdError("no teachers: pass --teachers CACHE_DIR [CACHE_DIR ...] or set distill.teachers")
    from ..experiment.runner import train_run

    res = train_run(cfg, restart=args.restart, log=log)
    emit_main({"run": res["name"], "metrics": res.get("metrics"), "timing": res.get("timing"),
               "distill": res.get("distill")})


def cmd_evaluate(args) -> None:
    from ..config import EvalConfig, apply_override, from_dict, load_file, to_dict
    from ..experiment.layout import RunDir
    from ..io import read_json, write_json

    run = RunDir(args.run_dir)
    if not run.config.exists():
        raise PrmkdError(f"{run.path}: not a run folder (no config.json)")
    data = {"eval": read_json(run.config, "run config").get("eval", {})}
    if args.config:
        data["eval"].update(load_file(args.config).get("eval", {}))
    only_overrides(args.overrides, "eval", "evaluate")
    for o in args.overrides:
        apply_override(data, o)
    eval_cfg = from_dict(EvalConfig, data["eval"], prefix="eval.")
    from ..experiment.runner import evaluate_run, save_per_user

    res = evaluate_run(Path(args.run_dir), args.split, eval_cfg, args.device, log=log)
    save_per_user(run.per_user(args.split, eval_cfg.mask_history), res)
    write_json(run.evaluation(args.split, eval_cfg.mask_history), {**res.to_json(), "eval": to_dict(eval_cfg)})
    emit(res.to_json())


def register(sub) -> None:
    p = sub.add_parser("prepare", help="read a dataset, remap ids, split; cache the prepared dataset")
    p.add_argument("path", nargs="?", help="dataset folder or file (or set data.path)")
    config_args(p)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", help="train a plain model (a baseline student)")
    p.add_argument("--model", help="sasrec | gru4rec | bert4rec | fm | deepfm | lightgcn (or set model.name)")
    p.add_argument("--restart", action="store_true", help="train again even if the run is finished, or replace "
                                                          "another finished run in its folder")
    nproc_arg(p)
    config_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("distill", help="train a student with PRM-KD from teacher caches")
    p.add_argument("--student", help="student model name (or set model.name)")
    p.add_argument("--teachers", nargs="+", help="teacher cache folders")
    p.add_argument("--restart", action="store_true")
    nproc_arg(p)
    config_args(p)
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("evaluate", help="evaluate a saved run on a split (full ranking)")
    p.add_argument("run_dir")
    p.add_argument("--split", default="test", choices=["valid", "test"])
    p.add_argument("--device", default="auto")
    config_args(p)
    p.set_defaults(func=cmd_evaluate)
