"""Build the Xen Test Framework and run every pv64 test and variation on pvtui's engine.

    python scripts/xtf.py [--xtf SRC] [--build DIR] [--json FILE] [--timeout S] [TEST ...]

SRC (default ``$PVTUI_XTF_DIR`` or ``../shared/xtf`` beside the repository)
is copied to DIR (default ``~/.cache/pvtui/xtf``) and built there with
``make`` (the source tree may be read-only). Each test runs as its own
``pvtui run KERNEL --cmdline VARIATION`` process, whose exit code is
xtf-runner's (``pvtui/cli/xtf.py``). Prints a table like ``xtf-runner``
and, with ``--json``, writes ``{"date", "machine", "results": {test: result}}``.
XTF is test input, not part of pvtui: nothing of it is copied into the project.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULT_BY_CODE = {0: "SUCCESS", 3: "SKIP", 4: "ERROR", 5: "FAILURE", 6: "CRASH"}


def default_source() -> Path:
    return Path(os.environ.get("PVTUI_XTF_DIR", REPO.parent / "shared" / "xtf"))


@dataclass(frozen=True)
class XtfTest:
    name: str
    kernel: Path
    variation: str | None

    @property
    def label(self) -> str:
        return f"test-pv64-{self.name}" + (f"~{self.variation}" if self.variation else "")


def build_suite(source: Path, build: Path, tests: list[str] | None = None) -> Path:
    """Copy ``source`` to ``build`` (once per source change) and ``make`` the given tests (all by default)."""
    if not (source / "Makefile").is_file():
        raise FileNotFoundError(f"no XTF source at {source} (set PVTUI_XTF_DIR or pass --xtf)")
    if build.resolve() == source.resolve() or source.resolve() in build.resolve().parents:
        raise ValueError(f"the build folder {build} must lie outside the XTF source {source}")
    stamp = build / ".pvtui-source"
    if not stamp.is_file() or stamp.read_text() != str(source.resolve()):
        if build.exists():
            shutil.rmtree(build)
        shutil.copytree(source, build, symlinks=True)
        stamp.write_text(str(source.resolve()))
    args = ["make", "-C", str(build), f"-j{os.cpu_count() or 2}"]
    if tests:
        args.append("TESTS=" + " ".join(f"tests/{t}" for t in tests))
    subprocess.run(args, check=True, capture_output=True)
    return build


def discover(build: Path, names: list[str] | None = None) -> list[XtfTest]:
    """Every pv64 instance (one per variation) of the built tests."""
    found = []
    for info_path in sorted(build.glob("tests/*/info.json")):
        info = json.loads(info_path.read_text())
        name = info["name"]
        if (names and name not in names) or "pv64" not in info.get("environments", []):
            continue
        kernel = info_path.parent / f"test-pv64-{name}"
        if not kernel.is_file():
            continue
        for variation in info.get("variations") or [None]:
            found.append(XtfTest(name, kernel, variation))
    return found


def run_test(test: XtfTest, timeout: float) -> tuple[str, float, str]:
    """(result, seconds, console) of one test run through the real ``pvtui run``."""
    args = [sys.executable, "-m", "pvtui", "run", str(test.kernel), "--no-summary"]
    if test.variation:
        args += ["--cmdline", test.variation]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.monotonic()
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        return "CRASH", time.monotonic() - started, out + f"\n(timed out after {timeout:.0f}s)"
    result = RESULT_BY_CODE.get(done.returncode, "CRASH")
    return result, time.monotonic() - started, done.stdout + done.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tests", nargs="*", help="test names (default: every pv64 test)")
    parser.add_argument("--xtf", type=Path, default=default_source(), help="XTF source tree")
    parser.add_argument("--build", type=Path, default=Path.home() / ".cache" / "pvtui" / "xtf", help="build folder")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per test")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the console of every non-SUCCESS")
    args = parser.parse_args()
    build = build_suite(args.xtf, args.build, args.tests or None)
    tests = discover(build, args.tests or None)
    results: dict[str, str] = {}
    seconds: dict[str, float] = {}
    width = max((len(t.label) for t in tests), default=20) + 2
    for test in tests:
        result, took, console = run_test(test, args.timeout)
        results[test.label], seconds[test.label] = result, round(took, 3)
        print(f"{test.label:<{width}} {result:<8} {took:6.2f}s", flush=True)
        if args.verbose and result != "SUCCESS":
            print("    " + console.strip().replace("\n", "\n    "))
    counts = {r: list(results.values()).count(r) for r in ("SUCCESS", "SKIP", "ERROR", "FAILURE", "CRASH")}
    print("Combined: " + ", ".join(f"{n} {r}" for r, n in counts.items() if n))
    if args.json:
        report = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, Linux {platform.release()}",
            "results": results,
            "seconds": seconds,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    worst = max((("SUCCESS", "SKIP", "ERROR", "FAILURE", "CRASH").index(r) for r in results.values()), default=0)
    return {0: 0, 1: 3, 2: 4, 3: 5, 4: 6}[worst]


if __name__ == "__main__":
    sys.exit(main())
