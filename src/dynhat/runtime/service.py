"""HTTP translation service over a dynamic translator (FastAPI on uvicorn).

Endpoints: ``POST /translate`` (one text or many sentences, optional budget), ``GET /status``, ``PUT /budget``,
``GET /health`` (the process answers) and ``GET /ready`` (it takes work now). Nothing a client sends is a 500 or
stops the server:

- requests are validated by strict pydantic models (no coercion of ``"50"`` or ``true`` into a number, finite
  budgets only, text that is valid Unicode): a 422 that names the field and never echoes the input;
- the body is read up to ``max_body_bytes`` and refused with a 413 past it, before it is parsed; a request of more
  than ``max_sentence_subwords`` subwords in a sentence or ``max_request_subwords`` in all is a 422;
- at most ``max_inflight`` requests translate at once; more get a 503 with ``Retry-After`` at once instead of
  queueing, and a request still running after ``request_seconds`` stops between sentences with a 503;
- a ``strict`` request that no operating point is expected to serve within its budget now is refused before any
  work with a 503 (and ``Retry-After``), where a plain one is answered late;
- ``PUT /budget`` changes the budget of every client: with a ``budget_token`` it needs
  ``Authorization: Bearer TOKEN`` (401 without).

Translations run on ``max_inflight`` worker threads of their own, so requests are served concurrently and the
threads touching the model stay few; the translator keeps each request on one operating point.
"""

from __future__ import annotations

import asyncio
import functools
import math
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dynhat.errors import BudgetUnmeetable
from dynhat.runtime.dynamic import DynamicTranslator

MAX_SENTENCES = 64
MAX_CHARS = 2000
MAX_BUDGET_MS = 60_000.0

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True)
class ServiceLimits:
    """What one request may cost; the defaults keep a request to a few seconds of one core."""

    max_body_bytes: int = 256 * 1024
    max_sentence_subwords: int = 200
    max_request_subwords: int = 2000
    max_inflight: int = 4
    request_seconds: float = 60.0
    budget_token: str | None = None

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_sentence_subwords", "max_request_subwords", "max_inflight"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.request_seconds) and self.request_seconds > 0):
            raise ValueError(f"request_seconds must be a positive number, got {self.request_seconds}")


class TranslateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    text: str | None = Field(default=None, description="one sentence")
    sentences: list[str] | None = Field(default=None, max_length=MAX_SENTENCES, description="several sentences")
    budget_ms: float | None = Field(default=None, gt=0, le=MAX_BUDGET_MS, allow_inf_nan=False,
                                    description="latency budget per sentence")
    strict: bool = Field(default=False, description="refuse (503) rather than answer late when no point fits now")

    @model_validator(mode="after")
    def _one_of(self) -> TranslateRequest:
        if (self.text is None) == (self.sentences is None):
            raise ValueError("give exactly one of 'text' or 'sentences'")
        if self.sentences is not None and not self.sentences:
            raise ValueError("'sentences' is empty")
        return self

    @field_validator("text")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        if value is not None:
            _check_sentence(value, "text")
        return value

    @field_validator("sentences")
    @classmethod
    def _sentences(cls, value: list[str] | None) -> list[str] | None:
        for i, s in enumerate(value or []):
            _check_sentence(s, f"sentences[{i}]")
        return value


def _check_sentence(value: str, where: str) -> None:
    if not value.strip():
        raise ValueError(f"{where} is empty")
    if len(value) > MAX_CHARS:
        raise ValueError(f"{where} has {len(value)} characters; at most {MAX_CHARS}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{where} is not valid Unicode text (a lone surrogate escape)") from None


class BudgetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    budget_ms: float = Field(gt=0, le=MAX_BUDGET_MS, allow_inf_nan=False)


class BodyLimit:
    """ASGI middleware: reads at most ``max_bytes`` of a request body, answering 413 past that, so an oversized
    body costs that much memory and no more before the application sees it."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._too_large(send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        response = JSONResponse({"detail": f"request body over {self.max_bytes} bytes"}, status_code=413,
                                headers={"Connection": "close"})
        await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """422 naming each field and what was expected, without echoing the input (it may be NaN or not UTF-8)."""
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": [str(part) for part in err.get("loc", ())], "msg": str(err.get("msg", "")),
               "type": str(err.get("type", ""))} for err in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


def create_app(translator: DynamicTranslator, limits: ServiceLimits | None = None) -> FastAPI:
    limits = limits or ServiceLimits()
    app = FastAPI(title="dynhat", summary="translation under a latency budget, switching SubTransformers")
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    slots = _Slots(limits.max_inflight)
    # The model runs on max_inflight threads of its own, not on the server's pool of ~40: every thread that
    # allocates tensors gets an allocator arena of its own, and resident memory grew with the threads used.
    workers = ThreadPoolExecutor(max_workers=limits.max_inflight, thread_name_prefix="dynhat-translate")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    def ready() -> JSONResponse:
        inflight = slots.count
        ok = inflight < limits.max_inflight
        return JSONResponse({"ready": ok, "inflight": inflight, "max_inflight": limits.max_inflight},
                            status_code=200 if ok else 503, headers=None if ok else {"Retry-After": "1"})

    @app.get("/status")
    def status() -> dict[str, Any]:
        return translator.status()

    @app.put("/budget")
    def budget(request: BudgetRequest, authorization: str | None = Header(default=None)) -> dict[str, float]:
        if limits.budget_token is not None:
            given = (authorization or "").removeprefix("Bearer ").strip()
            if not secrets.compare_digest(given.encode(), limits.budget_token.encode()):
                raise HTTPException(status_code=401, headers={"WWW-Authenticate": "Bearer"},
                                    detail="changing the budget needs 'Authorization: Bearer <token>'")
        translator.set_budget(request.budget_ms)
        return {"budget_ms": translator.budget_ms}

    @app.post("/translate")
    async def translate(request: TranslateRequest) -> dict[str, Any]:
        if request.text is not None:
            named = [("text", request.text)]
        else:
            named = [(f"sentences[{i}]", s) for i, s in enumerate(request.sentences or [])]
        _check_subwords(translator, named, limits)
        if not slots.enter():
            raise HTTPException(status_code=503, headers={"Retry-After": "1"},
                                detail=f"{limits.max_inflight} requests are being translated; retry shortly")
        try:
            work = functools.partial(_translate_all, translator, named, request, limits.request_seconds)
            return {"translations": await asyncio.get_running_loop().run_in_executor(workers, work)}
        finally:
            slots.leave()

    return app


class _Slots:
    """Requests translating now; a request that finds none free is refused rather than queued."""

    def __init__(self, size: int) -> None:
        self.size, self.count, self._lock = size, 0, threading.Lock()

    def enter(self) -> bool:
        with self._lock:
            if self.count >= self.size:
                return False
            self.count += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.count -= 1


def _check_subwords(translator: DynamicTranslator, named: list[tuple[str, str]], limits: ServiceLimits) -> None:
    total = 0
    for where, sentence in named:
        try:
            count = len(translator.vocab.encode(sentence))
        except (ValueError, RuntimeError) as err:  # text the vocabulary cannot read
            raise HTTPException(status_code=422, detail=f"{where}: cannot be tokenized ({err})") from None
        if count > limits.max_sentence_subwords:
            raise HTTPException(status_code=422, detail=f"{where}: {count} subwords; at most "
                                                        f"{limits.max_sentence_subwords} a sentence")
        total += count
    if total > limits.max_request_subwords:
        raise HTTPException(status_code=422, detail=f"{total} subwords in all; at most "
                                                    f"{limits.max_request_subwords} a request: split it")


def _translate_all(translator: DynamicTranslator, named: list[tuple[str, str]], request: TranslateRequest,
                   seconds: float) -> list[dict[str, Any]]:
    start = time.monotonic()
    results = []
    for where, sentence in named:
        if time.monotonic() - start > seconds:
            raise HTTPException(status_code=503, headers={"Retry-After": "1"},
                                detail=f"{where}: the request ran past {seconds:g} s; send fewer sentences")
        try:
            results.append(translator.translate_one(sentence, request.budget_ms, request.strict).to_dict())
        except BudgetUnmeetable as err:
            raise HTTPException(status_code=503, headers={"Retry-After": "1"},
                                detail=f"{where}: {err}; retry, raise budget_ms or send strict=false") from None
        except ValueError as err:  # e.g. a sentence longer than the model's positions
            raise HTTPException(status_code=400, detail=f"{where}: {err}") from None
    return results


def serve(translator: DynamicTranslator, host: str = "127.0.0.1", port: int = 8080,
          limits: ServiceLimits | None = None) -> None:
    import uvicorn

    uvicorn.run(create_app(translator, limits), host=host, port=port, log_level="info")
