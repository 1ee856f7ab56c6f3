"""The HTTP service, started for real on a loopback port: validation, budget changes, concurrent requests."""

from __future__ import annotations

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
from dynhat.runtime.service import MAX_SENTENCES, create_app
from dynhat.translate.translator import Translator


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, DynamicTranslator]]:
    model, vocab, library = toy_parts(tmp_path)
    translator = DynamicTranslator(model, vocab, library, 60_000.0, GreedyPolicy(),
                                   costs=[PointCost(1, 1), PointCost(2, 2), PointCost(4, 4)])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app(translator), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.02)
    assert srv.started, "server did not start"
    try:
        yield f"http://127.0.0.1:{port}", translator
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
    assert too_long.status_code == 400 and "at most" in too_long.json()["detail"]
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
