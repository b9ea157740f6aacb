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

from rich.style import Style
from rich.text import Text
from textual.color import Color
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


def render_plot(plotted: Plotted, width: int, height: int, styles: list[Style], axis: Style) -> Text:
    """The whole plot as text: legend, rows with the value axis, the time axis."""
    area_width = max(10, width - AXIS_WIDTH)
    area_height = max(2, height - 3)
    values = [v for series in plotted.series for v in series.values if v is not None]
    top = nice_ceiling(max([plotted.floor, *values]) if values else max(plotted.floor, 1.0))
    text = Text(no_wrap=True, overflow="crop")
    text.append(plotted.title, axis + Style(bold=True))
    for number, series in enumerate(plotted.series):
        text.append("  ■ ", styles[number % len(styles)])
        text.append(series.label)
    if plotted.note:
        text.append(f"  {plotted.note}", axis)
    if not values:
        text.append("\n  no samples yet: pvd takes one a second", axis)
    text.append("\n")
    cells = braille_rows(plotted, area_width, area_height, top)
    for y, row in enumerate(cells):
        value = top * (area_height - y) / area_height if y in (0, area_height // 2) else None
        label = _label(value, plotted.unit) if value is not None else ""
        text.append(f"{label:>{AXIS_WIDTH - 2}} {'┤' if label else '│'}", axis)
        for bits, number in row:
            text.append(chr(0x2800 + bits), styles[number % len(styles)] if number >= 0 else axis)
        text.append("\n")
    text.append(f"{'0' + plotted.unit:>{AXIS_WIDTH - 2}} └" + "─" * area_width + "\n", axis)
    marks = [(0, "-10m"), (area_width // 2 - 2, "-5m"), (area_width - 3, "now")]
    line = [" "] * area_width
    for at, mark in marks:
        for i, char in enumerate(mark):
            if 0 <= at + i < area_width:
                line[at + i] = char
    text.append(" " * AXIS_WIDTH + "".join(line), axis)
    return text


class Plot(Widget):
    """A :class:`Plotted` drawn to fit the widget, in the current theme's colours."""

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

    def show(self, plotted: Plotted) -> None:
        self.plotted = plotted
        self.refresh()

    def render(self) -> Text:
        if self.plotted is None:
            return Text("loading the last ten minutes…")
        theme = self.app.current_theme
        styles = [
            Style(color=Color.parse(getattr(theme, role, None) or theme.primary).rich_color) for role in SERIES_ROLES
        ]
        axis = Style(dim=True)
        return render_plot(self.plotted, self.size.width, self.size.height, styles, axis)
