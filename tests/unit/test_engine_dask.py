"""The partitioned engine equals the single-process engine, in process and on a Dask cluster."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from distributed import Client, LocalCluster

from matching import engine
from matching.engine import Groups, Side
from matching.partitioned import match_partitioned, partition

ANALYTICS = 1


def random_side(rng: np.random.Generator, shared_pool: np.ndarray, n_people: int) -> Side:
    """People with one to three keys, drawn mostly from a shared pool so groups chain."""
    n_records = n_people * 2
    own = rng.integers(0, 2**64, size=(n_records, 2), dtype=np.uint64)
    pooled = shared_pool[rng.integers(0, len(shared_pool), n_records)]
    keys = np.where(rng.random((n_records, 1)) < 0.6, pooled, own)
    return engine.make_side(
        keys[:, 0],
        keys[:, 1],
        rng.integers(0, n_people, n_records),
        rng.integers(0, 8, n_records),
        n_people,
    )


def sides(seed: int) -> tuple[Side, Side]:
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 2**64, size=(1500, 2), dtype=np.uint64)
    pool[:10, 0] = 2**64 - 1 - np.arange(10, dtype=np.uint64)  # keys in the last partition
    return random_side(rng, pool, 2000), random_side(rng, pool, 1500)


def assert_same_groups(got: Groups, expected: Groups) -> None:
    assert got.count == expected.count
    for name in ("a_person", "a_group", "b_person", "b_group"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name))


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as dask_client,
    ):
        yield dask_client


@pytest.mark.parametrize("bits", [0, 2, 4])
@pytest.mark.parametrize("mask", [0, ANALYTICS, 6])
def test_partitioned_match_in_process_equals_match(bits: int, mask: int) -> None:
    a, b = sides(seed=bits * 10 + mask)
    expected = engine.match(a, b, mask)
    assert expected.count > 0
    assert_same_groups(match_partitioned(a, b, mask, bits=bits), expected)


@pytest.mark.parametrize("bits", [0, 2, 4])
def test_partitioned_match_on_a_cluster_equals_match(client: Client, bits: int) -> None:
    a, b = sides(seed=100 + bits)
    expected = engine.match(a, b, ANALYTICS)
    assert_same_groups(match_partitioned(a, b, ANALYTICS, bits=bits, client=client), expected)


def test_partitions_keep_every_record_and_global_people() -> None:
    a, _ = sides(seed=7)
    parts = partition(a, 3)
    assert len(parts) == 8
    np.testing.assert_array_equal(np.concatenate([p.hi for p in parts]), a.hi)
    np.testing.assert_array_equal(np.concatenate([p.person for p in parts]), a.person)
    assert all(p.n_people == a.n_people for p in parts)
    for index, part in enumerate(parts):
        assert np.all(part.hi >> np.uint64(61) == index)


def test_an_empty_side_partitions_into_empty_parts() -> None:
    empty = engine.empty_side()
    assert [len(p.hi) for p in partition(empty, 2)] == [0, 0, 0, 0]
    assert match_partitioned(empty, empty, ANALYTICS, bits=2).count == 0
