"""`prmkd run CONFIG` and `prmkd sweep CONFIG`."""

from __future__ import annotations

from .common import command_line, emit, log, set_args


def cmd_run(args) -> None:
    from ..errors import ConfigError
    from ..experiment.pipeline import STAGES, Pipeline, check_stages, load_pipeline

    cfg = load_pipeline(args.config, args.overrides)
    stages = check_stages(args.stages) if args.stages else list(STAGES)
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs {args.jobs}: expected 1 or more processes")
    only = None
    if args.teachers is not None:
        names = [t.label for t in cfg.teachers]
        only = [] if args.teachers == ["none"] else args.teachers
        bad = [n for n in only if n not in names]
        if bad:
            raise ConfigError(f"--teachers: no teacher named '{bad[0]}' in {args.config} (its teachers: "
                              f"{', '.join(names) or 'none'})")
    path = Pipeline(cfg, log, command_line(), only_teachers=only, collect_only=args.collect_only,
                    jobs=args.jobs).run(stages)
    emit({"summary": str(path), "report": str(path.parent / "report" / "report.md") if "report" in stages else None})


def cmd_sweep(args) -> None:
    from ..errors import ConfigError
    from ..experiment.pipeline import Pipeline, load_pipeline

    if args.param not in ("temperature", "kd_weight", "epsilon", "hidden_size"):
        raise ConfigError(f"unknown sweep parameter '{args.param}' (temperature, kd_weight, epsilon, hidden_size)")
    values = "[" + ", ".join(args.values) + "]"
    cfg = load_pipeline(args.config, [*args.overrides, f"sweep.{args.param}={values}"])
    path = Pipeline(cfg, log, command_line()).run(["sweeps", "report"])
    emit({"summary": str(path), "report": str(path.parent / "report" / "report.md")})


def register(sub) -> None:
    p = sub.add_parser("run", help="the whole pipeline from one TOML/YAML file (resumable), ending in a report")
    p.add_argument("config")
    set_args(p, "; one teacher of [[teachers]] by name or index: --set teachers.unim2rec.teacher.hidden_size=256")
    p.add_argument("--stages", nargs="+", help="only these stages (teachers are always built or reused): "
                                               "baselines distill ablations universality sweeps efficiency report")
    p.add_argument("--teachers", nargs="+", metavar="NAME",
                   help="build (or reuse) only these teachers in this process ('none': no teacher), e.g. to "
                        "build teachers in parallel processes; later stages use the teachers built here")
    p.add_argument("--collect-only", action="store_true",
                   help="train nothing: write the summary, efficiency and report from the runs already finished "
                        "(unfinished ones are listed in summary.json's not_finished)")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="build the teachers, then train the student runs, in up to N parallel processes (torch "
                        "threads split between them; teachers sharing a pre-training run stay in one process); "
                        "default: the config's `jobs` (1)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("sweep", help="sweep one PRM-KD parameter (reusing the teacher caches); feeds the report")
    p.add_argument("config")
    p.add_argument("--param", required=True, help="temperature | kd_weight | epsilon | hidden_size")
    p.add_argument("--values", nargs="+", required=True)
    set_args(p)
    p.set_defaults(func=cmd_sweep)
