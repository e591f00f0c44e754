"""The viewer's web server: the page, and each result's frames, ids, objects and hierarchy, to whoever holds the
token (a Starlette app; uvicorn serves it).

What it serves is named by numbers only: result ``i`` of those given on the command line, frame ``k`` of it, and
the page's three files. No path from a request reaches the disk, so nothing else of the disk can be read; the one
write is "Save this cut" (``ViewedResult.save``).

Endpoints (every one needs ``?token=``):
    GET  /                                  the page
    GET  /static/{app.js,style.css}         its code and style
    GET  /api/results                       the results: name, frames, objects, random weights
    GET  /api/results/{i}                   one result's info (``ViewedResult.info``)
    GET  /api/results/{i}/cut?level=L&max_objects=N      the cut's objects and their presence
    GET  /api/results/{i}/frame/{k}         frame k, raw RGB bytes (H, W, 3) uint8
    GET  /api/results/{i}/ids/{k}?level=&max_objects=    frame k's ids, raw little-endian uint16 (H, W)
    GET  /api/results/{i}/preview.png       the result's preview.png
    GET  /api/results/{i}/hierarchy.png?level=&max_objects=   hierarchy.png of the cut
    POST /api/results/{i}/save              {"level", "max_objects", "name"?}: the cut written as recut writes it
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bavos.errors import BavosError, internal_error
from bavos.view.results import Cut, ViewedResult

STATIC = {"app.js": "text/javascript", "style.css": "text/css", "index.html": "text/html"}
NO_STORE = {"Cache-Control": "no-store"}


class _Token(BaseHTTPMiddleware):
    """Every request carries the token (``?token=``); others get 403 and nothing else."""

    def __init__(self, app: Any, token: str, report: Callable[[str], None]) -> None:
        super().__init__(app)
        self.token, self.report = token, report

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if request.url.path == "/favicon.ico":  # browsers ask for it unasked: nothing, and nothing to read
            return Response(status_code=204)
        given = request.query_params.get("token", "")
        if not secrets.compare_digest(given.encode(), self.token.encode()):
            return JSONResponse({"error": "this address needs the token bavos view printed"}, 403)
        try:
            return await call_next(request)
        except Exception as e:  # a bug met by one request: one line for the page and the terminal, the server goes on
            said = internal_error(e)
            self.report(f"{request.url.path}: {said}")
            return JSONResponse({"error": said}, 500)


class _Viewer:
    """The endpoints, over the results given on the command line."""

    def __init__(self, results: list[ViewedResult], token: str) -> None:
        self.results, self.token = results, token
        self.saving: list[str] = []  # the folders being written now (a stop waits for them)

    def result(self, request: Request) -> ViewedResult:
        i = int(request.path_params["i"])
        if not 0 <= i < len(self.results):
            raise _NotFound()
        return self.results[i]

    @staticmethod
    def index(request: Request, r: ViewedResult) -> int:
        k = int(request.path_params["k"])
        if not 0 <= k < r.frames:
            raise _NotFound()
        return k

    @staticmethod
    def cut_of(request: Request) -> tuple[int | None, int | None]:
        q = request.query_params
        return _cut(_int(q.get("level")), _int(q.get("max_objects")))

    def page(self, request: Request) -> Response:
        html = resources.files("bavos.view").joinpath("static", "index.html").read_text()
        return Response(html.replace("%TOKEN%", self.token), media_type="text/html", headers=NO_STORE)

    def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC or name == "index.html":
            raise _NotFound()
        return _static(name)

    def listing(self, request: Request) -> Response:
        for r in self.results:
            r.refresh()  # a result saved or recut since: as it is now
        return JSONResponse(
            [
                {"index": i, "name": r.name, "frames": r.frames, "objects": r.summary["objects"]}
                | {"random": r.random_weights, "stamp": r.stamp}
                for i, r in enumerate(self.results)
            ]
        )

    def info(self, request: Request) -> Response:
        return JSONResponse(self.result(request).info())

    def cut(self, request: Request) -> Response:
        return JSONResponse(_cut_json(self.result(request).cut(*self.cut_of(request))))

    def frame(self, request: Request) -> Response:
        r = self.result(request)
        image = r.frame(self.index(request, r))
        return Response(image.tobytes(), media_type="application/octet-stream", headers=NO_STORE)

    def ids(self, request: Request) -> Response:
        r = self.result(request)
        values = r.ids(self.index(request, r), *self.cut_of(request))
        return Response(values.astype("<u2").tobytes(), media_type="application/octet-stream", headers=NO_STORE)

    def preview(self, request: Request) -> Response:
        picture = (self.result(request).folder / "preview.png").read_bytes()
        return Response(picture, media_type="image/png", headers=NO_STORE)  # a save rewrites it

    def hierarchy(self, request: Request) -> Response:
        picture = self.result(request).hierarchy_picture(*self.cut_of(request))
        return Response(picture, media_type="image/png", headers=NO_STORE)

    async def save(self, request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        r = self.result(request)
        body = await request.json()
        level, cap = _cut(_int(body.get("level")), _int(body.get("max_objects")))
        name = body.get("name") or None
        stamp = body.get("stamp")
        where = str(r.folder if name is None else r.folder.parent / str(name))

        def write() -> dict[str, Any]:
            try:
                return r.save(
                    r.level if level is None else level, cap or 0, name, None if stamp is None else str(stamp)
                )
            finally:  # in the thread: a request cancelled by a forced stop leaves it listed while it still writes
                self.saving.remove(where)

        self.saving.append(where)
        summary = await run_in_threadpool(write)
        return JSONResponse(
            {"output": summary["output"], "level": summary["level"], "objects": summary["objects"], "name": name}
        )


def make_app(results: list[ViewedResult], token: str, report: Callable[[str], None] = lambda line: None) -> Starlette:
    """The viewer's app for ``results``; requests must carry ``token``; ``report`` is told, in one line, of a bug a
    request met (the command line prints it as an error)."""
    v = _Viewer(results, token)
    for r, name in zip(results, _told_apart([r.folder for r in results]), strict=True):
        r.name = name
    routes = [
        Route("/", v.page),
        Route("/static/{name}", v.static),
        Route("/api/results", v.listing),
        Route("/api/results/{i:int}", v.info),
        Route("/api/results/{i:int}/cut", v.cut),
        Route("/api/results/{i:int}/frame/{k:int}", v.frame),
        Route("/api/results/{i:int}/ids/{k:int}", v.ids),
        Route("/api/results/{i:int}/preview.png", v.preview),
        Route("/api/results/{i:int}/hierarchy.png", v.hierarchy),
        Route("/api/results/{i:int}/save", v.save, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(_Token, token=token, report=report)],
        exception_handlers={BavosError: _said, _NotFound: _not_found, ValueError: _bad_value},
    )
    app.state.saving = v.saving
    return app


class _NotFound(Exception):
    """Nothing of that number."""


def _int(value: Any) -> int | None:
    """A whole number from a query or a body (None: not given); ValueError naming the value otherwise."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not (isinstance(value, int) or str(value).strip().lstrip("-").isdigit()):
        raise ValueError(f"{value!r} is not a whole number")
    return int(value)


def _told_apart(folders: list[Path]) -> list[str]:
    """The folders' names, with as many of their parents as tell results of one name apart (out/clip, exp/clip;
    a/out/clip, b/out/clip)."""
    parts = [f.absolute().parts for f in folders]
    depth = [1] * len(folders)
    while True:
        names = ["/".join(p[-d:]) for p, d in zip(parts, depth, strict=True)]
        clash = [i for i, n in enumerate(names) if names.count(n) > 1 and depth[i] < len(parts[i])]
        if not clash:
            return names
        for i in clash:
            depth[i] += 1


def _cut(level: int | None, max_objects: int | None) -> tuple[int | None, int | None]:
    """A cut asked for, within what --level and --max-objects take (UsageError, said as the command line says it)."""
    from bavos.config import SegmentConfig
    from bavos.errors import ConfigError, UsageError

    try:
        SegmentConfig(level=level, max_objects=0 if max_objects is None else max_objects)
    except ConfigError as e:
        raise UsageError(str(e)) from e
    return level, max_objects


def _static(name: str) -> Response:
    data = resources.files("bavos.view").joinpath("static", name).read_bytes()
    return Response(data, media_type=STATIC[name], headers=NO_STORE)


def _cut_json(cut: Cut) -> dict[str, Any]:
    return {
        "level": cut.level,
        "max_objects": cut.max_objects,
        "clusters": cut.clusters,
        "capped_to": cut.capped_to,
        "warnings": cut.warnings,
        "objects": [
            {"id": o.id, "colour": o.colour, "share": o.share, "first": o.first, "last": o.last, "lanes": o.lanes}
            for o in cut.objects
        ],
    }


async def _said(request: Request, exc: Exception) -> Response:
    """A bavos error is the line the command line would print; 400 for what the user asked, 409 for the disk."""
    status = 400 if getattr(exc, "exit_code", 1) == 2 else 409
    return JSONResponse({"error": str(exc)}, status)


async def _not_found(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": "no such result or frame"}, 404)


async def _bad_value(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc)}, 400)
