"""Pure parts of the engine, tested with fabricated inputs (no KVM)."""

import itertools

import pytest

from pvtui.engine.exits import GuestFault, HypercallExit, MalformedHypercall, decode_exit
from pvtui.engine.kvm import ioctl as k
from pvtui.engine.states import TRANSITIONS, DomainState, valid_transition

ARGS = (1, 2, 3, 4, 5)


def test_hypercall_exit():
    action = decode_exit(k.KVM_EXIT_IO, (k.KVM_EXIT_IO_OUT, 4, 0xF2, 1), 0x1_0000_0011, ARGS, 0x1000)
    assert action == HypercallExit(0x11, ARGS)


@pytest.mark.parametrize(
    "io", [(k.KVM_EXIT_IO_OUT, 1, 0xF2, 1), (k.KVM_EXIT_IO_IN, 4, 0xF2, 1), (k.KVM_EXIT_IO_OUT, 4, 0xF2, 3)]
)
def test_malformed_hypercall_is_an_error_not_a_crash(io):
    assert isinstance(decode_exit(k.KVM_EXIT_IO, io, 17, ARGS, 0), MalformedHypercall)


@pytest.mark.parametrize(
    ("reason", "io", "needle"),
    [
        (k.KVM_EXIT_IO, (k.KVM_EXIT_IO_OUT, 1, 0x3F8, 1), "I/O port 0x3f8"),
        (k.KVM_EXIT_MMIO, None, "unmapped guest-physical address 0xdead000"),
        (k.KVM_EXIT_SHUTDOWN, None, "privileged instruction"),
        (k.KVM_EXIT_HLT, None, "hlt"),
        (k.KVM_EXIT_INTERNAL_ERROR, None, "internal_error"),
    ],
)
def test_faults(reason, io, needle):
    action = decode_exit(reason, io, 0, ARGS, 0x100010, mmio_addr=0xDEAD000)
    assert isinstance(action, GuestFault)
    assert needle in action.why


ALLOWED = {
    ("building", "running"),
    ("building", "paused"),
    ("building", "dying"),
    ("running", "blocked"),
    ("running", "paused"),
    ("running", "shutdown"),
    ("running", "crashed"),
    ("running", "dying"),
    ("blocked", "running"),
    ("blocked", "paused"),
    ("blocked", "shutdown"),
    ("blocked", "crashed"),
    ("blocked", "dying"),
    ("paused", "running"),
    ("paused", "blocked"),
    ("paused", "shutdown"),
    ("paused", "crashed"),
    ("paused", "dying"),
    ("shutdown", "dying"),
    ("crashed", "dying"),
    ("dying", "dead"),
}


@pytest.mark.parametrize(("current", "target"), list(itertools.product(DomainState, DomainState)))
def test_transition_matrix(current, target):
    assert valid_transition(current, target) == ((current.value, target.value) in ALLOWED)


def test_every_state_has_a_row_and_a_flag():
    assert set(TRANSITIONS) == set(DomainState)
    assert all(len(state.flag) == 1 for state in DomainState)
