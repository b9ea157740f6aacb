"""Rates from two samples' own timestamps (pure: no KVM, no pvd)."""

from __future__ import annotations

import pytest

from pvtui.daemon.rates import MIN_RATE_INTERVAL_S, DomainRates
from pvtui.ui.format import History, duration, measured, spark


def stats(sampled_s: float, vcpu_cpu: list[float], process_cpu: float, calls: int, restarts: int = 0) -> dict:
    return {
        "sampled_s": sampled_s,
        "restarts": restarts,
        "vcpus": [{"id": i, "cpu_time_s": cpu} for i, cpu in enumerate(vcpu_cpu)],
        "process_cpu_s": process_cpu,
        "hypercalls_total": calls,
        "hypercalls_per_op": {"console_io": calls},
    }


def test_nothing_is_a_rate_before_two_samples():
    rates = DomainRates()
    rates.add(stats(10.0, [5.0], 5.1, 100))
    assert rates.cpu_percent is None and rates.hypercalls_per_s is None and rates.engine_cpu_percent is None
    sample = stats(10.0, [5.0], 5.1, 100)
    rates.annotate(sample)
    assert sample["vcpus"][0]["cpu_percent"] is None


def test_rates_divide_by_the_samples_own_interval():
    rates = DomainRates()
    rates.add(stats(10.0, [5.0, 1.0], 6.10, 100))
    rates.add(stats(12.0, [7.0, 1.5], 8.62, 300))  # 2 s apart, whenever they were received
    assert rates.cpu_percent == pytest.approx(125.0)
    assert rates.vcpu_percent == {0: pytest.approx(100.0), 1: pytest.approx(25.0)}
    assert rates.engine_cpu_percent == pytest.approx(1.0)  # (8.62-8.5) - (6.10-6.0) over 2 s
    assert rates.hypercalls_per_s == pytest.approx(100.0)
    assert rates.op_rates == {"console_io": pytest.approx(100.0)}


def test_a_too_short_interval_keeps_the_last_rate():
    rates = DomainRates()
    rates.add(stats(10.0, [0.0], 0.0, 0))
    rates.add(stats(11.0, [1.0], 1.0, 0))
    rates.add(stats(11.0 + MIN_RATE_INTERVAL_S / 2, [1.0], 1.0, 0))  # idle for a moment: too short to say
    assert rates.cpu_percent == pytest.approx(100.0)


def test_a_restart_or_counters_going_back_start_afresh():
    rates = DomainRates()
    rates.add(stats(10.0, [0.0], 0.0, 0))
    rates.add(stats(11.0, [1.0], 1.0, 10))
    rates.add(stats(12.0, [0.1], 0.2, 1, restarts=1))
    assert rates.cpu_percent is None and rates.vcpu_percent == {}
    rates.add(stats(13.0, [0.6], 0.7, 2, restarts=1))
    assert rates.cpu_percent == pytest.approx(50.0)
    rates.add(stats(14.0, [0.1], 0.7, 2, restarts=1))  # a vCPU thread replaced: its time went back
    assert rates.cpu_percent is None


def test_a_new_vcpu_has_no_rate_until_its_second_sample():
    rates = DomainRates()
    rates.add(stats(10.0, [1.0], 1.0, 0))
    rates.add(stats(11.0, [2.0, 0.5], 2.5, 0))
    assert set(rates.vcpu_percent) == {0}


def test_sparklines_draw_only_measured_samples():
    history = History(length=5)
    assert spark(history.get("a"), 100, 5) == "     "
    history.add("a", 100.0)
    assert spark(history.get("a"), 100, 5) == "    █"
    history.add("b", 1.0)
    history.keep_only({"b"})
    assert list(history.get("a")) == [] and list(history.get("b")) == [1.0]


def test_uptime_is_rounded_down_to_its_unit_and_rates_show_a_dash():
    assert duration(59.9) == "<1m" and duration(60) == "1m" and duration(3599) == "59m"
    assert duration(3 * 3600 + 5 * 60 + 59) == "3h05m" and duration(2 * 86400 + 4 * 3600 + 3599) == "2d04h"
    assert measured(None) == "    -" and measured(99.04) == " 99.0"
