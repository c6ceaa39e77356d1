"""`rlhfkit label serve`: the labeling web app (FastAPI + uvicorn, the `label` extra).

Each labeler opens the link printed for them (``/login?token=...``), which sets an
HttpOnly, SameSite=Strict cookie and redirects to the labeling page. The page shows a
prompt and its K responses (in an order shuffled per labeler); the labeler ranks them,
scores each 1-7 and may flag it, and the label is committed to SQLite before the page
moves on (`store.py`).

Who gets in: the server binds 127.0.0.1 unless told otherwise (another address needs
``--allow_remote true``, and then belongs behind a TLS proxy); every API call needs a
labeler's token (the cookie, or ``Authorization: Bearer``); every write needs the
labeler's CSRF token in ``X-CSRF-Token`` and a same-origin ``Origin`` when the browser
sends one; request bodies over ``max_request_bytes`` are refused (413); pages are served
with a Content-Security-Policy that allows only this server's own script, and the page
puts data into the document as text, never as HTML.
"""
# No `from __future__ import annotations`: FastAPI reads the route functions' annotations
# (Request), which are imported inside create_app so that this module imports without the extra.
import contextlib
import ipaddress
import os
import random
import stat
import sys
import threading
import time
from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path
from urllib.parse import urlsplit

from rlhfkit.config import check_options, option
from rlhfkit.label.store import FLAGS, LIKERT, LabelError, Store

STATIC = Path(__file__).parent / "static"
COOKIE = "rlhfkit_label"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@dataclass
class ServeConfig:
    """Serve the labeling web app: rank K responses per prompt, Likert 1-7, flags."""

    data: str = option("", "items to label (JSONL: prompt, responses; optional id); added to the database once. "
                       "Empty: label what the database holds")
    db: str = option("labels.sqlite", "the labeling database (SQLite, created if missing)")
    labelers: list[str] = option([], "labeler names; each new one gets a secret login link (written to tokens_file)")
    tokens_file: str = option("", "where new labelers' login links are written, mode 0600 (default: <db>.tokens)")
    labels_per_item: int = option(1, "how many labelers see each item (2 or more gives `label stats` its agreement)")
    lease_minutes: float = option(60.0, "an item shown but not submitted for this long may go to another labeler")
    host: str = option("127.0.0.1", "address to bind; anything but loopback needs allow_remote")
    port: int = option(8000, "port to bind")
    allow_remote: bool = option(False, "allow a non-loopback host (plain HTTP: put a TLS proxy in front)")
    max_request_bytes: int = option(65536, "largest request body accepted (413 above)")

    RULES: ClassVar[dict] = {"labels_per_item": ">= 1", "lease_minutes": "> 0", "max_request_bytes": ">= 1",
                             "port": lambda p: None if 0 <= p <= 65535 else f"port must be in 0..65535, got {p}"}

    def __post_init__(self) -> None:
        check_options(self)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def display_order(item_id: int, labeler: str, k: int) -> list[int]:
    """Response indices in the order this labeler sees them: shuffled per (item, labeler)
    so that position does not line up with sampling order, and stable across reloads."""
    order = list(range(k))
    random.Random(f"{item_id}:{labeler}").shuffle(order)
    return order


def create_app(store: Store, max_request_bytes: int = 65536):
    """The FastAPI app: the pages (`_pages`) and the JSON API (`_api`) behind one guard
    that refuses large bodies and sets the security headers on every response."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_request_bytes):
            return JSONResponse({"error": f"request body over {max_request_bytes} bytes"}, status_code=413)
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    def labeler_of(request: Request) -> str | None:
        """The labeler whose token the request carries (cookie, or a bearer header), or None."""
        token = request.cookies.get(COOKIE)
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        return store.labeler_for(token)

    _pages(app, store, labeler_of)
    _api(app, store, labeler_of, max_request_bytes)
    return app


def _pages(app, store: Store, labeler_of) -> None:
    from fastapi import Request
    from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

    def page(request: Request, name: str):
        return FileResponse(STATIC / name) if labeler_of(request) else RedirectResponse("/", status_code=303)

    @app.get("/")
    def index(request: Request):
        if labeler_of(request):
            return RedirectResponse("/label", status_code=303)
        return FileResponse(STATIC / "index.html")

    @app.get("/login")
    def login(token: str = ""):
        if not store.labeler_for(token):
            return JSONResponse({"error": "unknown token"}, status_code=403)
        response = RedirectResponse("/label", status_code=303)  # the token leaves the address bar
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", max_age=30 * 86400, path="/")
        return response

    @app.get("/label")
    def label_page(request: Request):
        return page(request, "label.html")

    @app.get("/progress")
    def progress_page(request: Request):
        return page(request, "progress.html")

    @app.get("/static/{name}")
    def static(name: str):
        return FileResponse(STATIC / name) if name in ("app.js", "style.css") else Response(status_code=404)


def _api(app, store: Store, labeler_of, max_request_bytes: int) -> None:
    import json

    from fastapi import Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.get("/api/next")
    def next_item(request: Request):
        who = labeler_of(request)
        if not who:
            return error(401, "not logged in: open your labeling link")
        item = store.next_item(who)
        body = {"labeler": who, "csrf": store.csrf_token(who), "flags": FLAGS, "likert": LIKERT,
                "progress": store.progress(who, full=False), "item": None}
        if item is not None:
            order = display_order(item.id, who, len(item.responses))
            # the id is the items file's own `id` (or, for a row without one, its content hash),
            # the same `item` that `label export` and read_labels report
            body["item"] = {"id": item.key, "prompt": item.prompt,
                            "responses": [{"index": i, "text": item.responses[i]} for i in order]}
        return body

    @app.get("/api/progress")
    def progress(request: Request):
        who = labeler_of(request)
        return store.progress(who) if who else error(401, "not logged in: open your labeling link")

    @app.post("/api/submit")
    async def submit(request: Request):
        who = labeler_of(request)
        if not who:
            return error(401, "not logged in: open your labeling link")
        if not store.check_csrf(who, request.headers.get("x-csrf-token")):
            return error(403, "missing or wrong CSRF token")
        if not _same_origin(request):
            return error(403, "cross-origin request")
        body = bytearray()
        async for chunk in request.stream():  # a chunked body has no content-length to check up front
            body += chunk
            if len(body) > max_request_bytes:
                return error(413, f"request body over {max_request_bytes} bytes")
        try:
            try:
                data = json.loads(body)
            except RecursionError:  # nesting deeper than the parser's stack, well under the size limit
                raise ValueError("JSON nested too deeply") from None
            if not isinstance(data, dict):
                raise ValueError("expected an object")
            item_id = store.item_id_for(data.get("item_id"))
            if item_id is None:
                raise LabelError(f"item_id: no item {data.get('item_id')!r} (the id /api/next gave, the items "
                                 "file's id)")
            # committed (and fsynced) before the reply: the page advances only on this 200
            await run_in_threadpool(store.submit, who, item_id, data.get("order"), data.get("likert"),
                                    data.get("flags"), data.get("seconds"))
        except (ValueError, LabelError) as e:  # json.JSONDecodeError is a ValueError
            return error(400, str(e))
        return {"ok": True, "progress": store.progress(who, full=False)}


def _same_origin(request) -> bool:
    """A browser's Origin (or Sec-Fetch-Site) must name this server; clients that send
    neither (scripts with a bearer token) pass, as they carry no ambient cookie."""
    if request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


def _write_tokens(path: Path, links: dict[str, str]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, stat.S_IRUSR | stat.S_IWUSR)
    os.fchmod(fd, stat.S_IRUSR | stat.S_IWUSR)  # also when the file was there before
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        for name, url in links.items():
            f.write(f"{name}\t{url}\n")


@contextlib.contextmanager
def background_server(store: Store, host: str = "127.0.0.1", port: int = 0, max_request_bytes: int = 65536):
    """The app served from a thread (tests, notebooks); yields its base URL."""
    import uvicorn

    config = uvicorn.Config(create_app(store, max_request_bytes), host=host, port=port, log_level="warning",
                            access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the labeling server did not start on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def serve(cfg: ServeConfig) -> Path:
    from rlhfkit.trainers.errors import require_extra

    require_extra("label", "fastapi", "uvicorn")  # before the database is opened or created
    import uvicorn

    if not _is_loopback(cfg.host) and not cfg.allow_remote:
        raise ValueError(f"host {cfg.host!r} is not loopback: the app speaks plain HTTP; pass --allow_remote true "
                         "(behind a TLS proxy) to bind it")
    store = Store(cfg.db, labels_per_item=cfg.labels_per_item, lease_s=cfg.lease_minutes * 60)
    if cfg.data:
        print(f"items: {store.add_items(cfg.data)} added from {cfg.data}", file=sys.stderr)
    base = f"http://{'127.0.0.1' if cfg.host in ('0.0.0.0', '::') else cfg.host}:{cfg.port}"
    links = {name: f"{base}/login?token={token}" for name in cfg.labelers if (token := store.add_labeler(name))}
    if links:
        tokens_file = Path(cfg.tokens_file or f"{cfg.db}.tokens")
        _write_tokens(tokens_file, links)
        print(f"login links for {', '.join(links)} written to {tokens_file} (keep them secret)", file=sys.stderr)
    p = store.progress()
    print(f"serving {p['items']} items ({p['labels']} labels so far) at {base}/", file=sys.stderr)
    uvicorn.run(create_app(store, cfg.max_request_bytes), host=cfg.host, port=cfg.port, log_level="warning",
                access_log=False)
    store.close()
    return Path(cfg.db)


if __name__ == "__main__":  # `python -m rlhfkit.label.server --db ...`: the same, without the CLI's imports
    from rlhfkit.config import parse_config

    serve(parse_config(ServeConfig, prog="rlhfkit label serve"))
