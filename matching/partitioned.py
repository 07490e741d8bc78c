"""The engine's partitioned form: merge key ranges separately, then group once.

Both sides are split by the leading bits of the key (DESIGN.md "Scale-out"). Equal keys share
their leading bits, so every match lies inside one partition and the union of the partitions'
pairs is exactly `engine.matched_pairs`. The pairs are small (two int32 per match), so the
grouping runs once on the caller, reusing `engine.groups_from_pairs`; with a Dask client the
merges run on the cluster's workers.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from matching.engine import Groups, Side, groups_from_pairs, matched_pairs

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["match_partitioned", "partition"]

Pairs = tuple[NDArray[np.int32], NDArray[np.int32]]


def partition(side: Side, bits: int) -> list[Side]:
    """Split a side into 2**bits key ranges by the leading bits of `hi`.

    Parts are views of the side's arrays (it is sorted by key, so each range is a slice); they
    keep global person indices, `n_people` and the attributes.
    """
    if not 0 <= bits <= 16:
        raise ValueError("bits must lie in 0..16")
    starts = np.arange(1, 2**bits, dtype=np.uint64) << np.uint64(64 - bits)
    cuts = [0, *np.searchsorted(side.hi, starts, side="left").tolist(), len(side.hi)]
    return [
        Side(
            side.hi[start:end],
            side.lo[start:end],
            side.person[start:end],
            side.consent[start:end],
            side.n_people,
            side.attributes,
        )
        for start, end in itertools.pairwise(cuts)
    ]


def match_partitioned(
    a: Side, b: Side, mask: int, *, bits: int = 4, client: Client | None = None
) -> Groups:
    """The same Groups as `engine.match`, merging each key range separately.

    With a Dask client, the parts are scattered and merged on the workers; otherwise they are
    merged in this process, one after the other.
    """
    a_parts = [_records_only(part) for part in partition(a, bits)]
    b_parts = [_records_only(part) for part in partition(b, bits)]
    if client is None:
        pairs = [matched_pairs(pa, pb, mask) for pa, pb in zip(a_parts, b_parts, strict=True)]
    else:
        pairs = _pairs_on_cluster(client, a_parts, b_parts, mask)
    pair_a = np.concatenate([p[0] for p in pairs]) if pairs else np.empty(0, np.int32)
    pair_b = np.concatenate([p[1] for p in pairs]) if pairs else np.empty(0, np.int32)
    return groups_from_pairs(pair_a, pair_b, a.n_people, b.n_people)


def _records_only(part: Side) -> Side:
    # Merging needs no attributes; leaving them out keeps what travels to workers small.
    return Side(part.hi, part.lo, part.person, part.consent, part.n_people, {})


def _pairs_on_cluster(
    client: Client, a_parts: list[Side], b_parts: list[Side], mask: int
) -> list[Pairs]:
    # hash=False: unique keys per call, so one request cancelling its data never takes away
    # data another (or the next) request scattered from the same arrays.
    a_futures = client.scatter(a_parts, hash=False)
    b_futures = client.scatter(b_parts, hash=False)
    futures = client.map(matched_pairs, a_futures, b_futures, mask=mask, pure=False)
    try:
        result: list[Pairs] = client.gather(futures)
    finally:
        client.cancel([*futures, *a_futures, *b_futures])
    return result
