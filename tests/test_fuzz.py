"""Hostile input, generated: the protocol parser, the domain-file loader and a guest of random hypercalls.

Property-based tests (hypothesis) check that whatever arrives, the answer is
the documented error and never an exception of another kind; the fuzzing
guest (``fuzz_guest.c``) makes 100,000 seeded random hypercalls on real KVM
and checks every result against the ABI's documented set.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from helpers import Engine, build_custom_kernel, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pvtui.daemon.server  # noqa: F401 - registers pvd's ops in PVD_OPS
from pvtui.daemon.ops import PVD_OPS
from pvtui.daemon.protocol import PROTOCOL_VERSION, ProtocolError, decode, parse_request
from pvtui.domain.loader import DomainFileError, parse_domain_text
from pvtui.domain.schema import DomainConfig

FUZZ_GUEST = Path(__file__).resolve().parent / "fuzz_guest.c"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
op_names = st.sampled_from(sorted(PVD_OPS.schemas)) | st.text(max_size=12)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_decode_to_a_message_or_a_protocol_error(line: bytes):
    try:
        message = decode(line)
    except ProtocolError as exc:
        assert exc.code in {"malformed", "version", "too_large"}
    else:
        assert isinstance(message, dict) and message["v"] == PROTOCOL_VERSION


def test_pathological_json_is_malformed_not_a_crash():
    for line in (b"[" * 100_000, b'{"v": 1, "id": ' + b"9" * 5000 + b"}", b'{"v": 1, "id": 1e999999}'):
        try:
            decode(line)
        except ProtocolError as exc:
            assert exc.code == "malformed"


@settings(max_examples=600, deadline=None)
@given(
    st.fixed_dictionaries(
        {"v": st.just(PROTOCOL_VERSION), "op": op_names},
        optional={"id": st.integers() | json_values, "args": st.dictionaries(st.text(max_size=8), json_values)},
    )
)
def test_any_request_is_parsed_or_refused_with_a_code(message: dict):
    schemas = PVD_OPS.schemas
    try:
        request = parse_request(json.loads(json.dumps(message)), schemas)
    except ProtocolError as exc:
        assert exc.code in {"malformed", "unknown_op", "bad_args"} and exc.title and exc.message
    else:
        assert request.op in schemas and isinstance(request.id, int)


known_keys = st.sampled_from([*sorted(DomainConfig.model_fields), "vcpu", "memroy", "workload", "cpu_weight"])
yaml_scalars = (
    st.integers(-5, 70000).map(str)
    | st.sampled_from(["64M", "1G", "0", "-1", "true", "null", "[]", "{}", "'x'", "0-3,^1", "restart", "cpu"])
    | st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=15)
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(known_keys, yaml_scalars), max_size=8))
def test_any_domain_file_loads_or_names_line_and_column(pairs: list[tuple[str, str]]):
    text = "".join(f"{key}: {value}\n" for key, value in pairs)
    try:
        config = parse_domain_text(text, "fuzz.yaml")
    except DomainFileError as exc:
        assert exc.problems
        lines = max(1, text.count("\n") + 1)
        for problem in exc.problems:
            assert problem.path == "fuzz.yaml" and 1 <= problem.line <= lines + 1 and problem.column >= 1
            assert problem.message
    else:
        assert config.name and yaml.safe_load(text)["name"] is not None


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_text_loads_or_names_line_and_column(text: str):
    try:
        parse_domain_text(text, "any.yaml")
    except DomainFileError as exc:
        assert exc.problems and all(p.line >= 1 and p.column >= 1 for p in exc.problems)


def test_a_guest_making_100000_random_hypercalls_gets_documented_results(engine: Engine, tmp_path: Path):
    kernel = build_custom_kernel(tmp_path, FUZZ_GUEST.read_text())
    engine.ok(
        "create",
        engine.define(
            "fuzzer",
            f"kernel: {kernel}\nmemory: 64M\ncmdline: seed=20261202\non_poweroff: preserve\non_crash: preserve\n",
        ),
    )
    assert wait_until(lambda: "fuzz done" in engine.ok("console", "fuzzer", "-n"), timeout=120)
    console = engine.ok("console", "fuzzer", "-n")
    assert "fuzz done: 100000 calls, 0 undocumented results, seed 20261202" in console, console[-2000:]
    log = (engine.runtime / "domains" / "fuzzer.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    assert "Traceback" not in (engine.runtime / "pvd.log").read_text(errors="replace")
    # It powered off by itself at the end: a clean end, not a crash.
    fuzzer = next(d for d in engine.json("list") if d["name"] == "fuzzer")
    assert fuzzer["state"] == "shutdown" and not fuzzer["crash_reason"], fuzzer
    engine.ok("destroy", "fuzzer")


u64 = st.integers(0, (1 << 64) - 1)
guest_addresses = st.integers(0, (1 << 20) + 64) | u64


@settings(max_examples=1500, deadline=None)
@given(
    op=st.sampled_from([12, 13, 15, 17, 18, 24, 32]) | st.integers(0, 1 << 64 - 1),
    args=st.lists(st.integers(0, 8) | guest_addresses, min_size=5, max_size=5),
    ram=st.binary(max_size=256),
)
def test_the_hypercall_handlers_answer_any_arguments_with_a_documented_result(op: int, args: list[int], ram: bytes):
    """pvtui's handlers against a fake guest memory: every result a count or a documented errno."""
    from test_logic import _FakeDomain, _FakeRunner

    from pvtui.engine import abi
    from pvtui.engine.hypercalls import HypercallHandler

    domain = _FakeDomain()
    domain.memory.ram[0x1000 : 0x1000 + len(ram)] = ram  # structs and frame lists the args may point at
    handler = HypercallHandler(domain)  # type: ignore[arg-type]
    if op == abi.Hypercall.vcpu_op:
        args[1] = max(args[1], 4)  # an existing vCPU needs the engine's vCPU set (the fuzzing guest covers it)
    result = handler.dispatch(_FakeRunner(domain), op, *args)  # type: ignore[arg-type]
    assert isinstance(result, int)
    assert result >= 0 or -result in {int(e) for e in abi.Errno}, (op, args, result)
