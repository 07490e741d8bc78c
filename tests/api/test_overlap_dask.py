"""A hub configured with a Dask scheduler answers overlaps, breakdowns and offers exactly as the
in-process engine does (the partitioned form runs on a real LocalCluster)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from distributed import LocalCluster

from tests.api.matching_helpers import members, overlap
from tests.api.test_overlap import seed
from tests.conftest import Hub, launch_hub


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as running:
        yield running


@pytest.fixture(scope="module")
def dask_hub(
    backend: str, cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Hub]:
    with launch_hub(
        backend,
        tmp_path_factory.mktemp(f"dask-hub-{backend}"),
        HUB_MATCHING_DASK_SCHEDULER=cluster.scheduler_address,
        HUB_MATCHING_PARTITION_BITS="3",
    ) as running:
        yield running


def answers(hub: Hub) -> dict[str, Any]:
    a, b, partnership = members(hub)
    seed(hub, a, b)
    out = {}
    for by in (None, "self.tier", "partner.city", "self.tier,partner.city"):
        params = {"by": by} if by else {}
        response = overlap(hub, a, partnership, **params)
        assert response.status_code == 200, response.text
        out[by or ""] = response.json()
    return out


def test_the_cluster_gives_the_in_process_answers(
    dask_hub: Hub, hub: Hub, cluster: LocalCluster
) -> None:
    on_cluster = answers(dask_hub)
    # The merges really ran on the cluster's workers.
    assert "matched_pairs" in cluster.scheduler.task_prefixes
    assert on_cluster == answers(hub)
    assert on_cluster[""]["count"] == 30
