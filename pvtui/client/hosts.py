"""Hosts: where a pvd runs, named by a URI, and the user's named hosts in ``hosts.yaml``.

``local`` is this machine's pvd (the runtime directory's socket);
``unix:///path/pvd.sock`` another pvd on this machine;
``ssh://[user@]host[:port][/path/to/pvd.sock]`` a pvd on another machine,
reached with the user's own OpenSSH and ``~/.ssh/config`` (the socket path
defaults to where pvd puts it for the remote user: ``/run/pvtui/pvd.sock``
for root, ``/run/user/UID/pvtui/pvd.sock`` otherwise).

``~/.config/pvtui/hosts.yaml`` keeps names for them (``pvtui host add``) and
which one is in use (``pvtui host use``); reading it never contacts a host.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from pvtui.errors import PvtuiError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
SCHEMES = ("local", "unix://", "ssh://")


class HostError(PvtuiError):
    """A host URI or hosts file that cannot be used; the message says what is allowed."""


@dataclass(frozen=True)
class HostUri:
    scheme: str  # "local" | "unix" | "ssh"
    path: str = ""  # unix: the socket; ssh: the remote socket ("" = the remote user's default)
    host: str = ""
    user: str = ""
    port: int | None = None

    def __str__(self) -> str:
        if self.scheme == "local":
            return "local"
        if self.scheme == "unix":
            return f"unix://{self.path}"
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"ssh://{user}{self.host}{port}{self.path}"

    @property
    def is_local(self) -> bool:
        return self.scheme == "local"

    @property
    def ssh_destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host


def parse_host_uri(text: str) -> HostUri:
    """A host URI, or a :class:`HostError` naming what is wrong and what is allowed."""
    allowed = "Use local, unix:///path/to/pvd.sock or ssh://[user@]host[:port][/path/to/pvd.sock]."
    if text == "local":
        return HostUri("local")
    if text.startswith("unix://"):
        path = text[len("unix://") :]
        if not path.startswith("/"):
            raise HostError(f"Bad host {text!r}", f"A unix:// host needs an absolute socket path. {allowed}")
        return HostUri("unix", path=path)
    if text.startswith("ssh://"):
        parts = urlsplit(text)
        try:
            port = parts.port
        except ValueError:
            raise HostError(f"Bad host {text!r}", f"The port is not a number from 1 to 65535. {allowed}") from None
        if not parts.hostname or parts.password or parts.query or parts.fragment:
            raise HostError(f"Bad host {text!r}", f"An ssh:// host needs a host name, and nothing else. {allowed}")
        return HostUri("ssh", path=parts.path, host=parts.hostname, user=parts.username or "", port=port)
    raise HostError(f"Bad host {text!r}", allowed)


def hosts_path() -> Path:
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config_home / "pvtui" / "hosts.yaml"


@dataclass
class Hosts:
    """The named hosts and the one in use (``current``; None: local)."""

    hosts: dict[str, HostUri]
    current: str | None = None

    @classmethod
    def load(cls, path: Path | None = None) -> Hosts:
        path = path or hosts_path()
        try:
            text = path.read_text()
        except FileNotFoundError:
            return cls({})
        except OSError as exc:
            raise HostError(f"Cannot read {path}", f"{exc.strerror}; fix its permissions.") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            raise HostError(
                f"{where}: not valid YAML", f"{getattr(exc, 'problem', exc)}; fix or remove the file."
            ) from None
        allowed = "It holds hosts: {NAME: URI, ...} and current: NAME (see pvtui host --help)."
        if not isinstance(data, dict) or not set(data) <= {"hosts", "current"}:
            raise HostError(f"{path}: unexpected keys", allowed)
        raw = data.get("hosts") or {}
        if not isinstance(raw, dict):
            raise HostError(f"{path}: hosts is not a mapping", allowed)
        hosts = {}
        for name, uri in raw.items():
            if not isinstance(name, str) or not NAME_PATTERN.match(name):
                raise HostError(f"{path}: bad host name {name!r}", "Names are letters, digits, _ . - (up to 63).")
            if not isinstance(uri, str):
                raise HostError(f"{path}: host {name} has no URI", allowed)
            try:
                hosts[name] = parse_host_uri(uri)
            except HostError as exc:
                raise HostError(f"{path}: host {name}: {exc.title}", exc.message) from None
        current = data.get("current")
        if current is not None and current not in hosts and current != "local":
            raise HostError(f"{path}: current is {current!r}, which is not a host", allowed)
        return cls(hosts, None if current == "local" else current)

    def save(self, path: Path | None = None) -> None:
        from pvtui.daemon.paths import write_atomic

        path = path or hosts_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        data: dict[str, object] = {"hosts": {name: str(uri) for name, uri in sorted(self.hosts.items())}}
        if self.current:
            data["current"] = self.current
        write_atomic(path, yaml.safe_dump(data, sort_keys=False))

    def resolve_many(self, text: str | None) -> list[tuple[str, HostUri]]:
        """``-H a,b,c``: several hosts (the fleet view); one name or URI gives one."""
        if text is None or "," not in text:
            return [self.resolve(text)]
        chosen = [self.resolve(part.strip()) for part in text.split(",") if part.strip()]
        labels = [label for label, _ in chosen]
        if len(set(labels)) != len(labels):
            raise HostError("A host is named twice", f"{text}: name each host once.")
        return chosen

    def resolve(self, text: str | None) -> tuple[str, HostUri]:
        """(a name to show, the URI) for ``-H`` (a name or a URI), else the current host, else local."""
        chosen = text if text is not None else os.environ.get("PVTUI_HOST") or self.current
        if chosen is None or chosen == "local":
            return "local", HostUri("local")
        if chosen in self.hosts:
            return chosen, self.hosts[chosen]
        if any(chosen.startswith(s) for s in SCHEMES):
            return chosen, parse_host_uri(chosen)
        known = ", ".join(sorted(self.hosts)) or "none yet (pvtui host add NAME URI)"
        raise HostError(f"No host named {chosen!r}", f"Known hosts: {known}; or give a URI ({', '.join(SCHEMES)}).")


def host_target(text: str) -> HostUri | None:
    """``text`` as a host (a name from hosts.yaml, ``local`` or a URI), or None (a path on this machine)."""
    hosts = Hosts.load()
    if text in hosts.hosts or text == "local" or any(text.startswith(s) for s in SCHEMES):
        return hosts.resolve(text)[1]
    return None
