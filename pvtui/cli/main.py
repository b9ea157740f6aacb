"""``pvtui`` command line: one verb per action, each a thin layer over the engine.

Verbs import what they need lazily, so ``pvtui check`` never pays for the
engine and no verb pays for the UI.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from pvtui import __version__
from pvtui.cli.exitcodes import ExitCode
from pvtui.errors import PvtuiError


def _cmd_run(args: argparse.Namespace) -> int:
    from pvtui.cli.run import run_foreground

    return run_foreground(args.file, shutdown_timeout=args.timeout, summary=not args.no_summary, cmdline=args.cmdline)


def _cmd_check(args: argparse.Namespace) -> int:
    from pvtui.domain.loader import DomainFileError, load_domain_file

    failed = False
    for path in args.files:
        try:
            config = load_domain_file(path)
        except DomainFileError as exc:
            failed = True
            for problem in exc.problems:
                print(problem, file=sys.stderr)
        else:
            if not args.quiet:
                print(f"{path}: ok ({config.name}, {config.vcpus} vCPU, workload {config.workload.type})")
    return ExitCode.INVALID if failed else ExitCode.OK


def _cmd_engine_verb(args: argparse.Namespace) -> int:
    import asyncio

    from pvtui.cli.verbs import run_verb

    try:
        return asyncio.run(run_verb(args))
    except KeyboardInterrupt:
        return ExitCode.OK


def _cmd_schema(args: argparse.Namespace) -> int:
    import json

    from pvtui.domain.schema import json_schema

    print(json.dumps(json_schema(), indent=2))
    return ExitCode.OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pvtui", description="Run and manage paravirtual domains on KVM.")
    parser.add_argument("--version", action="version", version=f"pvtui {__version__}")
    parser.add_argument(
        "-H",
        "--host",
        metavar="HOST",
        help="the pvd to talk to: a name from pvtui host ls, local, unix:///path/pvd.sock or "
        "ssh://[user@]host[:port]; several, comma-separated, open the fleet view (default: pvtui host use, else local)",
    )
    parser.add_argument(
        "--theme",
        metavar="NAME",
        help="the TUI's theme (default $PVTUI_THEME, else textual-dark); pvtui-colour-blind is safe for the common "
        "colour-vision deficiencies; the palette's 'Change theme' lists them all",
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    def verb(name: str, handler: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    run = verb("run", _cmd_run, "Run one domain in the foreground, its console on stdout.")
    run.add_argument("file", help="domain definition (YAML), or a kernel ELF to run with 1 vCPU and 64 MiB")
    run.add_argument("--cmdline", help="the kernel command line (overrides cmdline: in the definition)")
    run.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="after Ctrl-C, how long the guest may take to shut down before it is destroyed",
    )
    run.add_argument("--no-summary", action="store_true", help="do not print the hypercall and CPU summary at exit")

    check = verb("check", _cmd_check, "Validate domain definitions; exit non-zero on any error.")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.add_argument("-q", "--quiet", action="store_true", help="print only errors")

    verb("schema", _cmd_schema, "Print the JSON Schema of domain files.")
    from pvtui.cli.fleet import add_rebalance_verb, cmd_rebalance
    from pvtui.cli.hosts import add_host_verb, cmd_host
    from pvtui.cli.verbs import add_verbs

    add_host_verb(verbs, cmd_host)
    add_rebalance_verb(verbs, cmd_rebalance)

    add_verbs(verbs, _cmd_engine_verb)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        from pvtui.ui.app import main as tui_main

        try:
            from pvtui.client.hosts import Hosts

            chosen = Hosts.load().resolve_many(args.host)
        except PvtuiError as exc:
            print(f"pvtui: {exc.title}\n  {exc.message}", file=sys.stderr)
            return ExitCode.INVALID
        try:
            if len(chosen) > 1:  # several hosts: the fleet view
                return tui_main(fleet=chosen, theme=args.theme)
            return tui_main(host=chosen[0][1], theme=args.theme)
        except PvtuiError as exc:
            print(f"pvtui: {exc.title}\n  {exc.message}", file=sys.stderr)
            return ExitCode.INVALID
    try:
        return args.handler(args)
    except PvtuiError as exc:
        print(f"pvtui: {exc.title}\n  {exc.message}".replace("\n", "\n  ").replace("\n  \n", "\n\n"), file=sys.stderr)
        return ExitCode.ENGINE
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # Quietly, as any Unix tool: point stdout at /dev/null so the flush at exit cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OUTPUT_CLOSED


if __name__ == "__main__":
    sys.exit(main())
