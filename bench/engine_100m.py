"""The matching engine on 100M x 100M records from memory-mapped .npy files ("100M on one machine").

Generates both sides once, streaming, already in key order (bench/results/engine100m/, removed
with --delete): 1M-record chunks, chunk k drawing its `hi` values in the k-th slice of the
64-bit range, so the files come out sorted without a global sort. A share (`--overlap`, 30 %)
of each B chunk's keys are taken from the A chunk of the same range; every record carries
`analytics` (bit 1) with probability 0.8, other purpose bits random, as in
bench/matching_engine.py. Person indices are an affine permutation of the record index (random
with respect to key order, as after a real sort). The planted answer, the number of shared keys
whose two records both carry bit 1, is counted while generating and saved in meta.json.

Each case runs in its own subprocess, so its peak RSS is its own:

  cold        files fsynced and evicted from the page cache (posix_fadvise DONTNEED, checked
              with mincore), then open (np.load mmap_mode="r", as matching/loader.py does) +
              engine.overlap, timed once
  cold-willneed  the same, with POSIX_FADV_WILLNEED asked for every file on a thread when the
              files are opened (the kernel reads ahead while the merge runs)
  warm        the same with the files in the page cache (read once before), median of --repeat
  duckdb      count(*) of the join, tables loaded into DuckDB (loading not timed)
  dask        partitioned.match_partitioned on a LocalCluster (2 worker processes, 1 thread
              each): the hub's path (parts scattered from the caller)
  dask-files  the same merges, but each worker opens its own key range from the files (only
              paths and offsets travel): the form that scales past one machine's memory

    .venv/bin/python bench/engine_100m.py --rows 100000000 --cases cold,warm,duckdb,dask
    .venv/bin/python bench/engine_100m.py --delete       # remove the generated files

Writes bench/results/engine_100m-<time>.json.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import mmap
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
DATA = RESULTS / "engine100m"
ANALYTICS = 1
COLUMNS = {"hi": np.uint64, "lo": np.uint64, "person": np.int32, "consent": np.uint8}
CHUNK = 1_000_000
# The 128-bit key as one UHUGEINT column, as bench/matching_engine.py builds it.
CREATE = {
    "a": "CREATE TABLE a AS SELECT (hi::UHUGEINT << 64) | lo::UHUGEINT AS k, consent FROM arrays",
    "b": "CREATE TABLE b AS SELECT (hi::UHUGEINT << 64) | lo::UHUGEINT AS k, consent FROM arrays",
}
CASES = ("cold", "cold-willneed", "warm", "duckdb", "dask", "dask-files")


# --------------------------------------------------------------------------- generation


def _multiplier(rows: int, fraction: float) -> int:
    m = int(rows * fraction) | 1
    while math.gcd(m, rows) != 1:
        m += 2
    return m


def _open_npy(path: Path, dtype: Any, rows: int) -> Any:
    handle = path.open("wb")
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype))}
    header |= {"fortran_order": False, "shape": (rows,)}
    np.lib.format.write_array_header_1_0(handle, header)
    return handle


def _consent(rng: np.random.Generator, n: int) -> NDArray[np.uint8]:
    carries = rng.random(n) < 0.8
    other = rng.integers(0, 4, n, dtype=np.uint8) << np.uint8(1)
    out: NDArray[np.uint8] = other | carries.astype(np.uint8)
    return out


def generate(rows: int, overlap: float, seed: int = 7) -> dict[str, Any]:
    """Write a_*.npy and b_*.npy (sorted by key) chunk by chunk; return the metadata."""
    DATA.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files = {
        (side, name): _open_npy(DATA / f"{side}_{name}.npy", dtype, rows)
        for side in "ab"
        for name, dtype in COLUMNS.items()
    }
    chunks = max(1, rows // CHUNK)
    width = (1 << 64) // chunks
    mult = {"a": _multiplier(rows, 0.6180339887), "b": _multiplier(rows, 0.4142135623)}
    planted = shared_total = written = 0
    start = time.perf_counter()
    for k in range(chunks):
        n = rows // chunks + (1 if k < rows % chunks else 0)
        base = np.uint64(k * width)
        a_hi = np.sort(base + rng.integers(0, width, n, dtype=np.uint64))
        a_lo = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
        a_consent = _consent(rng, n)
        m = round(n * overlap)
        taken = np.sort(rng.choice(n, m, replace=False))
        b_hi = np.concatenate([a_hi[taken], base + rng.integers(0, width, n - m, dtype=np.uint64)])
        b_lo = np.concatenate([a_lo[taken], rng.integers(0, 2**64, n - m, dtype=np.uint64)])
        b_consent = _consent(rng, n)
        # The planted overlap: shared keys (B's first m before ordering) consented on both sides.
        planted += int(np.count_nonzero(a_consent[taken] & b_consent[:m] & ANALYTICS))
        shared_total += m
        # No accidental collision between B's new keys and A's (it would change the answer).
        fresh = b_hi[m:]
        at = np.searchsorted(a_hi, fresh)
        assert not np.any(a_hi[np.minimum(at, n - 1)] == fresh), "accidental hi collision"
        order = np.lexsort((b_lo, b_hi))
        b_hi, b_lo, b_consent = b_hi[order], b_lo[order], b_consent[order]
        index = np.arange(written, written + n, dtype=np.int64)
        columns = {
            "a": (a_hi, a_lo, (index * mult["a"]) % rows, a_consent),
            "b": (b_hi, b_lo, (index * mult["b"]) % rows, b_consent),
        }
        for side, values in columns.items():
            for (name, dtype), value in zip(COLUMNS.items(), values, strict=True):
                np.ascontiguousarray(value, dtype=dtype).tofile(files[side, name])
        written += n
    for handle in files.values():
        handle.close()
    meta = {
        "rows": rows,
        "overlap": overlap,
        "seed": seed,
        "shared_keys": shared_total,
        "planted": planted,
        "generate_seconds": time.perf_counter() - start,
        "generate_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "bytes": sum((DATA / f"{s}_{c}.npy").stat().st_size for s in "ab" for c in COLUMNS),
    }
    (DATA / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta


# --------------------------------------------------------------------------- page cache


def _paths() -> list[Path]:
    return [DATA / f"{side}_{name}.npy" for side in "ab" for name in COLUMNS]


def evict() -> None:
    for path in _paths():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def resident_fraction() -> float:
    """The share of the files' pages in the page cache (mincore on a fresh mapping)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    page = mmap.PAGESIZE
    resident = total = 0
    for path in _paths():
        size = path.stat().st_size
        with path.open("rb") as handle:
            mapped = mmap.mmap(handle.fileno(), size, prot=mmap.PROT_READ)
        view = np.frombuffer(mapped, dtype=np.uint8)
        pages = (size + page - 1) // page
        vector = ctypes.create_string_buffer(pages)
        if libc.mincore(ctypes.c_void_p(view.ctypes.data), size, vector) != 0:
            raise OSError(ctypes.get_errno(), "mincore failed")
        resident += int(np.count_nonzero(np.frombuffer(vector.raw, dtype=np.uint8) & 1))
        total += pages
        del view
        mapped.close()
    return resident / total


def read_all() -> None:
    for path in _paths():
        with path.open("rb") as handle:
            while handle.read(1 << 24):
                pass


def meminfo_cached_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Cached:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --------------------------------------------------------------------------- measuring


class RssSampler:
    """Peaks of RssAnon and RssFile (read from /proc/self/status every 20 ms)."""

    def __init__(self) -> None:
        self.peak = {"RssAnon": 0, "RssFile": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def status() -> dict[str, int]:
        found = {}
        for line in Path("/proc/self/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                found[name] = int(value.split()[0])  # kB
        return found

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.sample()

    def sample(self) -> None:
        now = self.status()
        for name in self.peak:
            self.peak[name] = max(self.peak[name], now[name])

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def report(self) -> dict[str, float]:
        end = self.status()
        return {
            "peak_rss_mb": end["VmHWM"] / 1024,
            "peak_rss_anon_mb": self.peak["RssAnon"] / 1024,
            "peak_rss_file_mb": self.peak["RssFile"] / 1024,
            "end_rss_anon_mb": end["RssAnon"] / 1024,
            "end_rss_file_mb": end["RssFile"] / 1024,
        }


def prefetch() -> None:
    """Ask the kernel to read every file ahead (POSIX_FADV_WILLNEED), from a thread."""

    def run() -> None:
        for path in _paths():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            finally:
                os.close(fd)

    threading.Thread(target=run, daemon=True).start()


def open_sides(*, willneed: bool = False) -> tuple[Any, Any]:
    """The two sides from the files, built as matching/loader.py builds them (no copies)."""
    from matching.engine import Side

    rows = json.loads((DATA / "meta.json").read_text())["rows"]
    if willneed:
        prefetch()
    sides = []
    for side in "ab":
        columns = {
            name: np.asarray(np.load(DATA / f"{side}_{name}.npy", mmap_mode="r"))
            for name in COLUMNS
        }
        sides.append(Side(n_people=rows, attributes={}, **columns))
    return sides[0], sides[1]


def run_engine(*, willneed: bool = False) -> dict[str, float | int]:
    from matching import engine

    start = time.perf_counter()
    a, b = open_sides(willneed=willneed)
    opened = time.perf_counter()
    pair_a, pair_b = engine.matched_pairs(a, b, ANALYTICS)
    merged = time.perf_counter()
    groups = engine.groups_from_pairs(pair_a, pair_b, a.n_people, b.n_people)
    end = time.perf_counter()
    return {
        "seconds": end - start,
        "open_seconds": opened - start,
        "merge_seconds": merged - opened,
        "group_seconds": end - merged,
        "pairs": len(pair_a),
        "result": groups.count,
    }


def measure_engine(case: str, repeat: int) -> dict[str, Any]:
    from matching import engine

    engine.warm_up()  # numba kernels from the on-disk cache, before the clock and the sampler
    found: dict[str, Any] = {}
    with RssSampler() as sampler:
        if case.startswith("cold"):
            found = run_engine(willneed=case == "cold-willneed")
        else:
            runs = [run_engine() for _ in range(repeat)]
            found = dict(runs[0])
            for name in ("seconds", "open_seconds", "merge_seconds", "group_seconds"):
                found[name] = statistics.median(r[name] for r in runs)
            found["all_seconds"] = [r["seconds"] for r in runs]
    return found | sampler.report()


def measure_duckdb(repeat: int) -> dict[str, Any]:
    import duckdb

    with RssSampler() as sampler:
        a, b = open_sides()
        con = duckdb.connect()
        con.execute("SET threads = 2")
        con.execute("SET memory_limit = '10GB'")
        con.execute(f"SET temp_directory = '{RESULTS / 'duckdb_tmp'}'")
        start = time.perf_counter()
        for name, side in (("a", a), ("b", b)):
            con.register("arrays", {"hi": side.hi, "lo": side.lo, "consent": side.consent})
            con.execute(CREATE[name])
            con.unregister("arrays")
        load_s = time.perf_counter() - start
        query = (
            "SELECT count(*) FROM a JOIN b ON a.k = b.k"
            " WHERE a.consent & 1 = 1 AND b.consent & 1 = 1"
        )
        times, result = [], -1
        for _ in range(repeat):
            begin = time.perf_counter()
            row = con.execute(query).fetchone()
            times.append(time.perf_counter() - begin)
            assert row is not None
            result = int(row[0])
    return {
        "seconds": statistics.median(times),
        "all_seconds": times,
        "load_seconds": load_s,
        "result": result,
    } | sampler.report()


def _merge_range_from_files(
    directory: str, a_range: tuple[int, int], b_range: tuple[int, int], rows: int, mask: int
) -> tuple[Any, Any]:
    """On a worker: open the files' key range (mmap) and merge it (only offsets travelled)."""
    from matching.engine import Side, matched_pairs

    def part(side: str, bounds: tuple[int, int]) -> Side:
        start, end = bounds
        columns = {
            name: np.asarray(np.load(f"{directory}/{side}_{name}.npy", mmap_mode="r"))[start:end]
            for name in COLUMNS
        }
        return Side(n_people=rows, attributes={}, **columns)

    return matched_pairs(part("a", a_range), part("b", b_range), mask)


def measure_dask(case: str, bits: int) -> dict[str, Any]:
    import itertools

    from distributed import Client, LocalCluster, get_task_stream

    from matching import engine
    from matching.partitioned import match_partitioned, partition

    engine.warm_up()
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(engine.warm_up)  # numba kernels loaded on each worker before the clock
        with RssSampler() as sampler, get_task_stream(client) as stream:
            start = time.perf_counter()
            a, b = open_sides()
            if case == "dask":
                groups = match_partitioned(a, b, ANALYTICS, bits=bits, client=client)
            else:
                a_parts, b_parts = partition(a, bits), partition(b, bits)
                a_cuts = list(itertools.accumulate([0, *(len(p.hi) for p in a_parts)]))
                b_cuts = list(itertools.accumulate([0, *(len(p.hi) for p in b_parts)]))
                futures = [
                    client.submit(
                        _merge_range_from_files, str(DATA), ar, br, a.n_people, ANALYTICS,
                        pure=False,
                    )
                    for ar, br in zip(
                        itertools.pairwise(a_cuts), itertools.pairwise(b_cuts), strict=True
                    )
                ]  # fmt: skip
                pairs = client.gather(futures)
                groups = engine.groups_from_pairs(
                    np.concatenate([p[0] for p in pairs]),
                    np.concatenate([p[1] for p in pairs]),
                    a.n_people,
                    b.n_people,
                )
            seconds = time.perf_counter() - start
        workers = client.run(lambda: RssSampler.status())
    computes, transfers = [], []
    for task in stream.data:
        for phase in task["startstops"]:
            span = phase["stop"] - phase["start"]
            (computes if phase["action"] == "compute" else transfers).append(span)
    part_rows = len(a.hi) / 2**bits
    return {
        "seconds": seconds,
        "result": groups.count,
        "bits": bits,
        "partitions": 2**bits,
        "task_compute_seconds": sorted(computes),
        "task_compute_median": statistics.median(computes) if computes else None,
        "transfer_seconds_total": sum(transfers),
        "shipped_per_partition_mb": (
            2 * part_rows * 21 / 2**20 if case == "dask" else 0.0  # hi, lo, person, consent
        ),
        "returned_per_partition_mb": groups_pairs_mb(groups, 2**bits),
        "worker_peak_rss_mb": [w["VmHWM"] / 1024 for w in workers.values()],
        "worker_rss_anon_mb": [w["RssAnon"] / 1024 for w in workers.values()],
    } | sampler.report()


def groups_pairs_mb(groups: Any, partitions: int) -> float:
    # One key per person here, so pairs == groups; each pair is two int32.
    return float(groups.count * 8 / partitions / 2**20)


def measure(case: str, repeat: int, bits: int) -> dict[str, Any]:
    if case in ("cold", "cold-willneed", "warm"):
        found = measure_engine(case, repeat)
    elif case == "duckdb":
        found = measure_duckdb(repeat)
    else:
        found = measure_dask(case, bits)
    return {"case": case, **found}


# --------------------------------------------------------------------------- driver


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def in_subprocess(case: str, repeat: int, bits: int) -> dict[str, Any]:
    before: dict[str, Any] = {"load_before": loadavg(), "cached_mb_before": meminfo_cached_mb()}
    if case.startswith("cold"):
        evict()
        before["resident_after_evict"] = resident_fraction()
    else:
        read_all()
        before["resident_before"] = resident_fraction()
    before["cached_mb_at_start"] = meminfo_cached_mb()
    command = [sys.executable, __file__, "--only", case, "--repeat", str(repeat)]
    command += ["--bits", str(bits)]
    output = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
    found: dict[str, Any] = json.loads(output.stdout.strip().splitlines()[-1])
    found |= before
    found["load_after"] = loadavg()
    found["cached_mb_after"] = meminfo_cached_mb()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000_000)
    parser.add_argument("--overlap", type=float, default=0.3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--cases", default="cold,cold-willneed,warm,duckdb,dask,dask-files")
    parser.add_argument("--only", choices=CASES, help="measure one case in this process")
    parser.add_argument("--delete", action="store_true", help="remove the generated files")
    args = parser.parse_args()
    if args.only:
        print(json.dumps(measure(args.only, args.repeat, args.bits)))
        return
    if args.delete:
        shutil.rmtree(DATA, ignore_errors=True)
        return
    meta_path = DATA / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
    if meta is None or meta["rows"] != args.rows or meta["overlap"] != args.overlap:
        meta = generate(args.rows, args.overlap)
    print(json.dumps({"meta": meta}), flush=True)
    results = []
    for case in args.cases.split(","):
        found = in_subprocess(case, args.repeat, args.bits)
        found["correct"] = found["result"] == meta["planted"]
        results.append(found)
        print(json.dumps(found), flush=True)
    git = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"engine_100m-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"git": git, "meta": meta, "results": results}, indent=2))
    print(out)


if __name__ == "__main__":
    main()
