"""Engine benchmarks: guest vs native, our Python VMM vs a C KVM_RUN loop, in one run.

    python bench/engine.py          # table
    python bench/engine.py --json   # one JSON object

Every figure is measured now, on this machine; comparisons (guest/native,
Python/C) interleave their runs so drift on a noisy host hits both sides.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import threading
import time

from _common import BENCH_DIR, BUILD, REPO, build_c, p50, parse_fields, report

from pvtui.domain.loader import parse_domain_text
from pvtui.engine.domain import Domain
from pvtui.guest.build import bundled_kernel

MIB = 1 << 20
GIB = 1 << 30
KERNEL = str(bundled_kernel())


def run_guest(text: str, timeout: float = 120) -> Domain:
    domain = Domain(parse_domain_text(text), KERNEL)
    domain.start()
    if not domain.wait(timeout):
        domain.destroy()
        raise RuntimeError(f"guest did not finish: {text}")
    return domain


def bench_line(domain: Domain, test: str) -> dict[str, int]:
    match = re.search(rf"^bench {test} .*$", domain.console.text(), re.MULTILINE)
    domain.destroy()
    if not match:
        raise RuntimeError(f"no bench line for {test}")
    return parse_fields(match.group(0))


def guest_bench(test: str, memory: str = "64M", **settings: int) -> dict[str, int]:
    fields = ", ".join(f"{k}: {v}" for k, v in settings.items())
    text = f"name: bench-{test}\nmemory: {memory}\nworkload: {{type: bench, test: {test}{', ' + fields if fields else ''}}}\n"
    return bench_line(run_guest(text), test)


def native_bench(native: str, *args: str) -> dict[str, int]:
    out = subprocess.run([native, *args], check=True, capture_output=True, text=True).stdout
    return parse_fields(out)


def cpu_ratio(native: str, rounds: int, iterations: int) -> float:
    guest, host = [], []
    for _ in range(rounds):
        guest.append(guest_bench("cpu", count=iterations)["ns"])
        host.append(native_bench(native, "cpu", str(iterations))["ns"])
    return p50(host) / p50(guest)  # throughput ratio: guest speed / native speed


def mem_ratio(native: str, rounds: int) -> float:
    size = 256 * MIB
    guest, host = [], []
    for _ in range(rounds):
        guest.append(guest_bench("memory", memory="320M", size="256M", passes=2)["ns"])
        host.append(native_bench(native, "memory", str(size), "2")["ns"])
    return p50(host) / p50(guest)


def boot_ms(samples: int) -> float:
    times = []
    for i in range(samples):
        domain = Domain(parse_domain_text(f"name: boot{i}\nmemory: 32M\n"), KERNEL)
        domain.start()
        while domain.boot_ns is None:
            time.sleep(0.0002)
        times.append(domain.boot_ns / 1e6)
        domain.destroy()
    return p50(times)


def hypercall_us(c_vmm: str, rounds: int, count: int) -> tuple[float, float]:
    python, c = [], []
    for _ in range(rounds):
        python.append(guest_bench("hypercall", count=count)["p50_ns"] / 1000)
        out = subprocess.run(
            [c_vmm, KERNEL, "64", f"workload=bench test=hypercall count={count}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        c.append(parse_fields(out.splitlines()[-1])["p50_ns"] / 1000)
    return p50(python), p50(c)


def multicall_speedup(rounds: int, count: int) -> float:
    ratios = []
    for _ in range(rounds):
        fields = guest_bench("multicall", count=count)
        ratios.append(fields["single_ns"] / fields["batched_ns"])
    return p50(ratios)


def balloon_release() -> tuple[float, float]:
    """(1 GiB over the time from the first releasing decrease_reservation's start to the last one's end,
    ms from the engine's balloon request until host RSS fell by 1 GiB — the headline)."""
    domain = Domain(parse_domain_text("name: balloon\nmemory: 1280M\n"), KERNEL)
    domain.start()
    try:
        # Make every guest frame resident, so the GiB the guest gives back is all in RSS.
        domain.memory.populate(list(range(0, domain.memory.pages, 512)), 9)
        rss_before = domain.memory.resident_bytes()
        seq_before = domain.accounting.last_seq
        requested = time.monotonic_ns()
        domain.set_balloon_target(1280 * MIB - GIB)
        while rss_before - domain.memory.resident_bytes() < GIB:
            if time.monotonic_ns() - requested > 10e9:
                raise RuntimeError("RSS did not fall by 1 GiB")
            time.sleep(0.0005)
        settled = time.monotonic_ns()

        def releases() -> list:
            return [
                r
                for r in domain.accounting.records(seq_before)
                if r.op_name == "memory_op" and r.args[0] == 1 and r.result > 0
            ]

        while not releases():  # a record is appended when its call returns
            time.sleep(0.0005)
        releases = releases()
        first = releases[0].time_ns
        last_done = max(r.time_ns + r.latency_ns for r in releases)
        return 1.0 / ((last_done - first) / 1e9), (settled - requested) / 1e6
    finally:
        domain.destroy()


XEN_TRAPS = 2000


def xen_trap_bounce_us() -> tuple[float, float]:
    """(p50 µs of a #UD bounced to its handler and back via iret, p50 µs of a Xen no-op hypercall),
    both timed in the guest with rdtsc (bench/xen_bench.S)."""
    BUILD.mkdir(exist_ok=True)
    kernel = BUILD / "xen_bench"
    subprocess.run(
        ["gcc", "-nostdlib", "-static", "-no-pie", "-Wl,-Ttext-segment=0x100000", "-Wl,--build-id=none",
         "-o", str(kernel), str(BENCH_DIR / "xen_bench.S")],
        check=True,
    )  # fmt: skip
    symbols = {
        parts[2]: int(parts[0], 16)
        for parts in (line.split() for line in subprocess.check_output(["nm", str(kernel)], text=True).splitlines())
        if len(parts) == 3
    }
    domain = Domain(parse_domain_text("name: xen-bench\nmemory: 32M\n"), str(kernel))
    domain.start()
    try:
        if not domain.wait(60):
            raise RuntimeError("the Xen bench kernel did not finish")
        khz = domain.vcpu_tsc_khz()
        traps = domain.memory.read(symbols["trap_cycles"], XEN_TRAPS * 8) or b""
        calls = domain.memory.read(symbols["call_cycles"], XEN_TRAPS * 8) or b""
    finally:
        domain.destroy()
    to_us = lambda raw: [c / khz * 1000 for c in memoryview(raw).cast("Q")[100:]]  # noqa: E731 (warm-up dropped)
    return p50(to_us(traps)), p50(to_us(calls))


def xtf_example_ms(samples: int) -> float | None:
    """From the start of domain creation in the VMM to the ``Test result:`` line of test-pv64-example
    (the interpreter and its imports are already up). None when XTF's source is not here."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("pvtui_xtf_script", REPO / "scripts" / "xtf.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = script
    spec.loader.exec_module(script)
    source = script.default_source()
    if not (source / "Makefile").is_file():
        return None
    build = script.build_suite(source, BUILD / "xtf", ["example"])
    kernel = str(build / "tests" / "example" / "test-pv64-example")
    config = parse_domain_text("name: xtf-example\nmemory: 64M\n")
    times = []
    for _ in range(samples):
        seen = threading.Event()
        start = time.perf_counter()
        domain = Domain(config, kernel)
        stamp: list[float] = []

        def follow(data: bytes, domain: Domain = domain, stamp: list[float] = stamp, seen=seen) -> None:
            if not stamp and b"Test result:" in domain.console.contents():
                stamp.append(time.perf_counter())
                seen.set()

        domain.console.followers.append(follow)
        domain.start()
        seen.wait(10)
        domain.wait(10)
        domain.destroy()
        if not stamp:
            raise RuntimeError("test-pv64-example printed no result")
        times.append((stamp[0] - start) * 1000)
    return p50(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="fewer rounds (smoke test)")
    args = parser.parse_args()
    rounds = 1 if args.quick else 5
    native = str(build_c("native"))
    c_vmm = str(build_c("c_vmm"))
    hc_python, hc_c = hypercall_us(c_vmm, rounds, 5000)
    release_gib_s, release_ms = balloon_release()
    trap_us, xen_call_us = xen_trap_bounce_us()
    rows = [
        ("guest_native_cpu_ratio", cpu_ratio(native, rounds, 300_000_000), "x", ">= 0.97"),
        ("guest_native_mem_ratio", mem_ratio(native, rounds), "x", ">= 0.90"),
        ("boot_ms_p50", boot_ms(5 if args.quick else 30), "ms", "<= 5"),
        ("hypercall_us_p50", hc_python, "us", "ratio to C <= 1.5"),
        ("hypercall_c_baseline_us_p50", hc_c, "us", "(C KVM_RUN loop)"),
        ("hypercall_python_c_ratio", hc_python / hc_c, "x", "<= 1.5"),
        ("multicall_speedup", multicall_speedup(rounds, 6400), "x", ">= 15"),
        ("balloon_request_to_rss_ms", release_ms, "ms", "(engine request to RSS -1 GiB)"),
        ("balloon_hypercalls_gib_s", release_gib_s, "GiB/s", "(1 GiB / the releasing hypercalls' time)"),
        ("trap_bounce_us_p50", trap_us, "us", "(#UD to the guest handler and back via iret)"),
        ("trap_bounce_hypercall_ratio", trap_us / hc_python, "x", "<= 2.2 (to hypercall_us_p50)"),
        ("xen_hypercall_us_p50", xen_call_us, "us", "(Xen guest's xen_version, same rdtsc timing)"),
        ("xtf_example_ms_p50", xtf_example_ms(5 if args.quick else 20), "ms", "<= 25 (creation to Test result)"),
    ]
    report("pvtui engine benchmarks", rows, args.json)


if __name__ == "__main__":
    main()
