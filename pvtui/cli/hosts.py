"""``pvtui host add|ls|rm|use``: named hosts in ~/.config/pvtui/hosts.yaml (never contacts them)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from pvtui.cli.exitcodes import ExitCode
from pvtui.client.hosts import NAME_PATTERN, HostError, Hosts, hosts_path, parse_host_uri


def cmd_host(args: argparse.Namespace) -> int:
    hosts = Hosts.load()
    if args.action == "ls":
        rows = [{"name": "local", "uri": "local", "current": hosts.current is None}]
        rows += [{"name": n, "uri": str(u), "current": hosts.current == n} for n, u in sorted(hosts.hosts.items())]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for row in rows:
                print(f"{'*' if row['current'] else ' '} {row['name']:<20} {row['uri']}")
        return ExitCode.OK
    name = args.name
    if name is None:
        raise HostError(f"pvtui host {args.action} needs a NAME", "See pvtui host --help.")
    if args.action == "add":
        if not NAME_PATTERN.match(name) or name == "local":
            raise HostError(f"Bad host name {name!r}", "Names are letters, digits, _ . - (up to 63), not 'local'.")
        if args.uri is None:
            raise HostError(
                "pvtui host add needs a URI", "pvtui host add NAME ssh://[user@]host[:port] (or unix:///path)."
            )
        hosts.hosts[name] = parse_host_uri(args.uri)
        print(f"added {name}: {hosts.hosts[name]}")
    elif name != "local" and name not in hosts.hosts:
        known = ", ".join(sorted(hosts.hosts)) or "none"
        raise HostError(f"No host named {name!r}", f"Known hosts: {known} (pvtui host ls).")
    elif args.action == "rm":
        if name == "local":
            raise HostError("local cannot be removed", "It is this machine's pvd.")
        del hosts.hosts[name]
        if hosts.current == name:
            hosts.current = None
        print(f"removed {name}")
    else:  # use
        hosts.current = None if name == "local" else name
        print(f"using {name} (pvtui -H overrides it for one command)")
    hosts.save()
    return ExitCode.OK


def add_host_verb(verbs: argparse._SubParsersAction, handler: Callable[[argparse.Namespace], int]) -> None:
    text = f"Named hosts ({hosts_path()}): add NAME URI, ls, rm NAME, use NAME."
    sub = verbs.add_parser("host", help="Named pvd hosts: add, ls, rm, use.", description=text)
    sub.add_argument("action", choices=("add", "ls", "rm", "use"))
    sub.add_argument("name", nargs="?")
    sub.add_argument("uri", nargs="?", help="with add: local, unix:///path/pvd.sock or ssh://[user@]host[:port]")
    sub.add_argument("--json", action="store_true")
    sub.set_defaults(handler=handler, verb="host")
