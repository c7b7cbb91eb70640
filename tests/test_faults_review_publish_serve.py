"""A review of three fixes: a model save's backup folder (core/artifacts.publish_dir and its restore), the
service's request-head deadline (serve.header_deadline_protocol) and measure_lora_latency's label check,
each against the kills, races, reused pids and connections a real deployment sends."""

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from category_classification.core import artifacts
from category_classification.core.cli import UserError, run
from predict_fixtures import LABELS, make_dataset, make_hf, toy_offers

REPO = Path(__file__).resolve().parents[1]


# --- core/artifacts: the backup of a publish ---------------------------------------------------------------

def _hf_like(folder: Path, tag: str) -> Path:
    """A model shaped like the LoRA trainer's: files, a merged/ folder, the model info."""
    (folder / "merged").mkdir(parents=True)
    (folder / "merged" / "w.bin").write_text(tag)
    (folder / "adapter.bin").write_text(tag)
    artifacts.write_model_info(folder, "hf_sequence_classification", ["a", "b"], tag=tag)
    return folder


def _killed_midway(out: Path, pid) -> Path:
    """`out` as a publish by process `pid` leaves it when killed after moving the old model aside and the
    new merged/ in."""
    backup = out / f"{artifacts.PUBLISH_BACKUP}{pid}"
    backup.mkdir()
    for name in (artifacts.MODEL_INFO, "adapter.bin", "merged"):
        os.replace(out / name, backup / name)
    (out / "merged").mkdir()
    (out / "merged" / "w.bin").write_text("new, never finished")
    return backup


def test_a_killed_save_whose_pid_now_runs_another_process_is_put_back(tmp_path):
    """The killed trainer's pid belongs to a live process now (pid 1 in every container): the loader put
    nothing back, so the model never loaded again."""
    out = _hf_like(tmp_path / "m", "old")
    _killed_midway(out, 1)
    assert artifacts.read_model_info(out)["tag"] == "old"
    assert (out / "merged" / "w.bin").read_text() == "old"
    assert not list(out.glob(artifacts.PUBLISH_BACKUP + "*"))


def test_a_save_with_the_pid_of_the_killed_one_replaces_the_model_whole(tmp_path):
    """The next run has the killed run's pid (a container restarted): its publish moved the half-published
    files into the killed run's backup and died on merged/ (Directory not empty), a traceback."""
    out = _hf_like(tmp_path / "m", "old")
    _killed_midway(out, os.getpid())
    stage = _hf_like(out / "stage", "new")
    artifacts.publish_dir(stage, out)
    assert sorted(p.name for p in out.iterdir()) == ["adapter.bin", artifacts.MODEL_INFO, "merged"]
    assert artifacts.read_model_info(out)["tag"] == "new"
    assert (out / "merged" / "w.bin").read_text() == "new"


def test_a_dead_runs_stage_of_our_pid_is_not_published_with_our_model(tmp_path):
    from category_classification.models.linear import LinearConfig, LinearTextClassifier, load_linear

    texts, labels = toy_offers(5)
    out = tmp_path / "m"
    out.mkdir()
    stale = out / f".save-{os.getpid()}"  # a killed run of the same pid had begun writing here
    stale.mkdir()
    (stale / "extra_weights.npz").write_bytes(b"from the killed run")
    LinearTextClassifier(LABELS, LinearConfig(word_ngrams=(1, 1))).fit(texts, labels).save(out)
    assert not (out / "extra_weights.npz").exists() and not stale.exists()
    assert load_linear(out).config.word_ngrams == (1, 1)


_STAGER = """
import fcntl, os, sys, time
stage = sys.argv[1]
os.makedirs(stage)
fd = os.open(stage, os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("staging", flush=True)
time.sleep(60)
"""


def test_a_killed_saves_stage_whose_pid_now_runs_another_process_is_removed(tmp_path):
    """A killed save's `.save-<pid>` was removed only once its pid was gone: with the pid reused (pid 1 in
    every container, here our parent's) it stayed for ever, weights included. Now a stage no live save holds
    locked is stale, and a live save's stage (another process writing now) is left alone."""
    import subprocess
    import sys

    from category_classification.models.linear import LinearConfig, LinearTextClassifier, load_linear

    texts, labels = toy_offers(5)
    out = tmp_path / "m"
    out.mkdir()
    killed = out / f".save-{os.getppid()}"  # a live process's pid, not a save
    killed.mkdir()
    (killed / "weights.npz").write_bytes(b"x" * 1000)
    live = out / ".save-7"
    proc = subprocess.Popen([sys.executable, "-c", _STAGER, str(live)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "staging"
        LinearTextClassifier(LABELS, LinearConfig(word_ngrams=(1, 1))).fit(texts, labels).save(out)
        assert not killed.exists()
        assert live.is_dir()  # its save is still running
    finally:
        proc.kill()
        proc.wait()
    LinearTextClassifier(LABELS, LinearConfig(word_ngrams=(1, 2))).fit(texts, labels).save(out)
    assert not live.exists()  # its process died holding it: the next save removes it
    assert load_linear(out).config.word_ngrams == (1, 2)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_folders_named_like_a_stage_are_left_alone_and_two_saves_of_one_pid_both_finish(tmp_path):
    """A user's `.save-notes/` was deleted as a stale stage; two saves of one pid (threads, or two containers'
    pid 1 on a shared folder) shared one stage name, and the second deleted the first's: FileNotFoundError."""
    import threading

    from category_classification.models.linear import LinearConfig, LinearTextClassifier, load_linear

    texts, labels = toy_offers(5)
    out = tmp_path / "m"
    for name in (".save-notes", ".save-", ".save-12-mine"):
        (out / name).mkdir(parents=True)
        (out / name / "mine.txt").write_text("mine", encoding="utf-8")
    errors = []

    def save(n):
        try:
            LinearTextClassifier(LABELS, LinearConfig(word_ngrams=(1, n))).fit(texts, labels).save(out)
        except Exception as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(n,)) for n in (1, 2, 1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == [] and load_linear(out).config.word_ngrams in ((1, 1), (1, 2))
    for name in (".save-notes", ".save-", ".save-12-mine"):
        assert (out / name / "mine.txt").read_text(encoding="utf-8") == "mine"
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".save-", ".save-12-mine",
                                                                               ".save-notes"]


_PUBLISHER = """
import fcntl, os, sys, time
out = sys.argv[1]
fd = os.open(out, os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
os.replace(os.path.join(out, "new.json"), os.path.join(out, "category_model.json"))
"""


def test_a_loader_started_while_a_save_moves_its_files_in_gets_the_new_model(tmp_path):
    """A predictor or serve worker that started in the moment between the renames answered 'not a trained
    model directory'; now it waits for the publish (its lock), then loads the model it finished."""
    out = _hf_like(tmp_path / "m", "old")
    _killed_midway(out, 1)  # the state during a publish: no model info, the old one in the backup
    artifacts.write_model_info(tmp_path, "hf_sequence_classification", ["a", "b"], tag="new")
    os.replace(tmp_path / artifacts.MODEL_INFO, out / "new.json")
    publisher = subprocess.Popen([sys.executable, "-c", _PUBLISHER, str(out), "1.0"], stdout=subprocess.PIPE,
                                 text=True)
    try:
        assert publisher.stdout.readline().strip() == "locked"
        assert artifacts.read_model_info(out)["tag"] == "new"
    finally:
        publisher.wait(timeout=30)
    assert (out / "merged" / "w.bin").read_text() == "new, never finished"  # the publish's own files kept


def test_two_loaders_restoring_one_killed_save_take_turns(tmp_path, monkeypatch):
    """Two loaders at once (serve workers starting together): the second put merged/ back while the first
    was about to clear the half-published one, and the first then deleted the merged/ just put back (the
    previous model lost). Now the second waits for the first one's lock and finds the model put back."""
    import shutil

    out = _hf_like(tmp_path / "m", "old")
    dead = subprocess.Popen(["true"])
    dead.wait()
    _killed_midway(out, dead.pid)
    real, seen = shutil.rmtree, []

    def rmtree(path, *a, **k):  # another process's loader runs just before this one clears merged/
        if Path(path) == out / "merged" and not seen:
            code = ("import sys; from category_classification.core.artifacts import read_model_info; "
                    "print(read_model_info(sys.argv[1])['tag'])")
            seen.append(subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True, cwd=REPO,
                                         env={**os.environ, "PYTHONPATH": str(REPO)}))
            time.sleep(1.5)  # it starts and reaches the folder meanwhile
        return real(path, *a, **k)

    monkeypatch.setattr(shutil, "rmtree", rmtree)
    try:
        assert artifacts.read_model_info(out)["tag"] == "old"
    finally:
        monkeypatch.undo()
    out_text, err = seen[0].communicate(timeout=60)
    assert out_text.strip() == "old", err
    assert (out / "merged" / "w.bin").read_text() == "old"


def test_a_killed_save_that_cannot_be_put_back_is_one_line_naming_the_backup(tmp_path, monkeypatch):
    """A read-only model folder (a predictor's mount) holding a killed save: the message said the folder is
    not a model, not that its previous model waits in the backup."""
    out = _hf_like(tmp_path / "m", "old")
    backup = _killed_midway(out, 1)

    def refuse(*_a):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(artifacts.os, "replace", refuse)
    with pytest.raises(UserError) as err:
        artifacts.read_model_info(out)
    assert artifacts.PUBLISH_BACKUP in str(err.value) and "Permission denied" in str(err.value)
    assert "\n" not in str(err.value)
    monkeypatch.undo()
    assert (backup / artifacts.MODEL_INFO).is_file()  # nothing lost: the next load with access puts it back
    assert artifacts.read_model_info(out)["tag"] == "old"


def test_a_stage_holding_an_item_named_like_a_backup_is_refused_before_any_move(tmp_path):
    out = _hf_like(tmp_path / "m", "old")
    stage = _hf_like(out / "stage", "new")
    (stage / f"{artifacts.PUBLISH_BACKUP}99").mkdir()
    with pytest.raises(ValueError):
        artifacts.publish_dir(stage, out)
    assert artifacts.read_model_info(out)["tag"] == "old"
    assert (out / "merged" / "w.bin").read_text() == "old"


# --- serve: the request-head deadline ----------------------------------------------------------------------

async def _app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await asyncio.sleep({"/slow": 0.6, "/pause": 0.2}.get(scope["path"], 0))
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture(params=["httptools", "h11"])
def server(request, monkeypatch):
    """(port, live timers of the server's loop) of a uvicorn server with a 0.4 s head deadline, on each
    protocol base serve.py may pick."""
    import uvicorn

    from category_classification.serve import header_deadline_protocol

    if request.param == "h11":
        monkeypatch.setitem(sys.modules, "uvicorn.protocols.http.httptools_impl", None)
    else:
        pytest.importorskip("httptools")
    protocol = header_deadline_protocol(0.4)
    assert protocol.__mro__[1].__name__ == {"h11": "H11Protocol", "httptools": "HttpToolsProtocol"}[request.param]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    srv = uvicorn.Server(uvicorn.Config(_app, http=protocol, log_level="error", timeout_keep_alive=60))
    loops = []

    def serve():
        loop = asyncio.new_event_loop()
        loops.append(loop)
        loop.run_until_complete(srv.serve(sockets=[sock]))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.02)
    yield sock.getsockname()[1], lambda: sum(not h.cancelled() for h in loops[0]._scheduled)
    srv.should_exit = True
    thread.join(timeout=10)


def _request(path: str, body: bytes = b"") -> bytes:
    return f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body


def _answers(conn, n: int) -> bool:
    got = b""
    while got.count(b"ok") < n:
        chunk = conn.recv(4096)
        if not chunk:
            return False
        got += chunk
    return True


def test_pipelined_requests_keep_the_deadline_of_the_last_answer(server):
    """Two pipelined requests, the second taking 0.2 s: the first answer's timer closed the connection 0.4 s
    after it, while the client was within its deadline after the second answer."""
    port, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(_request("/fast") + _request("/pause"))
        assert _answers(conn, 2)
        time.sleep(0.25)  # under the 0.4 s deadline after the last answer
        conn.sendall(_request("/fast"))
        assert _answers(conn, 1)


def test_answers_and_closed_connections_leave_no_timers_behind(server):
    """Each answer armed a timer kept until it fired (--header_timeout_s, up to an hour), each holding its
    connection: a busy keep-alive client or many short connections grew the server's memory."""
    port, live_timers = server
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(15):
            conn.sendall(_request("/fast"))
            assert _answers(conn, 1)
        assert live_timers() <= 3
    for _ in range(15):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(_request("/fast"))
            assert _answers(conn, 1)
    time.sleep(0.1)
    assert live_timers() <= 3


def test_a_long_request_and_a_slow_body_are_never_cut_by_the_head_deadline(server):
    port, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(_request("/slow"))  # 0.6 s to answer, past the 0.4 s deadline
        assert _answers(conn, 1)
    body = b"x" * 6
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(_request("/fast", body)[:-len(body)])
        for byte in body:  # the body takes 0.6 s: its own deadline (BodyLimit) is not the head's
            time.sleep(0.1)
            conn.sendall(bytes([byte]))
        assert _answers(conn, 1)


def test_a_head_that_never_completes_is_still_closed(server):
    port, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"POST /fast HTTP/1.1\r\nhost: x\r\n")
        started = time.monotonic()
        try:
            assert conn.recv(4096) == b""
        except ConnectionResetError:
            pass
        assert time.monotonic() - started < 3


# --- measure_lora_latency ------------------------------------------------------------------------------------

def test_latency_of_a_model_whose_info_names_fewer_labels_than_outputs_is_one_line(tmp_path, capsys):
    """category_model.json naming 4 labels (all in the dataset) for a 6-output model: an IndexError
    traceback after the whole timing."""
    from category_classification import measure_lora_latency

    model, data = make_hf(tmp_path / "m"), make_dataset(tmp_path / "d")
    info = json.loads((model / artifacts.MODEL_INFO).read_text(encoding="utf-8"))
    (model / artifacts.MODEL_INFO).write_text(json.dumps({**info, "labels": LABELS[:4]}), encoding="utf-8")
    capsys.readouterr()
    assert run(measure_lora_latency.main, ["--model", str(model), "--dataset", str(data), "--limit", "4",
                                           "--batch", "4", "--warmup_batches", "0", "--threads", "1"]) == 2
    lines = [x for x in capsys.readouterr().err.strip().splitlines() if x.startswith("error: ")]
    assert len(lines) == 1 and "4 labels but the model has 6 outputs" in lines[0]


_SLOW_PUBLISHER = """
import fcntl, os, sys, time
out, new = sys.argv[1], sys.argv[2]
fd = os.open(out, os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
for name in sorted(os.listdir(new), key=lambda n: n == "category_model.json"):
    time.sleep(0.3)  # a reader that does not wait reads the old info and then the new weights
    os.replace(os.path.join(new, name), os.path.join(out, name))
"""


def test_a_predictor_loading_while_a_save_publishes_waits_and_gets_the_new_model_whole(tmp_path):
    """load_predictor holds the folder's lock shared while it reads (core/artifacts.reading_model): a save
    moving its files in (holding the lock) is waited for, so info and weights come from one model."""
    from category_classification.models.linear import LinearConfig, LinearTextClassifier
    from category_classification.models.registry import load_predictor

    texts, labels = toy_offers(10)
    out, new = tmp_path / "m", tmp_path / "new"
    LinearTextClassifier(LABELS, LinearConfig(word_ngrams=(1, 1))).fit(texts, labels).save(out)
    LinearTextClassifier(LABELS[::-1], LinearConfig(word_ngrams=(1, 2))).fit(
        texts, [len(LABELS) - 1 - y for y in labels]).save(new)
    publisher = subprocess.Popen([sys.executable, "-c", _SLOW_PUBLISHER, str(out), str(new)],
                                 stdout=subprocess.PIPE, text=True)
    try:
        assert publisher.stdout.readline().strip() == "locked"
        started = time.monotonic()
        predictor = load_predictor(out)
        waited = time.monotonic() - started
    finally:
        publisher.wait(timeout=30)
    assert waited > 0.5, waited
    assert predictor.labels == LABELS[::-1]
    assert predictor.model.config.word_ngrams == (1, 2)  # the new model's files with the new model's info


@pytest.mark.parametrize("kill_at", range(1, 7))
def test_a_killed_publish_leaves_neither_the_new_models_extra_files_nor_a_half_first_model(tmp_path, monkeypatch,
                                                                                           kill_at):
    """The new model has a file the old one lacks (an embedder/ folder, say): a kill between the renames used
    to leave it beside the restored model; a first save into a folder killed midway left half a model."""
    real = os.replace
    for first in (True, False):
        out = tmp_path / f"m{first}{kill_at}"
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        if not first:
            _hf_like(out, "old")
        before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
        stage = out / ".stage"
        _hf_like(stage, "new")
        (stage / "embedder").mkdir()
        (stage / "embedder" / "config.json").write_text("{}")
        calls = []

        def replace(a, b):
            calls.append(b)
            if len(calls) > kill_at:
                raise KeyboardInterrupt
            real(a, b)

        monkeypatch.setattr(artifacts.os, "replace", replace)
        try:
            artifacts.publish_dir(stage, out)
            finished = True
        except KeyboardInterrupt:
            finished = False
        monkeypatch.setattr(artifacts.os, "replace", real)
        if finished:  # a first save makes only 4 renames: it ended, whole
            assert json.loads((out / artifacts.MODEL_INFO).read_text())["tag"] == "new" and first
            continue
        import shutil

        shutil.rmtree(stage)  # a killed run's stage: the next save removes it
        for p in out.glob(artifacts.PUBLISH_BACKUP + "*"):  # the killed process is gone (its lock with it)
            p.rename(out / f"{artifacts.PUBLISH_BACKUP}999999999")
        artifacts.restore_interrupted_publish(out)
        assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before, (first, kill_at)
