"""The workshop's HTTP server: ``python -m t2a_lib.feedback.workshop_server --run-dir papermill_runs/default``
(``make workshop``) serves the participants' page (``/``), the teacher's page (``/teacher``), their
static files (``static/``), the clips' media and the JSON API over a ``workshop.Workshop``.

Why the standard library's ``http.server`` (``ThreadingHTTPServer``, a backlog of 256) rather than
Starlette/uvicorn or aiohttp: the room's needs are a dozen routes, JSON bodies and byte ranges for
the players, which fit in this module; the fixes the room needed (a backlog, capped bodies,
tokens, an origin check, incremental teacher polls) are a few lines each here and would be as
many in a framework, which would add an ASGI server and its dependencies to a research suite.
Participants need no kernel each (Voilà starts one per page, each importing torch) and see no
code. It binds to 127.0.0.1 unless given ``--host 0.0.0.0`` (the room's network); joining needs
the session code in the printed URL, the teacher's page the token printed beside it.
"""

from __future__ import annotations

import argparse
import io
import json
import mimetypes
import socket
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import segno

from ..audio.media import clip_media
from .workshop import Workshop, WorkshopConfig
from .workshop_summary import jsonable
from .workshop_people import AnswerError

STATIC = Path(__file__).with_name("static")


PAGES = {"/": "workshop.html", "/teacher": "teacher.html"}
MAX_BODY = 16 * 1024  # bytes: an answer is about 100


class Handler(BaseHTTPRequestHandler):
    """Routes: pages, /static/*, /media/<task>/<id>/<a|b|clip>.<wav|png>, /api/*.

    A participant's requests carry their token (header ``X-Workshop-Token``), the teacher's
    theirs (``X-Teacher-Token``; the page itself: ``/teacher?token=``). A POST must be JSON from
    this server's own pages (``Origin``, ``Sec-Fetch-Site``), with a body of at most ``MAX_BODY``
    bytes holding a JSON object. Every failure answers with a JSON error and its status."""

    workshop: Workshop  # set on the subclass ``make_server`` makes
    server_version = "t2a-workshop"
    timeout = 30  # seconds a connection may stall (a body shorter than its Content-Length) before it is closed

    def log_message(self, fmt, *args):  # quiet: the teacher's terminal is not a request log
        pass

    def do_GET(self):
        self._guard(self._get)

    def do_POST(self):
        self._guard(self._post)

    def _guard(self, fn) -> None:
        try:
            fn(urlparse(self.path))
        except AnswerError as e:
            self._json({"error": str(e)}, e.status)
        except (ValueError, KeyError, TypeError) as e:
            self._json({"error": f"{type(e).__name__}: {e}"}, HTTPStatus.BAD_REQUEST)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        except Exception as e:  # noqa: BLE001 (answer, never drop the connection)
            self._json({"error": f"internal error: {type(e).__name__}: {e}"}, HTTPStatus.INTERNAL_SERVER_ERROR)

    def _get(self, url) -> None:
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        w, parts = self.workshop, url.path.strip("/").split("/")
        if url.path == "/teacher":
            w.check_teacher(q.get("token"))
        if url.path in PAGES:
            self._file(STATIC / PAGES[url.path])
        elif parts[0] == "static" and len(parts) == 2 and (STATIC / parts[1]).is_file() and not parts[1].startswith("."):
            self._file(STATIC / parts[1])
        elif parts[0] == "media" and len(parts) == 4:
            which, _, ext = parts[3].partition(".")
            if ext not in ("wav", "png"):
                raise AnswerError(f"no media {parts[3]!r}", 404)
            wav, picture = clip_media(w.media(unquote(parts[1]), unquote(parts[2]), which))
            self._bytes(picture if ext == "png" else wav, "image/png" if ext == "png" else "audio/wav")
        elif url.path == "/api/overview":
            self._json(w.overview(self.headers.get("X-Workshop-Token")))
        elif url.path == "/api/state":
            self._json(w.state(self.headers.get("X-Workshop-Token"), q.get("task", "")))
        elif parts[0] == "room" and len(parts) == 3:
            self._bytes(w.room_clip(parts[1], parts[2]).read_bytes(), "audio/wav")
        elif url.path == "/api/room":
            self._json(w.room())
        elif url.path == "/api/teacher":
            w.check_teacher(self.headers.get("X-Teacher-Token"))
            self._bytes(w.teacher_json(), "application/json")
        else:
            raise AnswerError(f"no page {url.path}", 404)

    def _post(self, url) -> None:
        self._same_origin()
        body, w = self._body(), self.workshop
        token = self.headers.get("X-Workshop-Token")
        if url.path == "/api/join":
            self._json(w.join(body.get("name"), body.get("code"), token))
        elif url.path == "/api/answer":
            self._json(w.answer(token, body.get("task"), body.get("id"), body.get("answer")))
        elif url.path == "/api/undo":
            self._json(w.undo(token, body.get("task")))
        elif url.path in ("/api/merge", "/api/train"):
            w.check_teacher(self.headers.get("X-Teacher-Token"))
            self._json(w.write_merges() if url.path == "/api/merge" else w.start_training())
        else:
            raise AnswerError(f"no endpoint {url.path}", 404)

    def _same_origin(self) -> None:
        """Refuse a POST another site's page makes (a form or ``fetch`` with text/plain included)."""
        origin, site = self.headers.get("Origin"), self.headers.get("Sec-Fetch-Site")
        if site not in (None, "same-origin", "none") or (origin is not None and origin != f"http://{self.headers.get('Host')}"):
            raise AnswerError("cross-origin request refused", HTTPStatus.FORBIDDEN)
        if self.headers.get_content_type() != "application/json":
            raise AnswerError("send JSON (Content-Type: application/json)", HTTPStatus.UNSUPPORTED_MEDIA_TYPE)

    def _body(self) -> dict:
        """The request's JSON object; 400 for a bad length or anything else, 413 past MAX_BODY (unread)."""
        raw = self.headers.get("Content-Length") or "0"
        if not raw.isdigit():
            self.close_connection = True
            raise AnswerError(f"bad Content-Length {raw[:20]!r}", HTTPStatus.BAD_REQUEST)
        if int(raw) > MAX_BODY:
            self.close_connection = True
            raise AnswerError(f"request body of {raw} bytes; at most {MAX_BODY}", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        body = json.loads(self.rfile.read(int(raw)).decode("utf-8") or "{}")
        if not isinstance(body, dict):
            raise AnswerError(f"the body must be a JSON object, got {type(body).__name__}")
        return body

    def _json(self, obj, status=HTTPStatus.OK) -> None:
        self._bytes(json.dumps(jsonable(obj), allow_nan=False).encode(), "application/json", status)

    def _file(self, path: Path) -> None:
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self._bytes(path.read_bytes(), kind + ("; charset=utf-8" if kind.startswith("text/") else ""))

    def _bytes(self, data: bytes, kind: str, status=HTTPStatus.OK) -> None:
        """The whole body, or the byte range asked for (media elements seek with Range)."""
        start, end = 0, len(data) - 1
        rng = self.headers.get("Range", "")
        if rng.startswith("bytes=") and status == HTTPStatus.OK and data:
            first, _, last = rng[6:].split(",")[0].partition("-")
            start = int(first) if first else max(0, len(data) - int(last or 0))
            end = min(int(last), end) if first and last else end
            status = HTTPStatus.PARTIAL_CONTENT
        body = data[start:end + 1]
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Cache-Control", "no-store")
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class WorkshopHTTPServer(ThreadingHTTPServer):
    """A thread per connection; a listen backlog for a room joining at once (the standard library's is 5)."""

    request_queue_size = 256
    daemon_threads = True


def make_server(config: WorkshopConfig) -> WorkshopHTTPServer:
    """The server, bound (``config.port`` 0: a free port; see ``server.server_address``), not yet serving."""
    workshop = Workshop(config)
    handler = type("WorkshopHandler", (Handler,), {"workshop": workshop})
    return WorkshopHTTPServer((config.host, config.port), handler)


def room_address(host: str) -> str:
    """The address other laptops reach: ``host`` itself, or for 0.0.0.0 / :: this machine's
    address on its default route (a UDP socket's choice; nothing is sent)."""
    if host not in ("0.0.0.0", "::", ""):
        return host
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.254.254.254", 9))  # no packet leaves: connect() on UDP only picks a route
            return s.getsockname()[0]
        except OSError:
            return socket.gethostname()


def join_url(host: str, port: int, code: str) -> str:
    return f"http://{room_address(host)}:{port}/?code={code}"


def qr_text(url: str) -> str:
    """The URL as a QR code drawn with block characters, for a terminal or a projected slide."""
    out = io.StringIO()
    segno.make(url, error="m").terminal(out=out, compact=True, border=2)
    return out.getvalue()


def announce(server: WorkshopHTTPServer, host: str) -> str:
    """What the teacher's terminal shows: the tasks, the join URL and its QR code, the teacher's URL."""
    w, port = server.RequestHandlerClass.workshop, server.server_address[1]
    url = join_url(host, port, w.session["code"])
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else room_address(host)
    return "\n".join([
        f"workshop: {', '.join(f'{t.name} ({len(t.items)} items)' for t in w.tasks.values())}; answers in {w.out_dir}",
        qr_text(url), f"participants: {url}   (session code {w.session['code']})",
        f"teacher (keep this to yourself): http://{local}:{port}/teacher?token={w.session['teacher_token']}",
        "(Ctrl-C stops; a restart keeps the code, the token and every answer)"])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m t2a_lib.feedback.workshop_server")
    p.add_argument("--run-dir", required=True, help="a run folder (papermill_runs/<profile>)")
    p.add_argument("--out-dir", help="where answers go (default: <run-dir>/workshop)")
    p.add_argument("--host", default=WorkshopConfig.host, help="0.0.0.0: every network of this machine (the room's)")
    p.add_argument("--port", type=int, default=WorkshopConfig.port, help="0: any free port")
    p.add_argument("--pairs-per-person", type=int, default=WorkshopConfig.pairs_per_person)
    p.add_argument("--clips-per-person", type=int, default=WorkshopConfig.clips_per_person)
    p.add_argument("--raters", type=int, default=WorkshopConfig.raters, help="about how many people hear each item")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    config = WorkshopConfig(args.run_dir, args.out_dir, host=args.host, port=args.port,
                            pairs_per_person=args.pairs_per_person, clips_per_person=args.clips_per_person,
                            raters=args.raters, seed=args.seed)
    server = make_server(config)
    print(announce(server, args.host), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
