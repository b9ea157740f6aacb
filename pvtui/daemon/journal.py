"""pvd's event journal: what happened to each domain and to the host, with timestamps, on disk.

One JSON object per line in ``$RUNTIME/journal.jsonl`` (so it survives a pvd
restart), appended and flushed as it happens: created, state changes
(paused, shut down with the guest's reason, crashed with its cause),
restarts by ``on_crash``, every request that changed a domain (hot-plugs,
balloon targets, pins, caps, saves, moves…) and every refusal with its
reason. Bounded: at :data:`LIMIT_BYTES` the file becomes ``journal.jsonl.1``
(the one before is dropped), so it holds between one and two limits' worth.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

LIMIT_BYTES = 4 << 20


class Journal:
    def __init__(self, path: Path, limit_bytes: int = LIMIT_BYTES) -> None:
        self.path = path
        self.limit_bytes = limit_bytes
        self._lock = threading.Lock()

    def record(self, domain: str | None, what: str, **detail: Any) -> dict[str, Any]:
        entry = {"time": round(time.time(), 3), "domain": domain, "what": what, **detail}
        line = json.dumps(entry, default=str, separators=(",", ":")) + "\n"
        with self._lock:
            try:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(line)
                    size = f.tell()
                if size > self.limit_bytes:
                    os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            except OSError:
                pass  # a journal that cannot be written must not stop pvd (the log says what happened)
        return entry

    def read(self, domain: str | None = None, since: float | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """The last ``limit`` entries (of ``domain``, since a time), oldest first.

        Read from the newest backwards and parsed only until ``limit`` are
        found; another domain's lines are skipped by a substring test before
        any parsing (entries are written compact, ``"domain":"NAME"``), so a
        domain view's request costs a fraction of a millisecond, not a
        parse of the whole 4 MiB.
        """
        wanted = None if domain is None else f'"domain":{json.dumps(domain)}'
        found: list[dict[str, Any]] = []
        for path in (self.path, self.path.with_name(self.path.name + ".1")):
            try:
                lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
            except FileNotFoundError:
                continue
            for line in reversed(lines):
                if wanted is not None and wanted not in line:
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash mid-write
                if domain is not None and entry.get("domain") != domain:
                    continue
                if since is not None and entry.get("time", 0) < since:
                    return found[::-1]  # older still: nothing further back is wanted
                found.append(entry)
                if len(found) >= limit:
                    return found[::-1]
        return found[::-1]
