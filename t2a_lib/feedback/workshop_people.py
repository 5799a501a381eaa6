"""Who is in the workshop's room: the session's join code, the teacher's token, and each
participant's id, display name and token.

- ``<out>/session.json`` (written once, mode 0600): ``code`` (in the join URL; needed to join) and
  ``teacher_token`` (printed only in the teacher's terminal; needed for the teacher's page and
  actions). A restarted server reads it back, so the URLs already handed out keep working.
- ``<out>/roster.jsonl`` (append-only): one line per participant, ``{"id": "p.007", "name": ...,
  "token_sha256": ..., "joined": ...}``. The id names the participant's folder
  (``<out>/people/p.007/``), so a display name may be any Unicode text: "Anna B", "anna.b",
  "Zoë", "Zoé" and "李雷" are five people. A name already in the room is refused, so nobody
  answers under another's name; the token (random, kept by the participant's browser, sent with
  every request) is what identifies them, and only its hash is on disk.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from . import labels

CODE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read aloud or typed from a slide
NAME_MAX = 40


class AnswerError(ValueError):
    """A request the page should show, with its HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Person:
    id: str
    name: str
    index: int  # order of joining: picks the person's share
    token_sha256: str


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def display_name(name) -> str:
    """A name as shown and compared: NFC-normalised and stripped; 1-40 characters, no control characters."""
    if not isinstance(name, str):
        raise AnswerError("name must be text")
    name = unicodedata.normalize("NFC", name).strip()
    if not 1 <= len(name) <= NAME_MAX:
        raise AnswerError(f"enter a name of 1 to {NAME_MAX} characters")
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise AnswerError("a name may not hold control characters")
    return name


def load_session(out_dir: Path) -> dict:
    """``<out>/session.json``: {code, teacher_token}, made on first use and kept."""
    path = Path(out_dir) / "session.json"
    if path.exists():
        session = json.loads(path.read_text())
        if not {"code", "teacher_token"} <= set(session):
            raise ValueError(f"{path}: needs fields code and teacher_token")
        return session
    session = {"code": "".join(secrets.choice(CODE_ALPHABET) for _ in range(6)),
               "teacher_token": secrets.token_urlsafe(18)}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(session, f)
    return session


def check_secret(given, expected: str, what: str) -> None:
    """Raise 403 unless ``given`` equals ``expected`` (compared in constant time)."""
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), expected.encode()):
        raise AnswerError(f"wrong or missing {what}", 403)


class Roster:
    """The participants of ``<out>/roster.jsonl``, re-read only when the file grows."""

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / "roster.jsonl"
        self.lock = threading.Lock()
        self._size, self._people = -1, {}

    def people(self) -> dict[str, Person]:
        """{id: Person} in order of joining."""
        size = self.path.stat().st_size if self.path.exists() else 0
        if size != self._size:
            people = {}
            for line in labels.read_jsonl(self.path):
                if "id" in line:  # the earlier roster's {slug, name} lines have no token: they cannot sign in
                    people.setdefault(line["id"], Person(line["id"], line["name"], len(people), line["token_sha256"]))
            self._people, self._size = people, size
        return self._people

    def by_token(self, token) -> Person:
        """The participant whose token this is; 401 without one, 403 for an unknown one."""
        if not isinstance(token, str) or not token:
            raise AnswerError("no participant token: join first (your page keeps its token)", 401)
        digest = token_hash(token)
        for person in self.people().values():
            if hmac.compare_digest(person.token_sha256, digest):
                return person
        raise AnswerError("unknown participant token: join again", 403)

    def join(self, name, token=None) -> tuple[Person, str]:
        """A new participant (a fresh token), or the one this token already belongs to."""
        name = display_name(name)
        with self.lock:
            if token:
                try:
                    return self.by_token(token), token
                except AnswerError:
                    pass  # a token from another session: join afresh
            people = self.people()
            if any(p.name == name for p in people.values()):
                raise AnswerError(f"the name {name!r} is taken in this room; on the laptop you joined from the page "
                                  f"remembers you, otherwise pick another name", 409)
            token = secrets.token_urlsafe(18)
            person = Person(f"p.{len(people) + 1:03d}", name, len(people), token_hash(token))
            labels.append_jsonl(self.path, {"id": person.id, "name": name, "token_sha256": person.token_sha256,
                                            "joined": labels.now()})
        return self.people()[person.id], token
