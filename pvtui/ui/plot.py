"""Plot: line charts in braille, with a value axis, a time axis and a legend, cheap enough to redraw at 1 Hz.

Each character cell holds 2x4 braille dots, so a 100x14 plot draws 200x56
points: ten minutes at 1 Hz fit in 200 columns with each column the busiest
of its three seconds (a spike is never averaged away). Measured against
textual-plotext on these machines: ~190 ms a frame for three series of 600
points, against about 3 ms here (bench/tui.py's ``plot_frame_ms``); the
domain view's 3 % CPU goal leaves no room for the former.
"""

from __future__ import annotations

import math

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.color import Color
from textual.strip import Strip
from textual.widget import Widget

from pvtui.client.history import SPAN_S, Plotted

AXIS_WIDTH = 8
#: Dot bits of a braille cell, by (column, row) within it.
DOTS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))
#: Theme roles the series take, in order.
SERIES_ROLES = ("primary", "success", "warning", "accent", "error", "secondary")


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at or above ``value``."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power * 1.0000001:
            return step * power
    return 10 * power


def _label(value: float, unit: str) -> str:
    if value >= 10000:
        return f"{value / 1000:.0f}k{unit}"
    if value >= 100 or value == int(value):
        return f"{value:.0f}{unit}"
    return f"{value:.1f}{unit}"


def braille_rows(plotted: Plotted, width: int, height: int, top: float) -> list[list[tuple[int, int]]]:
    """Per cell: (dot bits, index of the series drawn last there, or -1)."""
    columns, rows = 2 * width, 4 * height
    cells = [[(0, -1) for _ in range(width)] for _ in range(height)]
    for number, series in enumerate(plotted.series):
        peaks: list[float | None] = [None] * columns
        for ago, value in zip(plotted.times, series.values, strict=False):
            if value is None or ago < -SPAN_S:
                continue
            column = min(columns - 1, int((ago + SPAN_S) / SPAN_S * (columns - 1) + 0.5))
            held = peaks[column]
            peaks[column] = value if held is None else max(held, value)
        previous: int | None = None
        for column, value in enumerate(peaks):
            if value is None:
                previous = None
                continue
            row = rows - 1 - min(rows - 1, max(0, round(value / top * (rows - 1))))
            low, high = (row, row) if previous is None else (min(row, previous), max(row, previous))
            for dot_row in range(low, high + 1):  # joined to its neighbour: a line, not dust
                y, x = dot_row // 4, column // 2
                bits, _ = cells[y][x]
                cells[y][x] = (bits | DOTS[column % 2][dot_row % 4], number)
            previous = row
    return cells


Line = list[tuple[str, Style]]


def plot_lines(plotted: Plotted, width: int, height: int, styles: list[Style], axis: Style) -> list[Line]:
    """The whole plot as lines of (text, style) runs: legend, rows with the value axis, the time axis."""
    area_width = max(10, width - AXIS_WIDTH)
    area_height = max(2, height - 3)
    values = [v for series in plotted.series for v in series.values if v is not None]
    top = nice_ceiling(max([plotted.floor, *values]) if values else max(plotted.floor, 1.0))
    legend: Line = [(plotted.title, axis + Style(bold=True))]
    for number, series in enumerate(plotted.series):
        legend += [("  ■ ", styles[number % len(styles)]), (series.label, axis)]
    if plotted.note:
        legend.append((f"  {plotted.note}", axis))
    lines = [legend]
    if not values:
        lines.append([("  no samples yet: pvd takes one a second", axis)])
    for y, row in enumerate(braille_rows(plotted, area_width, area_height, top)):
        value = top if y == 0 else top / 2 if y == area_height // 2 else None  # the half mark: within a row
        label = _label(value, plotted.unit) if value is not None else ""
        line: Line = [(f"{label:>{AXIS_WIDTH - 2}} {'┤' if label else '│'}", axis)]
        run: list[str] = []
        run_number = -2  # cells of one colour go as one run: a run per cell costs ~20x to draw
        for bits, number in row:
            if number != run_number and run:
                line.append(("".join(run), styles[run_number % len(styles)] if run_number >= 0 else axis))
                run = []
            run_number = number
            run.append(chr(0x2800 + bits))
        if run:
            line.append(("".join(run), styles[run_number % len(styles)] if run_number >= 0 else axis))
        lines.append(line)
    lines.append([(f"{'0' + plotted.unit:>{AXIS_WIDTH - 2}} └" + "─" * area_width, axis)])
    marks = [(0, "-10m"), (area_width // 2 - 2, "-5m"), (area_width - 3, "now")]
    ticks = [" "] * area_width
    for at, mark in marks:
        for i, char in enumerate(mark):
            if 0 <= at + i < area_width:
                ticks[at + i] = char
    lines.append([(" " * AXIS_WIDTH + "".join(ticks), axis)])
    return lines


def render_plot(plotted: Plotted, width: int, height: int, styles: list[Style], axis: Style) -> Text:
    """:func:`plot_lines` as one Rich ``Text`` (tests and screenshots read it)."""
    text = Text(no_wrap=True, overflow="crop")
    for number, line in enumerate(plot_lines(plotted, width, height, styles, axis)):
        if number:
            text.append("\n")
        for chunk, style in line:
            text.append(chunk, style)
    return text


class Plot(Widget):
    """A :class:`Plotted` drawn to fit the widget, in the current theme's colours.

    Its lines are worked out once per new figures (or size or theme) and kept
    as Strips; a repaint hands them over as they are.
    """

    DEFAULT_CSS = """
    Plot {
        width: 1fr;
        height: 1fr;
        min-height: 6;
    }
    """

    def __init__(self, **kwargs: str | None) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]  # id and classes
        self.plotted: Plotted | None = None
        self._strips: list[Strip] = []
        self._drawn_for: tuple[int, int, str] | None = None

    def show(self, plotted: Plotted) -> None:
        self.plotted = plotted
        self._drawn_for = None
        self.refresh()

    def render(self) -> Text:
        """The plot as text (what tests read); the screen is drawn by :meth:`render_line`."""
        if self.plotted is None:
            return Text("loading the last ten minutes…")
        styles, axis = self._styles()
        return render_plot(self.plotted, self.size.width, self.size.height, styles, axis)

    def _styles(self) -> tuple[list[Style], Style]:
        theme = self.app.current_theme
        roles = (getattr(theme, role, None) or theme.primary for role in SERIES_ROLES)
        return [Style(color=Color.parse(role).rich_color) for role in roles], Style(dim=True)

    def render_line(self, y: int) -> Strip:
        width, height = self.size
        key = (width, height, self.app.current_theme.name)
        if self._drawn_for != key:
            self._drawn_for = key
            base = self.rich_style
            if self.plotted is None:
                lines: list[Line] = [[("loading the last ten minutes…", Style(dim=True))]]
            else:
                styles, axis = self._styles()
                lines = plot_lines(self.plotted, width, height, styles, axis)
            self._strips = [
                Strip([Segment(chunk, base + style) for chunk, style in line]).adjust_cell_length(width, base)
                for line in lines
            ]
        if y < len(self._strips):
            return self._strips[y]
        return Strip.blank(width, self.rich_style)
