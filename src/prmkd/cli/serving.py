"""`prmkd export RUN_DIR --out DIR` and `prmkd serve DIR`: the distilled student out of prmkd, and served."""

from __future__ import annotations

from .common import emit, log


def cmd_export(args) -> None:
    from ..serving.export import export_run

    out = export_run(args.run_dir, args.out, dtype=args.dtype, approximate=args.approximate, log=log)
    from ..io import read_json

    man = read_json(out / "manifest.json")
    emit({"export": str(out), "model": man["model"], "score": man["score"], "keyed_by": man["keyed_by"],
          "index": man["index"], "files": {k: v["bytes"] for k, v in man["files"].items()}})


def cmd_serve(args) -> None:
    from ..errors import PrmkdError

    try:
        from ..serving.app import serve
    except ImportError as e:
        raise PrmkdError(f"serving needs the serve extra: pip install 'prmkd[serve]' ({e.name} is missing)") from None
    log(f"serving {args.dir} on http://{args.host}:{args.port} (POST /recommend, /recommend/batch; GET /health, "
        f"/metadata)")
    serve(args.dir, host=args.host, port=args.port, threads=args.threads, index=args.index, max_body=args.max_body)


def register(sub) -> None:
    p = sub.add_parser("export", help="export a finished student run (plain or distilled) for serving without torch: "
                                      "ONNX user side, item matrix, faiss index, manifest")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write (absent, empty, or an earlier export)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"], help="item matrix precision")
    p.add_argument("--approximate", choices=["hnsw", "ivf"],
                   help="also an approximate index, its recall@10 against the exact one measured and recorded")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve", help="serve an exported student over HTTP (FastAPI + uvicorn)")
    p.add_argument("dir", metavar="DIR", help="a folder written by prmkd export")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime / faiss threads per request")
    p.add_argument("--index", default="exact", choices=["exact", "approximate"])
    p.add_argument("--max-body", type=int, default=1 << 20, metavar="BYTES", help="largest request body accepted")
    p.set_defaults(func=cmd_serve)
