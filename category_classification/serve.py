"""HTTP service for any trained model directory: FastAPI + uvicorn, concurrent requests micro-batched.

    python category_classification/serve.py --model runs/encoder_small_onnx --port 8000
    curl -s localhost:8000/predict -H 'content-type: application/json' -d '{"titles": ["Nike Air Max 90"], "top_k": 3}'

POST /predict {"titles": [...], "top_k": k, "threshold": t?} (models that predict GS1 levels add "levels" to
each prediction, as predict.py does); GET /health; GET /model. Requests that
arrive within --max_wait_ms of each other run as one model batch of up to --max_batch titles; a blank title
(or one that is not a string, or is over --max_chars) gets {"error": ..., "label": null} in its place, and a
request the model fails on fails alone (docs/reliability.md).
"""

import argparse
import asyncio
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from category_classification.core.cli import UserError, run
from category_classification.data.text import model_text, text_problem


@dataclass
class ServiceLimits:
    max_items: int = 256  # titles per request
    max_chars: int = 2000  # characters per title
    # Checked while the body arrives, so a huge body is neither held in memory nor decoded.
    max_body_bytes: int = 0  # 0: derived from the two above

    def body_bytes(self) -> int:
        # 12 bytes a character: the JSON escape \ud83d\ude00 of one character outside the BMP
        return self.max_body_bytes or self.max_items * (self.max_chars * 12 + 16) + 4096


class PredictRequest(BaseModel):
    # Any item type: a title that is not a string gets its own error in its place, never the whole request's
    titles: list[Any] = Field(description="offer titles (title + description works too)")
    top_k: int = Field(1, ge=1, le=1000, description="labels with probabilities to return per title")
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="below it the label is null")


class MicroBatcher:
    """Collects the titles of concurrent requests into one model call of up to `max_batch` titles.

    `score(texts)` is the model call (a predictor's `scores`): its result is sliced by rows, each request
    getting its own. The first request of a batch waits at most `max_wait_ms` for company; the model runs
    on one worker thread, so the event loop keeps accepting requests (which form the next batch) meanwhile.
    """

    def __init__(self, score, max_batch: int = 64, max_wait_ms: float = 5.0):
        self.score = score
        self.max_batch = max(1, int(max_batch))
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000.0
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self.stats = {"requests": 0, "titles": 0, "batches": 0, "max_batch_seen": 0}

    async def start(self):
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self._loop())

    async def stop(self):
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=False)

    async def submit(self, titles: list[str]):
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put((titles, fut))
        return await fut

    async def _loop(self):
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            n = len(batch[0][0])
            deadline = loop.time() + self.max_wait
            while n < self.max_batch:
                try:
                    item = self.queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self.queue.get(), remaining)
                    except asyncio.TimeoutError:
                        break
                batch.append(item)
                n += len(item[0])
            await self._run(loop, batch)

    async def _run(self, loop, batch):
        """One model call for the whole batch; if it fails, each request alone, so a request the model
        cannot take fails only itself (a 500 for it), never the requests batched with it."""
        texts = [t for titles, _ in batch for t in titles]
        try:
            scores = await loop.run_in_executor(self.executor, self.score, texts)
        except Exception as exc:  # noqa: BLE001 (handed to the request(s) it belongs to)
            if len(batch) == 1:
                if not batch[0][1].done():
                    batch[0][1].set_exception(exc)
                return
            for item in batch:
                await self._run(loop, [item])
            return
        self.stats["requests"] += len(batch)
        self.stats["titles"] += len(texts)
        self.stats["batches"] += 1
        self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], len(texts))
        start = 0
        for titles, fut in batch:
            if not fut.done():
                fut.set_result(scores[start:start + len(titles)])
            start += len(titles)


class BodyLimit:
    """ASGI middleware: a body over `max_bytes` gets 413 before it is parsed or held in memory.

    Declared sizes (Content-Length) are refused at once; chunked bodies are counted as they arrive and
    refused as soon as they pass the limit.
    """

    def __init__(self, app, max_bytes: int, hint: str = "", body_timeout_s: float = 30.0):
        self.app = app
        self.max_bytes = int(max_bytes)
        self.hint = hint
        self.body_timeout_s = float(body_timeout_s)  # a body not complete in this time gets 408, its socket freed

    def _error(self, size: str) -> HTTPException:
        return HTTPException(status_code=413, detail=f"request body of {size} bytes is over the limit of "
                                                     f"{self.max_bytes} bytes ({self.hint})")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            exc = self._error(declared.decode())
            return await JSONResponse(status_code=413, content={"detail": exc.detail})(scope, receive, send)
        received, deadline, body_done = 0, None, False

        async def counted_receive():
            nonlocal received, deadline, body_done
            if body_done:  # after the body (a wait for the client to disconnect): no deadline
                return await receive()
            loop = asyncio.get_running_loop()
            if deadline is None:  # one deadline for the whole body: a trickle of bytes does not renew it
                deadline = loop.time() + self.body_timeout_s
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise HTTPException(status_code=408, detail=f"the request body took over {self.body_timeout_s:g} s") from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # raised inside the endpoint's body read: FastAPI turns it into the 413 response
                    raise self._error(f"more than {self.max_bytes}")
            return message

        await self.app(scope, counted_receive, send)


def title_problem(title, max_chars: int) -> str | None:
    """Why one title of a request cannot be classified, or None."""
    if not isinstance(title, str):
        return "title is not a string"
    if len(title) > max_chars:
        return f"title has {len(title)} characters; the limit is {max_chars} per title"
    return text_problem(title)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "body"
        parts.append(f"{loc}: {err.get('msg')}")
    return "invalid request: " + "; ".join(parts[:5]) + (" ..." if len(parts) > 5 else "")


def create_app(predictor, max_batch: int = 64, max_wait_ms: float = 5.0, limits: ServiceLimits | None = None,
               threshold: float | None = None, model_info: dict | None = None,
               body_timeout_s: float = 30.0) -> FastAPI:
    """The FastAPI app around a loaded predictor (see predictors.load_predictor)."""
    limits = limits or ServiceLimits()
    # predictor.scores: the same model output predictor.predict formats, so the service returns what predict.py
    # does (GS1 levels included) while formatting each request with its own top_k and threshold
    batcher = MicroBatcher(predictor.scores, max_batch=max_batch, max_wait_ms=max_wait_ms)
    started = time.time()

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="offer category classifier", lifespan=lifespan)
    app.state.batcher = batcher

    app.add_middleware(BodyLimit, max_bytes=limits.body_bytes(), body_timeout_s=body_timeout_s, hint=(
        f"at most {limits.max_items} titles of {limits.max_chars} characters"))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        return JSONResponse(status_code=422, content={"detail": _validation_message(exc)})

    @app.api_route("/health", methods=["GET", "HEAD"])  # HEAD: load balancers' health checks
    async def health():
        return {"status": "ok", "uptime_s": round(time.time() - started, 1), **batcher.stats}

    @app.get("/model")
    async def model():
        return {**predictor.describe(), **(model_info or {}),
                "limits": {"max_items": limits.max_items, "max_chars": limits.max_chars},
                "batching": {"max_batch": batcher.max_batch, "max_wait_ms": batcher.max_wait * 1000},
                "default_threshold": threshold}

    @app.post("/predict")
    async def predict(req: PredictRequest):
        if len(req.titles) > limits.max_items:
            return JSONResponse(status_code=413, content={
                "detail": f"{len(req.titles)} titles in one request; the limit is {limits.max_items}"})
        # The one text rule of data/text.py: a blank title, one that is not a string or one over --max_chars
        # gets its own error in its place; a lone surrogate or a control character is cleaned, so no title
        # can fail its request or the batch it shares with other requests.
        problems = [title_problem(t, limits.max_chars) for t in req.titles]
        texts = [model_text(t) for t, bad in zip(req.titles, problems) if not bad]
        try:
            scores = await batcher.submit(texts) if texts else None
        except Exception as exc:  # noqa: BLE001 (this request only; the batcher has already retried the rest)
            return JSONResponse(status_code=500, content={
                "detail": f"the model failed on this request ({type(exc).__name__})"})
        t = req.threshold if req.threshold is not None else threshold
        # Plain str/float/None already: a JSONResponse skips FastAPI's generic encoder (a tenth of the
        # service's CPU per one-title request).
        good = iter(predictor.format(scores, top_k=req.top_k, threshold=t) if texts else [])
        return JSONResponse({"predictions": [{"error": bad, "label": None} if bad else next(good)
                                             for bad in problems]})

    return app


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a trained model directory (holds category_model.json)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max_batch", type=int, default=64, help="titles per model call at most")
    p.add_argument("--max_wait_ms", type=float, default=5.0, help="how long a request waits to share a batch")
    p.add_argument("--max_items", type=int, default=256, help="titles per request at most (else 413)")
    p.add_argument("--max_chars", type=int, default=2000, help="characters per title at most (else 413)")
    p.add_argument("--threshold", type=float, default=None, help="default 'none of these' threshold")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda or mps (torch models)")
    p.add_argument("--precision", choices=("fp32", "int8"), default=None, help="ONNX directories only")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch / onnxruntime")
    p.add_argument("--body_timeout_s", type=float, default=30.0,
                   help="a request whose body is not complete this many seconds after it starts gets 408")
    p.add_argument("--header_timeout_s", type=float, default=10.0,
                   help="a connection that has not sent a whole request head (request line and headers) this many "
                        "seconds after it opened, or after its last answer, is closed")
    p.add_argument("--log_level", default="warning", choices=("critical", "error", "warning", "info", "debug", "trace"))
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    import uvicorn

    from category_classification.inference.predictors import load_predictor, training_figures

    if args.max_batch < 1 or args.max_items < 1 or args.max_chars < 1:
        raise UserError("--max_batch, --max_items and --max_chars must be at least 1")
    if not 0 <= args.max_wait_ms <= 10_000:  # nan and inf fail this too; an endless wait hangs every request
        raise UserError(f"--max_wait_ms must be between 0 and 10000, got {args.max_wait_ms}")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise UserError(f"--threshold is a probability between 0 and 1, got {args.threshold}")
    for flag in ("body_timeout_s", "header_timeout_s"):
        if not 0 < getattr(args, flag) <= 3600:
            raise UserError(f"--{flag} must be between 0 and 3600 seconds, got {getattr(args, flag)}")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be between 0 and 65535, got {args.port}")
    sock = bind(args.host, args.port)  # before the model loads: a taken port or a wrong host costs nothing
    predictor = load_predictor(args.model, device=args.device, batch_size=args.max_batch,
                               precision=args.precision, threads=args.threads)
    predictor.scores(["warm-up title"])  # first call allocates; keep it out of the first request
    app = create_app(predictor, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                     limits=ServiceLimits(args.max_items, args.max_chars), threshold=args.threshold,
                     model_info={"training": training_figures(args.model)}, body_timeout_s=args.body_timeout_s)
    host, port = sock.getsockname()[:2]
    print(f"serving {args.model} ({predictor.describe()['kind']}, {predictor.runtime}) on "
          f"http://{host}:{port}", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level=args.log_level, access_log=False, timeout_graceful_shutdown=10,
                            http=header_deadline_protocol(args.header_timeout_s))
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def header_deadline_protocol(seconds: float):
    """uvicorn's HTTP protocol class (httptools where installed, else h11, as its "auto" picks) with one more
    rule: a connection that has not sent a whole request head `seconds` after it opened or after its last
    answer is closed. uvicorn has no such timeout, so a client trickling its headers held a socket forever
    (the body has its own deadline: BodyLimit)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol as base

    class HeaderDeadline(base):
        header_deadline = None  # one timer per connection: re-armed after each answer, cancelled on close

        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm_header_deadline()

        def connection_lost(self, exc):
            self._cancel_header_deadline()
            super().connection_lost(exc)

        def on_response_complete(self):
            super().on_response_complete()
            self._arm_header_deadline()

        def _cancel_header_deadline(self):
            if self.header_deadline is not None:
                self.header_deadline.cancel()
                self.header_deadline = None

        def _arm_header_deadline(self):
            # the previous timer goes: a pipelined request answered later would have been closed by the
            # deadline of the answer before it, and every answer's timer held its connection for `seconds`
            self._cancel_header_deadline()
            waiting_after = self.cycle  # a new request head, once whole, makes a new cycle

            def expire():
                self.header_deadline = None
                idle = waiting_after is None or waiting_after.response_complete
                if self.cycle is waiting_after and idle and not self.transport.is_closing():
                    self.transport.close()

            self.header_deadline = self.loop.call_later(seconds, expire)

    return HeaderDeadline


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound now: a port in use or an address this machine lacks is one line."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(2048)
    except (OSError, OverflowError) as exc:
        raise UserError(f"cannot listen on {host}:{port}: {getattr(exc, 'strerror', None) or exc}") from None
    return sock


def cli() -> int:
    """Console-script entry point (see [project.scripts] in pyproject.toml)."""
    return run(main)


if __name__ == "__main__":
    sys.exit(cli())
