"""Fleet rebalancing: the plan's rules on fixed figures, and a plan applied (and one failing) on real pvds."""

from __future__ import annotations

import asyncio
import json
import time

from helpers import Engine, run_pvtui, wait_until
from test_hosts import remote  # noqa: F401 - the second pvd, reached as unix://

from pvtui.client.models import DomainSummary, HostInfo
from pvtui.domain.model import MemoryInfo
from pvtui.fleet_rebalance import Move, apply, suggest

MIB = 1 << 20


def host(cpus: int = 2, committed: int = 0, limit: int = 8192 * MIB) -> HostInfo:
    return HostInfo(
        cpus=cpus, cpu_percent=None, memory_total=limit, memory_available=limit, memory_given=0, domains=0,
        domains_by_state={}, cpu_control="none", memory_committed=committed, memory_commit_limit=limit,
    )  # fmt: skip


def dom(name: str, cpu: float, memory: int = 256 * MIB) -> DomainSummary:
    return DomainSummary(name=name, domid=1, state="running", cpu_percent=cpu, memory=MemoryInfo(present_bytes=memory))


def test_a_busy_host_gives_to_an_idle_one_and_the_spread_falls() -> None:
    plan = suggest({"a": (host(), [dom("x", 90), dom("y", 80), dom("z", 10)]), "b": (host(), [dom("w", 5)])})
    assert plan.moves and plan.moves[0].domain in ("x", "y")
    assert plan.moves[0].source == "a" and plan.moves[0].target == "b"
    assert plan.spread_after < plan.spread_before
    assert "a at" in plan.moves[0].reason and "fits there" in plan.moves[0].reason
    assert any("before" in line for line in plan.describe()) and any("after" in line for line in plan.describe())


def test_memory_that_does_not_fit_exclusions_and_the_cap_are_kept() -> None:
    busy = [dom("big", 90, 6000 * MIB), dom("pinned", 80)]
    plan = suggest({"a": (host(), busy), "b": (host(committed=4000 * MIB), [])}, exclude={"pinned"})
    assert plan.moves == (), "big does not fit on b, pinned may not move"
    many = {"a": (host(cpus=1), [dom(f"d{i}", 30) for i in range(6)]), "b": (host(cpus=8), [])}
    assert len(suggest(many, max_moves=2).moves) == 2
    balanced = {"a": (host(), [dom("x", 50)]), "b": (host(), [dom("y", 50)])}
    assert suggest(balanced).moves == ()


def test_apply_stops_at_the_first_failure_and_undoes_what_was_done() -> None:
    moves = tuple(Move(f"d{i}", "a", "b", 0.5, MIB, "test") for i in range(3))
    plan = suggest({"a": (host(), []), "b": (host(), [])})
    plan = type(plan)(moves, plan.before, plan.after)
    ran: list[str] = []

    async def move(step: Move) -> None:
        ran.append(f"{step.domain} {step.source}->{step.target}")
        if step.domain == "d1":
            raise RuntimeError("refused")

    outcome = asyncio.run(apply(plan, move))
    assert [m.domain for m in outcome.done] == ["d0"]
    assert outcome.failed is not None and outcome.failed[0].domain == "d1"
    assert [m.domain for m in outcome.skipped] == ["d2"]
    assert ran == ["d0 a->b", "d1 a->b", "d0 b->a"], "d0 is moved back"
    assert [m.domain for m in outcome.undone] == ["d0"]


def test_shrinks_run_before_moves_and_grows_after_on_the_right_hosts() -> None:
    idle = DomainSummary(
        name="idle", domid=1, state="running", cpu_percent=2.0, vcpus_online=2, vcpus_max=2,
        memory=MemoryInfo(present_bytes=512 * MIB, target_bytes=512 * MIB, guest_used_bytes=40 * MIB),
    )  # fmt: skip
    starved = DomainSummary(
        name="starved", domid=2, state="running", cpu_percent=95.0, cpu_wait_percent=0.0, vcpus_online=1,
        vcpus_max=2, memory=MemoryInfo(present_bytes=256 * MIB, target_bytes=256 * MIB, guest_used_bytes=60 * MIB),
    )  # fmt: skip
    plan = suggest({"a": (host(cpus=1), [idle, starved, dom("hot", 90)]), "b": (host(cpus=4), [])})
    kinds = [type(step).__name__ + ("-" if getattr(step, "step", None) and step.step.shrinks else "")
             for step in plan.ordered()]  # fmt: skip
    assert kinds.index("Move") > max(i for i, k in enumerate(kinds) if k == "Resize-"), kinds
    shrink = next(r for r in plan.shrinks if r.domain == "idle" and r.step.resource == "vcpus")
    assert "run it below 70%" in shrink.step.reason
    memory = next(r for r in plan.shrinks if r.domain == "idle" and r.step.resource == "memory")
    assert memory.step.new >= 40 * MIB + 64 * MIB and "headroom" in memory.step.reason
    for grow in plan.grows:  # a grow runs where its domain ends up
        moved = next((m for m in plan.moves if m.domain == grow.domain), None)
        assert grow.host == (moved.target if moved else "a")
    assert all(state.vcpus >= 0 for state in plan.after.values())


def test_a_fleet_plan_dry_run_then_applied(engine: Engine, remote) -> None:  # noqa: F811
    _, uri = remote
    for name in ("hot1", "hot2"):
        engine.ok("create", engine.define(name, "memory: 32M\nworkload: {type: cpu, duty: 90}\n"))
    try:
        time.sleep(3)  # two samples: measured CPU
        hosts = f"local,{uri}"
        dry = run_pvtui("-H", hosts, "rebalance", "--fleet", "--json")
        assert dry.returncode == 0, dry.stderr
        plan = json.loads(dry.stdout)
        assert plan["moves"] and plan["spread_after"] < plan["spread_before"]
        assert {d["name"] for d in engine.json("list")} >= {"hot1", "hot2"}, "a dry run moves nothing"
        applied = run_pvtui("-H", hosts, "rebalance", "--fleet", "--apply", "--max-moves", "1", timeout=120)
        assert applied.returncode == 0 and "done: move" in applied.stdout, applied.stderr + applied.stdout
        there = {d["name"] for d in json.loads(run_pvtui("-H", uri, "list", "--json").stdout)}
        assert wait_until(lambda: len({"hot1", "hot2"} & there) == 1, 5)
    finally:
        for name in ("hot1", "hot2"):
            run_pvtui("-H", uri, "destroy", name)
            engine.cli("destroy", name)


def test_a_plan_never_moves_a_domain_onto_a_host_with_one_of_its_name(engine: Engine, remote, tmp_path) -> None:  # noqa: F811
    _, uri = remote
    names = ("hot3", "hot4")
    for name in names:
        engine.ok("create", engine.define(name, "memory: 32M\nworkload: {type: cpu, duty: 90}\n"))
        squatter = tmp_path / f"{name}.yaml"
        squatter.write_text(f"name: {name}\nmemory: 32M\n")  # the target already has one of that name
        assert run_pvtui("-H", uri, "create", str(squatter)).returncode == 0
    try:
        time.sleep(3)
        result = run_pvtui("-H", f"local,{uri}", "rebalance", "--fleet", "--apply", "--json", timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        plan = json.loads(result.stdout)
        assert plan["moves"] == []
        assert any("runs there already" in note for note in plan["notes"]), plan["notes"]
        for mine in (d for d in engine.json("list") if d["name"] in names):
            assert mine["state"] in ("running", "blocked")
    finally:
        for name in names:
            run_pvtui("-H", uri, "destroy", name)
            engine.cli("destroy", name)


def test_a_fleet_plan_rolled_back_moves_the_domain_home(engine: Engine, remote) -> None:  # noqa: F811
    """A plan whose grow fails after its move undoes the move: the domain runs where it started."""
    from pvtui.client import Client
    from pvtui.client.connect import connect_host
    from pvtui.client.hosts import HostUri, parse_host_uri
    from pvtui.client.moves import Endpoint, move_domain
    from pvtui.fleet_rebalance import FleetPlan, Resize
    from pvtui.rebalance import Step

    _, uri = remote
    engine.ok("create", engine.define("roamer", "memory: 32M\nvcpus: 1\nmaxvcpus: 2\n"))
    uris = {"local": HostUri("local"), "there": parse_host_uri(uri)}

    async def run() -> None:
        clients: dict[str, Client] = {name: await connect_host(u) for name, u in uris.items()}
        try:
            before = {n: suggest({n: (await c.host(), [])}).before[n] for n, c in clients.items()}
            move = Move("roamer", "local", "there", 0.1, 32 * MIB, "test", 1)
            too_many = Resize("there", Step("roamer", "vcpus", 1, 9, "test"))  # beyond maxvcpus: refused
            plan = FleetPlan((move,), before, before, (too_many,))

            async def do_move(step: Move) -> object:
                ends = {n: Endpoint(uris[n], clients[n]) for n in (step.source, step.target)}
                return await move_domain(ends[step.source], ends[step.target], step.domain)

            async def do_resize(step: Resize) -> object:
                return await clients[step.host].vcpu_set(step.domain, step.step.new)

            outcome = await apply(plan, do_move, do_resize)
            assert outcome.failed is not None and outcome.failed[0] is too_many, outcome
            assert outcome.undone == [move] and outcome.undo_failed is None
        finally:
            for client in clients.values():
                await client.close()

    try:
        asyncio.run(run())
        assert next(d for d in engine.json("list") if d["name"] == "roamer")["state"] in ("running", "blocked")
        assert "roamer" not in {d["name"] for d in json.loads(run_pvtui("-H", uri, "list", "--json").stdout)}
    finally:
        run_pvtui("-H", uri, "destroy", "roamer")
        engine.cli("destroy", "roamer")
