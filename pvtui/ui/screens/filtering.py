"""The filter field a table screen shows on ``/`` and hides on ``escape`` (domains, fleet)."""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Input

from pvtui.ui.table import LiveTable


class FilteredTableScreen(Screen[None]):
    """A screen with an ``#filter`` Input over a table; subclasses say how to redraw (:meth:`refilter`)."""

    filter_text = ""

    @property
    def table(self) -> LiveTable:
        raise NotImplementedError

    def refilter(self) -> None:
        """Show the rows that match ``filter_text``."""
        raise NotImplementedError

    def action_filter(self) -> None:
        field = self.query_one("#filter", Input)
        field.remove_class("hidden")
        field.focus()

    def action_clear_filter(self) -> None:
        field = self.query_one("#filter", Input)
        field.value = ""
        field.add_class("hidden")
        self.filter_text = ""
        self.table.focus()
        self.refilter()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self.filter_text = event.value.strip()
            self.refilter()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            self.table.focus()
