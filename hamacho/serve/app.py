"""The FastAPI application: routers, token check, errors as ``{"error": ...}``, the static web UI.

Every error a client can cause is a 4xx whose JSON body is one line, ``{"error": "..."}``: FastAPI's
validation errors are reduced to their first problem, library errors (bad model files, bad settings)
become 400, uploads over a limit 413, and the service layer's refusals (:class:`~hamacho.serve.service.Refusal`)
404, 409 or 422 (:data:`STATUS`). A bug answers 500 with one line too (``unexpected ...``, logged with
its traceback), and the client's connection stays open (:class:`UnexpectedErrors`).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hamacho import __version__
from hamacho.errors import HamachoError, first_line
from hamacho.serve.routes import images, jobs, models, predict, results, system, thresholds
from hamacho.serve.service import API, Conflict, NotFound, Refusal, Service, Unavailable
from hamacho.serve.service_config import ServiceConfig
from hamacho.serve.storage import NothingTaken, TooLarge

STATIC = Path(__file__).parent / "static"
TOKEN_COOKIE = "hamacho_token"
log = logging.getLogger("hamacho.serve")
# Library and service errors -> HTTP status (the first match); any other HamachoError is the client's input: 400.
STATUS: tuple[tuple[type[HamachoError], int], ...] = ((TooLarge, 413), (NotFound, 404), (Conflict, 409),
                                                      (Unavailable, 422))


def require_token(request: Request) -> None:
    """Dependency of every protected route: the bearer token (or the UI's cookie) must match."""
    token = request.app.state.service.config.token
    if not token:
        return
    header = request.headers.get("authorization", "")
    given = header[7:].strip() if header.lower().startswith("bearer ") else request.cookies.get(TOKEN_COOKIE, "")
    if not given or not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(401, "missing or wrong token: send 'Authorization: Bearer <token>'"
                            if not given else "wrong token")


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes (413), declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _json(send, 413, f"request body of {int(declared)} bytes is over the limit of {self.limit} bytes")
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise TooLarge(f"request body is over the limit of {self.limit} bytes")
            return message

        await self.app(scope, counted, send)


class UnexpectedErrors:
    """ASGI middleware: an unexpected exception answers 500 ``{"error": "unexpected ..."}`` and is logged.

    The exception ends here. Starlette's handler for ``Exception`` answers and then raises it again (for
    the server to log), and uvicorn closes the connection of a request that raised: a client's next request
    on its keep-alive connection then fails with "connection reset". An exception raised after the answer
    has started cannot be answered any more; it is raised again, and the server closes that connection.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            if started:
                raise
            if isinstance(exc, (OperationalError, InterfaceError)):  # the database is down or unreachable
                log.warning("database unavailable on %s %s: %s", scope.get("method"), scope.get("path"),
                            first_line(exc))
                await _json(send, 503, "the database does not answer; try again (details in the server log)")
                return
            log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            await _json(send, 500, f"unexpected {type(exc).__name__}: {first_line(exc)} (details in the server log)")


async def _json(send: Send, status: int, error: str) -> None:
    response = JSONResponse({"error": error}, status_code=status)
    await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


def _validation_message(exc: RequestValidationError) -> str:
    problems = exc.errors()
    if not problems:
        return "invalid request"
    first = problems[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "form"))
    message = str(first.get("msg", "invalid value")).splitlines()[0]
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    return f"{where}: {message}{more}" if where else f"{message}{more}"


def _install_errors(app: FastAPI) -> None:
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _validation_message(exc)}, status_code=422)

    async def library_error(_request: Request, exc: HamachoError) -> JSONResponse:
        status = next((code for kind, code in STATUS if isinstance(exc, kind)), 400)
        # a refusal is one line the service wrote (a path parameter in it is not cut); anything else, its first
        body: dict[str, Any] = {"error": str(exc) if isinstance(exc, Refusal) else first_line(exc)}
        if isinstance(exc, NothingTaken):  # every file of the request skipped: each one's reason too
            body["skipped"] = [{"name": s.name, "reason": s.reason} for s in exc.skipped]
        return JSONResponse(body, status_code=status)

    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(HamachoError, library_error)  # type: ignore[arg-type]
    # Exception itself is not handled here but by UnexpectedErrors (outermost): see its docstring.


def create_app(config: ServiceConfig, start_jobs: bool = True) -> FastAPI:
    """Build the application over a data folder (opened, and repaired after a crash, right here).

    Args:
        config: Data folder, database, token and limits.
        start_jobs: Run queued training jobs (tests of the API alone may turn it off).

    Raises:
        ConfigError: The database cannot be opened.
    """
    service = Service.open(config)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if start_jobs:
            service.runner.start()
        service.replica.start()
        yield
        service.runner.close()
        service.replica.close()
        service.cache.close()

    app = FastAPI(title="Hamacho", version=__version__, lifespan=lifespan,
                  description="Visual anomaly detection: images, training jobs, models and predictions "
                              "(docs/service.md). Errors are `{\"error\": \"one line\"}`.",
                  responses={400: {"model": dict[str, str], "description": "Bad request: {\"error\": ...}"}})
    app.state.service = service
    _install_errors(app)
    app.add_middleware(BodyLimit, limit=config.max_request_bytes)
    app.add_middleware(UnexpectedErrors)  # added last: the outermost of ours, around BodyLimit too
    protected: list[Any] = [Depends(require_token)]
    app.include_router(system.open_router, prefix=API)
    for module in (system, images, jobs, models, thresholds, predict, results):
        app.include_router(module.router, prefix=API, dependencies=protected)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    return app
