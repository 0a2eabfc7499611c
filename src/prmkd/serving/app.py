"""The HTTP service of an exported student (FastAPI; run by `prmkd serve DIR`, on uvicorn).

    POST /recommend        {"history": [raw item ids, oldest first], "k": 10, "exclude_seen": true,
                            "drop_unknown": false}            (models keyed by user: {"user": "ID", ...})
    POST /recommend/batch  {"histories": [[...], ...], "k": 10, ...}   (or {"users": [...], ...})
    GET  /health           {"status": "ok"}
    GET  /metadata         what is served: model, source run and its test metrics, history encoding, index

Answers: {"items": [{"item": id, "score": s}, ...]} (batch: {"results": [...]}), and "unknown": the ids dropped
when `drop_unknown` is true. Every bad request is a 4xx whose body is {"error": "one line"}: malformed JSON and
wrong types (400 / 422), an empty or over-long history, unknown item or user ids (named), k out of range (422), a
body over the size limit (413). Nothing a client sends makes a 500.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from .runtime import Recommender, ServingError

MAX_BODY_BYTES = 1 << 20
MAX_HISTORY = 1000
MAX_BATCH = 1024


class Refused(Exception):
    """A request refused before it reaches the model: HTTP `status`, one-line `message`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _error(status: int, message: str):
    return JSONResponse(status_code=status, content={"error": message})


def _fields(body: Any, allowed: dict[str, tuple], required: tuple[str, ...]) -> dict:
    """Check a JSON object's keys and their types; a ServingError (-> 422) names the first problem."""
    if not isinstance(body, dict):
        raise ServingError("the body must be a JSON object")
    for key in body:
        if key not in allowed:
            raise ServingError(f"unknown field '{key}' (fields: {', '.join(allowed)})")
    for key in required:
        if key not in body:
            raise ServingError(f"missing field '{key}'")
    for key, value in body.items():
        types = allowed[key]
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            names = " or ".join("a list" if t is list else {int: "an integer", bool: "true or false",
                                                            str: "a string"}.get(t, t.__name__) for t in types)
            raise ServingError(f"field '{key}' must be {names}, got {json.dumps(value)[:40]}")
    return body


def _history(h: Any, name: str = "history") -> list:
    if not isinstance(h, list):
        raise ServingError(f"'{name}' must be a list of item ids")
    if not h:
        raise ServingError(f"'{name}' is empty")
    if len(h) > MAX_HISTORY:
        raise ServingError(f"'{name}' has {len(h)} items, more than the {MAX_HISTORY} this service accepts")
    bad = [x for x in h if isinstance(x, bool) or not isinstance(x, (str, int))]
    if bad:
        raise ServingError(f"'{name}' must hold item ids (strings or integers), got {json.dumps(bad[0])[:40]}")
    return h


def create_app(rec: Recommender, max_body: int = MAX_BODY_BYTES) -> FastAPI:
    app = FastAPI(title="prmkd", description=f"{rec.manifest['model']} exported by prmkd", docs_url=None,
                  redoc_url=None)
    single = {"history": (list,), "user": (str, int), "k": (int,), "exclude_seen": (bool,), "drop_unknown": (bool,)}
    batch = {"histories": (list,), "users": (list,), "k": (int,), "exclude_seen": (bool,), "drop_unknown": (bool,)}

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > max_body):
            return _error(413, f"the body is over the limit of {max_body} bytes")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc):
        return _error(422, "; ".join(str(e.get("msg")) for e in exc.errors())[:300])

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request, exc):  # a bug, never a client's fault: say so in one line
        return _error(500, f"internal error: {type(exc).__name__}")

    async def read_json(request: Request):
        chunks, size = [], 0
        async for chunk in request.stream():  # read no further than the limit (a chunked body has no length)
            size += len(chunk)
            if size > max_body:
                raise Refused(413, f"the body is over the limit of {max_body} bytes")
            chunks.append(chunk)
        raw = b"".join(chunks)
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise Refused(400, f"malformed JSON: {e}") from None

    def answer(fn):
        async def handler(request: Request):
            try:
                body = await read_json(request)
                # ONNX Runtime and faiss release the GIL; the answer is plain JSON (no jsonable_encoder pass)
                return JSONResponse(await run_in_threadpool(fn, body))
            except Refused as e:
                return _error(e.status, str(e))
            except ServingError as e:
                return _error(422, str(e))
        return handler

    def items(ranked, unknown) -> dict:
        out = {"items": [{"item": i, "score": s} for i, s in ranked]}
        if unknown:
            out["unknown"] = unknown
        return out

    def one(body) -> dict:
        body = _fields(body, single, ())
        k, ex, drop = body.get("k", 10), body.get("exclude_seen", True), body.get("drop_unknown", False)
        if rec.keyed_by == "user":
            if "user" not in body:
                raise ServingError("this model is keyed by user: send {\"user\": ID}")
            req = body["user"]
        else:
            if "history" not in body:
                raise ServingError("send {\"history\": [item ids, oldest first]}")
            req = _history(body["history"])
        ranked, unknown = rec.serve([req], k=k, exclude_seen=ex, drop_unknown=drop)
        return items(ranked[0], unknown[0])

    def many(body) -> dict:
        body = _fields(body, batch, ())
        key = "users" if rec.keyed_by == "user" else "histories"
        if key not in body:
            raise ServingError(f"send {{\"{key}\": [...]}}")
        reqs = body[key]
        if not reqs:
            raise ServingError(f"'{key}' is empty")
        if len(reqs) > MAX_BATCH:
            raise ServingError(f"'{key}' holds {len(reqs)} requests, more than the {MAX_BATCH} of one batch")
        if key == "histories":
            reqs = [_history(h, f"histories[{i}]") for i, h in enumerate(reqs)]
        ranked, unknown = rec.serve(reqs, k=body.get("k", 10), exclude_seen=body.get("exclude_seen", True),
                                    drop_unknown=body.get("drop_unknown", False))
        return {"results": [items(r, u) for r, u in zip(ranked, unknown)]}

    app.post("/recommend")(answer(one))
    app.post("/recommend/batch")(answer(many))

    @app.get("/health")
    def health():
        return {"status": "ok", "model": rec.manifest["model"]}

    @app.get("/metadata")
    def metadata():
        m = rec.manifest
        return {k: m.get(k) for k in ("model", "role", "score", "keyed_by", "n_items", "n_users", "dim", "dtype",
                                      "similarity", "history", "index", "dataset", "dataset_fingerprint",
                                      "prmkd_version", "source", "exported")}

    return app


def serve(folder, host: str = "127.0.0.1", port: int = 8000, threads: int = 1, index: str = "exact",
          max_body: int = MAX_BODY_BYTES) -> None:
    import uvicorn

    app = create_app(Recommender(folder, threads=threads, index=index), max_body)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
