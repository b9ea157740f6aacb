"""Shared fixtures. Engine tests boot real domains on /dev/kvm.

Where KVM is unusable they skip with the reason; with PVTUI_REQUIRE_KVM=1
(set by .ci/run) that skip becomes a failure, so CI always runs them.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCE_DIR = REPO / "pvtui" / "guest" / "src"


def _kvm_problem() -> str | None:
    try:
        from pvtui.engine.kvm import Kvm

        Kvm().close()
    except Exception as exc:  # any reason KVM is unusable is a reason to skip
        return str(exc)
    return None


@pytest.fixture(scope="session")
def kvm_available() -> None:
    problem = _kvm_problem()
    if problem:
        if os.environ.get("PVTUI_REQUIRE_KVM") == "1":
            pytest.fail(f"PVTUI_REQUIRE_KVM=1 but KVM is unusable: {problem}")
        pytest.skip(f"needs a usable /dev/kvm: {problem}")


@pytest.fixture(scope="session")
def kernel_path(kvm_available: None) -> str:
    from pvtui.guest.build import bundled_kernel

    return str(bundled_kernel())


@pytest.fixture
def boot(kernel_path: str) -> Iterator[Callable[..., object]]:
    """Boot a domain from YAML text; every domain is destroyed after the test."""
    from pvtui.domain.loader import parse_domain_text
    from pvtui.engine.domain import Domain

    domains: list[Domain] = []

    def _boot(text: str, kernel: str | None = None, start: bool = True) -> Domain:
        config = parse_domain_text(text)
        domain = Domain(config, kernel or config.kernel or kernel_path)
        domains.append(domain)
        if start:
            domain.start()
        return domain

    yield _boot
    for domain in domains:
        domain.destroy()


def run_pvtui(*args: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real ``pvtui`` CLI (as ``python -m pvtui``) from the checkout."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pvtui", *args], capture_output=True, text=True, timeout=timeout, env=full_env, cwd=REPO
    )


def build_custom_kernel(tmp_path: Path, c_source: str) -> Path:
    """Compile a tiny guest kernel against pv.h, linked at 1 MiB."""
    src = tmp_path / "tiny.c"
    src.write_text(c_source)
    out = tmp_path / "tiny.elf"
    cmd = [
        "gcc",
        "-O2",
        "-ffreestanding",
        "-fno-pic",
        "-fno-pie",
        "-fno-stack-protector",
        "-nostdlib",
        "-static",
        "-no-pie",
        f"-Wl,-T,{SOURCE_DIR / 'kernel.ld'}",
        "-Wl,--build-id=none",
        f"-I{SOURCE_DIR}",
        "-o",
        str(out),
        str(src),
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out


class Engine:
    """A private pvd for tests: its own runtime and domains directories."""

    def __init__(self, runtime: Path, domains: Path) -> None:
        self.runtime = runtime
        self.domains = domains
        self.env = {"PVTUI_RUNTIME_DIR": str(runtime), "PVTUI_DOMAINS_DIR": str(domains)}

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run_pvtui(*args, timeout=timeout, env=self.env)

    def ok(self, *args: str) -> str:
        result = self.cli(*args)
        assert result.returncode == 0, f"pvtui {' '.join(args)} failed: {result.stderr}"
        return result.stdout

    def define(self, name: str, body: str) -> str:
        path = self.domains / f"{name}.yaml"
        path.write_text(f"name: {name}\n{body}")
        return str(path)

    def json(self, *args: str) -> object:
        import json

        return json.loads(self.ok(*args, "--json"))

    def monitor_pids(self) -> dict[str, int]:
        import json

        pids = {}
        for state in (self.runtime / "domains").glob("*.json"):
            data = json.loads(state.read_text())
            pids[data["name"]] = data["pid"]
        return pids

    def pvd_pid(self) -> int | None:
        try:
            return int((self.runtime / "pvd.lock").read_text().strip())
        except (OSError, ValueError):
            return None

    def cleanup(self) -> None:
        import signal

        self.cli("engine", "stop", "--destroy-domains")
        for pid in self.monitor_pids().values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def engine(kvm_available: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    runtime = tmp_path_factory.mktemp("run")
    domains = tmp_path_factory.mktemp("domains")
    eng = Engine(runtime, domains)
    saved = {key: os.environ.get(key) for key in eng.env}
    os.environ.update(eng.env)  # for the in-process client
    eng.ok("engine", "start")
    try:
        yield eng
    finally:
        eng.cleanup()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
