"""Editing a domain definition: validated as you type, saved atomically, applied live."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Static, TextArea

from pvtui.domain.loader import DomainFileError, parse_domain_text
from pvtui.domain.schema import DomainConfig
from pvtui.errors import PvtuiError
from pvtui.ui import actions
from pvtui.ui.widgets import KeyBar

TEMPLATE = """\
# A new domain. Keys have xl.cfg meanings; sizes like 64M, 2G.
name: {name}
vcpus: 1
maxvcpus: 2
memory: 64M
maxmem: 128M
cpu_weight: 256
cpu_cap: 0
workload:
  type: idle          # idle | cpu | memory | bursty | chatty
on_poweroff: destroy
on_reboot: restart
on_crash: destroy
autostart: false
"""


class EditorScreen(Screen[None]):
    BINDINGS = actions.bindings(actions.EDITOR)

    @dataclass
    class Saved(Message):
        """A valid definition was written; the app applies it."""

        path: Path
        old: DomainConfig | None
        new: DomainConfig

    def __init__(
        self, path: Path, text: str | None = None, store: Callable[[str], Awaitable[object]] | None = None
    ) -> None:
        """``store``: where a definition on another host is saved (its pvd writes its own file);
        without it the file at ``path`` here is written atomically."""
        super().__init__()
        self.path = path
        self.store = store
        self.original = path.read_text() if text is None else text
        self.saved_config: DomainConfig | None = None
        saved = self.original if store is not None else (path.read_text() if path.exists() else None)
        if saved is not None:
            try:
                self.saved_config = parse_domain_text(saved, str(path))
            except DomainFileError:
                self.saved_config = None
        self.valid: DomainConfig | None = None

    def compose(self) -> ComposeResult:
        yield Static(f"[b]{self.path}[/b]", id="title")
        yield TextArea.code_editor(self.original, language="yaml", id="yaml", theme="monokai")
        yield Static("", id="problems")
        yield KeyBar()

    def on_mount(self) -> None:
        self._validate(self.original)
        self.query_one("#yaml", TextArea).focus()

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        self._validate(event.text_area.text)

    def _validate(self, text: str) -> None:
        status = self.query_one("#problems", Static)
        try:
            self.valid = parse_domain_text(text, self.path.name)
        except DomainFileError as exc:
            self.valid = None
            status.update("[red]" + "\n".join(str(p) for p in exc.problems[:4]) + "[/red]")
            status.set_class(True, "error")
            return
        status.set_class(False, "error")
        status.update(
            f"[green]valid[/green]: {self.valid.name}, {self.valid.vcpus} vCPU, workload {self.valid.workload.type}"
        )

    def action_save(self) -> None:
        text = self.query_one("#yaml", TextArea).text
        self._validate(text)
        if self.valid is None:
            self.notify(
                "Fix the problems shown below first; the file was not touched.", title="Not saved", severity="error"
            )
            return
        if self.store is not None:
            self._store_remotely(text)
            return
        from pvtui.daemon.paths import write_atomic

        try:
            write_atomic(self.path, text)
        except OSError as exc:
            self.notify(f"{exc}. Your edits are still here.", title="Save failed", severity="error")
            return
        self._saved(text)

    @work(exclusive=True, group="editor-store")
    async def _store_remotely(self, text: str) -> None:
        assert self.store is not None
        try:
            await self.store(text)
        except PvtuiError as exc:
            self.notify(f"{exc.message} Your edits are still here.", title=exc.title, severity="error")
            return
        self._saved(text)

    def _saved(self, text: str) -> None:
        assert self.valid is not None
        old, self.saved_config = self.saved_config, self.valid
        self.original = text
        self.post_message(self.Saved(self.path, old, self.valid))

    def action_close(self) -> None:
        if self.query_one("#yaml", TextArea).text != self.original:
            self.notify("Unsaved edits: ctrl+s saves, or press escape again to drop them.", title="Unsaved")
            self.original = self.query_one("#yaml", TextArea).text
            return
        self.app.pop_screen()
