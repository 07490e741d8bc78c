"""The match-key arrays' files on disk: hub processes sharing one cache directory (scale-out on
one host) may save the same version at the same moment; each save succeeds and leaves one whole
copy, never half of one (the soak run of issue 19 saw a 500 here: both wrote into one partial
directory and the first rename pulled it away from the second)."""

from __future__ import annotations

import threading
from pathlib import Path
from uuid import uuid4

import numpy as np

from matching.array_files import Loaded, People, open_version, save
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
