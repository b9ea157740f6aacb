"""KeyBar, TabBar and LiveText on their own."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.binding import Binding

from pvtui.ui.widgets import KeyBar, LiveText, TabBar


class BarsApp(App[None]):
    BINDINGS = [
        Binding("left_square_bracket", "less", "-64M"),
        Binding("q", "quit", "Quit"),
        Binding("x", "less", "Hidden", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.pressed: list[str] = []

    def compose(self) -> ComposeResult:
        yield LiveText("one", id="text")
        yield TabBar([("log", "Log"), ("rates", "Rates")], "log", id="tabs")
        yield KeyBar()

    def action_less(self) -> None:
        self.pressed.append("less")

    def on_tab_bar_picked(self, message: TabBar.Picked) -> None:
        self.pressed.append(message.tab)


async def test_key_bar_lists_shown_keys_and_a_click_presses_one():
    app = BarsApp()
    async with app.run_test(size=(80, 6)) as pilot:
        bar = app.query_one(KeyBar)
        shown = str(bar.render())
        assert shown.startswith("[ -64M  q Quit") and "Hidden" not in shown  # "[" is text, not markup
        await pilot.click(KeyBar, offset=(1, 0))
        assert app.pressed == ["less"]


async def test_tab_bar_marks_the_shown_tab_and_reports_clicks():
    app = BarsApp()
    async with app.run_test(size=(80, 6)) as pilot:
        tabs = app.query_one(TabBar)
        assert str(tabs.render()) == " Log   Rates "
        await pilot.click(TabBar, offset=(8, 0))
        assert app.pressed == ["rates"]
        tabs.show("rates")
        assert tabs.active == "rates"


async def test_live_text_skips_identical_text():
    app = BarsApp()
    async with app.run_test(size=(80, 6)):
        text = app.query_one(LiveText)
        updates: list[tuple[str, bool]] = []
        update = text.update

        def counting_update(content, *, layout=True):  # what LiveText asks of Static, recorded
            updates.append((str(content), layout))
            update(content, layout=layout)

        text.update = counting_update  # type: ignore[method-assign]
        text.show("two")
        assert str(text.render()) == "two"
        text.show("two")  # nothing to do: no update at all
        assert updates == [("two", False)]  # "one" -> "two": same shape
        text.show("six")  # same shape: repaint this widget, no layout
        text.show("three, longer")  # another shape: layout
        assert updates == [("two", False), ("six", False), ("three, longer", True)]
        assert str(text.render()) == "three, longer"


def test_every_key_is_declared_once_and_the_readme_table_is_current():
    """The key bar, palette, help and README all come from pvtui/ui/actions.py."""
    from pathlib import Path

    from pvtui.ui import actions
    from pvtui.ui.app import PvtuiApp
    from pvtui.ui.screens.help import HELP

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert actions.readme_with_table(readme) == readme, "run: python -m pvtui.ui.actions --readme"
    for _, keys in actions.SECTIONS:
        for key in keys:
            assert f"| {key.shown} | {key.help} |" in HELP
    bound = {(b.key, b.action) for b in PvtuiApp.BINDINGS if not isinstance(b, tuple)}
    for key in actions.APP:
        for pair in key.bindings:
            assert pair in bound or pair[1] == "noop"
    palette_actions = {action for action, _, _ in actions.palette()}
    assert {"create", "destroy", "vcpus_delta(1)", "memory_delta(-1)", "rebalance"} <= palette_actions
