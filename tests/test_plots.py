"""History and plots: the monitor's rings, rates taken from them, the plots in the real app."""

from __future__ import annotations

import asyncio

from helpers import Engine
from test_ui import start, until

from pvtui.client.history import DomainHistory, rates
from pvtui.daemon.history import LENGTH, CounterHistory
from pvtui.ui.app import PvtuiApp
from pvtui.ui.plot import Plot, nice_ceiling
from pvtui.ui.screens.domain import DomainScreen


def _stats(second: float, cpu: float, vcpus: int = 1, calls: int = 0) -> dict:
    return {
        "sampled_s": second,
        "vcpus": [{"id": i, "cpu_time_s": cpu} for i in range(vcpus)],
        "memory": {"target_bytes": 1, "held_bytes": 2, "guest_used_bytes": 3, "rss_bytes": 4},
        "hypercalls_per_op": {"sched_op": calls},
    }


def test_the_ring_keeps_ten_minutes_and_marks_what_it_never_saw() -> None:
    ring = CounterHistory()
    for second in range(700):
        ring.add(_stats(float(second), second * 0.5, vcpus=2 if second >= 650 else 1, calls=second))
    ring.add(_stats(699.5, 1.0))  # too soon after the last: not a sample
    data = ring.export()
    assert len(data["t"]) == LENGTH and data["t"][0] == 100.0 and data["t"][-1] == 699.0
    assert data["vcpus"]["1"][:550] == [None] * 550 and data["vcpus"]["1"][-1] == 699 * 0.5
    history = DomainHistory.from_export(data)
    cpu = history.cpu()
    assert [s.label for s in cpu.series] == ["vCPU 0", "vCPU 1"]
    assert cpu.series[0].values[-1] == 50.0 and cpu.series[1].values[549] is None
    assert history.hypercalls().series[0].values[-1] == 1.0


def test_rates_never_make_up_a_value() -> None:
    assert rates([0, 1, 2, 3], [0.0, 1.0, 0.5, None]) == [None, 1.0, None, None], "a counter that went back is a gap"
    assert nice_ceiling(0.0) == 1.0 and nice_ceiling(101) == 200 and nice_ceiling(7) == 10 and nice_ceiling(2.2) == 2.5


def test_history_tab_and_host_plots_on_the_real_engine(engine: Engine) -> None:
    engine.ok("create", engine.define("plotme", "memory: 32M\nworkload: {type: cpu, duty: 50}\n"))

    async def run() -> None:
        app = PvtuiApp(engine.domains)
        async with app.run_test(size=(120, 36)) as pilot:
            await start(app, pilot, ("plotme",))
            await asyncio.sleep(2.5)  # a few of pvd's samples
            await pilot.press("h")  # home: the host's plots
            host_cpu = app.domains_screen.query_one("#host-cpu", Plot)
            assert await until(pilot, lambda: host_cpu.plotted is not None and len(host_cpu.plotted.times) >= 2)
            assert "host CPU" in host_cpu.render().plain and "now" in host_cpu.render().plain
            await pilot.press("h")
            await pilot.press("enter")
            assert await until(pilot, lambda: isinstance(app.screen, DomainScreen))
            await pilot.press("h")
            plot = app.screen.query_one("#history", Plot)
            assert await until(pilot, lambda: plot.plotted is not None and plot.plotted.series)
            assert plot.plotted.title.startswith("CPU")
            busy = [v for v in plot.plotted.series[0].values if v is not None]
            assert busy and max(busy) > 20, busy  # the workload's 50 % duty shows
            await pilot.press("h")
            assert await until(pilot, lambda: plot.plotted is not None and plot.plotted.title.startswith("memory"))
            await pilot.press("h")
            assert await until(pilot, lambda: plot.plotted is not None and plot.plotted.title.startswith("hypercalls"))
            before = len(plot.plotted.times)
            assert await until(pilot, lambda: len(plot.plotted.times) > before, 5), "each poll grows it"

    try:
        asyncio.run(run())
    finally:
        engine.ok("destroy", "plotme")
