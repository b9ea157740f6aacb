"""LiveTable: a table of text rows that change every second, drawn line by line.

Textual's ``DataTable`` renders each cell through Rich and drops its whole
render cache whenever any cell changes, so one changed figure in a 100-row
table redraws every visible cell: ~115 ms on these machines, once a second.
Here a row is one pre-padded string and one style, a changed row repaints
one line, and a full repaint of a 40-line table costs about a millisecond.
The price is plain text: no markup. A cell may carry a *tone*
(:class:`pvtui.ui.tones.Toned`): its span is drawn in the theme's colour for
that tone (the app's ``tone_styles``), except on the cursor row and greyed rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from pvtui.ui.tones import Toned

Row = tuple[str, Sequence[str]]
#: (first character, end character, tone) of each toned cell of a line.
Spans = tuple[tuple[int, int, str], ...]


@dataclass
class _TableMessage(Message):
    """A message from a LiveTable; ``control`` lets ``@on(..., "#id")`` match it."""

    table: LiveTable

    @property
    def control(self) -> LiveTable:
        return self.table


class LiveTable(ScrollView, can_focus=True):
    """Rows of text cells with a row cursor, keyed by a string per row.

    ``set_rows`` replaces every row and keeps the cursor on the same key;
    ``update_rows`` repaints the changed lines only; ``add_rows(rows, keep=n)`` makes it a log.
    """

    COMPONENT_CLASSES = {"live-table--header", "live-table--cursor", "live-table--even-row", "live-table--dimmed"}

    DEFAULT_CSS = """
    LiveTable {
        background: $surface;
        color: $foreground;
        height: auto;
        max-height: 100%;
        &:focus {
            background-tint: $foreground 5%;
            & > .live-table--cursor {
                background: $block-cursor-background;
                color: $block-cursor-foreground;
                text-style: $block-cursor-text-style;
            }
        }
        & > .live-table--header {
            text-style: bold;
            background: $panel;
            color: $foreground;
        }
        & > .live-table--even-row {
            background: $surface-lighten-1 50%;
        }
        & > .live-table--dimmed {
            color: $text-disabled;
        }
        &:dark > .live-table--even-row {
            background: $surface-darken-1 40%;
        }
        & > .live-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
    }
    """

    BINDINGS = [
        Binding("up", "cursor_up", "Up", show=False),
        Binding("down", "cursor_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Last", show=False),
        Binding("enter", "select_cursor", "Select", show=False),
    ]

    cursor_row: reactive[int] = reactive(0, always_update=False, init=False)

    @dataclass
    class RowHighlighted(_TableMessage):
        row_key: str

    @dataclass
    class RowSelected(_TableMessage):
        """Enter, a click on the highlighted row, or a double click."""

        row_key: str

    @dataclass
    class HeaderSelected(_TableMessage):
        """A click on a column's label."""

        column_key: str

    def __init__(
        self,
        columns: Sequence[tuple[str, str]],
        *,
        zebra_stripes: bool = False,
        drop_order: Sequence[str] = (),
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        """``columns``: (key, label) pairs; ``drop_order``: the columns to leave out, first first,
        while the table is wider than its widget (as htop and k9s narrow, instead of a scrollbar)."""
        super().__init__(id=id, classes=classes)
        self.column_keys = [key for key, _ in columns]
        self._labels = [label for _, label in columns]
        self.zebra_stripes = zebra_stripes
        self._keys: list[str] = []
        self._cells: list[list[str]] = []
        self._index: dict[str, int] = {}  # key -> position counted from the last set_rows
        self._dropped = 0  # rows trimmed off the front since then
        self._lines: list[str] = []
        self._spans: list[Spans] = []
        self._tone_styles: Mapping[str, Style] = {}
        self._widths = [cell_len(label) for label in self._labels]
        self.drop_order = tuple(drop_order)
        #: Columns left out because the widget is too narrow for them (indexes).
        self._hidden: frozenset[int] = frozenset()
        self._header = ""
        #: Rows shown greyed (a host that cannot be reached, say), by key.
        self._dimmed: frozenset[str] = frozenset()
        self._relayout()

    # --- data ---------------------------------------------------------------------------
    @property
    def row_count(self) -> int:
        return len(self._keys)

    @property
    def row_keys(self) -> list[str]:
        return list(self._keys)

    @property
    def cursor_key(self) -> str | None:
        return self._keys[self.cursor_row] if self._keys else None

    def get_row_index(self, key: str) -> int:
        return self._index[key] - self._dropped

    def get_row(self, key: str) -> list[str]:
        return list(self._cells[self.get_row_index(key)])

    def get_cell(self, key: str, column_key: str) -> str:
        return self._cells[self.get_row_index(key)][self.column_keys.index(column_key)]

    def set_dimmed(self, keys: Iterable[str]) -> None:
        """Grey these rows (and no others); repaints only when the set changes."""
        dimmed = frozenset(keys)
        if dimmed != self._dimmed:
            self._dimmed = dimmed
            self.refresh()

    def set_labels(self, labels: dict[str, str]) -> None:
        """New labels for some columns (a sort arrow, say)."""
        for column_key, label in labels.items():
            self._labels[self.column_keys.index(column_key)] = label
        self._fit_widths()
        self._relayout()

    def set_rows(self, rows: Iterable[Row]) -> None:
        """Replace every row; the cursor stays on its key if that row is still here."""
        selected = self.cursor_key
        self._keys, self._cells = [], []
        for key, cells in rows:
            self._keys.append(key)
            self._cells.append(list(cells))
        self._index = {key: i for i, key in enumerate(self._keys)}
        self._dropped = 0
        self._fit_widths()
        self._relayout()
        if selected in self._index:
            self._set_cursor(self.get_row_index(selected))
        else:
            self._set_cursor(min(self.cursor_row, max(0, self.row_count - 1)))

    def sync_rows(self, rows: Mapping[str, Sequence[str]]) -> None:
        """Show ``rows``: changed lines repainted in place while the keys and their
        order stay the same, a rebuild (cursor kept on its key) when they change."""
        if list(rows) == self._keys:
            self.update_rows(rows.items())
        else:
            self.set_rows(rows.items())

    def update_rows(self, rows: Iterable[Row]) -> None:
        """Change rows in place; only their lines are repainted unless a column has to widen."""
        changed: list[int] = []
        for key, cells in rows:
            index = self._index[key] - self._dropped
            new = list(cells)
            if self._cells[index] != new:
                self._cells[index] = new
                changed.append(index)
        if not changed:
            return
        if True in [self._widen(self._cells[index]) for index in changed]:  # widen for every row
            self._relayout()
            return
        for index in changed:
            self._lines[index] = self._line(self._cells[index])
            self._spans[index] = self._spans_of(self._cells[index])
        self._refresh_rows(changed)

    def add_rows(self, rows: Iterable[Row], keep: int | None = None) -> None:
        """Append rows; with ``keep``, then drop the oldest so at most ``keep`` remain (a log).

        The virtual size is set once, after both: it is a layout reactive, and a
        full log that adds and drops as many rows keeps its size, so it needs
        no layout at all.
        """
        first_new = len(self._keys)
        for key, cells in rows:
            self._index[key] = self._dropped + len(self._keys)
            self._keys.append(key)
            self._cells.append(list(cells))
        drop = 0 if keep is None else max(0, len(self._keys) - keep)
        if drop:
            for key in self._keys[:drop]:
                del self._index[key]
            del self._keys[:drop], self._cells[:drop], self._lines[: min(drop, len(self._lines))]
            del self._spans[: min(drop, len(self._spans))]
            self._dropped += drop
            first_new = max(0, first_new - drop)
            self._set_cursor(max(0, self.cursor_row - drop))
        if first_new == len(self._keys) and not drop:
            return
        if True in [self._widen(cells) for cells in self._cells[first_new:]]:  # widen for every row
            self._relayout()
            return
        del self._lines[first_new:], self._spans[first_new:]
        self._lines.extend(self._line(cells) for cells in self._cells[first_new:])
        self._spans.extend(self._spans_of(cells) for cells in self._cells[first_new:])
        self.virtual_size = Size(self._total_width(), self.row_count + 1)
        self.refresh()

    def clear(self) -> None:
        self.set_rows([])

    # --- cursor -------------------------------------------------------------------------
    def move_cursor(self, row: int) -> None:
        self._set_cursor(row)

    def _set_cursor(self, row: int) -> None:
        row = max(0, min(row, self.row_count - 1)) if self.row_count else 0
        self.cursor_row = row
        self._scroll_to_cursor()

    def watch_cursor_row(self, old: int, new: int) -> None:
        self._refresh_rows((old, new))
        if self._keys:
            self.post_message(self.RowHighlighted(self, self._keys[new]))

    def _scroll_to_cursor(self) -> None:
        visible = max(1, self.scrollable_content_region.height - 1)
        top = int(self.scroll_offset.y)
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False, immediate=True)
        elif self.cursor_row >= top + visible:
            self.scroll_to(y=self.cursor_row - visible + 1, animate=False, immediate=True)

    def action_cursor_up(self) -> None:
        self._set_cursor(self.cursor_row - 1)

    def action_cursor_down(self) -> None:
        self._set_cursor(self.cursor_row + 1)

    def action_page_up(self) -> None:
        self._set_cursor(self.cursor_row - max(1, self.scrollable_content_region.height - 1))

    def action_page_down(self) -> None:
        self._set_cursor(self.cursor_row + max(1, self.scrollable_content_region.height - 1))

    def action_first(self) -> None:
        self._set_cursor(0)

    def action_last(self) -> None:
        self._set_cursor(self.row_count - 1)

    def action_select_cursor(self) -> None:
        if self._keys:
            self.post_message(self.RowSelected(self, self._keys[self.cursor_row]))

    def on_click(self, event: events.Click) -> None:
        x, y = event.x + int(self.scroll_offset.x), event.y
        if y == 0:
            if (column := self._column_at(x)) is not None:
                self.post_message(self.HeaderSelected(self, self.column_keys[column]))
            return
        row = int(self.scroll_offset.y) + y - 1
        if not 0 <= row < self.row_count:
            return
        if row == self.cursor_row or event.chain > 1:
            self.post_message(self.RowSelected(self, self._keys[row]))
        else:
            self._set_cursor(row)

    def _column_at(self, x: int) -> int | None:
        left = 0
        for column, width in enumerate(self._widths):
            if column in self._hidden:
                continue
            left += width + 2
            if x < left:
                return column
        return None

    # --- drawing ------------------------------------------------------------------------
    def _fit_widths(self) -> None:
        self._widths = [cell_len(label) for label in self._labels]
        for cells in self._cells:
            self._widen(cells)

    def _widen(self, cells: Sequence[str]) -> bool:
        """Grow column widths to fit ``cells``; True if any grew."""
        grew = False
        for column, cell in enumerate(cells):
            width = len(cell) if cell.isascii() else cell_len(cell)
            if width > self._widths[column]:
                self._widths[column] = width
                grew = True
        return grew

    def _line(self, cells: Sequence[str]) -> str:
        hidden = self._hidden
        return "".join(
            f" {cell.ljust(width) if cell.isascii() else set_cell_size(cell, width)} "  # cells never exceed widths
            for column, (cell, width) in enumerate(zip(cells, self._widths, strict=False))
            if column not in hidden
        )

    def _spans_of(self, cells: Sequence[str]) -> Spans:
        """Where each toned cell's text sits in its line (character offsets, padding excluded)."""
        spans = []
        start = 0
        for column, (cell, width) in enumerate(zip(cells, self._widths, strict=False)):
            if column in self._hidden:
                continue
            if isinstance(cell, Toned):
                spans.append((start + 1, start + 1 + len(cell), cell.tone))
            start += 2 + (width if cell.isascii() else len(set_cell_size(cell, width)))
        return tuple(spans)

    def _total_width(self) -> int:
        return sum(width + 2 for column, width in enumerate(self._widths) if column not in self._hidden)

    def _fit_columns(self) -> bool:
        """Leave out columns of ``drop_order`` until the rest fit the widget; True if that changed."""
        width, hidden = self.scrollable_content_region.width, set()  # a vertical scrollbar takes its share
        if width > 0 and self.drop_order:
            total = sum(w + 2 for w in self._widths)
            for key in self.drop_order:
                if total <= width:
                    break
                column = self.column_keys.index(key)
                hidden.add(column)
                total -= self._widths[column] + 2
        changed = hidden != self._hidden
        self._hidden = frozenset(hidden)
        return changed

    def _relayout(self) -> None:
        self._fit_columns()
        self._header = self._line(self._labels)
        self._lines = [self._line(cells) for cells in self._cells]
        self._spans = [self._spans_of(cells) for cells in self._cells]
        self.virtual_size = Size(self._total_width(), self.row_count + 1)
        self.refresh()

    def _refresh_rows(self, indexes: Iterable[int]) -> None:
        """Repaint the lines of these rows that are in view (one refresh for all of them)."""
        top, width, height = int(self.scroll_offset.y) - 1, self.size.width, self.size.height
        regions = [Region(0, index - top, width, 1) for index in indexes if 1 <= index - top < height]
        if regions:
            self.refresh(*regions)

    def render_lines(self, crop: Region) -> list[Strip]:
        """Work out the styles once per paint, not once per line (``rich_style`` walks the DOM)."""
        base = self.rich_style
        self._paint_styles = (
            base,
            base + self.get_component_rich_style("live-table--header"),
            base + self.get_component_rich_style("live-table--cursor"),
            base + self.get_component_rich_style("live-table--even-row"),
            base + self.get_component_rich_style("live-table--dimmed"),
        )
        self._tone_styles = getattr(self.app, "tone_styles", None) or {}
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        base, header, cursor, even, dimmed = self._paint_styles
        if y == 0:
            text, style = self._header, header
        else:
            index = scroll_y + y - 1
            if index >= len(self._lines):
                return Strip.blank(width, base)
            text = self._lines[index]
            if index == self.cursor_row:
                style = cursor
            elif self._dimmed and self._keys[index] in self._dimmed:
                style = dimmed
            else:
                style = even if self.zebra_stripes and index % 2 else base
                if self._spans[index] and self._tone_styles:
                    return self._toned_line(text, self._spans[index], style, scroll_x, width)
        if scroll_x == 0:  # the usual case: one string cut or padded to the width, one Strip
            return Strip([Segment(set_cell_size(text, width), style)], width)
        return Strip([Segment(text, style)]).crop(scroll_x, scroll_x + width).extend_cell_length(width, style)

    def _toned_line(self, text: str, spans: Spans, style: Style, scroll_x: int, width: int) -> Strip:
        segments, at = [], 0
        for start, end, tone in spans:
            tone_style = self._tone_styles.get(tone)
            if tone_style is None:
                continue
            if start > at:
                segments.append(Segment(text[at:start], style))
            segments.append(Segment(text[start:end], style + tone_style))
            at = end
        segments.append(Segment(text[at:], style))
        return Strip(segments).crop(scroll_x, scroll_x + width).extend_cell_length(width, style)

    def on_resize(self) -> None:
        if self._fit_columns():
            self._relayout()
        self._scroll_to_cursor()
