"""A deterministic app for snapshot tests: the real screens fed fixed figures."""

from __future__ import annotations

from pathlib import Path

from pvtui.client import DomainSummary, HostInfo, MemoryInfo
from pvtui.ui.screens.domains import DomainsScreen
from pvtui.ui.theming import ThemedApp

MIB = 1 << 20
CSS = Path(__file__).resolve().parent.parent / "pvtui" / "ui" / "pvtui.tcss"

HOST = HostInfo(
    cpus=8,
    cpu_percent=37.5,
    memory_total=32768 * MIB,
    memory_available=30000 * MIB,
    memory_given=448 * MIB,
    memory_committed=1536 * MIB,
    memory_commit_limit=32256 * MIB,
    domains=3,
    domains_by_state={"blocked": 2, "running": 1},
    cpu_control="cgroup1",
)


def summary(
    name: str, domid: int, state: str, cpu: float, vcpus: tuple[int, int], memory: int, crash_reason: str | None = None
) -> DomainSummary:
    mem = MemoryInfo(memory, memory, 2 * memory, memory, memory, memory // 3, memory // 2)
    return DomainSummary(
        name=name,
        domid=domid,
        state=state,
        pid=1000 + domid,
        cpu_s=cpu * 3.0,
        cpu_percent=cpu,
        vcpus_online=vcpus[0],
        vcpus_max=vcpus[1],
        memory=mem,
        hypercalls_total=1000 * domid,
        hypercalls_per_s=12.5 * domid,
        uptime_s=3725.0 * domid,
        weight=256,
        cap=0,
        crash_reason=crash_reason,
    )


DOMAINS = [
    summary("web", 1, "running", 48.2, (2, 4), 128 * MIB),
    summary("cache", 2, "blocked", 3.1, (1, 2), 192 * MIB),
    summary("logger", 3, "blocked", 0.4, (1, 1), 64 * MIB),
    summary("batch", 4, "running", 171.0, (2, 2), 9000 * MIB),
    summary("paused", 5, "paused", 0.0, (1, 1), 64 * MIB),
    summary("old", 6, "crashed", 0.0, (1, 1), 64 * MIB, "monitor process 4242 killed (ended without a word)"),
]


class DomainsSnapshotApp(ThemedApp):
    CSS_PATH = str(CSS)

    def __init__(self, theme: str | None = None) -> None:
        super().__init__(theme)
        self.screen_under_test = DomainsScreen()

    async def on_mount(self) -> None:
        await self.push_screen(self.screen_under_test)
        for step in range(10):  # a fixed history for the sparklines
            scaled = [
                summary(
                    d.name,
                    d.domid,
                    d.state,
                    (d.cpu_percent or 0.0) * (step + 1) / 10,
                    (d.vcpus_online, d.vcpus_max),
                    d.memory.boot_bytes,
                    d.crash_reason,
                )
                for d in DOMAINS
            ]
            self.screen_under_test.update_data(scaled, HOST, sample=True)


def demanding(name: str, vcpus: tuple[int, int], cpu: float, wait: float, target: int, used: int) -> DomainSummary:
    """A domain with measured demand and a guest report, as the rebalancer sees it."""
    memory = MemoryInfo(256 * MIB, 256 * MIB, 256 * MIB, target, target, used, target)
    return DomainSummary(
        name=name, domid=1, state="running", cpu_percent=cpu, cpu_wait_percent=wait,
        vcpus_online=vcpus[0], vcpus_max=vcpus[1], memory=memory,
    )  # fmt: skip


#: The host the rebalancer was tried on (issue 14): 2 CPUs, batch starved, three idle others.
REBALANCE_HOST = HostInfo(
    cpus=2, cpu_percent=72.0, memory_total=4096 * MIB, memory_available=3000 * MIB, memory_given=896 * MIB,
    memory_committed=1024 * MIB, memory_commit_limit=3584 * MIB, domains=4, domains_by_state={}, cpu_control="none",
)  # fmt: skip
REBALANCE_DOMAINS = [
    demanding("batch", (2, 4), 118.0, 70.0, 256 * MIB, 20 * MIB),
    demanding("logger", (1, 2), 3.0, 0.0, 256 * MIB, 12 * MIB),
    demanding("web", (2, 2), 20.0, 0.5, 256 * MIB, 150 * MIB),
    demanding("cache", (1, 1), 1.0, 0.0, 128 * MIB, 120 * MIB),
]


class RebalanceSnapshotApp(ThemedApp):
    """The rebalance screen on fixed figures (its client is never used: nothing is applied)."""

    CSS_PATH = str(CSS)

    async def on_mount(self) -> None:
        from pvtui.ui.screens.rebalance import RebalanceScreen

        await self.push_screen(RebalanceScreen(None, REBALANCE_DOMAINS, REBALANCE_HOST))  # type: ignore[arg-type]


class PlotSnapshotApp(ThemedApp):
    """The three kinds of plot the domain view draws, on fixed ten minutes."""

    CSS_PATH = str(CSS)

    def compose(self):  # type: ignore[no-untyped-def]
        from pvtui.client.history import DomainHistory
        from pvtui.ui.plot import Plot

        history = DomainHistory()
        for second in range(600):
            wave = (second % 120) / 120
            history.append(
                {
                    "sampled_s": 1000.0 + second,
                    "vcpus": [
                        {"id": 0, "cpu_time_s": 0.6 * second + 0.3 * wave},
                        *([{"id": 1, "cpu_time_s": 0.2 * (second - 200)}] if second >= 200 else []),
                    ],
                    "memory": {"target_bytes": 256 * MIB, "held_bytes": (192 + 64 * (second > 300)) * MIB,
                               "guest_used_bytes": (40 + second // 10) * MIB, "rss_bytes": 180 * MIB},
                    "hypercalls_per_op": {"console_io": 10 * second, "sched_op": 50 * second + second * second // 20},
                }
            )  # fmt: skip
        self.history = history
        yield Plot(id="plot-cpu")
        yield Plot(id="plot-memory")
        yield Plot(id="plot-hypercalls")

    def on_mount(self) -> None:
        from pvtui.ui.plot import Plot

        self.query_one("#plot-cpu", Plot).show(self.history.cpu())
        self.query_one("#plot-memory", Plot).show(self.history.memory_series())
        self.query_one("#plot-hypercalls", Plot).show(self.history.hypercalls())
