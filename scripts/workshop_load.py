"""Load figures for the workshop server, on loopback only: 60 scripted participants join at once
and answer their whole share (as the page does: fetch the item, post the answer) while a teacher
polls; then the answer files are checked against every answer the server accepted, and the CPU
time of a teacher poll is measured.

    PYTHONPATH=. python scripts/workshop_load.py [--participants 60] [--polls 20] [--host 0.0.0.0]

Prints: requests, connection errors, non-200 answers, answers lost / duplicated, and the CPU ms
of a teacher poll (the server thread's own time: building the view and its JSON) during the load,
with nothing changed, and with every participant's logs grown since the last poll. The run folder
is the test fixture's (tests/run_fixture.py), widened to 120 pairs and 120 clips per question.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from run_fixture import make_run  # noqa: E402

from t2a_lib.feedback import labels  # noqa: E402
from t2a_lib.feedback.workshop import WorkshopConfig  # noqa: E402
from t2a_lib.feedback.workshop_server import make_server  # noqa: E402


def widen(run: Path, n: int = 120) -> None:
    """Repeat the fixture's pairs and clips (same audio, new ids) to ``n`` per set and question."""
    prefs = pd.read_parquet(run / "preferences" / "preferences.parquet")
    rows = [prefs.iloc[k % len(prefs)].to_dict() | {"chosen_id": f"w{k}", "rejected_id": f"l{k}"} for k in range(n)]
    pd.DataFrame(rows).to_parquet(run / "preferences" / "preferences.parquet", index=False)
    clips = pd.read_parquet(run / "baton" / "hd" / "clips.parquet")
    out = []
    for task, group in clips.groupby("task"):
        for k in range(n):
            row = group.iloc[k % len(group)].to_dict()
            src = run / "baton" / "hd" / "audio" / f"{row['id']}.wav"
            new = f"{task[:3]}_{k:04d}"
            (run / "baton" / "hd" / "audio" / f"{new}.wav").write_bytes(src.read_bytes())
            out.append(row | {"id": new})
    pd.DataFrame(out).to_parquet(run / "baton" / "hd" / "clips.parquet", index=False)


class Client:
    def __init__(self, port: int):
        self.port, self.token, self.errors, self.requests = port, None, [], 0

    def call(self, method: str, path: str, body=None) -> tuple[int, dict]:
        self.requests += 1
        headers = {"Content-Type": "application/json", **({"X-Workshop-Token": self.token} if self.token else {})}
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=json.dumps(body).encode() if body is not None else None, headers=headers)
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        except OSError as e:
            self.errors.append(type(e).__name__)
            return 0, {}
        finally:
            conn.close()


def participant(port: int, code: str, k: int, barrier: threading.Barrier, tasks: list[str]) -> dict:
    """Join, then answer every item of every task; returns the accepted answers and the failures."""
    c, accepted, refused = Client(port), {t: [] for t in tasks}, []
    barrier.wait()
    status, joined = c.call("POST", "/api/join", {"name": f"Participant {k}", "code": code})
    if status != 200:
        return {"id": None, "token": None, "accepted": accepted, "refused": [status], "errors": c.errors,
                "requests": c.requests}
    c.token = joined["token"]
    for task in tasks:
        answer = "A" if task == "pairs" else "yes"
        while True:
            status, state = c.call("GET", f"/api/state?task={task}")
            if status != 200 or state["item"] is None:
                refused += [status] if status != 200 else []
                break
            status, _ = c.call("POST", "/api/answer", {"task": task, "id": state["item"]["id"], "answer": answer})
            (accepted[task].append(state["item"]["id"]) if status == 200 else refused.append(status))
    return {"id": joined["id"], "token": c.token, "accepted": accepted, "refused": refused, "errors": c.errors,
            "requests": c.requests}


def poll_cpu_ms(workshop) -> float:
    """CPU ms this thread spends on one teacher poll: the view and its JSON, as the handler makes them."""
    start = time.thread_time()
    workshop.teacher_json()
    return 1000 * (time.thread_time() - start)


def teacher(workshop, stop: threading.Event, costs: list) -> None:
    while not stop.is_set():
        costs.append(poll_cpu_ms(workshop))
        time.sleep(0.5)


def check_files(workshop, results: list[dict], tasks: list[str]) -> tuple[int, int]:
    """(answers lost, answers duplicated): each person's log against the answers the server accepted."""
    lost = duplicated = 0
    for r in results:
        if r["id"] is None:
            continue
        person = workshop.roster.people()[r["id"]]
        for task in tasks:
            key = "pair_id" if task == "pairs" else "id"
            written = [x[key] for x in labels.read_jsonl(workshop._log(person, task))]
            lost += len(set(r["accepted"][task]) - set(written))
            duplicated += len(written) - len(set(written))
    return lost, duplicated


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--participants", type=int, default=60)
    p.add_argument("--polls", type=int, default=20)
    p.add_argument("--host", default="127.0.0.1", help="where the server binds (0.0.0.0 as in a room); traffic goes to 127.0.0.1")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp) / "run")
        widen(run)
        server = make_server(WorkshopConfig(run, host=args.host, port=0))
        w, port = server.RequestHandlerClass.workshop, server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        tasks, stop, costs = list(w.tasks), threading.Event(), []
        poller = threading.Thread(target=teacher, args=(w, stop, costs))
        barrier, t0 = threading.Barrier(args.participants), time.time()
        poller.start()
        with ThreadPoolExecutor(args.participants) as pool:
            results = list(pool.map(lambda k: participant(port, w.session["code"], k, barrier, tasks),
                                    range(args.participants)))
        stop.set()
        poller.join()
        seconds = time.time() - t0
        lost, duplicated = check_files(w, results, tasks)
        idle = [poll_cpu_ms(w) for _ in range(args.polls)]
        grown = []
        for _ in range(args.polls // 4):  # every log grows before each poll: one undo per person and task
            for r in results:
                for task in tasks:
                    w.undo(r["token"], task)
            grown.append(poll_cpu_ms(w))
        server.shutdown()
        server.server_close()
    answers = sum(len(v) for r in results for v in r["accepted"].values())
    print(f"participants {args.participants}, server bound to {args.host}, tasks {tasks}, {seconds:.1f} s")
    print(f"requests {sum(r['requests'] for r in results)}, connection errors {sum(len(r['errors']) for r in results)}, "
          f"refused (non-200) {sum(len(r['refused']) for r in results)}, answers accepted {answers}, "
          f"lost {lost}, duplicated {duplicated}")
    for name, xs in (("during the load", costs), ("nothing changed", idle), ("every log grown", grown)):
        print(f"teacher poll CPU ms, {name}: median {statistics.median(xs):.1f}, max {max(xs):.1f} ({len(xs)} polls)")


if __name__ == "__main__":
    main()
