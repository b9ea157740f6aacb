"""Every key of the UI, declared once: its binding, key-bar label, palette entry, help line, CLI twin.

The screens take their ``BINDINGS`` from here, the command palette and the
help screen are generated from it, and so is the README's key table
(``python -m pvtui.ui.actions --readme`` rewrites it; a test keeps it
current). A new action is one ``Key`` here plus its ``action_*`` method.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from textual.binding import Binding


@dataclass(frozen=True)
class Key:
    #: (Textual key, action) pairs this line stands for (several for "1…9, 0").
    bindings: tuple[tuple[str, str], ...]
    #: The keys as the help and README print them.
    shown: str
    #: Short label: the key bar, and the palette's title.
    title: str
    #: What it does, for the help screen, the palette and the README.
    help: str
    cli: str | None = None
    #: In the key bar (else in the help and palette only).
    show: bool = False
    #: The command palette's name for each binding (app-wide actions); empty: not in the palette.
    names: tuple[str, ...] = ()
    priority: bool = False


def _one(key: str, action: str, shown: str, title: str, help: str, name: str = "", **kw: object) -> Key:
    names = (name,) if name else ()
    return Key(((key, action),), shown, title, help, names=names, **kw)  # type: ignore[arg-type]  # Key's own fields


#: Everywhere: actions on the selected domain, and the app's own keys.
APP = [
    _one("enter", "noop", "`enter` / `escape`", "Open", "open a domain / back"),
    _one("q", "quit", "`q`", "Quit", "quit (domains keep running)", show=True),
    _one("question_mark", "help", "`?`", "Help", "this help: every key", "Help", show=True),
    _one("ctrl+p", "noop", "`ctrl+p`", "Palette", "command palette: every action by name"),  # Textual binds it
    _one("c", "create", "`c`", "Create", "create (start) a domain from a definition", "Create domain",
         cli="`pvtui create FILE`", show=True),
    _one("n", "new_domain", "`n`", "New", "new definition from a template", "New domain from template"),
    _one("s", "shutdown", "`s`", "Shutdown", "shut down (graceful)", "Shut down domain", cli="`pvtui shutdown`",
         show=True),
    _one("r", "reboot", "`r`", "Reboot", "reboot", "Reboot domain", cli="`pvtui reboot`"),
    _one("D", "destroy", "`D`", "Destroy", "destroy (asks first)", "Destroy domain", cli="`pvtui destroy`",
         show=True),
    _one("p", "pause", "`p`", "Pause", "pause / unpause", "Pause / unpause domain",
         cli="`pvtui pause` / `unpause`", show=True),
    Key((("plus", "vcpus_delta(1)"), ("minus", "vcpus_delta(-1)")), "`+` `-`", "±vCPU",
        "one vCPU more / less", cli="`pvtui vcpu-set`", names=("Add a vCPU", "Remove a vCPU")),
    _one("v", "set_vcpus", "`v`", "vCPUs", "set the vCPU count", "Set vCPUs", cli="`pvtui vcpu-set`"),
    Key((("right_square_bracket", "memory_delta(1)"), ("left_square_bracket", "memory_delta(-1)")), "`]` `[`",
        "±64M", "memory target +64M / -64M", cli="`pvtui mem-set`", names=("Memory +64M", "Memory -64M")),
    _one("m", "set_memory", "`m`", "Memory", "set the memory target", "Set memory target", cli="`pvtui mem-set`"),
    _one("i", "pin", "`i`", "Pin", "pin a vCPU to host CPUs", "Pin a vCPU", cli="`pvtui vcpu-pin`"),
    _one("w", "sched", "`w`", "Weight/cap", "weight and cap", "Weight and cap", cli="`pvtui sched-credit`"),
    _one("z", "suspend", "`z`", "Suspend/resume", "suspend to the runtime dir / resume a suspended domain",
         "Suspend / resume domain", cli="`pvtui suspend` / `resume`"),
    _one("M", "migrate", "`M`", "Migrate", "migrate live to another pvd (asks where); while migrating: cancel",
         "Migrate domain", cli="`pvtui migrate` / `migrate --cancel`"),
    _one("e", "edit", "`e`", "Edit", "edit the definition (built-in editor, validated as you type)",
         "Edit definition", show=True),
    _one("E", "external_edit", "`E`", "Edit in $EDITOR",
         "edit the definition in $VISUAL / $EDITOR (checked on return; an invalid edit is kept aside)",
         "Edit definition in $EDITOR", cli="`pvtui edit DOM`"),
    _one("S", "engine_start", "`S`", "Start engine", "start pvd after it stopped (pvtui never restarts it by itself)",
         "Start engine", cli="`pvtui engine start`"),
    _one("b", "rebalance", "`b`", "Rebalance", "rebalance vCPUs and memory between domains", "Rebalance",
         show=True),
]  # fmt: skip

#: The domains screen (home).
HOME = [
    _one("enter", "open", "`↑` `↓` `enter`", "Open", "select, open the domain view", show=True),
    Key(tuple((str((i + 1) % 10), f"sort({i})") for i in range(10)), "`1`…`9`, `0`", "Sort",
        "sort by column 1…10 (again: reverse); or click a column label"),
    Key((("less_than_sign", "sort_step(-1)"), ("greater_than_sign", "sort_step(1)")), "`<` `>`", "Sort column",
        "sort by the column left / right (every column)"),
    _one("slash", "filter", "`/`", "Filter", "filter domains by name", show=True),
    _one("escape", "clear_filter", "`escape`", "Clear filter", "clear the filter"),
    _one("h", "toggle_plots", "`h`", "Host history", "show / hide plots of the host's last 10 minutes (CPU, memory)",
         show=True),
    _one("j", "toggle_events", "`j`", "Events", "show / hide the events pane: what happened to every domain, when, why",
         cli="`pvtui events -f`", show=True),
]  # fmt: skip

#: The domain view (every APP key works there too).
DOMAIN_VIEW = [
    _one("escape", "app.pop_screen", "`escape`", "Back", "back to the domains", show=True),
    _one("f", "toggle_follow", "`f`", "Follow/pause log", "follow / pause the hypercall log",
         cli="`pvtui log -f`", show=True),
    _one("slash", "filter", "`/`", "Filter log", "filter the log: `op:console_io vcpu:0`", show=True),
    _one("l", "show_tab('log')", "`l`", "Log", "the hypercall log", cli="`pvtui log`", show=True),
    _one("t", "show_tab('rates')", "`t`", "Rates", "per-op counts and rates", cli="`pvtui log --stats`", show=True),
    _one("c", "show_tab('console')", "`c`", "Console", "the console", cli="`pvtui console`", show=True),
    _one("j", "show_tab('events')", "`j`", "Events", "this domain's events: what happened, when, why",
         cli="`pvtui events DOM`", show=True),
    _one("h", "history", "`h`", "History",
         "plots of the last 10 minutes: CPU per vCPU, memory, hypercalls/s per kind (h again: the next)",
         show=True),
]  # fmt: skip

EDITOR = [
    _one("ctrl+s", "save", "`ctrl+s`", "Save & apply",
         "validate, save atomically and apply live (vCPUs, memory, weight, cap, pinning); other keys "
         "take effect on the next start", show=True),
    _one("escape", "close", "`escape`", "Close", "close the editor", show=True, priority=True),
]  # fmt: skip

REBALANCE = [
    _one("escape", "app.pop_screen", "`escape`", "Back", "back to the domains", show=True),
    Key((("plus", "vcpus(1)"), ("minus", "vcpus(-1)")), "`+` `-`", "±vCPU", "vCPUs of the selected domain",
        show=True),
    Key((("right_square_bracket", "memory(1)"), ("left_square_bracket", "memory(-1)")), "`]` `[`", "±64M",
        "memory of the selected domain", show=True),
    _one("g", "suggest", "`g`", "Suggest",
         "suggest a plan from measured demand (CPU used + waited) and each guest's report, every step with its reason",
         show=True),
    _one("u", "reset", "`u`", "Undo edits", "undo the edits", show=True),
    _one("a", "apply", "`a`", "Apply plan", "apply (donors shrink first; a failed step rolls back the done ones)",
         show=True),
]  # fmt: skip

#: The fleet view (pvtui -H a,b,...): these act on the selected row's own host.
FLEET = [
    _one("c", "create", "`c`", "Create", "create on a host (asks which, then which definition)", show=True),
    _one("p", "pause", "`p`", "Pause", "pause / unpause (on its host)", show=True),
    _one("s", "shutdown", "`s`", "Shutdown", "shut down (graceful)", show=True),
    _one("r", "reboot", "`r`", "Reboot", "reboot"),
    _one("D", "destroy", "`D`", "Destroy", "destroy (asks first)", show=True),
    Key((("plus", "vcpus_delta(1)"), ("minus", "vcpus_delta(-1)")), "`+` `-`", "±vCPU", "one vCPU more / less"),
    Key((("right_square_bracket", "memory_delta(1)"), ("left_square_bracket", "memory_delta(-1)")), "`]` `[`",
        "±64M", "memory target +64M / -64M"),
    _one("M", "move", "`M`", "Move", "move to another host: live when both engines can, else cold (asks where)",
         cli="`pvtui move DOM HOST`", show=True),
    Key((("b", "rebalance"), ("g", "rebalance")), "`b` `g`", "Rebalance",
        "the rebalance screen in fleet mode: a plan of moves and resizes from measured demand (a dry run)",
        cli="`pvtui rebalance --fleet`", show=True),
    _one("slash", "filter", "`/`", "Filter", "filter by name, or `host:NAME`", show=True),
    _one("escape", "clear_filter", "`escape`", "Clear filter", "clear the filter"),
]  # fmt: skip

#: The rebalance screen in fleet mode (b or g in the fleet view).
FLEET_REBALANCE = [
    _one("escape", "app.pop_screen", "`escape`", "Back", "back to the fleet", show=True),
    _one("g", "suggest", "`g`", "Suggest", "a fresh plan from the latest figures", show=True),
    _one("x", "never_move", "`x`", "Never move", "mark / unmark the selected domain \"never move\"", show=True),
    _one("c", "concurrency", "`c`", "Moves at once", "how many moves run at once (1-4)", show=True),
    _one("m", "toggle_resize", "`m`", "Moves only", "plan resizes too, or moves only"),
    _one("a", "apply", "`a`", "Apply plan", "run it: shrinks, moves, grows; a failure undoes what was done",
         show=True),
]  # fmt: skip

SECTIONS = [
    ("Everywhere (on the selected domain)", APP),
    ("Domains (home)", HOME),
    ("Domain view", DOMAIN_VIEW),
    ("Editor", EDITOR),
    ("Rebalance", REBALANCE),
    ("Fleet (pvtui -H a,b,...)", FLEET),
    ("Fleet rebalance", FLEET_REBALANCE),
]


def bindings(keys: list[Key]) -> list[Binding | tuple[str, str] | tuple[str, str, str]]:
    """Textual bindings for a screen; the first key of a line carries its key-bar label."""
    result: list[Binding | tuple[str, str] | tuple[str, str, str]] = []
    for key in keys:
        for index, (name, action) in enumerate(key.bindings):
            if action == "noop":
                continue
            label = key.title if index == 0 else f"{key.title} ({name})"
            result.append(Binding(name, action, label, show=key.show and index == 0, priority=key.priority))
    return result


def palette() -> list[tuple[str, str, str]]:
    """(action, title, help) of every palette entry: one per binding of the app-wide actions."""
    return [
        (action, title, f"{key.help} ({name})")
        for key in APP
        for (name, action), title in zip(key.bindings, key.names, strict=False)
    ]


def help_markdown() -> str:
    lines = ["# pvtui keys"]
    for heading, keys in SECTIONS:
        lines += ["", f"## {heading}", "| key | action |", "| --- | --- |"]
        lines += [f"| {key.shown} | {key.help} |" for key in keys]
    return "\n".join(lines) + "\n"


def readme_table() -> str:
    lines = ["| key | action | CLI twin |", "| --- | --- | --- |"]
    seen: set[tuple[str, str]] = set()
    for heading, keys in SECTIONS:
        for key in keys:
            if (key.shown, key.help) in seen:
                continue
            seen.add((key.shown, key.help))
            where = "" if heading.startswith("Everywhere") else f"{heading.split(' (')[0].lower()}: "
            lines.append(f"| {key.shown} | {where}{key.help} | {key.cli or ''} |")
    return "\n".join(lines) + "\n"


README_START, README_END = "<!-- keys: generated by python -m pvtui.ui.actions --readme -->\n", "<!-- keys end -->\n"


def readme_with_table(text: str) -> str:
    """The README with its key table replaced by the generated one."""
    start, end = text.index(README_START) + len(README_START), text.index(README_END)
    return text[:start] + readme_table() + text[end:]


if __name__ == "__main__":
    if sys.argv[1:] == ["--readme"]:
        readme = Path(__file__).resolve().parents[2] / "README.md"
        readme.write_text(readme_with_table(readme.read_text()))
    else:
        print(help_markdown())
