"""pv.h (the guests' header), engine/abi.py and docs/abi.md must say the same."""

import re
import subprocess
import sys

import pytest
from helpers import REPO, SOURCE_DIR

from pvtui.engine import abi, layout

PROBE = r"""
#include <stdio.h>
#include <stddef.h>
#include "pv.h"
#define C(x) printf(#x " %lld\n", (long long)(x));
int main(void) {
  C(__HYPERVISOR_memory_op) C(__HYPERVISOR_multicall) C(__HYPERVISOR_set_timer_op) C(__HYPERVISOR_xen_version)
  C(__HYPERVISOR_console_io) C(__HYPERVISOR_vcpu_op) C(__HYPERVISOR_sched_op) C(__HYPERVISOR_event_channel_op)
  C(PV_EPERM) C(PV_ENOENT) C(PV_ENOMEM) C(PV_EFAULT) C(PV_EBUSY) C(PV_EEXIST) C(PV_EINVAL) C(PV_ENOSYS)
  C(PV_MAX_VCPUS) C(PV_CONSOLE_MAX_WRITE) C(PV_MULTICALL_MAX) C(PV_MAX_EXTENT_ORDER) C(DOMID_SELF)
  C(PV_HYPERCALL_PORT) C(PV_ABI_VERSION_MAJOR) C(PV_ABI_VERSION_MINOR) C(PV_VCPU_STACK_SIZE)
  C(sizeof(struct pv_memory_reservation)) C(sizeof(struct pv_multicall_entry)) C(sizeof(struct pv_vcpu_context))
  C(sizeof(struct pv_vcpu_time_info)) C(sizeof(struct pv_vcpu_info))
  C(offsetof(struct pv_start_info, cmdline)) C(offsetof(struct pv_start_info, kernel_end))
  C(offsetof(struct pv_shared_info, control_seq)) C(offsetof(struct pv_shared_info, vcpu_online_mask))
  C(offsetof(struct pv_shared_info, balloon_target_pages)) C(offsetof(struct pv_shared_info, memory_pages))
  C(offsetof(struct pv_shared_info, shutdown_request)) C(offsetof(struct pv_shared_info, guest_used_pages))
  C(offsetof(struct pv_shared_info, vcpu_info)) C(sizeof(struct pv_shared_info))
  C(offsetof(struct pv_vcpu_info, time)) C(offsetof(struct pv_vcpu_info, evtchn_pending))
  return 0;
}
"""


@pytest.fixture(scope="module")
def header(tmp_path_factory) -> dict[str, int]:
    tmp = tmp_path_factory.mktemp("probe")
    (tmp / "probe.c").write_text(PROBE)
    subprocess.run(["gcc", f"-I{SOURCE_DIR}", "-o", str(tmp / "probe"), str(tmp / "probe.c")], check=True)
    out = subprocess.run([str(tmp / "probe")], check=True, capture_output=True, text=True).stdout
    return {name: int(value) for name, value in (line.rsplit(" ", 1) for line in out.splitlines())}


def test_hypercall_numbers(header):
    for call in abi.Hypercall:
        assert header[f"__HYPERVISOR_{call.name}"] == call.value


def test_errnos(header):
    for errno in abi.Errno:
        assert header[f"PV_{errno.name}"] == errno.value


def test_limits_and_layouts(header):
    assert header["PV_MAX_VCPUS"] == abi.MAX_VCPUS
    assert header["PV_CONSOLE_MAX_WRITE"] == abi.CONSOLE_MAX_WRITE
    assert header["PV_MULTICALL_MAX"] == abi.MULTICALL_MAX
    assert header["PV_MAX_EXTENT_ORDER"] == abi.MAX_EXTENT_ORDER
    assert header["DOMID_SELF"] == abi.DOMID_SELF
    assert header["PV_HYPERCALL_PORT"] == abi.HYPERCALL_PORT
    assert (header["PV_ABI_VERSION_MAJOR"], header["PV_ABI_VERSION_MINOR"]) == (
        abi.ABI_VERSION_MAJOR,
        abi.ABI_VERSION_MINOR,
    )
    assert header["PV_VCPU_STACK_SIZE"] == layout.VCPU_STACK_SIZE
    assert header["sizeof(struct pv_memory_reservation)"] == abi.MEMORY_RESERVATION.size == 24
    assert header["sizeof(struct pv_multicall_entry)"] == abi.MULTICALL_ENTRY.size == 64
    assert header["sizeof(struct pv_vcpu_context)"] == abi.VCPU_CONTEXT.size
    assert header["sizeof(struct pv_vcpu_time_info)"] == abi.VCPU_TIME_INFO.size == 32
    assert header["sizeof(struct pv_vcpu_info)"] == abi.VCPU_INFO_SIZE
    assert header["offsetof(struct pv_start_info, cmdline)"] == abi.START_INFO_CMDLINE_OFFSET
    assert header["offsetof(struct pv_start_info, kernel_end)"] + 8 == abi.START_INFO.size
    assert header["offsetof(struct pv_shared_info, control_seq)"] == abi.SI_CONTROL_SEQ
    assert header["offsetof(struct pv_shared_info, vcpu_online_mask)"] == abi.SI_VCPU_ONLINE_MASK
    assert header["offsetof(struct pv_shared_info, balloon_target_pages)"] == abi.SI_BALLOON_TARGET_PAGES
    assert header["offsetof(struct pv_shared_info, memory_pages)"] == abi.SI_MEMORY_PAGES
    assert header["offsetof(struct pv_shared_info, shutdown_request)"] == abi.SI_SHUTDOWN_REQUEST
    assert header["offsetof(struct pv_shared_info, guest_used_pages)"] == abi.SI_GUEST_USED_PAGES
    assert header["offsetof(struct pv_shared_info, vcpu_info)"] == abi.SI_VCPU_INFO
    assert header["sizeof(struct pv_shared_info)"] <= layout.PAGE_SIZE
    assert header["offsetof(struct pv_vcpu_info, time)"] == abi.VI_TIME
    assert header["offsetof(struct pv_vcpu_info, evtchn_pending)"] == abi.VI_EVTCHN_PENDING


def test_docs_agree_with_the_fixed_abi():
    """Every hypercall number and errno in docs/abi.md matches the engine."""
    text = (REPO / "docs" / "abi.md").read_text()
    for call in abi.Hypercall:
        assert re.search(rf"\|\s*{call.value}\s*\|\s*`{call.name}`", text), f"{call.name} missing from docs/abi.md"
    for errno in abi.Errno:
        assert f"-{errno.name} = -{errno.value}" in text, f"{errno.name} missing from docs/abi.md"
    for name, value in (("START_INFO", layout.START_INFO_ADDR), ("SHARED_INFO", layout.SHARED_INFO_ADDR)):
        assert f"{value:#x}" in text.lower(), f"{name} address missing from docs/abi.md"


@pytest.mark.parametrize(
    "modules",
    [
        "pvtui.engine.domain, pvtui.engine.hypercalls, pvtui.engine.kvm.system",
        "pvtui.domain.loader, pvtui.domain.schema",
        "pvtui.daemon.server, pvtui.daemon.monitor, pvtui.daemon.main",
        "pvtui.client",
        "pvtui.rebalance",
        "pvtui.cli.run, pvtui.cli.main, pvtui.cli.verbs",
    ],
)
def test_headless_packages_do_not_load_textual(modules):
    """The engine, pvd, the client and the CLI have no UI: importing them must not import Textual.

    Run with this interpreter (``sys.executable``): a bare ``python`` may be
    another one, without the project's dependencies.
    """
    code = (
        f"import sys, {modules};"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('textual',)];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
