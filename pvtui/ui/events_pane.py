"""The events pane: pvd's journal as rows (home: every domain; the domain view: its own)."""

from __future__ import annotations

from pvtui.client.journal import JournalEntry
from pvtui.ui.table import LiveTable
from pvtui.ui.tones import toned

#: Rows an events pane keeps (pvtui events and the journal itself hold more).
KEEP_ROWS = 300
COLUMNS = [("time", "TIME"), ("domain", "DOMAIN"), ("what", "WHAT"), ("detail", "DETAIL")]
DOMAIN_COLUMNS = [("time", "TIME"), ("what", "WHAT"), ("detail", "DETAIL")]


class EventsTable(LiveTable):
    """Journal entries, newest at the bottom, the cursor following them unless moved up."""

    def __init__(self, with_domain: bool = True, **kwargs: object) -> None:
        super().__init__(COLUMNS if with_domain else DOMAIN_COLUMNS, **kwargs)  # type: ignore[arg-type]
        self.with_domain = with_domain
        self._seen: set[tuple[float, str | None, str]] = set()
        self._serial = 0

    def clear(self) -> None:
        self._seen = set()
        super().clear()

    def add_entries(self, entries: list[JournalEntry]) -> None:
        """Append entries not shown yet (the first load and the subscription overlap)."""
        following = self.row_count == 0 or self.cursor_row >= self.row_count - 1
        rows = []
        for entry in entries:
            key = (entry.time, entry.domain, entry.what)
            if key in self._seen:
                continue
            self._seen.add(key)
            self._serial += 1
            cells = [entry.stamp("%H:%M:%S"), toned(entry.what, entry.tone), entry.detail_text]
            if self.with_domain:
                cells.insert(1, entry.domain or "-")
            rows.append((str(self._serial), cells))
        if not rows:
            return
        self.add_rows(rows, keep=KEEP_ROWS)
        if len(self._seen) > 4 * KEEP_ROWS:
            self._seen = set(sorted(self._seen, key=lambda seen: seen[0])[-KEEP_ROWS:])
        if following:
            self.move_cursor(self.row_count - 1)
