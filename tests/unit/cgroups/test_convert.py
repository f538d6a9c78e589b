from __future__ import annotations

import pytest

from runtime.cgroups import (
    Resources,
    blkio_weight_to_io_weight,
    cpu_shares_to_weight,
    cpu_weight_to_shares,
    io_weight_to_blkio_weight,
    resources_from_oci,
)
from runtime.cgroups._convert import ns_to_usec, ticks_to_usec


@pytest.mark.parametrize(("shares", "weight"), [(2, 1), (262144, 10000), (1024, 39), (512, 20)])
def test_cpu_shares_to_weight(shares: int, weight: int) -> None:
    assert cpu_shares_to_weight(shares) == weight


@pytest.mark.parametrize(("weight", "shares"), [(1, 2), (10000, 262144), (100, 2598)])
def test_cpu_weight_to_shares(weight: int, shares: int) -> None:
    assert cpu_weight_to_shares(weight) == shares


@pytest.mark.parametrize("weight", [1, 2, 39, 100, 5000, 9999, 10000])
def test_cpu_weight_round_trip_is_exact_from_the_v2_side(weight: int) -> None:
    # shares is the finer scale: weight -> shares -> weight must be lossless
    assert cpu_shares_to_weight(cpu_weight_to_shares(weight)) == weight


def test_blkio_weight_round_trip_is_exact_from_the_v1_side() -> None:
    # io.weight is the finer scale here
    assert all(io_weight_to_blkio_weight(blkio_weight_to_io_weight(b)) == b for b in range(10, 1001))


def test_cpu_conversions_are_monotonic() -> None:
    weights = [cpu_shares_to_weight(s) for s in range(2, 262145, 97)]
    assert weights == sorted(weights)


@pytest.mark.parametrize(("blkio", "io"), [(10, 1), (1000, 10000), (500, 4950), (100, 910)])
def test_blkio_weight_to_io_weight(blkio: int, io: int) -> None:
    assert blkio_weight_to_io_weight(blkio) == io


@pytest.mark.parametrize(("io", "blkio"), [(1, 10), (10000, 1000), (100, 20), (4950, 500)])
def test_io_weight_to_blkio_weight(io: int, blkio: int) -> None:
    assert io_weight_to_blkio_weight(io) == blkio


@pytest.mark.parametrize(
    ("function", "value"),
    [
        (cpu_shares_to_weight, 1), (cpu_shares_to_weight, 262145),
        (cpu_weight_to_shares, 0), (cpu_weight_to_shares, 10001),
        (blkio_weight_to_io_weight, 9), (blkio_weight_to_io_weight, 1001),
        (io_weight_to_blkio_weight, 0), (io_weight_to_blkio_weight, 10001),
    ],
)
def test_out_of_range_weights_raise(function, value: int) -> None:
    with pytest.raises(ValueError, match=str(value)):
        function(value)


def test_time_units() -> None:
    assert ns_to_usec(302856802) == 302856
    assert ticks_to_usec(26, 100) == 260000
    assert ticks_to_usec(3, 250) == 12000


# -- resources_from_oci --------------------------------------------------------


def test_oci_empty_is_no_limit() -> None:
    assert resources_from_oci({}) == Resources()


def test_oci_full() -> None:
    spec = {
        "memory": {"limit": 256 << 20, "reservation": 64 << 20, "swap": 384 << 20},
        "cpu": {"shares": 1024, "quota": 20000, "period": 100000, "cpus": "0-1", "mems": "0"},
        "pids": {"limit": 64},
        "blockIO": {"weight": 500},
        "devices": [{"allow": False, "access": "rwm"}],   # not ours: ignored
    }
    assert resources_from_oci(spec) == Resources(
        memory_max_bytes=256 << 20, memory_low_bytes=64 << 20, swap_max_bytes=128 << 20,
        cpu_weight=39, cpu_quota_usec=20000, cpu_period_usec=100000, cpuset_cpus="0-1", cpuset_mems="0",
        pids_max=64, io_weight=4950,
    )


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"memory": {"limit": -1, "swap": -1}}, Resources()),
        ({"memory": {"limit": 0}}, Resources()),
        ({"memory": {"limit": 100, "swap": 100}}, Resources(memory_max_bytes=100, swap_max_bytes=0)),
        ({"cpu": {"quota": -1, "period": 100000}}, Resources(cpu_period_usec=100000)),
        ({"cpu": {"shares": 0, "cpus": ""}}, Resources()),
        ({"pids": {"limit": 0}}, Resources()),
        ({"pids": {"limit": -1}}, Resources()),
        ({"blockIO": {"weight": 0}}, Resources()),
        ({"cpu": {"cpus": "0-3, 7"}}, Resources(cpuset_cpus="0-3,7")),
        ({"memory": None, "cpu": None}, Resources()),
    ],
)
def test_oci_unset_and_unlimited(spec: dict, expected: Resources) -> None:
    assert resources_from_oci(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"memory": {"limit": -2}}, "memory.limit must be positive or -1"),
        ({"memory": {"reservation": -5}}, "memory.reservation"),
        ({"memory": {"limit": 200, "swap": 100}}, r"swap \(100\) must be at least memory.limit \(200\)"),
        ({"memory": {"swap": 100}}, "swap needs memory.limit"),
        ({"memory": {"limit": "1g"}}, "must be an integer"),
        ({"memory": {"limit": True}}, "must be an integer"),
        ({"cpu": {"shares": 1}}, "shares must be within 2..262144"),
        ({"cpu": {"shares": 300000}}, "shares"),
        ({"cpu": {"quota": 500}}, "quota must be -1 or at least 1000"),
        ({"cpu": {"quota": -7}}, "quota"),
        ({"cpu": {"quota": 20000, "period": 10}}, r"period must be within 1000..1000000"),
        ({"cpu": {"period": 2_000_000}}, "period"),
        ({"cpu": {"cpus": "0-a"}}, "cpu.cpus must be a list"),
        ({"cpu": {"mems": "3-1"}}, "decreasing range"),
        ({"blockIO": {"weight": 5}}, "blockIO.weight must be within 10..1000"),
        ({"memory": []}, "must be an object"),
    ],
)
def test_oci_impossible_values(spec: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resources_from_oci(spec)
