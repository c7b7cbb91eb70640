"""serve.py under poison titles: a bad title fails only its own request (or gets a per-title error), never the
requests micro-batched with it, never the server; /health keeps answering."""

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

from category_classification.core.cli import run
from category_classification.inference.predictors import Predictor, load_predictor
from category_classification.serve import MicroBatcher, create_app
from predict_fixtures import LABELS, make_linear

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    app = create_app(load_predictor(make_linear(tmp_path_factory.mktemp("serve_faults") / "linear")),
                     max_batch=16, max_wait_ms=2)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize("body,status,error", [
    (b'{"titles": ["\\ud800"]}', 200, None),  # a lone surrogate escape, as crawled JSON holds
    (b'{"titles": ["gold ring \\udfff"]}', 200, None),
    ('{"titles": ["gold \ud800 ring"]}'.encode("utf-8", "surrogatepass"), 200, None),  # the same as raw bytes
    (b'{"titles": ["gold \xff\xfe ring"]}', 400, None),  # not UTF-8
    (b'{"titles": ["x' + b"y" * (1 << 20) + b'"]}', 200, "limit is 2000"),  # 1 MB: that title's own error
    (b'{"titles": [null]}', 200, "not a string"),
    (b'{"titles": [["gold ring"]]}', 200, "not a string"),
    (b'{"titles": {"a": 1}}', 422, None),
    (b'{"titles": [' + b"[" * 5000 + b"]" * 5000 + b"]}", 400, None),  # nested past the parser's depth
])
def test_poison_requests_get_their_own_answer_and_the_service_goes_on(client, body, status, error):
    r = client.post("/predict", content=body, headers=JSON)
    assert r.status_code == status, r.text
    if status == 200:
        first = r.json()["predictions"][0]
        assert (error in first["error"] and first["label"] is None) if error else first["label"] in LABELS
    good = client.post("/predict", json={"titles": ["gold silver ring pendant"]})
    assert good.status_code == 200 and good.json()["predictions"][0]["label"] == "Jewelry"
    assert client.get("/health").json()["status"] == "ok"


def test_blank_and_unencodable_titles_get_per_title_answers(client):
    titles = ["gold silver ring pendant", "", "   \t ", "\x00\x01", "gold ring \ud800 necklace", "diaper stroller"]
    r = client.post("/predict", content=json.dumps({"titles": titles}), headers=JSON)  # \ud800 as an escape
    assert r.status_code == 200
    preds = r.json()["predictions"]
    assert [p["label"] for p in preds] == ["Jewelry", None, None, None, "Jewelry", "Baby"]
    assert [p.get("error") for p in preds] == [None, "blank text", "blank text", "blank text", None, None]
    r = client.post("/predict", json={"titles": [" "]})
    assert r.status_code == 200 and r.json()["predictions"] == [{"error": "blank text", "label": None}]


class Picky(Predictor):
    """One-hot on the title's number; any batch holding 'boom' raises, as a model that cannot take a text."""

    def __init__(self):
        super().__init__(".", {"labels": LABELS})
        self.calls = []

    def predict_proba(self, texts):
        self.calls.append(len(texts))
        if "boom" in texts:
            raise RuntimeError("cannot encode")
        out = np.zeros((len(texts), len(LABELS)), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i, int(t) % len(LABELS)] = 1.0
        return out


def test_a_failing_title_fails_only_its_own_request_in_a_batch():
    pred = Picky()

    async def scenario():
        batcher = MicroBatcher(pred.predict_proba, max_batch=64, max_wait_ms=50)
        await batcher.start()
        requests = [[str(i)] for i in range(10)] + [["7", "boom"]] + [[str(i)] for i in range(10, 20)]
        results = await asyncio.gather(*(batcher.submit(r) for r in requests), return_exceptions=True)
        await batcher.stop()
        return requests, results

    requests, results = asyncio.run(scenario())
    for titles, res in zip(requests, results):
        if "boom" in titles:
            assert isinstance(res, RuntimeError)
        else:
            assert res.argmax(axis=1).tolist() == [int(t) % len(LABELS) for t in titles]
    assert max(pred.calls) > 2  # the poison really shared a batch with good requests


def test_eight_clients_one_sending_poison(tmp_path):
    app = create_app(Picky(), max_batch=64, max_wait_ms=20)
    with TestClient(app, raise_server_exceptions=False) as c:
        def client_run(k):
            codes = []
            for i in range(25):
                title = "boom" if k == 0 else str(k * 100 + i)
                r = c.post("/predict", json={"titles": [title]})
                ok = r.status_code == 200 and r.json()["predictions"][0]["label"] == LABELS[(k * 100 + i) % 6]
                codes.append(r.status_code if k == 0 else ok)
            return codes

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(client_run, range(8)))
        assert results[0] == [500] * 25
        assert all(all(r) for r in results[1:])
        assert c.get("/health").json()["status"] == "ok"
        assert "model failed on this request" in c.post("/predict", json={"titles": ["boom"]}).json()["detail"]


@pytest.fixture(scope="module")
def linear_dir(tmp_path_factory):
    return make_linear(tmp_path_factory.mktemp("serve_cli") / "linear")


@pytest.mark.parametrize("flags,words", [(["--threshold", "nan"], "--threshold"), (["--threshold", "5"], "--threshold"),
                                         (["--max_wait_ms", "inf"], "--max_wait_ms"), (["--port", "99999"], "--port"),
                                         (["--host", "999.1.1.1"], "cannot listen"), (["--body_timeout_s", "0"], "--body_timeout_s"),
                                          (["--header_timeout_s", "nan"], "--header_timeout_s")])
def test_impossible_service_flags_are_one_line(linear_dir, capsys, flags, words):
    from category_classification import serve

    assert run(serve.main, ["--model", str(linear_dir), *flags]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x]
    assert len(err) == 1 and err[0].startswith("error: ") and words in err[0], err


def test_a_port_in_use_is_one_line(linear_dir, capsys):
    import socket

    from category_classification import serve

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        assert run(serve.main, ["--model", str(linear_dir), "--port", str(taken.getsockname()[1])]) == 2
    finally:
        taken.close()
    assert "cannot listen" in capsys.readouterr().err


def test_a_stalled_body_gets_408_and_a_nan_metric_never_breaks_model(linear_dir, tmp_path):
    import json as _json
    import os
    import re
    import shutil
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    model = tmp_path / "m"
    shutil.copytree(linear_dir, model)
    (model / "metrics.json").write_text('{"validation": {"macro_f1": NaN, "accuracy": 0.9}}', encoding="utf-8")
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "category_classification.serve", "--model", str(model),
                             "--port", "0", "--body_timeout_s", "1", "--header_timeout_s", "1"],
                            stderr=subprocess.PIPE, text=True,
                            cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)})
    try:
        line = proc.stderr.readline()
        port = int(re.search(r":(\d+)\s*$", line).group(1))
        assert port > 0, line
        for _ in range(100):  # until uvicorn answers
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        stalled = socket.create_connection(("127.0.0.1", port), timeout=10)
        stalled.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 100\r\n\r\n{\"titles\": [")
        answer = stalled.recv(4096).decode()
        stalled.close()
        assert answer.startswith("HTTP/1.1 408"), answer
        # a client trickling its request head: closed at the header deadline (it held the socket forever)
        trickle = socket.create_connection(("127.0.0.1", port), timeout=10)
        started = time.monotonic()
        trickle.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        for _ in range(4):
            time.sleep(0.2)
            try:
                trickle.sendall(b"X-Slow: 1\r\n")
            except OSError:
                break
        try:
            closed = trickle.recv(4096) == b""
        except ConnectionResetError:
            closed = True
        assert closed and time.monotonic() - started < 5
        trickle.close()
        # a keep-alive client that sends a second request after its first answer is still served
        conn = socket.create_connection(("127.0.0.1", port), timeout=10)
        for pause in (0, 0.5):
            time.sleep(pause)
            conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            while b"\r\n\r\n" not in got or len(got.split(b"\r\n\r\n", 1)[1]) < int(
                    re.search(rb"content-length: (\d+)", got.lower()).group(1)):
                got += conn.recv(65536)
            assert got.startswith(b"HTTP/1.1 200"), got
        conn.close()
        conn = socket.create_connection(("127.0.0.1", port), timeout=10)
        conn.sendall(b"GET /model HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = b""
        while chunk := conn.recv(65536):
            got += chunk
        conn.close()
        head, body = got.decode().split("\r\n\r\n", 1)
        assert head.startswith("HTTP/1.1 200"), head
        assert _json.loads(body)["training"]["validation"]["macro_f1"] is None
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_trickled_body_gets_408_at_one_deadline(linear_dir):
    app = create_app(load_predictor(linear_dir), max_batch=4, max_wait_ms=1, body_timeout_s=1.0)
    body = b'{"titles": ["gold ring"]}'
    sent: list = []

    async def receive():  # one byte every 0.3 s: each wait is short, the whole body takes 7.5 s
        await asyncio.sleep(0.3)
        i = len([m for m in sent if m == "chunk"])
        sent.append("chunk")
        return {"type": "http.request", "body": body[i:i + 1], "more_body": i + 1 < len(body)}

    answers = []

    async def send(message):
        answers.append(message)

    scope = {"type": "http", "method": "POST", "path": "/predict", "raw_path": b"/predict", "query_string": b"",
             "headers": [(b"content-type", b"application/json")], "http_version": "1.1", "scheme": "http",
             "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1), "root_path": "", "app": app}

    async def main():
        async with app.router.lifespan_context(app):
            await app(scope, receive, send)

    asyncio.run(main())
    start = next(m for m in answers if m["type"] == "http.response.start")
    assert start["status"] == 408 and len(sent) <= 5  # stopped after about 1 s, not after the whole body
