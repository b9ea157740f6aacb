"""Small widgets shared by the screens."""

from __future__ import annotations

from dataclasses import dataclass

from textual.content import Content, Span
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Static


def clickable_line(parts: list[tuple[str, str, str, str]], separator: str) -> Content:
    """One line of (styled text, its style, plain text, click action) parts.

    Built from spans, not markup: a key such as ``[`` cannot be escaped
    reliably in markup.
    """
    text, spans = "", []
    for styled, style, plain, click in parts:
        if text:
            text += separator
        start = len(text)
        text += styled + plain
        spans.append(Span(start, len(text), click))
        spans.append(Span(start, start + len(styled), style))
    return Content(text, spans)


class LiveText(Static):
    """A Static for text refreshed every second.

    ``Static.update`` lays the whole screen out again by default, which
    re-renders every widget (a 100-row table included) once a second. A
    new text of the same length and line count occupies the same cells, so
    it only repaints this widget; identical text does nothing at all.
    """

    def __init__(self, text: str = "", **kwargs: object) -> None:
        super().__init__(text, **kwargs)  # type: ignore[arg-type]  # Static takes typed keywords; ours are passed through
        self._text = text

    def show(self, text: str) -> None:
        if text == self._text:
            return
        same_shape = len(text) == len(self._text) and text.count("\n") == self._text.count("\n")
        self._text = text
        self.update(text, layout=not same_shape)


class KeyBar(Static):
    """The current screen's keys on one line; a click on one presses it.

    Textual's ``Footer`` mounts one widget per key and composes them again on
    every screen switch and focus change, which took ~80 ms per switch with
    our dozen keys on these machines. This is one widget with one line of
    text, rebuilt when the screen's bindings change.
    """

    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: 1;
        background: $footer-background;
        color: $footer-description-foreground;
        link-style: none;
        link-background-hover: $block-hover-background;
        link-style-hover: none;
    }
    """

    def __init__(self) -> None:
        super().__init__("")
        self._parts: list[tuple[str, str, str, str]] = []

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)
        self._show_keys()

    def _bindings_changed(self, screen: Screen[object]) -> None:
        if screen is self.screen:
            self._show_keys()

    def _show_keys(self) -> None:
        parts: list[tuple[str, str, str, str]] = []
        actions: set[str] = set()
        bindings = self.screen.active_bindings
        palette = bindings.get(self.app.COMMAND_PALETTE_BINDING) if self.app.ENABLE_COMMAND_PALETTE else None
        for active in [*bindings.values(), *([palette] if palette else [])]:
            binding = active.binding
            if binding.action in actions or not (binding.show or active is palette):
                continue
            actions.add(binding.action)
            style = "b $footer-key-foreground" if active.enabled else "dim"
            click = f"@click=app.simulate_key({binding.key!r})"
            parts.append((self.app.get_key_display(binding), style, " " + binding.description, click))
        if parts != self._parts:
            self._parts = parts
            self.update(clickable_line(parts, "  "), layout=False)


class TabBar(Static):
    """One line naming the panes of a ContentSwitcher; the shown one stands out, a click picks one.

    Textual's ``TabbedContent`` brings ten widgets (tabs, underline,
    switcher, panes) that are all restyled and laid out whenever they are
    shown; this is one.
    """

    DEFAULT_CSS = """
    TabBar {
        height: 1;
        background: $panel;
        link-style: none;
        link-background-hover: $block-hover-background;
        link-style-hover: none;
    }
    """

    @dataclass
    class Picked(Message):
        tab: str

    def __init__(self, tabs: list[tuple[str, str]], active: str, *, id: str | None = None) -> None:
        """``tabs``: (id, label) pairs."""
        super().__init__("", id=id)
        self.tabs = tabs
        self.active = active
        self._draw()

    def show(self, active: str) -> None:
        if active != self.active:
            self.active = active
            self._draw()

    def action_pick(self, tab: str) -> None:
        self.post_message(self.Picked(tab))

    def _draw(self) -> None:
        parts = [
            (
                f" {label} ",
                "b reverse $accent" if tab_id == self.active else "$text-muted",
                "",
                f"@click=pick({tab_id!r})",
            )
            for tab_id, label in self.tabs
        ]
        self.update(clickable_line(parts, " "), layout=False)
