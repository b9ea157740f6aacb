"""? help: every key of the current screen and the app."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

from pvtui.ui import actions

HELP = (
    actions.help_markdown()
    + """
## What the figures are
A dash means not measured yet: a rate needs two samples, about a second.

| figure | source |
| --- | --- |
| CPU%, per-vCPU CPU% | host: the vCPU threads' CPU time (the kernel's scheduler clock) between two of pvd's samples, ~1 s apart: guest time, as in xentop |
| engine (domain view) | host: the domain's monitor process beyond its vCPU threads |
| pvd (top line) | host: pvd's own CPU |
| CPU history, MEM history | the samples above, one a second; only measured ones are drawn |
| HCALL/s, per-op rates | engine: hypercalls counted by the engine, between two samples |
| MEM, held | engine: guest memory backed and not given back through the balloon |
| TARGET | engine: the balloon target the operator set |
| guest used | guest says: the guest's own report (`idle`, `cpu`, `chatty` report a constant kernel size) |
| host RSS | host: guest memory resident in RAM (`mincore` of the guest's mapping) |
| UPTIME | engine: since the domain started, rounded down to the unit shown |
"""
)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape", "dismiss", "Close"), Binding("question_mark", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog help"):
            yield Markdown(HELP)
