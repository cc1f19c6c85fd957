"""`pushtune serve`: the production version of every model over HTTP (FastAPI + uvicorn).

    GET  /health                  {"status": "ok" | "degraded", "models": {name: version}, "problems": {…}}
    GET  /models                  every served name: production and loaded version, framework, input shape
    POST /models/{name}/predict   {"instances": [[…], …]} → {"predictions": […], "version": N}
    GET  /metrics                 Prometheus text: requests, errors, latency histogram, loaded versions

What it loads: nothing that can run code. A version serves its ONNX file (made in the attempt's
sandbox, jobs/autolog/to_onnx.py) through ONNX Runtime, or a Keras `.keras` file with
`safe_mode=True`; never a pickle, joblib or `torch.load` of a whole object. A version with neither
is registered "not servable" with the reason, and is never promoted (jobs/deploy/servable.py loads it
the way this server does, in a subprocess, before it may become production). The file is
loaded only after its sha256 matches the record.

Hot reload. A background poll (every `poll` seconds) reads which version of each model is
production and loads a new one before requests ask for it; a prediction never waits on the run
store: it answers with the production version as of the poll's last read, so a promotion or
rollback is picked up within one poll (and its load), and an answer's version is one that was
production at that read. While the store does not answer, the server goes on answering with what
it read last. A version is loaded once (a few earlier versions stay loaded, so a rollback is
instant) and swapped in as a whole: a request in flight keeps the model object it started with. An artifact whose sha256
does not match its record, or that fails to load, is refused and reported (/health, /models,
/metrics, the log), and the version that was serving goes on serving; a model with nothing to
serve answers 503 with the reason.

Errors are JSON {"detail": "…"}: 400 a body that is no JSON (or nested too deeply, or cut off by
the client), 401 a missing or wrong token, 408 a body not sent in time, 413 a body over 64 MiB
(refused from its Content-Length before it is read, else while it streams), 422 instances of the
wrong type, shape or range (numbers must be finite as the model's dtype: 1e39 is not a float32),
404 an unknown model, 503 a model that cannot be loaded. Nothing else escapes as a bare 500: an
unexpected error is a JSON 500 naming it. Answers name files, never their absolute paths.

Limits: a request's headers must arrive within READ_TIMEOUT seconds of its first byte (or of the
connection), and its body within READ_TIMEOUT of the headers, so slow or idle half-sent requests
do not hold connections; at most `max_connections()` connections at once (uvicorn answers 503
beyond). With PUSHTUNE_SERVE_TOKEN set, /models and predictions need `Authorization: Bearer
<token>` (401 otherwise); /health and /metrics stay open.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations (Request).
import argparse
import asyncio
import hmac
import json
import logging
import math
import os
import re
import resource
import socket
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from jobs.deploy.loading import Loaded, LoadError, load_version, one_line, shape_text
from jobs.deploy.served_form import NotServable, served_file
from jobs.deploy.versions import NAME_PATTERN
from jobs.errors import UserError
from jobs.store.run_store import RunStore

LOG = logging.getLogger("pushtune.serve")
DEFAULT_POLL_SECONDS = 0.5
KEEP_LOADED = 3  # versions kept loaded per name besides the serving one: rollbacks need no load
RETRY_FAILED_SECONDS = 30.0  # a refused artifact is tried again after this, or when its file changes
MAX_BODY_BYTES = 64 << 20
MAX_INSTANCES = 10_000
STORE_RETRY_SECONDS = 2.0  # the poll does not wait a PostgreSQL outage out: it tries again next time
READ_TIMEOUT = 10.0  # seconds for a request's headers, and again for its body
MAX_HEADER_BYTES = 16 << 10
MAX_DEPTH = 32  # nesting of the instances (and of any JSON body) beyond which a body is refused
TOKEN_VARIABLE = "PUSHTUNE_SERVE_TOKEN"
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ApiError(Exception):
    """An answer other than 200: its status and the one-line detail."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


# --- requests -----------------------------------------------------------------------------------


def _check_numbers(value: Any) -> None:
    """Every leaf of the nested lists (at most MAX_DEPTH deep) is a finite number (not a bool, a
    text or null, nor an integer too large for a float)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, list):
            if depth > MAX_DEPTH:
                raise ApiError(422, f"instances are nested more than {MAX_DEPTH} deep")
            stack.extend((each, depth + 1) for each in item)
        elif isinstance(item, bool) or not isinstance(item, (int, float)):
            raise ApiError(422, f"instances must hold numbers, not {_json_type(item)} "
                                f"({json.dumps(item, default=str)[:40]})")
        elif isinstance(item, float) and not math.isfinite(item):
            raise ApiError(422, "instances must hold finite numbers (no NaN or Infinity)")
        elif isinstance(item, int) and not -1e308 < item < 1e308:
            raise ApiError(422, f"instances must hold finite numbers: {str(item)[:12]}… ({len(str(item))} "
                                f"digits) is too large for a float")


def _json_type(value: Any) -> str:
    names = {str: "text", type(None): "null", bool: "true/false", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def parse_instances(body: Any, loaded: Loaded) -> np.ndarray:
    """The request's instances as an array of the model's dtype and shape, or a 422 saying what
    was expected."""
    expected = loaded.input_shape
    each = f" (each instance of shape {shape_text(expected)})" if expected else ""
    if not isinstance(body, dict) or "instances" not in body:
        raise ApiError(422, f'expected a JSON object {{"instances": [[…], …]}}{each}')
    instances = body["instances"]
    if not isinstance(instances, list) or not instances:
        raise ApiError(422, f"instances must be a non-empty list of instances{each}")
    if len(instances) > MAX_INSTANCES:
        raise ApiError(422, f"at most {MAX_INSTANCES} instances a request (got {len(instances)})")
    for instance in instances:
        if not isinstance(instance, list):
            raise ApiError(422, f"each instance must be a list of numbers{each}; got {_json_type(instance)}")
    _check_numbers(instances)
    try:
        with np.errstate(over="ignore"):
            x = np.asarray(instances, dtype=loaded.dtype)
    except ValueError:
        raise ApiError(422, f"instances must be rectangular: lists of different lengths{each}") from None
    if x.dtype.kind == "f" and not np.isfinite(x).all():  # finite as JSON, not as the model's dtype
        limit = np.finfo(x.dtype).max
        raise ApiError(422, f"instances must hold numbers the model's {x.dtype} can hold "
                            f"(at most ±{limit:.4g}); got one beyond")
    got = x.shape[1:]
    if expected is not None and (len(got) != len(expected)
                                 or any(e is not None and e != g for e, g in zip(expected, got, strict=True))):
        raise ApiError(422, f"expected instances of shape {shape_text(expected)}; got {shape_text(got)} "
                            f"({len(instances)} instance{'s' if len(instances) != 1 else ''})")
    return x


def to_json(result: Any) -> Any:
    """The model's output as JSON values: arrays become lists; NaN and ±inf become null; bytes
    become text (UTF-8, undecodable bytes as \\x escapes); anything else JSON cannot hold, its
    text."""
    if isinstance(result, np.ndarray):
        if result.dtype.kind == "f" and not np.isfinite(result).all():
            return [to_json(row) for row in result] if result.ndim > 1 else \
                [None if not math.isfinite(v) else v for v in result.tolist()]
        return to_json(result.tolist()) if result.dtype.kind in "SOUMmV" else result.tolist()
    if isinstance(result, (bytes, bytearray)):
        return bytes(result).decode("utf-8", "backslashreplace")
    if isinstance(result, (list, tuple)):
        return [to_json(item) for item in result]
    if isinstance(result, (np.generic,)):
        return to_json(result.item())
    if isinstance(result, float) and not math.isfinite(result):
        return None
    if isinstance(result, dict):
        return {str(key): to_json(value) for key, value in result.items()}
    if result is None or isinstance(result, (str, int, float)):
        return result
    return str(result)


# --- metrics ------------------------------------------------------------------------------------


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """The counters and the latency histogram /metrics shows, kept by hand (Prometheus text
    format 0.0.4)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, str, str], int] = {}
        self.errors: dict[tuple[str, str, str], int] = {}
        self.latency: dict[tuple[str, str], list[float]] = {}  # bucket counts…, +Inf count, sum
        self.load_failures: dict[tuple[str, str], int] = {}
        self.reloads: dict[str, int] = {}

    def observe(self, endpoint: str, model: str, status: int, seconds: float) -> None:
        key = (endpoint, model, str(status))
        with self.lock:
            self.requests[key] = self.requests.get(key, 0) + 1
            if status >= 400:
                self.errors[key] = self.errors.get(key, 0) + 1
            counts = self.latency.setdefault((endpoint, model), [0.0] * (len(BUCKETS) + 2))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    counts[i] += 1
            counts[-2] += 1
            counts[-1] += seconds

    def failed_load(self, model: str, kind: str) -> None:
        with self.lock:
            self.load_failures[(model, kind)] = self.load_failures.get((model, kind), 0) + 1

    def reloaded(self, model: str) -> None:
        with self.lock:
            self.reloads[model] = self.reloads.get(model, 0) + 1

    def render(self, host: "ModelHost") -> str:
        out: list[str] = []

        def family(name: str, kind: str, text: str) -> None:
            out.extend([f"# HELP {name} {text}", f"# TYPE {name} {kind}"])

        with self.lock:
            family("pushtune_requests_total", "counter", "HTTP requests answered, by endpoint, model and status code.")
            for (endpoint, model, code), count in sorted(self.requests.items()):
                out.append(f'pushtune_requests_total{{endpoint="{_label(endpoint)}",model="{_label(model)}",'
                           f'code="{code}"}} {count}')
            family("pushtune_request_errors_total", "counter", "Requests answered with a status of 400 or more.")
            for (endpoint, model, code), count in sorted(self.errors.items()):
                out.append(f'pushtune_request_errors_total{{endpoint="{_label(endpoint)}",model="{_label(model)}",'
                           f'code="{code}"}} {count}')
            family("pushtune_request_duration_seconds", "histogram", "Time to answer a request, in seconds.")
            for (endpoint, model), counts in sorted(self.latency.items()):
                labels = f'endpoint="{_label(endpoint)}",model="{_label(model)}"'
                # counts holds one count a bucket, then the +Inf count and the sum: only the buckets here
                for bound, in_bucket in zip(BUCKETS, counts, strict=False):
                    out.append(f'pushtune_request_duration_seconds_bucket{{{labels},le="{bound}"}} {int(in_bucket)}')
                out.append(f'pushtune_request_duration_seconds_bucket{{{labels},le="+Inf"}} {int(counts[-2])}')
                out.append(f"pushtune_request_duration_seconds_sum{{{labels}}} {counts[-1]:.6f}")
                out.append(f"pushtune_request_duration_seconds_count{{{labels}}} {int(counts[-2])}")
            family("pushtune_model_load_failures_total", "counter",
                   "Versions refused or failed to load (kind: sha256, missing, load).")
            for (model, kind), count in sorted(self.load_failures.items()):
                out.append(f'pushtune_model_load_failures_total{{model="{_label(model)}",kind="{kind}"}} {count}')
            family("pushtune_model_reloads_total", "counter",
                   "Times a model started answering with another version (its first load included).")
            for model, count in sorted(self.reloads.items()):
                out.append(f'pushtune_model_reloads_total{{model="{_label(model)}"}} {count}')
        family("pushtune_model_loaded_version", "gauge", "The version each model answers with.")
        for name, loaded in sorted(host.current.items()):
            out.append(f'pushtune_model_loaded_version{{model="{_label(name)}"}} {loaded.version}')
        family("pushtune_model_up", "gauge", "1 when the model serves its production version, else 0.")
        for name, up in sorted(host.up().items()):
            out.append(f'pushtune_model_up{{model="{_label(name)}"}} {int(up)}')
        return "\n".join(out) + "\n"


# --- the models being served --------------------------------------------------------------------


@dataclass
class Failure:
    reason: str
    kind: str
    stat: tuple | None
    at: float


class ModelHost:
    """Which version of each model answers, loaded and swapped as production changes."""

    def __init__(self, store: RunStore, poll: float = DEFAULT_POLL_SECONDS, metrics: Metrics | None = None):
        self.store = store
        self.poll = poll
        self.metrics = metrics or Metrics()
        self.current: dict[str, Loaded] = {}  # name → the version answering; replaced whole, never changed
        self.wanted: dict[str, dict] = {}  # name → its production version's record, as the poll last read
        self.names: frozenset[str] = frozenset()  # every registered name, as the poll last read
        self.problems: dict[str, str] = {}  # name → why its production version is not the one answering
        self._kept: dict[str, OrderedDict] = {}  # name → (version, sha256) → Loaded: recent versions
        self._failed: dict[tuple[str, int, str], Failure] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        database = getattr(store, "database", None)
        # PostgreSQL: the poll must not wait an outage out
        if database is not None and hasattr(database, "retry_seconds"):
            database.retry_seconds = min(database.retry_seconds, STORE_RETRY_SECONDS)

    # the background poll

    def start(self) -> None:
        self.refresh()
        self._thread = threading.Thread(target=self._poll, name="pushtune-serve-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _poll(self) -> None:
        said = None
        while not self._stop.wait(self.poll):
            try:
                self.refresh()
                said = None
            except Exception as exc:  # the store may be away for a while: keep serving, keep trying
                problem = _public(one_line(exc))
                if problem != said:  # once per problem, not once per poll
                    LOG.warning("cannot read the production versions: %s (serving what was read before)", problem)
                said = problem

    @property
    def production(self) -> dict[str, int]:
        """name → production version, as the poll last read it."""
        return {name: record["version"] for name, record in self.wanted.items()}

    def refresh(self) -> None:
        """Read every production version (the only store reads: requests use what it read) and
        load those not loaded yet."""
        wanted = self.store.production_versions()
        self.names = frozenset(self.store.model_names())
        self.wanted = wanted  # one assignment: a request sees the whole of one read
        for name, record in wanted.items():
            try:
                self._switch(name, record)
            except ApiError:  # nothing to serve for it: recorded in problems, answered with 503
                pass

    # the request path

    def _lock(self, name: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(name, threading.Lock())

    def model_for(self, name: str) -> Loaded:
        """The version of `name` that is production now (loaded if it must be), or the one still
        serving when that one cannot be; ApiError 404 or 503 when there is none."""
        if not NAME_PATTERN.fullmatch(name):
            raise ApiError(404, f"no model named {name!r}")
        current = self.current.get(name)
        wanted = self.wanted.get(name)
        if wanted is None:
            if name in self.names:
                raise ApiError(404, f"{name} has no production version (promote one: pushtune promote RUN_ID)")
            known = ", ".join(sorted(set(self.production) | set(self.current))) or "none"
            raise ApiError(404, f"no model named {name!r} (served: {known})")
        if current is not None and current.version == wanted["version"] and current.sha256 == wanted["sha256"]:
            return current
        return self._switch(name, wanted, current)

    def _switch(self, name: str, wanted: dict, seen: Loaded | None = None) -> Loaded:
        key = (wanted["version"], wanted["sha256"])
        current = self.current.get(name)
        if current is not None and (current.version, current.sha256) == key:
            return current
        with self._lock(name):
            current = self.current.get(name)
            if current is not None and (current.version, current.sha256) == key:
                return current  # another request or the poll loaded it meanwhile
            kept = self._kept.setdefault(name, OrderedDict())
            loaded = kept.get(key)
            reason = None
            if loaded is None:
                loaded, reason = self._load(name, wanted)
            if loaded is not None:
                if current is not None:
                    kept[(current.version, current.sha256)] = current
                kept.pop(key, None)
                while len(kept) > KEEP_LOADED:
                    kept.popitem(last=False)
                self.current[name] = loaded  # one assignment: a request holds the object it got
                self.problems.pop(name, None)
                self.metrics.reloaded(name)
                LOG.info("%s: serving v%d (%s)", name, loaded.version, loaded.path)
                return loaded
            assert reason is not None  # _load gives a reason whenever it loads nothing
            self.problems[name] = reason + (f"; v{current.version} keeps serving" if current else "")
            if current is not None:
                return current
            raise ApiError(503, f"{name}: {reason}")

    def _load(self, name: str, wanted: dict) -> tuple[Loaded | None, str | None]:
        failure_key = (name, wanted["version"], wanted["sha256"])
        stat = _stat(_served_path(wanted))  # a repaired file is tried again at once
        failure = self._failed.get(failure_key)
        if failure is not None and failure.stat == stat and time.time() - failure.at < RETRY_FAILED_SECONDS:
            return None, failure.reason
        try:
            loaded = load_version(name, wanted)
        except LoadError as exc:
            self._failed[failure_key] = Failure(exc.reason, exc.kind, stat, time.time())
            self.metrics.failed_load(name, exc.kind)
            LOG.error("%s: %s", name, exc.reason)
            return None, exc.reason
        self._failed.pop(failure_key, None)
        return loaded, None

    def up(self) -> dict[str, bool]:
        return {name: name in self.current and self.current[name].version == version
                for name, version in self.production.items()}

    def describe(self) -> list[dict[str, Any]]:
        out = []
        for name in sorted(set(self.production) | set(self.current)):
            loaded = self.current.get(name)
            out.append({
                "name": name, "production": self.production.get(name),
                "version": loaded.version if loaded else None,
                "framework": loaded.framework if loaded else None,
                "input_shape": list(loaded.input_shape) if loaded and loaded.input_shape is not None else None,
                "sha256": loaded.sha256 if loaded else None,
                "loaded_at": loaded.loaded_at if loaded else None,
                "problem": self.problems.get(name),
            })
        return out


def _served_path(record: Mapping[str, Any]) -> str:
    try:
        return str(served_file(record)[0])
    except NotServable:
        return record["artifact_path"]


def _stat(path: str) -> tuple | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size, info.st_ino


# --- the app ------------------------------------------------------------------------------------


class _Guard:
    """Pure ASGI middleware: times every request into the metrics, and turns an exception nothing
    handled into a JSON 500 naming it (never a bare 500, never a traceback to the client)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [0]

        async def watched(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            LOG.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            if status[0]:
                raise  # the answer has started: nothing else can be sent
            body = json.dumps({"detail": f"internal error: {_public(one_line(exc))}"}).encode()
            status[0] = 500
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "other"
            self.metrics.observe(endpoint, scope.get("pushtune.model", ""), status[0] or 500,
                                 time.perf_counter() - started)


_PATH = re.compile(r"(?<![\w.~:/-])(?:/[^\s/'\"]+)+/(?=[^\s/'\"]+)")  # not inside a URL


def _public(text: str) -> str:
    """`text` with each absolute path cut to its file name: answers do not show the server's
    directories."""
    return _PATH.sub("…/", text)


def _token_problem(request, token: str | None) -> str | None:
    """Why the request may not pass (no `Authorization: Bearer <token>`, or another token), or None."""
    if not token:
        return None
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return f"this server needs a token: send Authorization: Bearer <token> (its {TOKEN_VARIABLE})"
    if not hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token.encode()):
        return "wrong token"
    return None


async def read_body(request, limit: int = MAX_BODY_BYTES, seconds: float = READ_TIMEOUT) -> bytes:
    """The request's body: 413 from its Content-Length before reading any of it, or as soon as
    the bytes sent pass `limit`; 408 when it is not all there within `seconds`; 400 when the
    client goes away before sending it all."""
    # heavy optional libraries (serve extra): only when the server is made
    from starlette.requests import ClientDisconnect

    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, f"Content-Length {declared[:20]!r} is not a number of bytes")
        if int(declared) > limit:
            raise ApiError(413, f"the body is {int(declared)} bytes: at most {limit}")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, f"the body is over {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(408, f"the body did not arrive within {seconds:g} s ({size} bytes came)") from None
    except ClientDisconnect:
        raise ApiError(400, f"the client closed the connection before sending its body ({size} bytes came)") from None
    return b"".join(chunks)


def parse_body(raw: bytes) -> Any:
    """The body as JSON, or a 400 saying why not."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ApiError(400, f"the body is JSON nested too deeply (at most {MAX_DEPTH} levels are used)") from None
    except ValueError as exc:
        raise ApiError(400, f'the body is not JSON ({exc}); send {{"instances": [[…], …]}}') from None


def create_app(store: RunStore | None = None, *, poll: float = DEFAULT_POLL_SECONDS, token: str | None = None,
               read_timeout: float = READ_TIMEOUT):
    """The FastAPI app over `store` (default: the one PUSHTUNE_DB / PUSHTUNE_HOME names). Its
    lifespan loads the production versions and starts the poll. `token` (default: the
    PUSHTUNE_SERVE_TOKEN variable; empty means none) guards /models and predictions."""
    # heavy optional libraries (serve extra): only when the server is made
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException

    host = ModelHost(store or RunStore.open(), poll=poll)
    token = os.environ.get(TOKEN_VARIABLE) if token is None else token

    @asynccontextmanager
    async def lifespan(app):
        await run_in_threadpool(host.start)
        try:
            yield
        finally:
            host.stop()

    app = FastAPI(title="pushtune", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.host = host
    app.add_middleware(_Guard, metrics=host.metrics)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"detail": _public(str(exc.detail))}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in exc.errors())
        return JSONResponse({"detail": problems or "invalid request"}, status_code=422)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"detail": _public(exc.detail)}, status_code=exc.status, headers=headers)

    def allowed(request: Request) -> None:
        problem = _token_problem(request, token)
        if problem is not None:
            raise ApiError(401, problem)

    @app.get("/health")
    def health():
        up = host.up()
        problems = {name: _public(host.problems[name]) for name in host.problems}
        for name, fine in up.items():
            if not fine and name not in problems:
                problems[name] = "not loaded yet"
        return JSONResponse({"status": "degraded" if problems else "ok",
                             "models": {name: loaded.version for name, loaded in sorted(host.current.items())},
                             "problems": problems})

    @app.get("/models")
    def models(request: Request):
        allowed(request)
        return JSONResponse([{**model, "problem": model["problem"] and _public(model["problem"])}
                             for model in host.describe()])

    @app.get("/metrics")
    def metrics():
        return PlainTextResponse(host.metrics.render(host), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/models/{name}/predict")
    async def predict(name: str, request: Request):
        allowed(request)
        raw = await read_body(request, seconds=read_timeout)
        return JSONResponse(await run_in_threadpool(_answer, host, name, raw, request.scope))

    return app


def _answer(host: ModelHost, name: str, raw: bytes, scope: MutableMapping[str, Any]) -> dict:
    body = parse_body(raw)  # here, not in the event loop: parsing 64 MiB holds no other request up
    loaded = host.model_for(name)
    scope["pushtune.model"] = name  # a known model: its own label in the metrics
    x = parse_instances(body, loaded)
    try:
        result = loaded.predict(x)
    except (ValueError, TypeError) as exc:
        raise ApiError(422, f"v{loaded.version} of {name} refused the input: {one_line(exc)}") from None
    except Exception as exc:
        raise ApiError(500, f"v{loaded.version} of {name} failed to predict: {one_line(exc)}") from None
    return {"predictions": to_json(result), "version": loaded.version}


# --- `pushtune serve` ---------------------------------------------------------------------------


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free one), or a one-line UserError."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port}: give a port from 0 to 65535")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise UserError(f"--host {host!r}: {getattr(exc, 'strerror', None) or exc}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def max_connections() -> int:
    """Connections served at once: 1000, or fewer when the process may not open that many files."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1000 if soft == resource.RLIM_INFINITY else max(16, min(1000, soft - 64))


def _protocol(read_timeout: float):
    """uvicorn's h11 protocol, closing a connection whose request headers are not all there
    within `read_timeout` of the connection or of the request's first byte (uvicorn times only
    idle keep-alive connections out): a half-sent request does not hold a connection."""
    # heavy optional library (serve extra): only when the server runs
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class ReadTimeoutProtocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self.cycle is None or self.cycle.response_complete:  # a request's headers are coming
                self._arm()
            super().data_received(data)

        def on_response_complete(self) -> None:
            self._disarm()  # uvicorn's keep-alive timeout covers the wait for the next request
            super().on_response_complete()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._header_timer is None:  # from the first byte: trickling bytes do not extend it
                self._header_timer = self.loop.call_later(read_timeout, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
                self.transport.close()

    return ReadTimeoutProtocol


def server_config(app, *, read_timeout: float = READ_TIMEOUT, connections: int | None = None):
    """The uvicorn configuration `pushtune serve` runs `app` with: header and keep-alive
    timeouts, a header size and a connection limit, no access log."""
    # heavy optional library (serve extra): only when the server runs
    import uvicorn

    return uvicorn.Config(app, log_level="error", access_log=False, lifespan="on", http=_protocol(read_timeout),
                          timeout_keep_alive=5, h11_max_incomplete_event_size=MAX_HEADER_BYTES,
                          limit_concurrency=connections or max_connections())


def serve(host: str = "127.0.0.1", port: int = 8000, *, poll: float = DEFAULT_POLL_SECONDS,
          store: RunStore | None = None, echo: Callable[[str], None] = print) -> None:
    """Serve until interrupted (SIGINT/SIGTERM end it cleanly)."""
    try:
        # heavy optional library (serve extra): only when the server runs
        import uvicorn
    except ImportError as exc:
        raise UserError(f"pushtune serve needs fastapi and uvicorn ({exc}): pip install fastapi uvicorn") from None
    store = store or RunStore.open()
    sock = listen(host, port)
    app = create_app(store, poll=poll)
    logging.basicConfig(level=logging.INFO, format="pushtune serve: %(message)s")
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    echo(f"serving {store.name} on http://{shown}:{bound[1]} (GET /health, /models, /metrics; "
         f"POST /models/NAME/predict)")
    uvicorn.Server(server_config(app)).run(sockets=[sock])


def main(argv: list[str] | None = None) -> int:
    """`python -m jobs.serve.server`: the server alone, for the serving image (which holds only the
    modules it needs, not the whole pushtune CLI)."""
    parser = argparse.ArgumentParser(prog="python -m jobs.serve.server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--poll", type=float, default=DEFAULT_POLL_SECONDS)
    args = parser.parse_args(argv)
    try:
        if not (math.isfinite(args.poll) and 0.05 <= args.poll <= 3600):
            raise UserError(f"--poll {args.poll:g}: give a number of seconds from 0.05 to 3600")
        serve(args.host, args.port, poll=args.poll, echo=lambda line: print(line, file=sys.stderr, flush=True))
    except UserError as exc:
        print(f"pushtune serve: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
