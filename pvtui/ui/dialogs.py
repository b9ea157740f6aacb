"""Modal dialogs: confirm, ask for a value (validated before it is returned), pick one."""

from __future__ import annotations

from collections.abc import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Static


class ConfirmDialog(ModalScreen[bool]):
    BINDINGS = [Binding("escape", "dismiss(False)", "Cancel"), Binding("y", "dismiss(True)", "Yes")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="question", markup=False)  # wraps: a plan's question is long
            with Horizontal(classes="buttons"):
                yield Button("Yes (y)", id="yes", variant="error")
                yield Button("No (esc)", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class ValueDialog(ModalScreen[str | None]):
    """Ask for one value; ``check`` returns an error message or None."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, title: str, value: str, hint: str, check: Callable[[str], str | None]) -> None:
        super().__init__()
        self.title_text = title
        self.value = value
        self.hint = hint
        self.check = check

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="title")
            yield Input(self.value, id="value")
            yield Label(self.hint, id="hint", classes="hint")

    def on_input_changed(self, event: Input.Changed) -> None:
        error = self.check(event.value)
        hint = self.query_one("#hint", Label)
        hint.update(error or self.hint)
        hint.set_class(error is not None, "error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if self.check(event.value) is None:
            self.dismiss(event.value.strip())


class PickDialog(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, title: str, options: list[str]) -> None:
        super().__init__()
        self.title_text = title
        self.options = options

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="title")
            yield OptionList(*self.options, id="options")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.options[event.option_index])


def int_check(low: int, high: int) -> Callable[[str], str | None]:
    def check(text: str) -> str | None:
        try:
            value = int(text)
        except ValueError:
            return f"a whole number from {low} to {high}"
        return None if low <= value <= high else f"must be {low} to {high}"

    return check


def size_check(text: str) -> str | None:
    from pvtui.domain.units import parse_size

    try:
        parse_size(text.strip())
    except ValueError as exc:
        return str(exc)
    return None


def cpus_check(text: str) -> str | None:
    from pvtui.domain.cpuset import parse_cpu_list

    try:
        parse_cpu_list(text.strip())
    except ValueError as exc:
        return str(exc)
    return None
