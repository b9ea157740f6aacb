import pytest

from pvtui.domain.cpuset import format_cpu_list, parse_cpu_list
from pvtui.domain.units import format_size, parse_size
from pvtui.engine.clock import tsc_to_ns_mul_shift


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("64M", 64 << 20),
        ("2G", 2 << 30),
        ("1.5G", 3 << 29),
        ("512KiB", 512 << 10),
        (128, 128 << 20),
        ("4k", 4096),
        ("4096B", 4096),
        ("2MiB", 2 << 20),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["lots", "-1M", "", True, 1.5, "12Q"])
def test_parse_size_rejects(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


@pytest.mark.parametrize(("size", "text"), [(64 << 20, "64M"), (1536 << 20, "1536M"), (2 << 30, "2G"), (4096, "4K")])
def test_format_size(size, text):
    assert format_size(size) == text
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("spec", "cpus"),
    [("0-3,^1", {0, 2, 3}), ("2", {2}), (1, {1}), ("all", set()), ("0-7,^2-5", {0, 1, 6, 7})],
)
def test_cpu_lists(spec, cpus):
    assert parse_cpu_list(spec) == cpus


@pytest.mark.parametrize("bad", ["x", "3-1", "^0", "0-", "1,,2"])
def test_cpu_lists_reject(bad):
    with pytest.raises(ValueError):
        parse_cpu_list(bad)


def test_format_cpu_list():
    assert format_cpu_list({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"


@pytest.mark.parametrize("khz", [2_100_000, 3_000_000, 999_999, 500_000, 1_000_000, 4_700_123])
def test_tsc_scaling_matches_exact_rational(khz):
    mul, shift = tsc_to_ns_mul_shift(khz)
    ticks = khz * 1000 * 7  # seven seconds of ticks
    scaled = ticks << shift if shift >= 0 else ticks >> -shift
    ns = (scaled * mul) >> 32
    assert abs(ns - 7_000_000_000) < 7_000_000_000 * 1e-6
    assert 1 << 31 <= mul < 1 << 32
