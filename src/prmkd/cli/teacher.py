"""`prmkd teacher build | pretrain | finetune | export | import`."""

from __future__ import annotations

from .common import emit, emit_main, log, nproc_arg, only_overrides, relaunched, set_args


def _config(args):
    from ..config import load
    from ..teachers.build import TeacherRunConfig, teacher_config

    extra = ["sources=[]"] if getattr(args, "no_pretrain", False) else []
    cfg = load(TeacherRunConfig, args.config, [*extra, *args.overrides])
    teacher_config(cfg)  # unknown family or family option: fail before any work
    return cfg


def _manifest(folder):
    from ..io import read_json

    return read_json(folder / "manifest.json", "teacher cache manifest")


def cmd_build(args) -> None:
    from ..teachers.build import build_teacher

    folder = build_teacher(_config(args), log=log, restart=args.restart)
    man = _manifest(folder)
    emit({"cache": str(folder), "metrics": man["metrics"], "timing": man.get("timing")})


def cmd_pretrain(args) -> None:
    from ..errors import PrmkdError
    from ..teachers.build import run_pretrain

    cfg = _config(args)
    if not cfg.sources:
        raise PrmkdError("no source domains: add [[sources]] sections to the config to pre-train")
    path, rec = run_pretrain(cfg, log=log)
    emit({"weights": str(path), **{k: v for k, v in rec.items() if k != "key"}})


def cmd_finetune(args) -> None:
    relaunched(args)
    from ..teachers.build import run_finetune, run_pretrain

    cfg = _config(args)
    path, rec = run_pretrain(cfg, log=log)
    _, _, res = run_finetune(cfg, path, rec, log=log, restart=args.restart)
    emit_main({"metrics": res.get("metrics"), "timing": res.get("timing")})


def cmd_export(args) -> None:
    from ..teachers.build import build_teacher
    from ..teachers.external import export_portable

    if args.cache:
        folder = args.cache
    else:
        folder = build_teacher(_config(args), log=log)
    out = {"cache": str(folder)}
    if args.to:
        out["portable"] = [str(p) for p in export_portable(folder, args.to)]
    emit(out)


def cmd_import(args) -> None:
    from ..config import DataConfig, apply_override, from_dict, load_file
    from ..data.dataset import prepare
    from ..teachers.external import import_teacher

    raw = {"data": load_file(args.data_config).get("data", {}) if args.data_config else {}}
    only_overrides(args.overrides, "data", "teacher import")
    for o in args.overrides:
        apply_override(raw, o)
    data = from_dict(DataConfig, raw["data"], prefix="data.")
    ds = prepare(data, log=log)
    folder = import_teacher(args.items, args.instances or args.items, args.manifest, ds, args.out, args.dtype)
    emit({"cache": str(folder), "metrics": _manifest(folder)["metrics"]})


def register(sub) -> None:
    p = sub.add_parser("teacher", help="pre-train / fine-tune / export a built-in teacher, or import an external one")
    tsub = p.add_subparsers(dest="teacher_command", required=True, metavar="ACTION")

    def with_config(q):
        q.add_argument("config", nargs="?", help="teacher TOML/YAML: family, [teacher], [data], [[sources]], "
                                                 "[pretrain], [train], [eval], out")
        set_args(q)

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
    nproc_arg(q)
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
    set_args(q)
    q.add_argument("--out", required=True, help="cache folder to write")
    q.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    q.set_defaults(func=cmd_import)
