"""The HTTP service, started for real on a loopback port: validation, budget changes, concurrent requests."""

from __future__ import annotations

import contextlib
import json
import math
import re
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn
from helpers.toy_runtime import sentences, toy_parts

from dynhat.runtime import DynamicTranslator, GreedyPolicy, PointCost
from dynhat.runtime.service import MAX_SENTENCES, ServiceLimits, create_app
from dynhat.translate.translator import Translator


def toy_translator(tmp_path: Path) -> DynamicTranslator:
    model, vocab, library = toy_parts(tmp_path)
    return DynamicTranslator(model, vocab, library, 60_000.0, GreedyPolicy(),
                             costs=[PointCost(1, 1), PointCost(2, 2), PointCost(4, 4)])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, DynamicTranslator]]:
    translator = toy_translator(tmp_path)
    with running(translator, ServiceLimits(max_inflight=16)) as url:
        yield url, translator


@contextlib.contextmanager
def running(translator: DynamicTranslator, limits: ServiceLimits) -> Iterator[str]:
    """The service on a free loopback port, for the duration of the block."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app(translator, limits), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.02)
    assert srv.started, "server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


def test_health_status_and_translation(server) -> None:
    url, translator = server
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    one = httpx.post(f"{url}/translate", json={"text": "5 6 7"}).json()["translations"]
    assert len(one) == 1 and one[0]["point"] == translator.points[2].id
    many = httpx.post(f"{url}/translate", json={"sentences": ["5 6", "7 8 9"], "budget_ms": 0.001}).json()
    assert [t["point_index"] for t in many["translations"]] == [0, 0]
    assert httpx.put(f"{url}/budget", json={"budget_ms": 123.0}).json() == {"budget_ms": 123.0}
    status = httpx.get(f"{url}/status").json()
    assert status["budget_ms"] == 123.0 and status["active_point"] == translator.points[0].id
    assert [(p["bleu"], p["bleu_int8"]) for p in status["points"]] == [(p.bleu, p.bleu_int8) for p in translator.points]


@pytest.mark.parametrize(("body", "message"), [
    ({"text": "   "}, "text is empty"),
    ({"text": 5}, "string"),
    ({}, "exactly one of"),
    ({"text": "5", "sentences": ["6"]}, "exactly one of"),
    ({"sentences": []}, "is empty"),
    ({"sentences": ["5"] * (MAX_SENTENCES + 1)}, "at most"),
    ({"sentences": ["5", ""]}, "sentences\\[1\\] is empty"),
    ({"text": "5", "budget_ms": -3}, "greater than 0"),
    ({"text": "5", "budget_ms": "fast"}, "number"),
    ({"text": "5", "beam": 9}, "Extra inputs"),
])
def test_bad_requests_get_a_clear_4xx_and_the_server_lives(server, body, message) -> None:
    url, _ = server
    response = httpx.post(f"{url}/translate", json=body)
    assert response.status_code == 422
    assert re.search(message, response.text), response.text
    assert httpx.get(f"{url}/health").status_code == 200


def test_unreadable_sentence_and_bad_budget(server) -> None:
    url, _ = server
    too_long = httpx.post(f"{url}/translate", json={"text": " ".join(["5"] * 300)})
    assert too_long.status_code == 422 and "300 subwords; at most 200" in too_long.json()["detail"]
    too_many = httpx.post(f"{url}/translate", json={"sentences": [" ".join(["5"] * 150)] * 14})
    assert too_many.status_code == 422 and "2100 subwords in all" in too_many.json()["detail"]
    assert httpx.put(f"{url}/budget", json={"budget_ms": 0}).status_code == 422
    assert httpx.put(f"{url}/budget", json={"budget_ms": 1e9}).status_code == 422
    assert httpx.get(f"{url}/health").status_code == 200


def test_a_strict_request_that_cannot_be_served_in_time_is_a_503(server) -> None:
    url, translator = server
    body = {"sentences": ["5 6", "7 8 9"], "budget_ms": 0.001, "strict": True}
    refused = httpx.post(f"{url}/translate", json=body)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    detail = refused.json()["detail"]
    assert detail.startswith("sentences[0]: no operating point is expected to translate")
    assert translator.points[0].id in detail  # the fastest point, which would still be late
    assert httpx.post(f"{url}/translate", json=body | {"strict": False}).status_code == 200  # late, not refused
    assert httpx.get(f"{url}/status").json()["refused"] == 1
    served = httpx.post(f"{url}/translate", json={"text": "5 6", "strict": True}).json()["translations"]
    assert served[0]["within_budget"] is True


def test_concurrent_requests_while_the_budget_changes(server, tmp_path: Path) -> None:
    url, translator = server
    src = sentences(6, seed=3)
    offline = {i: dict(zip(src, Translator(translator.model, translator.vocab, p.config).translate(src),
                           strict=True)) for i, p in enumerate(translator.points)}

    def request(k: int) -> list[tuple[str, dict]]:
        with httpx.Client() as client:
            if k % 3 == 0:
                client.put(f"{url}/budget", json={"budget_ms": [0.001, 60_000.0][k % 2]})
            body = client.post(f"{url}/translate", json={"sentences": src}).json()
            return list(zip(src, body["translations"], strict=True))

    with ThreadPoolExecutor(max_workers=6) as pool:
        pairs = [p for chunk in pool.map(request, range(18)) for p in chunk]
    assert len({t["point_index"] for _, t in pairs}) >= 2
    for s, t in pairs:
        assert t["text"] == offline[t["point_index"]][s]


@pytest.mark.parametrize(("raw", "field"), [
    (b'{"text": "5 6", "budget_ms": NaN}', "budget_ms"),
    (b'{"text": "5 6", "budget_ms": Infinity}', "budget_ms"),
    (b'{"text": "5 6", "budget_ms": "50"}', "budget_ms"),
    (b'{"text": "5 6", "budget_ms": true}', "budget_ms"),
    (b'{"text": "5 \\ud800 6"}', "text"),
    (b'{"text": "5 6", "strict": "yes"}', "strict"),
    (b'{"text": ', "body"),
    (b'\xff\xfe', "body"),
])
def test_no_coercion_no_nan_and_no_echo_of_the_input(server, raw, field) -> None:
    url, _ = server
    response = httpx.post(f"{url}/translate", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert any(field in err["loc"] for err in detail) and all("input" not in err for err in detail)
    budget = httpx.put(f"{url}/budget", content=b'{"budget_ms": NaN}', headers={"content-type": "application/json"})
    assert budget.status_code == 422


def test_a_large_body_is_refused_before_it_is_read(server) -> None:
    url, _ = server
    declared = httpx.post(f"{url}/translate", content=b"x" * 300_000, headers={"content-type": "application/json"})
    assert declared.status_code == 413

    def chunks() -> Iterator[bytes]:  # no content-length: the limit is enforced while reading
        yield b'{"text": "'
        for _ in range(100):
            yield b"5 " * 5_000

    streamed = httpx.post(f"{url}/translate", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and "over 262144 bytes" in streamed.text
    assert httpx.post(f"{url}/translate", json={"text": "5 6"}).status_code == 200


def test_overload_is_a_503_and_readiness_says_so(tmp_path: Path) -> None:
    translator = toy_translator(tmp_path)
    entered, release = threading.Event(), threading.Event()
    original = translator.translate_one

    def slow(*args: object, **kwargs: object) -> object:
        entered.set()
        release.wait(10)
        return original(*args, **kwargs)

    translator.translate_one = slow  # type: ignore[method-assign]
    with running(translator, ServiceLimits(max_inflight=1)) as url, ThreadPoolExecutor(1) as pool:
        first = pool.submit(httpx.post, f"{url}/translate", json={"text": "5 6"}, timeout=20)
        assert entered.wait(10)
        busy = httpx.post(f"{url}/translate", json={"text": "7 8"})
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert httpx.get(f"{url}/ready").status_code == 503
        release.set()
        assert first.result().status_code == 200
        assert httpx.get(f"{url}/ready").json() == {"ready": True, "inflight": 0, "max_inflight": 1}


def test_a_request_past_its_time_limit_stops_between_sentences(tmp_path: Path) -> None:
    translator = toy_translator(tmp_path)
    original = translator.translate_one

    def slow(*args: object, **kwargs: object) -> object:
        time.sleep(0.3)
        return original(*args, **kwargs)

    translator.translate_one = slow  # type: ignore[method-assign]
    with running(translator, ServiceLimits(request_seconds=0.2)) as url:
        response = httpx.post(f"{url}/translate", json={"sentences": ["5 6", "7 8", "9 10"]})
    assert response.status_code == 503 and response.json()["detail"].startswith("sentences[1]: the request ran past")


def test_budget_changes_need_the_token_when_one_is_set(tmp_path: Path) -> None:
    translator = toy_translator(tmp_path)
    with running(translator, ServiceLimits(budget_token="s3cret")) as url:
        assert httpx.put(f"{url}/budget", json={"budget_ms": 50.0}).status_code == 401
        wrong = httpx.put(f"{url}/budget", json={"budget_ms": 50.0}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = httpx.put(f"{url}/budget", json={"budget_ms": 50.0}, headers={"Authorization": "Bearer s3cret"})
        assert right.json() == {"budget_ms": 50.0} and translator.budget_ms == 50.0


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_inflight"):
        ServiceLimits(max_inflight=0)
    with pytest.raises(ValueError, match="request_seconds"):
        ServiceLimits(request_seconds=math.nan)
    assert json.loads(json.dumps(ServiceLimits().__dict__))["max_body_bytes"] == 262144


def test_the_service_imports_no_trainer_and_no_optimiser() -> None:
    import subprocess
    import sys

    code = ("import sys, dynhat.runtime.service; "
            "print(sorted(m for m in ('pymoo', 'dynhat.train.trainer', 'dynhat.search.pareto') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
