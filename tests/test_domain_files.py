"""Domain files: a table of bad YAML with the exact messages users see."""

import json
from pathlib import Path

import pytest
from helpers import REPO, run_pvtui

from pvtui.domain.loader import DomainFileError, load_domain_file, parse_domain_text
from pvtui.domain.schema import json_schema

BAD_FILES = [
    ("name: a\nvcpu: 2\n", "2:1: unknown key 'vcpu'; did you mean 'vcpus'? allowed: name, vcpus, maxvcpus"),
    ("name: a\nvcpus: 4\nmaxvcpus: 2\n", "2:1: vcpus (4) is more than maxvcpus (2)"),
    ("name: a\nmemory: 128M\nmaxmem: 64M\n", "2:1: memory (128M) is more than maxmem (64M)"),
    ("name: a\nvcpus: two\n", "2:8: vcpus: expected a whole number, got 'two'"),
    ("name: a\nvcpus: 64\n", "2:8: vcpus: 64 is out of range; it must be at most 32"),
    ("name: a\nmemory: lots\n", "2:9: memory: expected a size like 512M or 2G"),
    ("name: a\non_crash: explode\n", "2:11: on_crash: 'explode' is not allowed; use one of: 'destroy', 'restart'"),
    (
        "name: a\nworkload:\n  type: cpu\n  duty: 150\n",
        "4:9: workload.duty: 150 is out of range; it must be at most 100",
    ),
    ("name: a\nworkload:\n  type: cpu\n  dutty: 50\n", "4:3: unknown key 'dutty'; did you mean 'duty'?"),
    ("name: a\nworkload: dance\n", "2:11: workload type must be one of: idle, cpu, memory, bursty, chatty"),
    ("vcpus: 2\n", "1:1: missing required key 'name'"),
    ("name: a\ncpus: '0-x'\n", "2:7: cpus: '0-x' is not a CPU list"),
    ("name: a\ncpus: ['0', '1', '2']\nvcpus: 2\n", "2:1: cpus lists 3 vCPUs but maxvcpus is 2"),
    ("name: a\nname: b\n", "2:1: duplicate key 'name'; each key may appear once"),
    ("name: a\nvcpus: [1\n", "3:1: not valid YAML: expected ',' or ']'"),
    ("- a\n- b\n", "1:1: a domain file is a mapping of keys"),
    ("", "1:1: the file is empty"),
    ("name: 'bad name!'\n", "1:7: name: 'bad name!' is not a valid name"),
    ("name: a\nautostart: maybe\n", "2:12: autostart: expected true or false, got 'maybe'"),
    ("name: a\ncpu_weight: 0\n", "2:13: cpu_weight: 0 is out of range; it must be at least 1"),
    ("name: a\nmemory: 100.5M\n", "2:1: memory must be a whole number of MiB"),
    ("name: a\nworkload: {type: bench}\n", "2:11: missing required key 'test'"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_FILES)
def test_bad_files_name_line_column_and_what_is_allowed(text, expected):
    with pytest.raises(DomainFileError) as info:
        parse_domain_text(text, "d.yaml")
    assert str(info.value.problems[0]).startswith(f"d.yaml:{expected}")


def test_every_problem_is_reported_not_just_the_first():
    with pytest.raises(DomainFileError) as info:
        parse_domain_text("name: a\nvcpus: 99\ncpu_cap: -1\nfoo: 1\n", "d.yaml")
    assert [(p.line, p.column) for p in info.value.problems] == [(2, 8), (3, 10), (4, 1)]


def test_defaults_follow_xl():
    config = parse_domain_text("name: web\n")
    assert (config.vcpus, config.maxvcpus_or_vcpus, config.memory, config.maxmem_or_memory) == (
        1,
        1,
        64 << 20,
        64 << 20,
    )
    assert (config.cpu_weight, config.cpu_cap, config.on_poweroff, config.on_reboot, config.on_crash) == (
        256,
        0,
        "destroy",
        "restart",
        "destroy",
    )
    assert config.workload.type == "idle"


def test_pinning_and_cmdline():
    config = parse_domain_text("name: w\nvcpus: 2\ncpus: ['0', '1-3,^2']\nworkload: {type: memory, wss: 48M}\n")
    assert config.vcpu_affinity(0) == {0} and config.vcpu_affinity(1) == {1, 3}
    assert config.kernel_cmdline() == "workload=memory wss=48M touch_rate=64M"


def test_relative_kernel_resolves_against_the_file(tmp_path):
    (tmp_path / "d.yaml").write_text("name: k\nkernel: ../k.elf\n")
    assert load_domain_file(tmp_path / "d.yaml").kernel == str(tmp_path / ".." / "k.elf")


SAMPLES = sorted((REPO / "domains").glob("*.yaml"))


def test_samples_exist_with_different_workloads():
    workloads = {load_domain_file(path).workload.type for path in SAMPLES}
    assert len(SAMPLES) >= 4 and len(workloads) >= 4


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_samples_are_valid(path: Path):
    load_domain_file(path)


def test_check_verb_exit_codes(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: a\nvcpu: 2\n")
    ok = run_pvtui("check", *map(str, SAMPLES))
    assert ok.returncode == 0, ok.stderr
    result = run_pvtui("check", str(SAMPLES[0]), str(bad))
    assert result.returncode == 2
    assert f"{bad}:2:1: unknown key 'vcpu'; did you mean 'vcpus'?" in result.stderr


def test_json_schema_in_docs_is_current():
    committed = json.loads((REPO / "docs" / "domain.schema.json").read_text())
    assert committed == json_schema(), "regenerate with: pvtui schema > docs/domain.schema.json"
