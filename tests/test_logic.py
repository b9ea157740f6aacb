"""Pure logic, no KVM and no pvd: definition diffs, rebalancing plans, the request loop, state letters."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from pvtui.daemon.ops import OpTable
from pvtui.daemon.serve import serve_requests
from pvtui.domain.diff import diff_configs, live_steps
from pvtui.domain.loader import parse_domain_text
from pvtui.domain.state import state_flag, xl_flags
from pvtui.errors import PvtuiError
from pvtui.rebalance import Allocation, Limits, make_plan, suggest

MIB = 1 << 20


def config(text: str):
    return parse_domain_text("name: web\n" + text)


def test_diff_sorts_live_changes_from_restart_ones_and_steps_apply_them_in_order():
    old = config("vcpus: 1\nmaxvcpus: 2\nmemory: 64M\nmaxmem: 256M\ncpu_weight: 256\nautostart: false\n")
    new = config(
        "vcpus: 2\nmaxvcpus: 2\nmemory: 128M\nmaxmem: 256M\ncpu_weight: 512\ncpu_cap: 50\ncpus: '1'\n"
        "autostart: true\non_crash: restart\n"
    )
    live, restart = diff_configs(old, new)
    assert [c.key for c in live] == ["vcpus", "memory", "cpu_weight", "cpu_cap", "cpus"]
    assert restart == ["on_crash"], "autostart matters to no running domain"
    steps = live_steps(new, live, present_bytes=64 * MIB)
    assert [(s.op, s.args) for s in steps] == [
        ("vcpu_set", ("web", 2)),
        ("mem_max", ("web", 128 * MIB)),  # grow before taking the target
        ("mem_set", ("web", 128 * MIB)),
        ("sched_credit", ("web", 512, 50)),  # weight and cap in one request
        ("vcpu_pin", ("web", 0, "1")),
        ("vcpu_pin", ("web", 1, "1")),
    ]
    assert [s.op for s in live_steps(new, live, present_bytes=256 * MIB)].count("mem_max") == 0


def test_rebalance_plan_shrinks_donors_first_and_says_what_the_host_lacks():
    current = {"a": Allocation(2, 256 * MIB), "b": Allocation(1, 64 * MIB)}
    wanted = {"a": Allocation(1, 128 * MIB), "b": Allocation(2, 512 * MIB)}
    limits = {n: Limits(4, 16 * MIB, 1024 * MIB, 50.0, 32 * MIB) for n in current}
    plan = make_plan(current, wanted, limits, host_free_memory=256 * MIB, host_cpus=2)
    assert [s.shrinks for s in plan.steps] == [True, True, False, False]
    assert plan.givers() == ["a"] and plan.takers() == ["b"]
    assert not plan.ok and "lacks 64 MiB" in plan.problems[0]


def test_suggest_keeps_the_vcpus_of_a_domain_not_measured_yet():
    current = {"new": Allocation(2, 128 * MIB), "busy": Allocation(1, 128 * MIB)}
    limits = {
        "new": Limits(4, 16 * MIB, 256 * MIB, None, 32 * MIB),
        "busy": Limits(4, 16 * MIB, 256 * MIB, 180.0, 32 * MIB),
    }
    wanted = suggest(current, limits, host_cpus=4, host_free_memory=1 << 30).wanted
    assert wanted["new"].vcpus == 2 and wanted["busy"].vcpus == 3


def _issue_host() -> tuple[dict[str, Allocation], dict[str, Limits]]:
    """The host the rebalancer was tried on: 2 CPUs, batch busy on its 2 vCPUs and waiting, three idle others."""
    current = {
        "batch": Allocation(2, 256 * MIB),
        "logger": Allocation(1, 256 * MIB),
        "web": Allocation(2, 256 * MIB),
        "cache": Allocation(1, 128 * MIB),
    }
    limits = {
        "batch": Limits(4, 16 * MIB, 256 * MIB, 118.0, 20 * MIB, 70.0),
        "logger": Limits(2, 16 * MIB, 256 * MIB, 3.0, 12 * MIB, 0.0),
        "web": Limits(2, 16 * MIB, 256 * MIB, 20.0, 150 * MIB, 0.5),
        "cache": Limits(1, 16 * MIB, 256 * MIB, 1.0, 120 * MIB, 0.0),
    }
    return current, limits


def test_suggestions_explain_themselves_and_keep_headroom():
    current, limits = _issue_host()
    suggestion = suggest(current, limits, host_cpus=2, host_free_memory=1 << 30)
    plan = make_plan(current, suggestion.wanted, limits, 1 << 30, 2, suggestion.reasons, tuple(suggestion.notes))
    assert plan.steps and all(step.reason and step.reason != "your edit" for step in plan.steps)
    for name, want in suggestion.wanted.items():  # never below what the guest uses plus its headroom
        assert want.memory >= limits[name].guest_used + max(limits[name].guest_used // 4, 64 * MIB) - 16 * MIB
    web = next(s for s in plan.steps if s.domain == "web" and s.resource == "vcpus")
    assert web.new == 1 and "uses 20% CPU" in web.reason and "below 70%" in web.reason
    logger = next(s for s in plan.steps if s.domain == "logger" and s.resource == "memory")
    assert logger.new == 80 * MIB and "12 MiB used" in logger.reason and "frees 176 MiB" in logger.reason
    cache = next(s for s in plan.steps if s.domain == "cache" and s.resource == "memory")
    assert cache.new > cache.old and cache.reason.startswith("short:"), "a guest using 94% of its memory is given more"
    assert plan.after is not None and plan.after.vcpus == 5, "idle web gives one back; none is added past 2 per CPU"
    assert any("batch is starved" in note and "at most 2 per CPU" in note for note in plan.notes)
    assert (
        plan.before is not None
        and "4 CPUs" not in plan.before.describe()
        and "6 vCPUs on 2 CPUs" in (plan.before.describe())
    )


def test_a_starved_domain_gets_vcpus_only_when_the_host_has_room():
    current = {"batch": Allocation(1, 128 * MIB), "idle": Allocation(1, 128 * MIB)}
    limits = {
        "batch": Limits(4, 16 * MIB, 128 * MIB, 97.0, 0, 40.0),
        "idle": Limits(1, 16 * MIB, 128 * MIB, 1.0, 0, 0.0),
    }
    roomy = suggest(current, limits, host_cpus=4, host_free_memory=0)
    assert roomy.wanted["batch"].vcpus == 2 and "starved" in roomy.reasons[("batch", "vcpus")]
    assert "CPUs idle" in roomy.reasons[("batch", "vcpus")]
    assert any("reports no memory use" in note for note in roomy.notes), "no report: memory kept, and said"
    full = suggest(current, {**limits, "idle": Limits(1, 16 * MIB, 128 * MIB, 98.0, 0, 0.0)}, 2, 0)
    assert full.wanted["batch"].vcpus == 1
    assert any("batch is starved" in note and "CPUs idle" in note for note in full.notes)


def test_state_letters_are_xls():
    assert xl_flags("blocked") == "-b----" and xl_flags("crashed") == "----c-" and xl_flags("odd") == "------"
    assert state_flag("running") == "r" and state_flag("dead") == "-"


class _Server:
    TABLE = OpTable("clients")

    @TABLE.op("echo", {"text": str})
    async def op_echo(self, conn: object, args: dict) -> object:
        return {"text": args["text"]}

    @TABLE.op("refuse")
    async def op_refuse(self, conn: object, args: dict) -> object:
        raise PvtuiError("No", "Not now.")

    @TABLE.op("bug")
    async def op_bug(self, conn: object, args: dict) -> object:
        return {}["missing"]


def test_one_request_loop_answers_every_failure_and_keeps_the_connection():
    async def run() -> list[dict]:
        reader = asyncio.StreamReader()
        lines = [
            {"v": 1, "id": 1, "op": "bug"},
            {"v": 1, "id": 2, "op": "refuse"},
            {"v": 1, "id": 3, "op": "echo", "args": {"text": 5}},
            {"v": 1, "id": 4, "op": "echo", "args": {"text": "still here"}},
        ]
        for line in lines:
            reader.feed_data(json.dumps(line).encode() + b"\n")
        reader.feed_eof()
        written: list[bytes] = []

        class Writer:
            def write(self, data: bytes) -> None:
                written.append(data)

            async def drain(self) -> None:
                pass

        await serve_requests(reader, Writer(), _Server.TABLE, _Server(), None, logging.getLogger("test"))  # type: ignore[arg-type]
        return [json.loads(w) for w in written]

    replies = asyncio.run(run())
    assert [r["id"] for r in replies] == [1, 2, 3, 4]
    assert replies[0]["error"]["code"] == "internal", "a handler's bug is a reply, not a dropped connection"
    assert replies[1]["error"]["code"] == "refused" and replies[1]["error"]["title"] == "No"
    assert replies[2]["error"]["code"] == "bad_args"
    assert replies[3]["result"] == {"text": "still here"}


def test_an_op_is_declared_once():
    table = OpTable("clients")

    @table.op("x")
    async def handler(self, conn, args):  # pragma: no cover - never called
        return None

    with pytest.raises(ValueError, match="declared twice"):
        table.op("x")(handler)


class _FakeMemory:
    """Guest RAM as a bytearray: what the handlers read and write, bounds-checked like GuestMemory."""

    def __init__(self, size: int) -> None:
        self.ram = bytearray(size)
        self.held_pages = size // 4096

    def check(self, gpa: int, length: int) -> bool:
        return gpa >= 0 and gpa + length <= len(self.ram)

    def read(self, gpa: int, length: int) -> bytes | None:
        return bytes(self.ram[gpa : gpa + length]) if self.check(gpa, length) else None

    def view(self, gpa: int, length: int) -> memoryview:
        if not self.check(gpa, length):
            raise ValueError("outside")
        return memoryview(self.ram)[gpa : gpa + length]

    def note_written(self, gpa: int, length: int) -> None:
        """Engine writes through a view: recorded only while migrating (never here)."""


class _FakeDomain:
    def __init__(self) -> None:
        from pvtui.engine.accounting import HypercallAccounting
        from pvtui.engine.console import ConsoleBuffer

        self.memory = _FakeMemory(1 << 20)
        self.accounting = HypercallAccounting()
        self.console = ConsoleBuffer()
        self.max_vcpus = 2
        self.max_pages = 512
        self.events: list[tuple[int, int]] = []
        self.shutdowns: list[object] = []

    def raise_event(self, vcpu: int, port: int) -> None:
        self.events.append((vcpu, port))

    def guest_shutdown(self, reason: object, vcpu: int) -> None:
        self.shutdowns.append(reason)


class _FakeRunner:
    id = 0
    timer_deadline_ns = 0

    def __init__(self, domain: _FakeDomain) -> None:
        self.counter = domain.accounting.counter_for(0)


def test_pvtui_hypercall_handlers_check_everything_against_guest_memory():
    """The handlers of pvtui's ABI with random and hostile arguments: an errno, never an exception."""
    import random

    from pvtui.engine import abi
    from pvtui.engine.hypercalls import HypercallHandler

    domain = _FakeDomain()
    handler = HypercallHandler(domain)  # type: ignore[arg-type]
    runner = _FakeRunner(domain)
    domain.memory.ram[0x1000:0x1005] = b"hello"
    assert handler.dispatch(runner, abi.Hypercall.console_io, abi.CONSOLEIO_write, 5, 0x1000, 0, 0) == 0  # type: ignore[arg-type]
    assert domain.console.text() == "hello"
    assert (
        handler.dispatch(runner, abi.Hypercall.console_io, abi.CONSOLEIO_write, 5, 1 << 40, 0, 0) == -abi.Errno.EFAULT
    )  # type: ignore[arg-type]
    assert handler.dispatch(runner, 77, 0, 0, 0, 0, 0) == -abi.Errno.ENOSYS  # type: ignore[arg-type]
    assert handler.dispatch(runner, abi.Hypercall.sched_op, abi.SchedOp.shutdown, 99, 0, 0, 0) == -abi.Errno.EINVAL  # type: ignore[arg-type]
    assert (
        handler.dispatch(runner, abi.Hypercall.event_channel_op, abi.EVTCHNOP_send, 999, 0, 0, 0) == -abi.Errno.EINVAL
    )  # type: ignore[arg-type]
    rng = random.Random(7)
    for _ in range(5000):
        op = rng.choice([*map(int, abi.Hypercall), rng.randrange(64)])
        if op == abi.Hypercall.sched_op:
            continue  # block and shutdown need a vCPU thread
        args = [rng.choice([0, 1, 2, rng.randrange(1 << 64), rng.randrange(1 << 20)]) for _ in range(5)]
        if op == abi.Hypercall.vcpu_op:
            args[1] = rng.randrange(4, 1 << 32)  # an existing vCPU needs the engine's vCPU set
        result = handler.dispatch(runner, op, *args)  # type: ignore[arg-type]
        assert isinstance(result, int)
    assert domain.accounting.total() >= 4000


def test_logs_rotate_at_their_size_keeping_two_old_files(tmp_path):
    from pvtui.daemon.paths import rotate_if_large

    log = tmp_path / "x.log"
    rotate_if_large(log, max_bytes=10)  # nothing there yet: nothing to do
    for generation in "abc":
        log.write_text(generation * 20)
        rotate_if_large(log, max_bytes=10, keep=2)
        assert not log.exists()
    assert (tmp_path / "x.log.1").read_text() == "c" * 20
    assert (tmp_path / "x.log.2").read_text() == "b" * 20
    assert not (tmp_path / "x.log.3").exists()
    log.write_text("small")
    rotate_if_large(log, max_bytes=10)
    assert log.read_text() == "small"


def test_a_quiet_domains_uptime_runs_on_between_its_summaries():
    """pvd re-sends nothing for an idle domain; the table adds the time since its summary came."""
    from pvtui.client import DomainSummary
    from pvtui.ui.format import History
    from pvtui.ui.screens.domains import row_cells

    quiet = DomainSummary(name="quiet", domid=1, state="blocked", uptime_s=30.0)
    assert row_cells(quiet, History(), 1 << 30, age_s=0.0)["uptime"] == "<1m"
    assert row_cells(quiet, History(), 1 << 30, age_s=150.0)["uptime"] == "3m"
    dead = DomainSummary(name="gone", domid=2, state="shutdown", uptime_s=30.0)
    assert row_cells(dead, History(), 1 << 30, age_s=150.0)["uptime"] == "<1m", "a stopped one's uptime stands"


def test_domids_rise_like_xens_and_wrap_to_the_lowest_free():
    """O(1) per create: one above the highest given (or reattached); past the last, the lowest free."""
    from pvtui.daemon.monitor import MonitorSpec
    from pvtui.daemon.records import LAST_DOMID, DomainRecord, PvdState
    from pvtui.domain.schema import DomainConfig
    from pvtui.errors import PvtuiError

    state = PvdState.__new__(PvdState)
    state.records, state._creating, state._last_domid = {}, {}, 0
    assert [state._next_domid() for _ in range(3)] == [1, 2, 3]
    state._saw_domid(40)  # a reattached domain
    assert state._next_domid() == 41

    config = DomainConfig.model_validate({"name": "d", "memory": "16M"})

    def held(domid: int) -> DomainRecord:
        return DomainRecord(MonitorSpec(f"d{domid}", domid, {}, None, "/k"), config, pid=1)

    state._last_domid = LAST_DOMID
    state.records = {f"d{d}": held(d) for d in (1, 2, 4)}
    state._creating = {"new": (0, 3)}
    assert state._next_domid() == 5, "1, 2 and 4 are held and 3 is being created"
    state.records = {f"d{d}": held(d) for d in range(1, LAST_DOMID + 1)}
    state._creating = {}
    with pytest.raises(PvtuiError, match="No domid left"):
        state._next_domid()


def test_a_sparkline_changes_only_when_its_shown_samples_do():
    """An idle domain adds the same sample each second: once its window is all that sample, nothing moved."""
    from pvtui.ui.format import History

    history = History(length=8, shown=3)
    seen = []
    for value in [5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 7.0, 7.0, 7.0, 7.0]:
        history.add("cpu:a", value)
        seen.append(history.changed_at("cpu:a"))
    changed = [later != earlier for earlier, later in zip([0, *seen[:-1]], seen, strict=True)]
    # 5 | 0 0 0 (the 5 is still shown until the third 0) | 0 0: the same | 7 7 7: moving | 7: the same
    assert changed == [True, True, True, True, False, False, True, True, True, False]
    history.add("cpu:b", 1.0)
    assert history.changed_at("cpu:b") > history.changed_at("cpu:a"), "one count over every key"
    history.keep_only({"cpu:b"})
    assert history.changed_at("cpu:a") == 0 and list(history.get("cpu:a")) == []


def test_a_records_list_json_is_its_summary():
    """pvd's list sends each domain's kept JSON: the same figures as its summary, uptime of now."""
    from pvtui.daemon.monitor import MonitorSpec
    from pvtui.daemon.records import DomainRecord
    from pvtui.domain.schema import DomainConfig

    config = DomainConfig.model_validate({"name": "web", "memory": "64M"})
    spec = MonitorSpec("web", 3, config.model_dump(mode="json"), "/d/web.yaml", "/k")
    record = DomainRecord(spec, config, pid=42, state="blocked")
    record.stats = {"uptime_s": 12.5, "vcpus": [{"cpu_time_s": 1.25}], "memory": {"held_bytes": 1 << 20}}
    sent, built = json.loads(record.summary_json()), record.summary()
    assert sent.keys() == built.keys()
    assert {k: v for k, v in sent.items() if k not in ("uptime_s", "as_of")} == {
        k: v for k, v in built.items() if k not in ("uptime_s", "as_of")
    }
    assert sent["memory"]["held_bytes"] == 1 << 20 and sent["cpu_s"] == 1.25 and sent["state"] == "blocked"
    record.state = "paused"  # a change of state is a new summary, not the kept one
    assert json.loads(record.summary_json())["state"] == "paused"


def test_a_records_committed_memory_follows_what_it_is_made_of():
    """Kept, not worked out per create: each change of stats, state, pid or pending memory moves it."""
    from pvtui.daemon.monitor import MonitorSpec
    from pvtui.daemon.records import DomainRecord
    from pvtui.domain.schema import DomainConfig

    mib = 1 << 20
    config = DomainConfig.model_validate({"name": "web", "memory": "64M"})
    spec = MonitorSpec("web", 3, config.model_dump(mode="json"), None, "/k")
    assert DomainRecord(spec, config).committed_bytes == 0, "no monitor yet: nothing committed"
    record = DomainRecord(spec, config, pid=42)
    assert record.committed_bytes == 64 * mib
    record.stats = {"memory": {"present_bytes": 96 * mib}}  # hot-added
    assert record.committed_bytes == 96 * mib
    record.pending_bytes += 32 * mib
    assert record.committed_bytes == 128 * mib
    record.pending_bytes = 0
    record.state = "crashed"  # crashed, its monitor gone (on_crash: preserve): holds nothing
    assert record.committed_bytes == 0
    record.state = "running"
    record.pid = None
    assert record.committed_bytes == 0


def test_summaries_read_from_a_newer_or_broken_pvd():
    """Keys a newer pvd adds are left out; a row without a name fails as the constructor does."""
    from pvtui.client import DomainSummary
    from pvtui.domain.model import MemoryInfo

    row = {"name": "web", "domid": 1, "state": "running", "memory": {"held_bytes": 5, "new_key": 1}, "future": 2}
    summary = DomainSummary.from_dict(row)
    assert summary == DomainSummary(name="web", domid=1, state="running", memory=MemoryInfo(held_bytes=5))
    assert not hasattr(summary, "future") and not hasattr(summary.memory, "new_key")
    assert DomainSummary.from_dict({"name": "x", "domid": 2, "state": "blocked"}).memory == MemoryInfo()
    with pytest.raises(TypeError):
        DomainSummary.from_dict({"domid": 1, "state": "running"})
