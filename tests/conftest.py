"""Shared fixtures. Engine tests boot real domains on /dev/kvm.

Where KVM is unusable they skip with the reason; with PVTUI_REQUIRE_KVM=1
(set by .ci/run) that skip becomes a failure, so CI always runs them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from helpers import Engine


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
