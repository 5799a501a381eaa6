"""The workshop's HTTP layer on loopback: every malformed request answered (and before reading
a body it refuses), tokens and the session code enforced, cross-origin POSTs refused, a room of
60 joining at once without a reset, and what the teacher's terminal prints (join URL, QR code).
All traffic goes to 127.0.0.1, bounded in count and time, even from a server bound to 0.0.0.0."""

import http.client
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from run_fixture import make_run

from t2a_lib.feedback.workshop import WorkshopConfig
from t2a_lib.feedback.workshop_server import MAX_BODY, announce, make_server

TIMEOUT = 10


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("workshop_http") / "run")


@pytest.fixture
def served(run, tmp_path):
    """(port, workshop) of a server on 127.0.0.1, stopped afterwards."""
    server = make_server(WorkshopConfig(run, out_dir=tmp_path / "ws", host="127.0.0.1", port=0,
                                        pairs_per_person=3, clips_per_person=4, raters=4))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], server.RequestHandlerClass.workshop
    server.shutdown()
    server.server_close()


def request(port, method, path, body=None, headers=None):
    """(status, JSON answer) of one request to 127.0.0.1:port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    out = response.status, json.loads(response.read() or b"null")
    conn.close()
    return out


def raw(port, head: bytes) -> tuple[bytes, float]:
    """Send raw request bytes (no body beyond them); the status line and how long it took."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        s.sendall(head)
        answer = s.recv(4096)
    return answer.split(b"\r\n")[0], time.monotonic() - start


def test_malformed_bodies_are_answered_with_400_or_413(served):
    port, w = served
    code = w.session["code"]
    for body in (b"[1, 2]", b"42", b"null", b"\"text\"", b"{not json", b"\xff\xfe"):
        status, answer = request(port, "POST", "/api/join", body)
        assert status == 400 and "error" in answer, body
    status, joined = request(port, "POST", "/api/join", {"name": "Ana", "code": code})
    assert status == 200
    status, answer = request(port, "POST", "/api/answer", {"task": ["pairs"], "id": "x", "answer": "A"},
                             {"X-Workshop-Token": joined["token"]})
    assert status == 400 and "unknown task" in answer["error"]
    for length in (b"-1", b"abc", b"1e3"):
        line, took = raw(port, b"POST /api/join HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                               b"Content-Length: " + length + b"\r\n\r\n")
        assert line.endswith(b"400 Bad Request") and took < 5, (length, line)
    # 50 MB announced, nothing sent: refused before any of it is read
    line, took = raw(port, b"POST /api/join HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                           b"Content-Length: 52428800\r\n\r\n")
    assert line.endswith(b"413 Request Entity Too Large") and took < 5 and 52428800 > MAX_BODY
    status, _ = request(port, "GET", "/api/state?task=pairs", headers={"X-Workshop-Token": joined["token"]})
    assert status == 200  # the server still answers


def test_tokens_code_and_origin_are_enforced(served):
    port, w = served
    status, answer = request(port, "POST", "/api/join", {"name": "Dora", "code": "nope"})
    assert status == 403 and "session code" in answer["error"]
    status, dora = request(port, "POST", "/api/join", {"name": "Dora", "code": w.session["code"]})
    item = w.state(dora["token"], "integrity")["item"]["id"]
    forged = {"name": "Dora", "task": "integrity", "id": item, "answer": "yes"}
    assert request(port, "POST", "/api/answer", forged)[0] == 401  # her name, no token
    assert request(port, "POST", "/api/answer", forged, {"X-Workshop-Token": "guess"})[0] == 403
    assert request(port, "GET", "/api/state?task=integrity&name=Dora")[0] == 401
    assert w.state(dora["token"], "integrity")["done"] == 0  # nothing was written for her
    # another site's page posting, as a form or fetch may (text/plain needs no preflight)
    evil = {"X-Workshop-Token": dora["token"], "Origin": "http://evil.example", "Content-Type": "text/plain"}
    assert request(port, "POST", "/api/answer", forged, evil)[0] == 403
    assert request(port, "POST", "/api/answer", forged, {**evil, "Origin": f"http://127.0.0.1:{port}"})[0] == 415
    assert request(port, "POST", "/api/answer", forged, {"X-Workshop-Token": dora["token"], "Sec-Fetch-Site": "cross-site"})[0] == 403
    status, state = request(port, "POST", "/api/answer", forged,
                            {"X-Workshop-Token": dora["token"], "Origin": f"http://127.0.0.1:{port}"})
    assert status == 200 and state["done"] == 1
    # the teacher's page and actions need the teacher's token
    assert request(port, "GET", "/api/teacher")[0] == 403
    assert request(port, "POST", "/api/merge", {})[0] == 403
    assert request(port, "POST", "/api/train", {})[0] == 403  # training starts only from the teacher
    assert request(port, "GET", "/api/room") == (200, {"running": False, "progress": None})
    assert request(port, "GET", "/room/before/..%2f..%2fsession.json")[0] == 404
    assert request(port, "GET", "/teacher?token=wrong")[0] == 403
    status, view = request(port, "GET", "/api/teacher", headers={"X-Teacher-Token": w.session["teacher_token"]})
    assert status == 200 and [p["name"] for p in view["participants"]] == ["Dora"]


def test_sixty_participants_join_at_once_without_a_reset(served):
    port, w = served
    barrier = threading.Barrier(60, timeout=TIMEOUT)

    def one(k):
        barrier.wait()
        try:
            return request(port, "POST", "/api/join", {"name": f"Person {k}", "code": w.session["code"]})[0]
        except OSError as e:  # a reset or refused connection
            return type(e).__name__

    with ThreadPoolExecutor(60) as pool:
        outcomes = list(pool.map(one, range(60)))
    assert outcomes == [200] * 60
    assert len(w.roster.people()) == 60 and len({p.id for p in w.roster.people().values()}) == 60


def test_the_terminal_shows_the_join_url_code_qr_and_a_teacher_token(run, tmp_path):
    server = make_server(WorkshopConfig(run, out_dir=tmp_path / "ws", host="0.0.0.0", port=0))
    try:
        w, port = server.RequestHandlerClass.workshop, server.server_address[1]
        text = announce(server, "0.0.0.0")
        assert f":{port}/?code={w.session['code']}" in text and "█" in text  # the QR code, in block characters
        assert f"http://127.0.0.1:{port}/teacher?token={w.session['teacher_token']}" in text
        assert server.server_address[0] == "0.0.0.0" and server.request_queue_size >= 60
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        status, _ = request(port, "POST", "/api/join", {"name": "李雷", "code": w.session["code"]})
        assert status == 200  # reached through loopback only
    finally:
        server.shutdown()
        server.server_close()
    again = make_server(WorkshopConfig(run, out_dir=tmp_path / "ws", port=0))  # a restart keeps code and token
    assert again.RequestHandlerClass.workshop.session == w.session and again.server_address[0] == "127.0.0.1"
    again.server_close()
