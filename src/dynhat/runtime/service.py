"""HTTP translation service over a dynamic translator (FastAPI on uvicorn).

Endpoints: ``POST /translate`` (one text or many sentences, optional budget), ``GET /status``, ``PUT /budget``,
``GET /health``. Requests are validated by pydantic models (a 422 that names the field); a sentence the model
cannot read is a 400; a ``strict`` request that no operating point is expected to serve within its budget now is
refused before any work with a 503 (and ``Retry-After``), where a plain one is answered late; nothing a client
sends stops the server. Handlers are plain functions, which FastAPI runs in
its thread pool, so requests are served concurrently; the translator keeps each request on one operating point.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dynhat.errors import BudgetUnmeetable
from dynhat.runtime.dynamic import DynamicTranslator

MAX_SENTENCES = 64
MAX_CHARS = 2000
MAX_BUDGET_MS = 60_000.0


class TranslateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(default=None, description="one sentence")
    sentences: list[str] | None = Field(default=None, max_length=MAX_SENTENCES, description="several sentences")
    budget_ms: float | None = Field(default=None, gt=0, le=MAX_BUDGET_MS, description="latency budget per sentence")
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


class BudgetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    budget_ms: float = Field(gt=0, le=MAX_BUDGET_MS)


def create_app(translator: DynamicTranslator) -> FastAPI:
    app = FastAPI(title="dynhat", summary="translation under a latency budget, switching SubTransformers")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/status")
    def status() -> dict[str, Any]:
        return translator.status()

    @app.put("/budget")
    def budget(request: BudgetRequest) -> dict[str, float]:
        translator.set_budget(request.budget_ms)
        return {"budget_ms": translator.budget_ms}

    @app.post("/translate")
    def translate(request: TranslateRequest) -> dict[str, Any]:
        if request.text is not None:
            named = [("text", request.text)]
        else:
            named = [(f"sentences[{i}]", s) for i, s in enumerate(request.sentences or [])]
        results = []
        for where, sentence in named:
            try:
                results.append(translator.translate_one(sentence, request.budget_ms, request.strict))
            except BudgetUnmeetable as err:
                raise HTTPException(status_code=503, headers={"Retry-After": "1"},
                                    detail=f"{where}: {err}; retry, raise budget_ms or send strict=false") from None
            except ValueError as err:  # e.g. a sentence longer than the model's positions
                raise HTTPException(status_code=400, detail=f"{where}: {err}") from None
        return {"translations": [r.to_dict() for r in results]}

    return app


def serve(translator: DynamicTranslator, host: str = "127.0.0.1", port: int = 8080) -> None:
    import uvicorn

    uvicorn.run(create_app(translator), host=host, port=port, log_level="info")
