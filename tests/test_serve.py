"""The HTTP service with FastAPI's test client: endpoints, limits, and micro-batching of concurrent requests."""

import asyncio
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from category_classification.inference.predictors import Predictor, load_predictor, training_figures
from category_classification.serve import MicroBatcher, ServiceLimits, create_app
from predict_fixtures import LABELS, make_linear


@pytest.fixture(scope="module")
def linear_dir(tmp_path_factory):
    d = make_linear(tmp_path_factory.mktemp("linear") / "model")
    (d / "metrics.json").write_text(json.dumps({"model": "linear", "train_seconds": 1.5,
                                                "validation": {"macro_f1": 0.9, "accuracy": 0.95, "n": 10}}))
    return d


@pytest.fixture()
def client(linear_dir):
    predictor = load_predictor(linear_dir)
    app = create_app(predictor, max_batch=16, max_wait_ms=5, limits=ServiceLimits(max_items=4, max_chars=50),
                     model_info={"training": training_figures(linear_dir)})
    with TestClient(app) as c:
        yield c


def test_predict_matches_the_predictor(client, linear_dir):
    titles = ["gold silver ring pendant", "diaper stroller infant bottle"]
    r = client.post("/predict", json={"titles": titles, "top_k": 3})
    assert r.status_code == 200
    preds = r.json()["predictions"]
    direct = load_predictor(linear_dir).predict(titles, top_k=3)
    assert [p["label"] for p in preds] == [d["label"] for d in direct] == ["Jewelry", "Baby"]
    assert len(preds[0]["top_k"]) == 3
    assert preds[0]["score"] == pytest.approx(direct[0]["score"], abs=1e-6)
    # below the threshold the label is null; the top-k stays
    titles.append("blue xl")  # no class words: a low score
    low = min(d["score"] for d in load_predictor(linear_dir).predict(titles))
    r = client.post("/predict", json={"titles": titles, "threshold": low + 1e-4})
    preds = r.json()["predictions"]
    assert [p["label"] for p in preds].count(None) >= 1 and all(p["top_k"] for p in preds)
    assert all((p["label"] is None) == (p["score"] < low + 1e-4) for p in preds)


def test_health_and_model(client):
    h = client.get("/health").json()
    assert h["status"] == "ok"
    assert client.head("/health").status_code == 200
    m = client.get("/model").json()
    assert m["kind"] == "linear" and m["labels"] == LABELS
    assert m["training"]["validation"]["macro_f1"] == 0.9 and m["training"]["train_seconds"] == 1.5
    assert m["limits"] == {"max_items": 4, "max_chars": 50}


@pytest.mark.parametrize("body,status,words", [
    ({"titles": ["a"] * 5}, 413, "limit is 4"),
    ({"titles": "not a list"}, 422, "titles"),
    ({}, 422, "titles: Field required"),
    ({"titles": ["a"], "top_k": 0}, 422, "top_k"),
])
def test_limits_and_malformed_requests(client, body, status, words):
    r = client.post("/predict", json=body)
    assert r.status_code == status
    assert words in r.json()["detail"]


def test_a_bad_title_gets_its_own_error_and_its_neighbours_their_labels(client):
    p = []
    for titles in (["gold ring", 5, None, ["x"]], ["x" * 51, " ", "diaper stroller"]):  # the client allows 4
        r = client.post("/predict", json={"titles": titles})
        assert r.status_code == 200
        p += r.json()["predictions"]
    assert [x["label"] for x in p] == ["Jewelry", None, None, None, None, None, "Baby"]
    assert [p[i]["error"] for i in (1, 2, 3)] == ["title is not a string"] * 3
    assert "limit is 50" in p[4]["error"] and p[5]["error"]


def test_not_json_and_huge_body(client):
    r = client.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "invalid request" in r.json()["detail"]
    r = client.post("/predict", content=b"x" * 100_000, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "bytes" in r.json()["detail"]
    # no Content-Length (chunked): counted as it arrives
    chunks = iter([b'{"titles": ['] + [b'"gold ring", ' * 100] * 20 + [b'"x"]}'])
    r = client.post("/predict", content=chunks, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "over the limit" in r.json()["detail"]
    r = client.post("/predict", content=iter([b'{"titles": ', b'["gold ring"]}']),
                    headers={"content-type": "application/json"})
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] == "Jewelry"


class CountingPredictor(Predictor):
    """Returns one-hot rows keyed on the title so results can be checked after batching; records calls."""

    def __init__(self):
        super().__init__(".", {"labels": LABELS})
        self.calls = []

    def predict_proba(self, texts):
        self.calls.append(len(texts))
        out = np.zeros((len(texts), len(LABELS)), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i, int(t) % len(LABELS)] = 1.0
        return out


def test_concurrent_requests_share_batches_and_get_their_own_results():
    pred = CountingPredictor()

    async def scenario():
        batcher = MicroBatcher(pred.predict_proba, max_batch=64, max_wait_ms=50)
        await batcher.start()
        requests = [[str(i), str(i + 1)] for i in range(20)]
        results = await asyncio.gather(*(batcher.submit(r) for r in requests))
        await batcher.stop()
        return requests, results, batcher.stats

    requests, results, stats = asyncio.run(scenario())
    for titles, probs in zip(requests, results):
        assert probs.argmax(axis=1).tolist() == [int(t) % len(LABELS) for t in titles]
    assert stats["requests"] == 20 and stats["titles"] == 40
    assert len(pred.calls) < 20  # batched: fewer model calls than requests
    assert max(pred.calls) > 2


def test_batches_stop_at_max_batch():
    pred = CountingPredictor()

    async def scenario():
        batcher = MicroBatcher(pred.predict_proba, max_batch=8, max_wait_ms=50)
        await batcher.start()
        await asyncio.gather(*(batcher.submit([str(i)]) for i in range(30)))
        await batcher.stop()

    asyncio.run(scenario())
    assert sum(pred.calls) == 30 and max(pred.calls) <= 8


def test_a_failing_model_gives_500_and_the_service_goes_on():
    class Flaky(CountingPredictor):
        def predict_proba(self, texts):
            if "boom" in texts:
                raise RuntimeError("model failed")
            return super().predict_proba(texts)

    app = create_app(Flaky(), max_wait_ms=0)
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.post("/predict", json={"titles": ["boom"]}).status_code == 500
        r = c.post("/predict", json={"titles": ["3"]})
        assert r.status_code == 200 and r.json()["predictions"][0]["label"] == LABELS[3]
