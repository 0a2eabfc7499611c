"""`prmkd teacher build|pretrain|finetune|export|import`."""

from __future__ import annotations

import json
import sys


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _config(args):
    from ..config import load
    from .pipeline import TeacherRunConfig, teacher_config

    extra = ["sources=[]"] if getattr(args, "no_pretrain", False) else []
    cfg = load(TeacherRunConfig, args.config, [*extra, *args.overrides])
    teacher_config(cfg)  # unknown family or family option: fail before any work
    return cfg


def cmd_build(args) -> None:
    from .pipeline import build_teacher

    folder = build_teacher(_config(args), log=_log, restart=args.restart)
    man = json.loads((folder / "manifest.json").read_text())
    print(json.dumps({"cache": str(folder), "metrics": man["metrics"], "timing": man.get("timing")}, indent=2))


def cmd_pretrain(args) -> None:
    from ..errors import PrmkdError
    from .pipeline import run_pretrain

    cfg = _config(args)
    if not cfg.sources:
        raise PrmkdError("no source domains: add [[sources]] sections to the config to pre-train")
    path, rec = run_pretrain(cfg, log=_log)
    print(json.dumps({"weights": str(path), **{k: v for k, v in rec.items() if k != "key"}}, indent=2))


def cmd_finetune(args) -> None:
    from .pipeline import run_finetune, run_pretrain

    cfg = _config(args)
    path, rec = run_pretrain(cfg, log=_log)
    _, _, res = run_finetune(cfg, path, rec, log=_log, restart=args.restart)
    print(json.dumps({"metrics": res["metrics"], "timing": res["timing"]}, indent=2))


def cmd_export(args) -> None:
    from .external import export_portable
    from .pipeline import build_teacher

    if args.cache:
        folder = args.cache
    else:
        folder = build_teacher(_config(args), log=_log)
    out = {"cache": str(folder)}
    if args.to:
        out["portable"] = [str(p) for p in export_portable(folder, args.to)]
    print(json.dumps(out, indent=2))


def cmd_import(args) -> None:
    from ..config import DataConfig, apply_override, from_dict, load_file
    from ..data.dataset import prepare
    from ..errors import ConfigError
    from .external import import_teacher

    raw = {"data": load_file(args.data_config).get("data", {}) if args.data_config else {}}
    for o in args.overrides:
        if not o.startswith("data."):
            raise ConfigError(f"teacher import only takes data.* overrides, got '{o}'")
        apply_override(raw, o)
    data = from_dict(DataConfig, raw["data"], prefix="data.")
    ds = prepare(data, log=_log)
    folder = import_teacher(args.items, args.instances or args.items, args.manifest, ds, args.out, args.dtype)
    man = json.loads((folder / "manifest.json").read_text())
    print(json.dumps({"cache": str(folder), "metrics": man["metrics"]}, indent=2))


def register(sub) -> None:
    p = sub.add_parser("teacher", help="pre-train / fine-tune / export a built-in teacher, or import an external one")
    tsub = p.add_subparsers(dest="teacher_command", required=True, metavar="ACTION")

    def with_config(q):
        q.add_argument("config", nargs="?", help="teacher TOML/YAML: family, [teacher], [data], [[sources]], "
                                                 "[pretrain], [train], [eval], out")
        q.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    q = tsub.add_parser("build", help="pre-train (if sources), fine-tune and export the cache; resumable")
    with_config(q)
    q.add_argument("--restart", action="store_true", help="fine-tune again even if a finished run exists")
    q.set_defaults(func=cmd_build)

    q = tsub.add_parser("pretrain", help="pre-train on the source domains only")
    with_config(q)
    q.set_defaults(func=cmd_pretrain)

    q = tsub.add_parser("finetune", help="fine-tune on the target (after pre-training unless --no-pretrain)")
    with_config(q)
    q.add_argument("--no-pretrain", action="store_true", help="start from scratch (ignore [[sources]])")
    q.add_argument("--restart", action="store_true")
    q.set_defaults(func=cmd_finetune)

    q = tsub.add_parser("export", help="write the teacher cache (building what is missing); --to writes the "
                                       "portable .npy/.safetensors form")
    with_config(q)
    q.add_argument("--cache", help="an existing cache folder to export (instead of a config)")
    q.add_argument("--to", help="folder for items.npy + instances.npy + manifest.json, or a .safetensors file")
    q.set_defaults(func=cmd_export)

    q = tsub.add_parser("import", help="make a teacher cache from an external model's arrays")
    q.add_argument("--items", required=True, help="(n_items+1, d) .npy, or a .safetensors with 'items' and "
                                                  "'instances'")
    q.add_argument("--instances", help="(n_train_instances + 2 n_users, d) .npy (omit with one .safetensors)")
    q.add_argument("--manifest", required=True, help="JSON: name, similarity (dot|cos), temperature [, metrics]")
    q.add_argument("--data-config", help="config file whose [data] section is the dataset (or use --set data.*)")
    q.add_argument("--set", dest="overrides", action="append", default=[], metavar="data.KEY=VALUE")
    q.add_argument("--out", required=True, help="cache folder to write")
    q.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    q.set_defaults(func=cmd_import)
