"""TUI benchmarks with 100 idle domains and pvd's 1 Hz updates.

    python bench/tui.py [--json] [--quick]

- tui_cpu_percent: the real ``pvtui`` (in tmux) CPU over 60 s after a 15 s warm-up, psutil.
- table_update_ms_p95: the domains table's update (DomainsScreen._render_rows)
  plus the frame that paints it, timed inside an app connected to the same engine.
- key_to_screen_ms_p95 (40 cursor moves): from tmux send-keys of Down to the screen, read
  back with capture-pane, showing the cursor on the next row (not any change: the 1 Hz
  host line would end a sample early).
- open_domain_view_ms_p95 (prefetched path): the cursor moved to another domain, 1.2 s
  left for the prefetch, then from send-keys Enter to the view showing that domain's
  measured figures (its name and domid in the title, a number in the vCPU row's CPU%).
- open_domain_view_cold_ms_p95: Down and Enter sent at once (no prefetch), to the same end.
  Every open is of a different domain.
- domain_view_plot_cpu_percent: the real pvtui's CPU with a domain view's History plot open
  (redrawn at every 1 Hz poll), over the same window as tui_cpu_percent.
- plot_frame_ms_p95: one braille plot frame (three series of 600 samples), in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import select
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from _common import REPO, percentile, report

COUNT = 100
#: Startup (imports, first layout, the sparklines' first ten samples) is not steady state.
WARM_UP_S = 15.0


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


class PaneWatch:
    """One tmux control-mode client (``tmux -C``) on a session: keys and screen captures go through
    it, and it hears when the pane has new output.

    The benchmarks used to run a ``tmux`` process for every key and every
    look at the screen, a look every 2 ms while waiting: some 200 processes
    a second, which on a 2-CPU machine took CPU from the very app being timed,
    and a key's timing began with starting a process. A control client costs
    no process per command, and a wait looks again as soon as the pane
    changed (or after ``FALLBACK_S``), not on a blind poll.
    """

    FALLBACK_S = 0.02

    def __init__(self, session: str) -> None:
        self.session = session
        self.process = subprocess.Popen(
            ["tmux", "-C", "attach-session", "-t", session, "-f", "ignore-size"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        self._buffer = b""
        self._output_seen = False
        self._block(5.0)  # the attach's own (empty) reply

    def _lines(self, timeout: float):
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                yield line
            left = deadline - time.monotonic()
            assert self.process.stdout is not None
            if left <= 0 or not select.select([self.process.stdout], [], [], left)[0]:
                return
            chunk = os.read(self.process.stdout.fileno(), 1 << 16)
            if not chunk:
                raise RuntimeError(f"tmux control client for {self.session} ended")
            self._buffer += chunk

    def _block(self, timeout: float) -> list[bytes]:
        """The next command reply's lines; notifications on the way are noted, not returned."""
        inside, reply = False, []
        for line in self._lines(timeout):
            if line.startswith(b"%begin"):
                inside = True
            elif inside and (line.startswith(b"%end") or line.startswith(b"%error")):
                return reply
            elif inside:
                reply.append(line)
            elif line.startswith(b"%output"):
                self._output_seen = True
        raise RuntimeError(f"tmux did not answer within {timeout} s")

    def command(self, *words: str) -> list[bytes]:
        assert self.process.stdin is not None
        self.process.stdin.write(" ".join(shlex.quote(word) for word in words).encode() + b"\n")
        return self._block(10.0)

    def send_keys(self, *keys: str) -> float:
        """Send ``keys``; returns the time they were handed to tmux (a timing's start)."""
        sent = time.perf_counter()
        self.command("send-keys", "-t", self.session, *keys)
        return sent

    def screen(self) -> str:
        self._output_seen = False
        lines = self.command("capture-pane", "-e", "-p", "-t", self.session)
        return b"\n".join(lines).decode(errors="replace")

    def wait_for_output(self, timeout: float) -> None:
        """Until the pane shows new output (or ``timeout``)."""
        if self._output_seen:
            return
        for line in self._lines(timeout):
            if line.startswith(b"%output"):
                self._output_seen = True
                return

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            assert self.process.stdin is not None
            self.process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(2)
        if self.process.poll() is None:
            self.process.kill()


_watches: dict[str, PaneWatch] = {}


def watch(session: str) -> PaneWatch:
    if session not in _watches:
        _watches[session] = PaneWatch(session)
    return _watches[session]


def end_session(session: str) -> None:
    """Stop watching ``session`` and kill it."""
    watching = _watches.pop(session, None)
    if watching is not None:
        watching.close()
    subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def send_keys(session: str, *keys: str) -> float:
    return watch(session).send_keys(*keys)


def screen(session: str) -> str:
    return watch(session).screen()


#: A vCPU row of the domain view with a measured CPU% (not the dash shown before two samples).
MEASURED_VCPU_ROW = re.compile(r"^\s*0\s+(?:running|blocked)\s.*?\s\d+\.\d\s", re.MULTILINE)
SGR = re.compile(r"\x1b\[[0-9;:]*m")


BACKGROUND = re.compile(r"\x1b\[(?:[0-9;]*;)?(48;[25];[0-9;]+?)m")


def background_before(line: str, name: str) -> str | None:
    """The background colour in effect where ``name`` starts on a captured line."""
    cut = line.find(name)
    if cut < 0:
        return None
    found = BACKGROUND.findall(line[:cut])
    return found[-1] if found else None


def cursor_row(text: str, cursor_background: str) -> str | None:
    """The domain name drawn on the cursor's background colour (tmux repeats only changed SGR codes,
    so a line's leading codes differ with the line above it; the colour under the name does not)."""
    for line in text.splitlines():
        match = re.search(r"idle\d+", SGR.sub("", line))
        if match and background_before(line, match.group(0)) == cursor_background:
            return match.group(0)
    return None


def leading_style(text: str, name: str) -> str:
    """The background colour under ``name`` (the cursor's, when the cursor is on it)."""
    for line in text.splitlines():
        if name in SGR.sub("", line):
            background = background_before(line, name)
            if background:
                return background
    raise RuntimeError(f"{name} not on screen")


def view_shows(name: str):
    def shown(text: str) -> bool:
        plain = SGR.sub("", text)
        return (
            "Hypercall log" in plain
            and f"{name} │" in plain
            and "domid" in plain
            and bool(MEASURED_VCPU_ROW.search(plain))
        )

    return shown


def wait_for(session: str, predicate, timeout: float = 30.0) -> float:
    """Poll the pane until predicate(text) holds; returns the time it held."""
    deadline = time.perf_counter() + timeout
    watching = watch(session)
    while time.perf_counter() < deadline:
        if predicate(watching.screen()):
            return time.perf_counter()
        watching.wait_for_output(min(PaneWatch.FALLBACK_S, max(0.0, deadline - time.perf_counter())))
    Path("/tmp/pvtui-bench-screen.txt").write_text(screen(session))
    raise RuntimeError("screen never changed as expected (last screen in /tmp/pvtui-bench-screen.txt)")


def start_pvtui(session: str, runtime: Path, domains: Path) -> psutil.Process:
    """The real pvtui in a detached 120x40 tmux session against the pvd of ``runtime``; its process."""
    env = f"PVTUI_RUNTIME_DIR={runtime} PVTUI_DOMAINS_DIR={domains} PYTHONPATH={REPO} TERM=xterm-256color"
    tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "40", f"exec env {env} {sys.executable} -m pvtui")
    return psutil.Process(int(tmux("display", "-p", "-t", session, "#{pane_pid}").strip()))


def cpu_percent_over(process: psutil.Process, window_s: float) -> float:
    """The process's CPU (user + system) over the next ``window_s``, % of one core."""
    before = process.cpu_times()
    time.sleep(window_s)
    after = process.cpu_times()
    return ((after.user - before.user) + (after.system - before.system)) / window_s * 100


def time_cursor_moves(session: str, count: int, digits: int) -> tuple[list[float], int, int]:
    """``count`` Downs from the first row (idle0...): each from send-keys to the cursor shown on the
    next domain. Returns the times (ms), how many never showed within 2 s, and the row reached."""
    style = leading_style(screen(session), f"idle{0:0{digits}d}")  # the cursor's line's style
    row, keys, lost = 0, [], 0
    for _ in range(count):
        expected = f"idle{row + 1:0{digits}d}"
        start = send_keys(session, "Down")
        try:
            done = wait_for(session, lambda text, e=expected: cursor_row(text, style) == e, 2)
        except RuntimeError:
            lost += 1  # the key never showed: counted, not timed; carry on from where the cursor is
        else:
            keys.append((done - start) * 1000)
        shown = cursor_row(screen(session), style)
        row = int(shown[4:]) if shown else row + 1
        time.sleep(0.05)
    return keys, lost, row


def time_open(session: str, name: str, prefetched: bool, timeout: float) -> float:
    """Down then Enter on ``name`` (the next row): ms from Enter to its view showing measured figures,
    then back home. ``prefetched`` leaves 1.2 s between the two for the highlighted domain's prefetch;
    otherwise both keys go at once. Raises RuntimeError if the view never shows within ``timeout``."""
    if prefetched:
        send_keys(session, "Down")
        time.sleep(1.2)
        start = send_keys(session, "Enter")
    else:
        start = send_keys(session, "Down", "Enter")
    try:
        return (wait_for(session, view_shows(name), timeout) - start) * 1000
    finally:
        send_keys(session, "Escape")
        wait_for(session, lambda text: "Hypercall log" not in text, 10)
        time.sleep(0.3)


async def populate(domains: Path) -> None:
    from pvtui.client import Client

    client = await Client.connect(start=True, domains_dir=domains)
    for i in range(COUNT):
        path = domains / f"idle{i:03d}.yaml"
        path.write_text(f"name: idle{i:03d}\nmemory: 32M\n")
        await client.create(path)
    await client.close()


async def table_update_times(domains: Path, seconds: float) -> list[float]:
    """Each update of the domains table: new figures into rows, then the frame that paints them."""
    from textual.screen import Screen

    from pvtui.ui.app import PvtuiApp
    from pvtui.ui.screens.domains import DomainsScreen

    times: list[float] = []
    painting = [False]
    render_rows, compositor_refresh = DomainsScreen._render_rows, Screen._compositor_refresh

    def timed_rows(self: DomainsScreen) -> None:
        start = time.perf_counter()
        render_rows(self)
        times.append((time.perf_counter() - start) * 1000)
        painting[0] = True

    def timed_paint(self: Screen) -> None:
        start = time.perf_counter()
        compositor_refresh(self)
        if painting[0] and isinstance(self, DomainsScreen):
            times[-1] += (time.perf_counter() - start) * 1000
            painting[0] = False

    DomainsScreen._render_rows = timed_rows  # type: ignore[method-assign]
    Screen._compositor_refresh = timed_paint  # type: ignore[method-assign]
    try:
        app = PvtuiApp(domains)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(seconds)
    finally:
        DomainsScreen._render_rows = render_rows  # type: ignore[method-assign]
        Screen._compositor_refresh = compositor_refresh  # type: ignore[method-assign]
    return times[2:]  # the first renders build the table


def plot_frames() -> list[float]:
    """The braille plot's own cost: a full frame of ten minutes, three series."""
    import math

    from rich.style import Style

    from pvtui.client.history import Plotted, Series
    from pvtui.ui.plot import plot_lines

    times = [t - 599.0 for t in range(600)]
    series = [Series(f"vCPU {n}", [50 + 40 * math.sin((t + 30 * n) / 20) for t in range(600)]) for n in range(3)]
    plotted = Plotted("CPU % per vCPU", "%", times, series, floor=100.0)
    styles, axis = [Style(color="blue"), Style(color="green"), Style(color="yellow")], Style(dim=True)
    frames = []
    for _ in range(50):
        start = time.perf_counter()
        plot_lines(plotted, 118, 20, styles, axis)
        frames.append((time.perf_counter() - start) * 1000)
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if shutil.which("tmux") is None:
        sys.exit("bench/tui.py needs tmux: apt-get install -y tmux")
    cpu_window = 10.0 if args.quick else 60.0
    with tempfile.TemporaryDirectory(prefix="pvtui-tui-bench-") as tmp:
        runtime, domains = Path(tmp) / "run", Path(tmp) / "domains"
        domains.mkdir()
        os.environ.update(PVTUI_RUNTIME_DIR=str(runtime), PVTUI_DOMAINS_DIR=str(domains))
        session = f"pvtui-bench-{os.getpid()}"
        try:
            asyncio.run(populate(domains))
            process = start_pvtui(session, runtime, domains)
            wait_for(session, lambda text: "idle099" in text or "idle010" in text)
            time.sleep(WARM_UP_S)
            cpu_percent = cpu_percent_over(process, cpu_window)
            keys, lost, row = time_cursor_moves(
                session, int(os.environ.get("PVTUI_BENCH_KEYS", 10 if args.quick else 40)), 3
            )
            opens: list[float] = []
            cold_opens: list[float] = []
            for i in range(6 if args.quick else 40):
                row += 1
                cold = i % 2 == 1  # no prefetch: the cursor moves and Enter follows at once
                (cold_opens if cold else opens).append(time_open(session, f"idle{row:03d}", not cold, 10))
            # A domain view with its History plot open: the app's CPU with the plot redrawn every second.
            send_keys(session, "Down", "Enter")
            wait_for(session, lambda text: "Hypercall log" in text, 10)
            send_keys(session, "h")
            wait_for(session, lambda text: "CPU % per vCPU" in text and "now" in text, 10)
            time.sleep(5.0)
            plot_cpu_percent = cpu_percent_over(process, cpu_window)
            send_keys(session, "Escape")
            wait_for(session, lambda text: "Hypercall log" not in text, 10)
            time.sleep(0.3)
            send_keys(session, "q")
            updates = asyncio.run(table_update_times(domains, 5.0 if args.quick else 20.0))
        finally:
            end_session(session)

            async def stop() -> None:
                from pvtui.client import Client

                client = await Client.connect(start=False)
                await client.engine_stop(destroy_domains=True)
                await client.close()

            asyncio.run(stop())
    rows = [
        ("tui_cpu_percent", cpu_percent, "%", "<= 2"),
        ("table_update_ms_p95", percentile(updates, 95), "ms", "<= 16"),
        ("key_to_screen_ms_p95", percentile(keys, 95), "ms", "<= 50 (cursor move)"),
        ("keys_lost", lost, "", "0 (a Down whose move never showed within 2 s)"),
        ("open_domain_view_ms_p95", percentile(opens, 95), "ms", "<= 50 (prefetched)"),
        ("open_domain_view_cold_ms_p95", percentile(cold_opens, 95), "ms", "(no prefetch)"),
        ("domain_view_plot_cpu_percent", plot_cpu_percent, "%", "<= 3 (History plot open, redrawn at 1 Hz)"),
        ("plot_frame_ms_p95", percentile(plot_frames(), 95), "ms", "(3 series x 600 samples, 118x20 cells)"),
    ]
    report(f"pvtui TUI benchmarks ({COUNT} idle domains)", rows, args.json)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
