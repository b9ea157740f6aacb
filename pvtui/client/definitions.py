"""A running domain's definition: fetched from its host, edited in the operator's own editor, saved, applied.

Shared by ``pvtui edit DOM`` and the TUI's ``E``: the definition is a file on
the domain's host (here, or read and written back through that host's pvd);
the operator's ``$VISUAL`` / ``$EDITOR`` edits a copy; the result is checked
with the same loader as ``pvtui check`` (``FILE:LINE:COLUMN``). An invalid
edit is never saved or applied: it is kept aside (:func:`aside_path`) and
the next edit of that domain continues from it. A valid one is written
atomically and its live keys applied as the built-in editor's save does.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from pvtui.client.client import Client, EngineError
from pvtui.client.hosts import HostUri
from pvtui.domain.diff import diff_configs, live_steps
from pvtui.domain.loader import DomainFileError, parse_domain_text
from pvtui.domain.schema import DomainConfig
from pvtui.errors import PvtuiError

#: Tried in order when neither $VISUAL nor $EDITOR is set (Debian's alternative first).
FALLBACK_EDITORS = ("editor", "vi", "nano")


@dataclass
class Definition:
    name: str
    #: Where it lives on its host.
    path: Path
    text: str
    #: Writes new text where it lives (atomically, here or through that host's pvd).
    store: Callable[[str], Awaitable[object]]
    host: HostUri


async def fetch_definition(client: Client, host: HostUri, name: str, local_path: Path | None) -> Definition:
    """The definition of ``name``: the file here (``local_path``) for this host, else from its pvd."""
    if host.is_local and local_path is not None:
        if not local_path.exists():
            raise PvtuiError(f"{local_path} does not exist", "Its domain was created from a file since moved.")
        from pvtui.daemon.paths import write_atomic

        async def store_here(text: str) -> object:
            write_atomic(local_path, text)
            return None

        return Definition(name, local_path, local_path.read_text(), store_here, host)
    remote = await client.call("definition", name=name)

    async def store_there(text: str) -> object:
        return await client.call("definition_put", name=name, text=text)

    return Definition(name, Path(remote["path"]), remote["text"], store_there, host)


def aside_path(definition: Definition) -> Path:
    """Where an invalid edit of this definition is kept (never saved over the real one)."""
    if definition.host.is_local:
        return definition.path.with_name(definition.path.name + ".rejected")
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "pvtui" / "rejected"
    host = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(definition.host))
    return state / f"{host}-{definition.name}.yaml"


def editor_command() -> list[str]:
    """``$VISUAL``, else ``$EDITOR``, else the first of :data:`FALLBACK_EDITORS` installed (split as a shell would)."""
    for variable in ("VISUAL", "EDITOR"):
        if value := os.environ.get(variable, "").strip():
            return shlex.split(value)
    for name in FALLBACK_EDITORS:
        if shutil.which(name):
            return [name]
    raise PvtuiError("No editor", "Set $VISUAL or $EDITOR (e.g. export EDITOR=vim), or use the built-in editor (e).")


def run_editor(text: str, name: str) -> str:
    """Let the operator's editor change ``text`` (a copy in a private file); what it left there.

    Blocks until the editor exits; the terminal must be the editor's meanwhile
    (the TUI suspends itself first).
    """
    command = editor_command()
    with tempfile.TemporaryDirectory(prefix="pvtui-edit-") as folder:
        copy = Path(folder) / f"{name}.yaml"
        copy.write_text(text)
        try:
            finished = subprocess.run([*command, str(copy)], check=False)
        except OSError as exc:
            raise PvtuiError(f"Cannot run {command[0]}", f"{exc.strerror or exc}; check $VISUAL / $EDITOR.") from None
        if finished.returncode != 0:
            raise PvtuiError(
                f"{command[0]} exited with status {finished.returncode}",
                "Nothing was saved. Edit again when ready.",
            )
        return copy.read_text()


@dataclass
class EditOutcome:
    """What became of one edit."""

    changed: bool
    #: The checked new definition (None: unchanged, or invalid).
    config: DomainConfig | None = None
    #: The loader's FILE:LINE:COLUMN problems of an invalid edit.
    problems: tuple[str, ...] = ()
    #: Where an invalid edit was kept.
    kept_at: Path | None = None


def start_text(definition: Definition) -> tuple[str, bool]:
    """What the editor opens: an edit rejected before (to continue it), else the definition itself."""
    aside = aside_path(definition)
    if aside.exists():
        return aside.read_text(), True
    return definition.text, False


async def check_and_save(definition: Definition, edited: str) -> EditOutcome:
    """Validate ``edited``; keep it aside if invalid, else save it where it lives and drop any kept copy."""
    from pvtui.daemon.paths import write_atomic

    aside = aside_path(definition)
    if edited == definition.text:
        aside.unlink(missing_ok=True)
        return EditOutcome(changed=False)
    try:
        config = parse_domain_text(edited, str(definition.path))
    except DomainFileError as exc:
        aside.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(aside, edited)
        return EditOutcome(True, None, tuple(str(p) for p in exc.problems), aside)
    if config.name != definition.name:
        problem = (
            f"{definition.path}:1:1: name: {config.name!r} — a definition keeps its domain's name ({definition.name})"
        )
        aside.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(aside, edited)
        return EditOutcome(True, None, (problem,), aside)
    await definition.store(edited)
    aside.unlink(missing_ok=True)
    return EditOutcome(True, config)


@dataclass
class Applied:
    applied: list[str]
    restart: list[str]


async def apply_live(client: Client, old: DomainConfig | None, new: DomainConfig, present_bytes: int) -> Applied:
    """Apply what changed that the engine changes live (in order); say what needs a restart.

    Stops at the first refusal, raising it with what was applied so far in its message.
    """
    if old is None:
        return Applied([], [])
    live, restart = diff_configs(old, new)
    applied: list[str] = []
    for step in live_steps(new, live, present_bytes):
        try:
            await getattr(client, step.op)(*step.args)
        except EngineError as exc:
            raise EngineError(exc.title, f"{exc.message} (applied so far: {', '.join(applied) or 'nothing'})") from None
        if step.key not in applied:
            applied.append(step.key)
    return Applied(applied, restart)


def parse_or_none(text: str, path: Path) -> DomainConfig | None:
    try:
        return parse_domain_text(text, str(path))
    except DomainFileError:
        return None
