"""serve.py under poison titles: a bad title fails only its own request (or gets a per-title error), never the
requests micro-batched with it, never the server; /health keeps answering."""

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

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


@pytest.mark.parametrize("body,status", [
    (b'{"titles": ["\\ud800"]}', 200),  # a lone surrogate escape, as crawled JSON holds
    (b'{"titles": ["gold ring \\udfff"]}', 200),
    ('{"titles": ["gold \ud800 ring"]}'.encode("utf-8", "surrogatepass"), 200),  # the same as raw bytes
    (b'{"titles": ["gold \xff\xfe ring"]}', 400),  # not UTF-8
    (b'{"titles": ["x' + b"y" * (1 << 20) + b'"]}', 413),  # 1 MB
    (b'{"titles": [null]}', 422),
    (b'{"titles": [["gold ring"]]}', 422),
    (b'{"titles": {"a": 1}}', 422),
    (b'{"titles": [' + b"[" * 5000 + b"]" * 5000 + b"]}", 400),  # nested past the parser's depth
])
def test_poison_requests_get_their_own_answer_and_the_service_goes_on(client, body, status):
    r = client.post("/predict", content=body, headers=JSON)
    assert r.status_code == status, r.text
    if status == 200:
        assert r.json()["predictions"][0]["label"] in LABELS
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
