"""The HTTP service (FastAPI): a new ticket in, its predicted label and the most similar past tickets out.

Endpoints: ``POST /v1/predict`` and ``POST /v1/search`` (multipart: ``text`` field or file, ``image``,
``audio`` — any non-empty subset), ``GET /v1/items/{id}`` and ``/v1/items/{id}/image`` (items of the
served manifests only, looked up by id), ``/healthz`` (200 while the process runs), ``/readyz`` (503
until the models are loaded), ``/metrics`` (Prometheus), ``/docs`` (OpenAPI) and the page at ``/``.
Both POST answers carry ``transcript`` (what an uploaded voice note says) and ``screen_text`` (what an
uploaded screenshot shows); each similar ticket says where its words matched (``matched``, ``words``).

Errors answer ``{"error", "message", "errors"}`` with the status of their type (``serving.errors``).
With a token, every endpoint but ``/healthz`` needs ``Authorization: Bearer <token>`` (compared in
constant time). Requests go through ``TicketService``; nothing here touches models or files.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from .errors import CrossSite, InvalidParameter, Overloaded, RequestError, Unauthorized
from .metrics import Metrics
from .schemas import ERROR_RESPONSES, ItemInfo, Prediction, Problem, SearchResults, upload_form
from .service import TicketService, errors_of, words_of
from .session import COOKIE, Sessions, same_origin, set_cookie
from .settings import ServeConfig
from .uploads import receive

STATIC = Path(__file__).resolve().parent / "static"
PUBLIC = ("/healthz",)
SIGN_IN = "/v1/session"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def _public(request: Request) -> bool:
    """What a token-protected service answers without credentials: the health check, the page and its
    static files (they hold no data: the page shows its sign-in form), and the sign-in itself."""
    path = request.url.path
    return path in PUBLIC or path == "/" or path.startswith("/static/") or path == SIGN_IN and request.method in ("GET", "POST")


def _endpoint(request: Request) -> str:
    """The route template, a bounded label (never the raw path)."""
    route = request.scope.get("route")
    if getattr(route, "path", None):
        return route.path
    return "/static" if request.url.path.startswith("/static/") else "other"


def create_app(model_dir: Path, manifests: list[str], workdir: Path, serve: ServeConfig, token: str | None = None) -> FastAPI:
    metrics = Metrics()
    service = TicketService(model_dir, manifests, workdir, serve, on_batch=metrics.on_batch, on_refresh=metrics.on_refresh)
    max_bytes = int(serve.max_upload_mb * 1e6)
    sessions = Sessions(token, serve.session_hours) if token else None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = asyncio.create_task(service.start())
        loading.add_done_callback(lambda _: (metrics.ready.set(service.state == "ready"), metrics.on_catalog(service)))
        hangup = _on_sighup(lambda: service.refresh("SIGHUP", force=True) if service.state == "ready" else None)
        yield
        hangup()
        await loading  # a load in progress finishes on its thread; then everything is closed
        await service.close()

    app = FastAPI(title="mmpipe ticket service", lifespan=lifespan, version="1",
                  description="Predicted label and similar past tickets for a new support ticket "
                              "(message, screenshot, voice note), computed by the pipeline's own code.")
    app.state.service, app.state.metrics = service, metrics

    def problem(request: Request, exc: RequestError) -> JSONResponse:
        metrics.errors.labels(_endpoint(request), exc.kind).inc()
        headers = {"Retry-After": str(serve.retry_after_s)} if exc.status == 503 else {}
        if exc.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse({"error": exc.kind, "message": str(exc), "errors": exc.errors}, exc.status, headers)

    @app.exception_handler(RequestError)
    async def request_problem(request: Request, exc: RequestError) -> JSONResponse:
        return problem(request, exc)

    @app.exception_handler(HTTPException)
    async def http_problem(request: Request, exc: HTTPException) -> JSONResponse:
        kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        metrics.errors.labels(_endpoint(request), kind).inc()
        return JSONResponse({"error": kind, "message": str(exc.detail), "errors": []}, exc.status_code)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        started = time.perf_counter()
        if token and not _public(request) and not _authorized(request, token):
            if not sessions.valid(request.cookies.get(COOKIE)):
                response = problem(request, Unauthorized("this server needs 'Authorization: Bearer <token>' or a "
                                                         "page sign-in (POST /v1/session)"))
            elif request.method not in SAFE_METHODS and not same_origin(request):
                response = problem(request, CrossSite("refused: a request from another site's page"))
            else:
                response = await call_next(request)
        else:
            response = await call_next(request)
        endpoint = _endpoint(request)
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
        return response

    @asynccontextmanager
    async def admitted(request: Request, params: tuple[str, ...] = ()):
        """A bounded number of requests at once; the upload lives in a private folder until the answer."""
        service.require_ready()
        if service.in_flight >= serve.max_queue:
            raise Overloaded(f"{service.in_flight} requests in progress (serve.max_queue = {serve.max_queue}); retry later")
        service.in_flight += 1
        metrics.in_flight.inc()
        upload = None
        try:
            upload = await receive(request, max_bytes, params)
            yield upload
        finally:
            service.in_flight -= 1
            metrics.in_flight.dec()
            if upload is not None:
                upload.discard()

    def answered(request: Request, encoded, upload, timings: dict, started: float) -> dict:
        for e in errors_of(encoded):
            metrics.errors.labels(_endpoint(request), e["error"]).inc()
        timings["total"] = round((time.perf_counter() - started) * 1000, 1)
        return {"missing_modalities": [m for m in service.modalities if m not in encoded.features],
                "errors": errors_of(encoded), **words_of(encoded, upload.files), "timings_ms": timings}

    @app.post("/v1/predict", response_model=Prediction, responses=ERROR_RESPONSES, openapi_extra=upload_form())
    async def predict(request: Request):
        """The predicted label with a probability per label, and the most similar past tickets."""
        started, timings = time.perf_counter(), {}
        async with admitted(request) as upload:
            timings["upload"] = round((time.perf_counter() - started) * 1000, 1)
            encoded = await service.encode(upload, service.encoded, timings)
            mark = time.perf_counter()
            result = await service.classify(encoded)
            timings["model"] = round((time.perf_counter() - mark) * 1000, 1)
            mark = time.perf_counter()
            try:
                similar, similar_error = await service.similar(encoded, serve.similar_k), None
            except InvalidParameter as exc:  # e.g. nothing indexed: the prediction stands, the reason is given
                metrics.errors.labels(_endpoint(request), "SearchError").inc()
                similar, similar_error = [], str(exc)
            timings["search"] = round((time.perf_counter() - mark) * 1000, 1)
        return {**result, "similar": similar, "similar_error": similar_error,
                **answered(request, encoded, upload, timings, started)}

    @app.post("/v1/search", response_model=SearchResults, responses=ERROR_RESPONSES, openapi_extra=upload_form({
        "k": {"type": "integer", "default": 10, "description": "results (1..100)"},
        "modality": {"type": "string", "default": "all", "description": "all, words (typed text, transcript and "
                     "screen text as one channel: the best cosine), text, speech, screen, image or audio"}}))
    async def search(request: Request):
        """Past tickets most similar to the query, by all its modalities or by one."""
        started, timings = time.perf_counter(), {}
        async with admitted(request, ("k", "modality")) as upload:
            k, modality = _int(upload.params.get("k", "10"), "k"), upload.params.get("modality", "all")
            encoded = await service.encode(upload, service.encoded, timings)
            mark = time.perf_counter()
            results = await service.similar(encoded, k, modality)
            timings["search"] = round((time.perf_counter() - mark) * 1000, 1)
        return {"results": results, **answered(request, encoded, upload, timings, started)}

    @app.get("/v1/items/{item_id}", response_model=ItemInfo, responses={404: {"model": Problem, "description": "no such item"}})
    async def item(item_id: str):
        """A past ticket of the served manifests: its metadata and cleaned text."""
        service.require_ready()
        return await service.item_info(item_id)

    @app.get("/v1/items/{item_id}/image", response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}, "description": "a square JPEG thumbnail"}})
    async def item_image(item_id: str):
        """A thumbnail of a past ticket's screenshot, decoded as the pipeline decodes images."""
        service.require_ready()
        return Response(await service.thumbnail(item_id), media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=3600"})

    @app.post("/v1/admin/refresh")
    async def refresh():
        """Check now for what batch runs added and update the served items and search index in place (the
        bearer token or a session is required when the service has one). 200 with what changed, or 500
        with the reason when the refresh failed (the previous index keeps serving)."""
        service.require_ready()
        result = await service.refresh("request", force=True)
        return JSONResponse(result, 500 if result.get("error") else 200)

    @app.get(SIGN_IN)
    async def session_state(request: Request):
        """Whether this service needs a sign-in, and whether this browser has one."""
        return {"needed": bool(token), "signed_in": bool(token) and sessions.valid(request.cookies.get(COOKIE))}

    @app.post(SIGN_IN)
    async def sign_in(request: Request):
        """The page's sign-in form: the token (form field ``token``, never in the URL) for a session cookie
        (HttpOnly, SameSite=Strict, expiring after ``serve.session_hours``)."""
        if not same_origin(request):
            raise CrossSite("refused: a sign-in from another site's page")
        if not token:
            return {"needed": False, "signed_in": False}
        form = await request.form()
        given = form.get("token")
        if not isinstance(given, str) or not sessions.check_token(given):
            raise Unauthorized("sign-in refused: wrong token")
        response = JSONResponse({"needed": True, "signed_in": True, "expires_in_s": sessions.max_age})
        set_cookie(response, request, sessions.issue(), sessions.max_age)
        return response

    @app.delete(SIGN_IN)
    async def sign_out(request: Request):
        """Sign this browser out: its session is revoked and the cookie removed."""
        if sessions is not None:
            sessions.revoke(request.cookies.get(COOKIE))
        response = JSONResponse({"needed": bool(token), "signed_in": False})
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    @app.get("/healthz")
    async def healthz():
        """200 while the process runs."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        """200 once the models are loaded; 503 while loading or if loading failed (with the reason)."""
        if service.state != "ready":
            return JSONResponse({"status": service.state, "error": service.error}, 503,
                                {"Retry-After": str(serve.retry_after_s)})
        return {"status": "ready", "model": str(service.model_dir), "labels": service.labels,
                "modalities": service.modalities, "items": len(service.items)}

    @app.get("/metrics", response_class=Response)
    async def prometheus():
        """Prometheus text format: requests, errors by type, latency, batch sizes."""
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _on_sighup(start) -> "callable":
    """Run ``start()`` (a coroutine or None) on SIGHUP while serving; returns the undo. Only where the loop
    can take signals (the main thread of a POSIX process: ``mmp serve``; not an in-process test client)."""
    import signal

    loop = asyncio.get_running_loop()

    def fire():
        coro = start()
        if coro is not None:
            loop.create_task(coro)

    try:
        loop.add_signal_handler(signal.SIGHUP, fire)
    except (ValueError, RuntimeError, NotImplementedError, AttributeError):
        return lambda: None
    return lambda: loop.remove_signal_handler(signal.SIGHUP)


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InvalidParameter(f"{name} must be an integer, not {value!r}") from None


def _authorized(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def run_server(model_dir: Path, manifests: list[str], workdir: Path, serve: ServeConfig, host: str | None = None,
               port: int | None = None, token: str | None = None, quiet: bool = False) -> int:
    """``mmp serve``: uvicorn on ``host:port`` (default from ``[serve]``); the token from ``--token`` or $MMP_TOKEN."""
    import os

    import uvicorn

    from pipeline.errors import PipelineError

    if not (model_dir / "config.json").is_file():
        raise PipelineError(f"serve: no trained model at {model_dir} (run 'mmp train' or pass --model)")
    host, port = host or serve.host, serve.port if port is None else port
    app = create_app(model_dir.resolve(), manifests, workdir, serve, token=token or os.environ.get("MMP_TOKEN") or None)
    print(f"serving model {model_dir.resolve()} on http://{host}:{port}/ (API docs at /docs)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning" if quiet else "info")
    return 0
