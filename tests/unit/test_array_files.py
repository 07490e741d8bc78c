"""The match-key arrays' files on disk: hub processes sharing one cache directory (scale-out on
one host) may save the same version at the same moment; each save succeeds and leaves one whole
copy, never half of one (the soak run of issue 19 saw a 500 here: both wrote into one partial
directory and the first rename pulled it away from the second)."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from uuid import uuid4

import numpy as np

from matching.array_files import Loaded, People, discard_older, open_version, save
from matching.engine import Attribute, make_side

SAVERS, ROUNDS, ROWS = 4, 15, 20_000


def loaded(version: int) -> Loaded:
    rng = np.random.default_rng(version)
    keys = np.sort(rng.integers(0, 2**63, ROWS, dtype=np.uint64))
    side = make_side(
        keys,
        keys,
        np.arange(ROWS, dtype=np.int32),
        np.ones(ROWS, dtype=np.uint8),
        ROWS,
        {"tier": Attribute(np.zeros(ROWS, dtype=np.int32), ("gold",))},
    )
    refs = [f"c{i}".encode() for i in range(ROWS)]
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in refs])]).astype(np.int64)
    return Loaded(uuid4(), version, 1, side, People(b"".join(refs), offsets), frozenset())


def test_processes_saving_the_same_version_at_once_all_succeed(tmp_path: Path) -> None:
    failures: list[BaseException] = []
    for version in range(1, ROUNDS + 1):
        arrays = loaded(version)
        start = threading.Barrier(SAVERS)

        def saver(arrays: Loaded = arrays, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                save(tmp_path, arrays)
            except OSError as exc:
                failures.append(exc)

        threads = [threading.Thread(target=saver) for _ in range(SAVERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        reread = open_version(tmp_path, arrays.partner_id, version, 1)
        assert reread is not None
        assert np.array_equal(reread.side.hi, arrays.side.hi)
        assert reread.people.ref(ROWS - 1) == f"c{ROWS - 1}"
    assert failures == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_discarding_older_versions_keeps_newer_ones_unless_the_counter_never_got_there(
    tmp_path: Path,
) -> None:
    for version in (3, 4, 5, 6):
        save(tmp_path, replace(loaded(1), version=version))
    discard_older(tmp_path, 5, 1)
    # Older ones go; a newer one stays (another process saved it after a newer counter).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v5-k1", "v6-k1"]
    discard_older(tmp_path, 5, 1, counter=lambda: 5)
    # A counter that never reached 6 (a database restored from a backup): 6 goes too.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v5-k1"]
    save(tmp_path, replace(loaded(1), version=5, key_version=2))
    discard_older(tmp_path, 5, 2)  # the older match key's arrays go
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v5-k2"]


def test_a_saved_version_links_the_columns_it_shares_with_the_one_before(tmp_path: Path) -> None:
    before = loaded(1)
    save(tmp_path, before)
    after = replace(before, version=2)
    save(tmp_path, after, link_from=tmp_path / "v1-k1", unchanged={"hi", "lo", "blob"})
    for column in ("hi", "lo", "blob"):
        assert (tmp_path / "v2-k1" / f"{column}.npy").stat().st_nlink == 2
    assert (tmp_path / "v2-k1" / "consent.npy").stat().st_nlink == 1
    reread = open_version(tmp_path, before.partner_id, 2, 1)
    assert reread is not None
    assert np.array_equal(reread.side.lo, before.side.lo)


def test_small_partners_arrays_hold_no_file_descriptor(tmp_path: Path) -> None:
    """The admin matrix holds every active partner's arrays at once: a memory map per array
    kept a descriptor each, and a 50k-case Schemathesis run (thousands of small partners) got
    "Too many open files" (a 500). Small arrays are read; only large ones are mapped."""
    import os

    small = replace(loaded(1), version=1)
    save(tmp_path, small)
    before = len(os.listdir("/proc/self/fd"))
    held = [open_version(tmp_path, small.partner_id, 1, 1) for _ in range(50)]
    assert all(h is not None for h in held)
    assert len(os.listdir("/proc/self/fd")) == before
    assert all(np.array_equal(h.side.hi, small.side.hi) for h in held if h is not None)
