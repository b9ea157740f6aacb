"""? help: every key of the current screen and the app."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# pvtui keys

## Everywhere
| key | action |
| --- | --- |
| `?` | this help |
| `ctrl+p` | command palette: every action by name |
| `q` | quit (domains keep running) |
| `escape` | back |

## Domains (home)
| key | action |
| --- | --- |
| `↑` `↓` `enter` | select, open the domain view |
| `1`…`9`, `0` | sort by column 1…10 (again: reverse); or click a column label |
| `<` `>` | sort by the column left / right (every column) |
| `/` | filter by name |
| `n` | new domain from a template |
| `c` | create (start) a domain from a definition |
| `s` | shut down (graceful) |
| `D` | destroy (asks first) |
| `p` | pause / unpause |
| `r` | reboot |
| `+` `-` | one vCPU more / less |
| `]` `[` | memory target +64M / -64M |
| `v` `m` | set vCPUs / memory target |
| `i` | pin a vCPU |
| `w` | weight and cap |
| `e` | edit the definition |
| `b` | rebalance view |

## Domain view
All domain keys above, plus `f` follow/pause the hypercall log, `/` filter it
(`op:console_io vcpu:0`), `l` log, `t` per-op rates, `c` console.

## Editor
`ctrl+s` validate, save atomically and apply live (vCPUs, memory, weight, cap,
pinning); other keys take effect on the next start. `escape` closes.

## Rebalance
`+` `-` vCPUs, `]` `[` memory of the selected domain, `g` suggest (vCPUs from
host-measured CPU use; memory from each guest's own report of its use),
`u` undo edits, `a` apply (donors shrink first; a failed step rolls back the
done ones).

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


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape", "dismiss", "Close"), Binding("question_mark", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog help"):
            yield Markdown(HELP)
