"""LiveTable on its own: widths, cursor by key, one-line repaints, log trimming, mouse and keys."""

from __future__ import annotations

from textual.app import App, ComposeResult

from pvtui.ui.table import LiveTable

COLUMNS = [("name", "NAME"), ("value", "VALUE")]


class TableApp(App[None]):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[object] = []

    def compose(self) -> ComposeResult:
        yield LiveTable(COLUMNS, id="t")

    def on_live_table_row_selected(self, message: LiveTable.RowSelected) -> None:
        self.messages.append(("selected", message.row_key))

    def on_live_table_header_selected(self, message: LiveTable.HeaderSelected) -> None:
        self.messages.append(("header", message.column_key))


def lines(app: TableApp) -> list[str]:
    table = app.query_one(LiveTable)
    return [table.render_line(y).text for y in range(table.size.height)]


async def test_every_added_row_widens_its_columns():
    app = TableApp()
    async with app.run_test(size=(60, 10)) as pilot:
        table = app.query_one(LiveTable)
        table.add_rows([("a", ["a", "1"]), ("b", ["bbbbbbbb", "22"]), ("c", ["c", "333333333"])])
        await pilot.pause()
        shown = lines(app)
        assert "bbbbbbbb" in shown[2] and "333333333" in shown[3]


async def test_cursor_follows_its_key_when_rows_are_reordered():
    app = TableApp()
    async with app.run_test(size=(60, 10)) as pilot:
        table = app.query_one(LiveTable)
        table.set_rows([("a", ["a", "1"]), ("b", ["b", "2"]), ("c", ["c", "3"])])
        table.move_cursor(2)
        table.set_rows([("c", ["c", "3"]), ("a", ["a", "1"]), ("b", ["b", "2"])])
        await pilot.pause()
        assert table.cursor_key == "c" and table.cursor_row == 0
        table.set_rows([("a", ["a", "1"])])  # the selected row went away: the cursor stays in range
        assert table.cursor_key == "a"


async def test_update_rows_changes_only_changed_rows():
    app = TableApp()
    async with app.run_test(size=(60, 10)) as pilot:
        table = app.query_one(LiveTable)
        table.set_rows([("a", ["a", "1"]), ("b", ["b", "2"])])
        await pilot.pause()
        table.update_rows([("a", ["a", "1"]), ("b", ["b", "7"])])
        await pilot.pause()
        assert table.get_cell("b", "value") == "7" and table.get_cell("a", "value") == "1"
        assert "7" in lines(app)[2]


async def test_add_rows_with_keep_holds_the_newest_rows_like_a_log():
    app = TableApp()
    async with app.run_test(size=(60, 10)):
        table = app.query_one(LiveTable)
        table.add_rows((str(i), [str(i), "x"]) for i in range(10))
        table.move_cursor(9)
        table.add_rows([("10", ["10", "wider cell"])], keep=4)
        assert table.row_keys == ["7", "8", "9", "10"]
        assert table.get_row_index("10") == 3 and table.cursor_key == "9"  # the cursor stays on its row
        assert table.get_cell("10", "value") == "wider cell" and table.get_cell("7", "value") == "x"
        table.add_rows([(str(i), [str(i), "y"]) for i in range(11, 20)], keep=4)  # more than it keeps
        assert table.row_keys == ["16", "17", "18", "19"] and table.get_row_index("16") == 0
        table.update_rows([("17", ["17", "z"])])
        assert table.get_cell("17", "value") == "z"


async def test_keys_and_clicks_select_rows_and_headers():
    app = TableApp()
    async with app.run_test(size=(60, 10)) as pilot:
        table = app.query_one(LiveTable)
        table.set_rows([(name, [name, "1"]) for name in "abcdefghijklmnop"])
        table.focus()
        await pilot.press("down", "down", "enter")
        assert ("selected", "c") in app.messages
        await pilot.press("end")
        assert table.cursor_key == "p" and table.scroll_offset.y > 0  # scrolled to keep it visible
        await pilot.press("home")
        assert table.cursor_key == "a" and table.scroll_offset.y == 0
        await pilot.click(LiveTable, offset=(9, 0))  # the VALUE label
        assert ("header", "value") in app.messages
        await pilot.click(LiveTable, offset=(1, 2))  # row b: highlight
        assert table.cursor_key == "b"
        await pilot.click(LiveTable, offset=(1, 2))  # again: select
        assert ("selected", "b") in app.messages


async def test_sync_rows_updates_in_place_or_rebuilds_when_keys_change():
    app = TableApp()
    async with app.run_test(size=(60, 10)) as pilot:
        table = app.query_one(LiveTable)
        table.sync_rows({"a": ["a", "1"], "b": ["b", "2"]})
        table.move_cursor(1)
        table.sync_rows({"a": ["a", "1"], "b": ["b", "9"]})  # same keys: b's line changes in place
        await pilot.pause()
        assert table.get_cell("b", "value") == "9" and "9" in lines(app)[2]
        table.sync_rows({"b": ["b", "9"], "c": ["c", "3"], "a": ["a", "1"]})  # new order: rebuilt
        assert table.row_keys == ["b", "c", "a"] and table.cursor_key == "b"
