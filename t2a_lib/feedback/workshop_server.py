"""The workshop's HTTP server: ``python -m t2a_lib.feedback.workshop_server --run-dir papermill_runs/default``
(``make workshop``) serves the participants' page (``/``), the teacher's page (``/teacher``), their
static files (``static/``), the clips' media and the JSON API over a ``workshop.Workshop``.

Why a small server of our own (the standard library's ``http.server``): twenty participants
need no kernel each (Voilà starts one per page, each importing torch), no code in sight
(JupyterLab shows notebooks), no new dependency, and pages that load nothing from the network.
It binds to 127.0.0.1; reach it from other machines through a tunnel or proxy you control.
"""

from __future__ import annotations

import argparse
import json
import math
import mimetypes
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np

from ..audio.media import clip_media
from .workshop import AnswerError, Workshop, WorkshopConfig

STATIC = Path(__file__).with_name("static")


PAGES = {"/": "workshop.html", "/teacher": "teacher.html"}


def jsonable(obj):
    """NaN and infinities as null, numpy scalars as Python ones (JSON has neither)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


class Handler(BaseHTTPRequestHandler):
    """Routes: pages, /static/*, /media/<task>/<id>/<a|b|clip>.<wav|png>, /api/*."""

    workshop: Workshop  # set on the subclass ``serve`` makes
    server_version = "t2a-workshop"

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
        except (ValueError, KeyError) as e:
            self._json({"error": f"{type(e).__name__}: {e}"}, HTTPStatus.BAD_REQUEST)

    def _get(self, url) -> None:
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        w, parts = self.workshop, url.path.strip("/").split("/")
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
            self._json(w.overview(q.get("name", "")))
        elif url.path == "/api/state":
            self._json(w.state(q.get("name", ""), q.get("task", "")))
        elif url.path == "/api/teacher":
            self._json(w.teacher())
        else:
            raise AnswerError(f"no page {url.path}", 404)

    def _post(self, url) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}") if length else {}
        w = self.workshop
        if url.path == "/api/join":
            self._json(w.join(body.get("name", "")))
        elif url.path == "/api/answer":
            self._json(w.answer(body.get("name", ""), body.get("task", ""), body.get("id", ""), body.get("answer", "")))
        elif url.path == "/api/undo":
            self._json(w.undo(body.get("name", ""), body.get("task", "")))
        elif url.path == "/api/merge":
            self._json(w.write_merges())
        else:
            raise AnswerError(f"no endpoint {url.path}", 404)

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


def make_server(config: WorkshopConfig) -> ThreadingHTTPServer:
    """The server, bound (``config.port`` 0: a free port; see ``server.server_address``), not yet serving."""
    workshop = Workshop(config)
    handler = type("WorkshopHandler", (Handler,), {"workshop": workshop})
    server = ThreadingHTTPServer((config.host, config.port), handler)
    server.daemon_threads = True
    return server


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m t2a_lib.feedback.workshop_server")
    p.add_argument("--run-dir", required=True, help="a run folder (papermill_runs/<profile>)")
    p.add_argument("--out-dir", help="where answers go (default: <run-dir>/workshop)")
    p.add_argument("--port", type=int, default=WorkshopConfig.port, help="0: any free port")
    p.add_argument("--pairs-per-person", type=int, default=WorkshopConfig.pairs_per_person)
    p.add_argument("--clips-per-person", type=int, default=WorkshopConfig.clips_per_person)
    p.add_argument("--raters", type=int, default=WorkshopConfig.raters, help="about how many people hear each item")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    config = WorkshopConfig(args.run_dir, args.out_dir, port=args.port, pairs_per_person=args.pairs_per_person,
                            clips_per_person=args.clips_per_person, raters=args.raters, seed=args.seed)
    server = make_server(config)
    host, port = server.server_address[:2]
    w = server.RequestHandlerClass.workshop
    print(f"workshop: {', '.join(f'{t.name} ({len(t.items)} items)' for t in w.tasks.values())}; answers in {w.out_dir}")
    print(f"participants: http://{host}:{port}/   teacher: http://{host}:{port}/teacher   (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
