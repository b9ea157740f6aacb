"""Soak: churn domains for N minutes while killing monitors, and show that nothing grows or gets lost.

python bench/soak.py --minutes 30            # table at the end, a line per sample
python bench/soak.py --minutes 2 --json      # one JSON object

Two private pvds (their own runtime directories, as two hosts) run a pool of
domains. Each step picks one and does something an operator or a fault
would: create, destroy, reboot, vCPU hot-plug, a balloon target,
pause/unpause, a checkpoint (save --keep), suspend and resume, a live
migration to the other pvd, or ``kill -9`` of its monitor (about one step in
25). Every ``--sample`` seconds it records the first pvd's memory (RSS), open
fds and threads, the zombie processes on the host, and checks the books:

- domains lost: a domain the soak created and did not destroy that neither
  pvd lists (a killed monitor's domain has ``on_crash: restart``, so it
  must come back; a migrated one must be on the other side);
- domains doubled: one listed by both pvds at once (a migration must never
  leave two copies);
- monitors leaked: a ``pvtui-monitor`` process of either runtime directory
  whose domain its pvd does not list.

Growth is pvd's figure at the end minus its figure after the warm-up (the
first sample), so start-up allocations do not count as a leak.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
from _common import REPO  # noqa: F401 - puts the checkout on sys.path

from pvtui.client import Client, EngineError
from pvtui.engine.lifecycle import MAX_RESTARTS, RESTART_WINDOW_S
from pvtui.errors import PvtuiError

POOL = 8
KILL_EVERY = 25


@dataclass
class Sample:
    t_s: float
    pvd_rss_mib: float
    pvd_fds: int
    pvd_threads: int
    zombies: int
    domains: int
    monitors: int
    lost: int
    leaked: int
    doubled: int


@dataclass
class Soak:
    domains_dir: Path
    runtimes: dict[str, Path]
    clients: dict[str, Client]
    rng: random.Random
    expected: set[str] = field(default_factory=set)
    #: Which pvd ("a" or "b") each domain is on.
    location: dict[str, str] = field(default_factory=dict)
    ops: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    kills: int = 0
    killed_at: dict[str, list[float]] = field(default_factory=dict)

    def _may_kill(self, name: str) -> bool:
        """Kill a domain at most once per restart window: more is a crash loop, which pvd
        rightly ends by destroying the domain (that is the guard working, not a loss)."""
        now = time.monotonic()
        recent = [t for t in self.killed_at.get(name, []) if now - t < RESTART_WINDOW_S]
        if len(recent) >= MAX_RESTARTS - 1:
            return False
        self.killed_at[name] = [*recent, now]
        return True

    def define(self, name: str) -> Path:
        path = self.domains_dir / f"{name}.yaml"
        body = (
            f"name: {name}\nmemory: 48M\nmaxmem: 96M\nvcpus: 1\nmaxvcpus: 2\non_crash: restart\n"
            "workload: {type: chatty, lines_per_sec: 5}\n"
        )
        path.write_text(body)
        return path

    async def step(self) -> None:
        name = f"soak{self.rng.randrange(POOL)}"
        present = name in self.expected
        side = self.location.get(name, "a")
        client = self.clients[side]
        if not present:
            action = "create"
        elif self.rng.randrange(KILL_EVERY) == 0 and self._may_kill(name):
            action = "kill"
        else:
            action = self.rng.choice(
                ["destroy", "reboot", "vcpus", "balloon", "pause", "grow", "checkpoint", "suspend", "migrate"]
            )
        self.ops[action] = self.ops.get(action, 0) + 1
        try:
            if action == "create":
                await client.create(self.define(name))
                self.expected.add(name)
                self.location[name] = side
            elif action == "migrate":
                other = "b" if side == "a" else "a"
                await client.migrate(name, str(self.runtimes[other]))
                self.location[name] = other
            elif action == "checkpoint":
                snap = self.domains_dir / f"{name}.snap"
                await client.save(name, str(snap), keep=True)
                snap.unlink()
            elif action == "suspend":
                await client.suspend(name)
                await client.resume(name)
            elif action == "destroy":
                await client.destroy(name)  # during an on_crash restart, pvd destroys the new monitor
                self.expected.discard(name)
            elif action == "reboot":
                await client.call("reboot", name=name)
            elif action == "vcpus":
                await client.vcpu_set(name, self.rng.choice([1, 2]))
            elif action == "balloon":
                await client.mem_set(name, self.rng.choice([24, 32, 48]) << 20)
            elif action == "grow":
                await client.mem_max(name, 96 << 20)
            elif action == "pause":
                await client.pause(name)
                await asyncio.sleep(0.05)
                await client.unpause(name)
            elif action == "kill":
                pid = next((d.pid for d in await client.list_domains() if d.name == name), None)
                if pid:
                    os.kill(pid, signal.SIGKILL)
                    self.kills += 1
        except (EngineError, PvtuiError) as exc:
            # A refusal (a domain mid-restart after a kill, a vCPU the guest has not
            # brought up yet) is the engine working; count it, carry on.
            if action == "destroy" and exc.title.startswith("No domain named"):
                self.expected.discard(name)
            key = f"{action}: {exc.title}"
            self.refused[key] = self.refused.get(key, 0) + 1

    def monitors(self, side: str) -> dict[str, int]:
        """pvtui-monitor processes of one pvd's runtime directory: name -> pid."""
        runtime = self.runtimes[side]
        found = {}
        for state in (runtime / "domains").glob("*.json"):
            try:
                data = json.loads(state.read_text())
            except (OSError, ValueError):
                continue
            if _alive(data["pid"]):
                found[data["name"]] = data["pid"]
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            if cmd.startswith("pvtui-monitor") and proc.info["pid"] not in found.values():
                with_env = _runtime_of(proc.info["pid"])
                if with_env == str(runtime):
                    found[f"?{proc.info['pid']}"] = proc.info["pid"]
        return found


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _runtime_of(pid: int) -> str | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in environ:
        if item.startswith(b"PVTUI_RUNTIME_DIR="):
            return item.split(b"=", 1)[1].decode()
    return None


async def _listed(soak: Soak) -> dict[str, set[str]]:
    return {side: {d.name for d in await client.list_domains()} for side, client in soak.clients.items()}


async def sample(soak: Soak, pvd: psutil.Process, started: float) -> Sample:
    listed = await _listed(soak)
    # A killed domain restarting is not lost; give restarts a moment before counting.
    missing = soak.expected - listed["a"] - listed["b"]
    if missing:
        await asyncio.sleep(1.0)
        listed = await _listed(soak)
        missing = soak.expected - listed["a"] - listed["b"]
    monitors = {side: soak.monitors(side) for side in soak.clients}
    leaked = [n for side in monitors for n in monitors[side] if n not in listed[side]]
    zombies = sum(1 for p in psutil.process_iter(["status"]) if p.info["status"] == psutil.STATUS_ZOMBIE)
    return Sample(
        t_s=round(time.monotonic() - started, 1),
        pvd_rss_mib=round(pvd.memory_info().rss / (1 << 20), 1),
        pvd_fds=pvd.num_fds(),
        pvd_threads=pvd.num_threads(),
        zombies=zombies,
        domains=len(listed["a"] | listed["b"]),
        monitors=sum(len(m) for m in monitors.values()),
        lost=len(missing),
        leaked=len(leaked),
        doubled=len(listed["a"] & listed["b"]),
    )


async def run(minutes: float, sample_s: float, seed: int, quiet: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="pvtui-soak-") as tmp:
        runtimes = {"a": Path(tmp) / "run", "b": Path(tmp) / "run-b"}
        domains = Path(tmp) / "domains"
        domains.mkdir()
        os.environ["PVTUI_DOMAINS_DIR"] = str(domains)
        clients = {}
        for side in ("b", "a"):  # "a" last: its runtime directory stays in the environment
            os.environ["PVTUI_RUNTIME_DIR"] = str(runtimes[side])
            clients[side] = await Client.connect(start=True, domains_dir=domains)
        client = clients["a"]
        pvd = psutil.Process((await client.hello()).pid)
        soak = Soak(domains, runtimes, clients, random.Random(seed))
        samples: list[Sample] = []
        started = time.monotonic()
        next_sample = started
        steps = 0
        try:
            while time.monotonic() - started < minutes * 60:
                await soak.step()
                steps += 1
                await asyncio.sleep(soak.rng.uniform(0.02, 0.2))
                if time.monotonic() >= next_sample:
                    samples.append(await sample(soak, pvd, started))
                    next_sample += sample_s
                    if not quiet:
                        print(json.dumps(asdict(samples[-1])), file=sys.stderr, flush=True)
            samples.append(await sample(soak, pvd, started))
        finally:
            for each in clients.values():
                await each.engine_stop(destroy_domains=True)
                await each.close()
        first, last = samples[0], samples[-1]
        return {
            "minutes": minutes,
            "steps": steps,
            "seed": seed,
            "ops": soak.ops,
            "monitors_killed": soak.kills,
            "refused": soak.refused,
            "pvd_rss_mib_start": first.pvd_rss_mib,
            "pvd_rss_mib_end": last.pvd_rss_mib,
            "pvd_rss_mib_max": max(s.pvd_rss_mib for s in samples),
            "pvd_fds_start": first.pvd_fds,
            "pvd_fds_end": last.pvd_fds,
            "pvd_fds_max": max(s.pvd_fds for s in samples),
            "pvd_threads_max": max(s.pvd_threads for s in samples),
            "zombies_max": max(s.zombies for s in samples),
            "domains_lost_max": max(s.lost for s in samples),
            "monitors_leaked_max": max(s.leaked for s in samples),
            "domains_doubled_max": max(s.doubled for s in samples),
            "samples": len(samples),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args.minutes, args.sample, args.seed, quiet=args.json))
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:<22} {value}")
    bad = result["domains_lost_max"] or result["monitors_leaked_max"] or result["domains_doubled_max"]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
