"""The matching arrays follow every upload, consent change and erasure before it is answered
(issue 18 item 1): the apply of a bulk upload builds them before the upload is completed; a
consent change or an erasure patches the previous version's; the first question after either
only opens files. The patched arrays equal a fresh build, checked on both databases with
random changes sent as real requests.

The hubs here run no array maintenance (its interval is an hour), so every array a question
finds was left by an upload's apply or by a patch, and nothing deletes files behind a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np
import pytest
from sqlalchemy import delete, select, update

from hub.core.db import create_hub_sync_engine
from matching import array_files, loader
from matching import patches as array_patches
from matching.array_files import Loaded, People, open_version, version_name
from matching.engine import Side
from matching.loader import ArrayCache
from partners.identifiers.service import APPLY_CHANGES, ERASURES, STATE
from partners.identifiers.uploads.erasures import forget_apply_changes
from tests.api.matching_helpers import (
    ALL,
    Member,
    email,
    file_backed,
    members,
    overlap,
    phone,
    rec,
)
from tests.api.uploads_helpers import ndjson, send, upload_and_wait, wait_for
from tests.conftest import Hub, launch_hub, start_hub

QUIET = {"HUB_MATCHING_MAINTENANCE_SECONDS": "3600"}


@pytest.fixture(scope="module")
def hub(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with launch_hub(backend, tmp_path_factory.mktemp(f"arrays-{backend}"), **QUIET) as running:
        yield running


def cache_of(hub: Hub) -> ArrayCache:
    cache: ArrayCache = hub.app.state.array_cache
    return cache


def bulk(hub: Hub, member: Member, records: list[dict[str, Any]]) -> None:
    done = upload_and_wait(hub, member.headers, ndjson(records))
    assert done["status"] == "completed", done


def version_of(hub: Hub, member: Member) -> int:
    response = member.get(hub, "/v1/identifiers/summary")
    assert response.status_code == 200, response.text
    return int(response.json()["version"])


def saved(hub: Hub, member: Member, version: int | None = None) -> Loaded | None:
    key_version = hub.app.state.identifier_crypto.keys.match_version
    partner_id = UUID(member.id)
    version = version_of(hub, member) if version is None else version
    return open_version(hub.data_dir / "arrays" / member.id, partner_id, version, key_version)


def fresh_build(hub: Hub, member: Member) -> tuple[int, Side, People, frozenset[str]]:
    """What a build from the records gives now (the reference a patch must equal)."""
    engine = create_hub_sync_engine(hub.database_url, writer=False)
    crypto = hub.app.state.identifier_crypto
    try:
        with loader._snapshot(engine) as conn:
            version = loader._current_version(conn, UUID(member.id))
            side, people, over = loader._build(
                conn, UUID(member.id), crypto, crypto.keys.match_version
            )
    finally:
        engine.dispose()
    return version, side, people, over


def assert_same_as_a_build(hub: Hub, member: Member) -> None:
    version, side, people, over = fresh_build(hub, member)
    patched = saved(hub, member, version)
    assert patched is not None, "no arrays saved for the current version"
    for column in ("hi", "lo", "person", "consent"):
        got, want = getattr(patched.side, column), getattr(side, column)
        assert got.dtype == want.dtype, column
        np.testing.assert_array_equal(got, want, err_msg=column)
    assert patched.side.n_people == side.n_people
    assert list(patched.side.attributes) == list(side.attributes)
    for name, attribute in side.attributes.items():
        got_attribute = patched.side.attributes[name]
        assert got_attribute.values == attribute.values, name
        assert got_attribute.codes.dtype == attribute.codes.dtype, name
        np.testing.assert_array_equal(got_attribute.codes, attribute.codes, err_msg=name)
    assert patched.people.blob == people.blob
    np.testing.assert_array_equal(patched.people.offsets, people.offsets)
    assert patched.over_quota == over


def file_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())


# -- the apply builds ---------------------------------------------------------------------------


def shared_pair(hub: Hub, size: int = 30, **terms: Any) -> tuple[Member, Member, str]:
    a, b, partnership = members(hub, **terms)
    bulk(hub, a, [rec(email(f"{a.id}{n}"), f"a{n:03d}", tier="gold") for n in range(size)])
    bulk(hub, b, [rec(email(f"{a.id}{n}"), f"b{n:03d}") for n in range(size)])
    return a, b, partnership


def test_a_completed_upload_leaves_the_arrays_the_first_question_opens(hub: Hub) -> None:
    a, b, partnership = shared_pair(hub)
    for member in (a, b):
        assert saved(hub, member) is not None  # files of the version the upload made
    builds = cache_of(hub).builds
    answer = overlap(hub, a, partnership)
    assert answer.status_code == 200, answer.text
    assert answer.json()["count"] == 30
    assert cache_of(hub).builds == builds  # opened (or held), not built from the records


@pytest.fixture(scope="module")
def split(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Hub, Hub]]:
    """A hub that answers and never applies uploads, and one that applies them: one database,
    one data directory (shared storage), no maintenance on either."""
    data_dir = tmp_path_factory.mktemp(f"split-{backend}")
    with launch_hub(backend, data_dir, HUB_UPLOADS_PROCESS_IN_SERVE="false", **QUIET) as front:
        worker = Hub(
            start_hub(front.database_url, data_dir, **QUIET), front.database_url, data_dir, "", ""
        )
        try:
            yield front, worker
        finally:
            worker.http.close()
            worker.server.stop()


def test_an_upload_applied_by_another_process_leaves_files_this_one_opens(
    split: tuple[Hub, Hub],
) -> None:
    front, worker = split
    a, _, partnership = shared_pair(front)
    assert cache_of(worker).builds >= 2  # the applying process built them
    answer = overlap(front, a, partnership)
    assert answer.status_code == 200, answer.text
    assert answer.json()["count"] == 30
    assert cache_of(front).builds == 0  # the answering process built nothing


# -- consent changes and erasures patch ---------------------------------------------------------


def test_a_withdrawal_is_answered_with_patched_arrays_that_no_longer_count_the_person(
    hub: Hub,
) -> None:
    a, _, partnership = shared_pair(hub, size=40)
    assert overlap(hub, a, partnership).json()["count"] == 40
    cache = cache_of(hub)
    builds, patches = cache.builds, cache.patches
    withdrawn = [{"customer_ref": f"a{n:03d}", "consents": ["joint_offers"]} for n in range(12)]
    response = a.post(hub, "/v1/identifiers/consents", {"updates": withdrawn})
    assert response.status_code == 200, response.text
    assert cache.patches == patches + 1  # patched before the answer was sent
    assert saved(hub, a) is not None
    answer = overlap(hub, a, partnership)
    assert answer.status_code == 200, answer.text
    assert answer.json()["count"] == 28  # twelve of the forty no longer count
    assert cache.builds == builds
    assert_same_as_a_build(hub, a)


def test_an_erased_customer_ref_is_in_no_array_file_once_the_erasure_is_answered(
    hub: Hub,
) -> None:
    a, _, partnership = shared_pair(hub, size=30)
    assert overlap(hub, a, partnership).json()["count"] == 30
    directory = hub.data_dir / "arrays" / a.id
    assert b"a007" in file_bytes(directory)
    builds = cache_of(hub).builds
    erased = a.post(hub, "/v1/identifiers/erase", {"customer_refs": ["a007"]})
    assert erased.status_code == 200, erased.text
    assert b"a007" not in file_bytes(directory)  # neither the new version nor an older one
    assert saved(hub, a) is not None  # the patched version is there
    assert_same_as_a_build(hub, a)
    assert cache_of(hub).builds == builds


@pytest.mark.parametrize("change", ["consents", "erase"])
def test_patched_arrays_are_served_from_their_files_not_kept_on_the_heap(
    hub: Hub, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """A patch keeps, like a build, the memory-mapped files it saved rather than its heap
    copies: kept, every erasure's rewrite of a 1M-record partner stayed in each serving
    process's heap (the soak's serving processes grew 60-90 % from minute 5 to minute 10).
    (Arrays this small are read, not mapped, unless the threshold says otherwise.)"""
    monkeypatch.setattr(array_files, "MMAP_MIN_BYTES", 0)
    a, _, partnership = shared_pair(hub, size=40)
    assert overlap(hub, a, partnership).json()["count"] == 40
    cache = cache_of(hub)
    patches = cache.patches
    if change == "erase":
        refs = [f"a{n:03d}" for n in range(12)]
        response = a.post(hub, "/v1/identifiers/erase", {"customer_refs": refs})
    else:
        update = [{"customer_ref": f"a{n:03d}", "consents": ["joint_offers"]} for n in range(12)]
        response = a.post(hub, "/v1/identifiers/consents", {"updates": update})
    assert response.status_code == 200, response.text
    assert cache.patches == patches + 1
    held = cache._memory[UUID(a.id)]
    assert held.version == version_of(hub, a)
    for array in (held.side.hi, held.side.lo, held.side.person, held.side.consent):
        assert file_backed(array)
    answer = overlap(hub, a, partnership)
    assert answer.status_code == 200, answer.text
    assert answer.json()["count"] == 28  # twelve of the forty no longer count
    assert_same_as_a_build(hub, a)


def test_an_erasure_over_an_attribute_past_its_quota_is_not_patched_but_still_leaves_disk(
    hub: Hub,
) -> None:
    a, _, _ = members(hub)
    bulk(hub, a, [rec(email(f"{a.id}q{n}"), f"q{n:03d}", code=f"c{n}") for n in range(101)])
    assert saved(hub, a) is not None
    patches = cache_of(hub).patches
    directory = hub.data_dir / "arrays" / a.id
    erased = a.post(hub, "/v1/identifiers/erase", {"customer_refs": ["q050"]})
    assert erased.status_code == 200, erased.text
    assert cache_of(hub).patches == patches  # skipped: the quota may now be met
    assert b"q050" not in file_bytes(directory)
    assert saved(hub, a) is None  # the next question builds it


def people_records(
    rng: random.Random, tag: str, seed: int, people: int
) -> tuple[list[Any], list[Any]]:
    """Email records for everyone, phone records (sent later, so newer) for about half, with
    attributes that disagree between a person's records."""
    emails, phones = [], []
    for n in range(people):
        consents = [c for c in ALL if rng.random() < 0.6]
        attributes = {"tier": rng.choice(["gold", "silver", "blue"])}
        if rng.random() < 0.7:
            attributes["city"] = rng.choice(["paris", "rome", "oslo", "lima"])
        emails.append(rec(email(f"{tag}{n}"), f"p{n:02d}", consents, **attributes))
        if rng.random() < 0.5:
            other = {"tier": rng.choice(["gold", "platinum"])} if rng.random() < 0.7 else {}
            phones.append(rec(phone(seed * 1000 + n), f"p{n:02d}", consents, "phone", **other))
    return emails, phones


def upserted_records(
    rng: random.Random, tag: str, seed: int, refs: list[str], sent: list[Any]
) -> list[Any]:
    """A synchronous upsert of a few records: new people, new records of known people, known
    records with other consents or attributes, and known keys moved to another person; every
    attribute value one the partner's records already hold (a new one skips the patch)."""
    records = []
    for _ in range(rng.randint(1, 4)):
        consents = [c for c in ALL if rng.random() < 0.6]
        tier = {"tier": rng.choice(["gold", "silver"])} if rng.random() < 0.6 else {}
        roll = rng.random()
        if roll < 0.3:  # someone new
            n = rng.randint(0, 10**6)
            records.append(rec(email(f"{tag}new{n}"), f"n{n:07d}", consents, **tier))
        elif roll < 0.5 and refs:  # a known person's new record
            key = phone(seed * 10**7 + rng.randint(0, 10**6))
            records.append(rec(key, rng.choice(refs), consents, "phone", **tier))
        else:  # a known key: same person (consents, attributes) or moved to another one
            known = rng.choice(sent)
            owner = known["customer_ref"] if roll < 0.75 or not refs else rng.choice(refs)
            records.append(rec(known["id_hash"], owner, consents, known["id_type"], **tier))
    unique = {(r["id_type"], r["id_hash"]): r for r in records}  # one record per key
    return list(unique.values())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_patched_arrays_equal_a_fresh_build_after_random_changes(hub: Hub, seed: int) -> None:
    rng = random.Random(seed)
    a, _, _ = members(hub)
    emails, phones = people_records(rng, f"{a.id}-{seed}-", seed, 30)
    bulk(hub, a, emails)
    bulk(hub, a, phones)  # newer: a person's phone record's attributes win
    assert_same_as_a_build(hub, a)
    cache = cache_of(hub)
    refs = sorted({r["customer_ref"] for r in emails})
    hashes = [r["id_hash"] for r in emails + phones]
    for _ in range(12):
        patches, version = cache.patches, version_of(hub, a)
        kind = rng.choice(["consents", "erase_people", "erase_hashes", "upsert", "upsert"])
        if kind == "upsert":
            records = upserted_records(rng, a.id, seed, refs, emails + phones)
            refs = sorted({*refs, *(r["customer_ref"] for r in records)})
            hashes = sorted({*hashes, *(r["id_hash"] for r in records)})
            response = a.post(hub, "/v1/identifiers", {"records": records})
        elif kind == "consents":
            chosen = [*rng.sample(refs, min(len(refs), rng.randint(1, 5))), "nobody"]
            body: dict[str, Any] = {
                "updates": [
                    {"customer_ref": ref, "consents": [c for c in ALL if rng.random() < 0.5]}
                    for ref in chosen
                ]
            }
            response = a.post(hub, "/v1/identifiers/consents", body)
        elif kind == "erase_people":
            chosen = rng.sample(refs, min(len(refs), rng.randint(1, 2)))
            refs = [ref for ref in refs if ref not in chosen]
            response = a.post(hub, "/v1/identifiers/erase", {"customer_refs": chosen})
        else:
            chosen = rng.sample(hashes, min(len(hashes), rng.randint(1, 3)))
            hashes = [h for h in hashes if h not in chosen]
            response = a.post(hub, "/v1/identifiers/erase", {"id_hashes": chosen})
        assert response.status_code == 200, response.text
        assert version_of(hub, a) == version + 1
        assert cache.patches == patches + 1, kind
        assert_same_as_a_build(hub, a)


def test_a_synchronous_upsert_is_answered_with_patched_arrays(hub: Hub) -> None:
    """A new person, a known person's second record and a key moved from one person to
    another: the next question counts them, from files the upsert left, built by no one."""
    a, b, partnership = shared_pair(hub, size=20)
    assert overlap(hub, a, partnership).json()["count"] == 20
    cache = cache_of(hub)
    builds, patches = cache.builds, cache.patches
    b_records = [rec(email(f"{a.id}{n}"), f"b{n:03d}") for n in range(20, 32)]
    response = b.post(hub, "/v1/identifiers", {"records": b_records})
    assert response.status_code == 200, response.text
    assert cache.patches == patches + 1
    assert_same_as_a_build(hub, b)
    a_records = [
        *[rec(email(f"{a.id}{n}"), f"a{n:03d}", tier="gold") for n in range(20, 32)],
        rec(phone(7), "a000", None, "phone", tier="gold"),  # a000's second record
        rec(email(f"{a.id}1"), "a000", tier="gold"),  # a001's key moves to a000
    ]
    response = a.post(hub, "/v1/identifiers", {"records": a_records})
    assert response.status_code == 200, response.text
    assert cache.patches == patches + 2
    assert_same_as_a_build(hub, a)
    answer = overlap(hub, a, partnership)
    assert answer.status_code == 200, answer.text
    # 32 keys in common; a000 now holds a001's, so a001 (no record left) is gone: 31 people.
    assert answer.json()["count"] == 31
    assert cache.builds == builds


def test_an_upsert_bringing_an_attribute_value_not_held_is_built_not_patched(hub: Hub) -> None:
    a, _, partnership = shared_pair(hub, size=20)
    patches = cache_of(hub).patches
    response = a.post(
        hub, "/v1/identifiers", {"records": [rec(email(f"{a.id}3"), "a003", tier="jade")]}
    )
    assert response.status_code == 200, response.text
    assert cache_of(hub).patches == patches  # skipped: "jade" might put tier over its quota
    assert saved(hub, a) is None
    assert overlap(hub, a, partnership).status_code == 200  # the question builds it
    assert_same_as_a_build(hub, a)


# -- never a file under a version it does not match ----------------------------------------------


@pytest.fixture
def racing_withdrawal(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Member, ArrayCache]]:
    """A partner, and a cache whose next build is raced: after it read the partner's counter
    and before it reads the rows, the partner withdraws p00's consents (a real request,
    committed at once)."""
    a, _, _ = members(hub)
    bulk(hub, a, [rec(email(f"{a.id}r{n}"), f"p{n:02d}") for n in range(20)])
    engine = create_hub_sync_engine(hub.database_url, writer=False)
    cache = ArrayCache(engine, hub.app.state.identifier_crypto, hub.data_dir / "arrays")
    build = loader._build
    raced: list[UUID] = []

    def withdrawal_then_build(conn: Any, partner_id: UUID, *args: Any, **kw: Any) -> Any:
        if not raced and partner_id == UUID(a.id):
            raced.append(partner_id)
            body = {"updates": [{"customer_ref": "p00", "consents": []}]}
            response = a.post(hub, "/v1/identifiers/consents", body)
            assert response.status_code == 200, response.text
        return build(conn, partner_id, *args, **kw)

    # The next read builds: no files, and the hub holds none in memory to patch from.
    for entry in (hub.data_dir / "arrays" / a.id).iterdir():
        if not entry.name.startswith("."):
            for file in entry.iterdir():
                file.unlink()
            entry.rmdir()
    cache_of(hub).forget(UUID(a.id), before=2**31)
    monkeypatch.setattr(loader, "_build", withdrawal_then_build)
    try:
        yield a, cache
    finally:
        engine.dispose()


def test_a_change_committed_during_a_build_is_not_saved_under_the_older_version(
    hub: Hub, racing_withdrawal: tuple[Member, ArrayCache]
) -> None:
    a, cache = racing_withdrawal
    built = cache._get_sync(UUID(a.id))
    assert version_of(hub, a) == built.version + 1  # the withdrawal came after the counter
    (person,) = built.index_of(["p00"])
    on_disk = saved(hub, a, built.version)
    assert on_disk is not None
    # The files of the counter read hold p00's consents as they were then.
    assert (on_disk.side.consent[on_disk.side.person == person] == 7).all()


def test_the_apply_catches_up_when_a_change_lands_during_its_build(
    hub: Hub, racing_withdrawal: tuple[Member, ArrayCache]
) -> None:
    """The withdrawal's patch (in the hub) waits for the build under way, then patches from
    its files; the apply's prepare waits for that patch instead of building again."""
    a, cache = racing_withdrawal
    patches = cache_of(hub).patches
    prepared = asyncio.run(cache.prepare(UUID(a.id)))
    assert prepared.version == version_of(hub, a)  # caught up with the withdrawal
    assert cache.builds == 1
    assert cache_of(hub).patches == patches + 1
    assert_same_as_a_build(hub, a)
    assert version_name(prepared.version - 1, prepared.key_version) not in {
        p.name for p in (hub.data_dir / "arrays" / a.id).iterdir()
    }


# -- several processes: one build per version, patches waited for -----------------------------


@pytest.fixture
def unbuilt(hub: Hub) -> Iterator[tuple[Member, list[ArrayCache]]]:
    """A partner whose current version has no files anywhere, and two array caches over the
    hub's database and directory: two more hub processes, as far as the arrays go."""
    a, _, _ = members(hub)
    bulk(hub, a, [rec(email(f"{a.id}u{n}"), f"u{n:02d}") for n in range(25)])
    remove_versions(hub, a)
    engines = [create_hub_sync_engine(hub.database_url, writer=False) for _ in range(2)]
    crypto = hub.app.state.identifier_crypto
    try:
        yield a, [ArrayCache(engine, crypto, hub.data_dir / "arrays") for engine in engines]
    finally:
        for engine in engines:
            engine.dispose()


def remove_versions(hub: Hub, member: Member) -> None:
    for entry in (hub.data_dir / "arrays" / member.id).iterdir():
        if not entry.name.startswith("."):
            for file in entry.iterdir():
                file.unlink()
            entry.rmdir()
    cache_of(hub).forget(UUID(member.id), before=2**31)


def test_processes_needing_the_same_missing_version_build_it_once(
    hub: Hub, unbuilt: tuple[Member, list[ArrayCache]], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, caches = unbuilt
    build = loader._build

    def slow_build(*args: Any) -> Any:
        time.sleep(0.5)  # long enough for the other process to arrive meanwhile
        return build(*args)

    monkeypatch.setattr(loader, "_build", slow_build)
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(lambda cache: cache._get_sync(UUID(a.id)), caches))
    assert sum(cache.builds for cache in caches) == 1  # the second opened the first's files
    assert {loaded.version for loaded in got} == {version_of(hub, a)}
    np.testing.assert_array_equal(got[0].side.hi, got[1].side.hi)
    assert_same_as_a_build(hub, a)


def test_a_question_waits_for_a_patch_under_way_in_another_process(
    hub: Hub, unbuilt: tuple[Member, list[ArrayCache]]
) -> None:
    """Another process committed a withdrawal and is still writing its patched files: a
    question here opens them once they are there; it neither builds nor answers from the
    arrays of before the withdrawal."""
    a, (asking, patching) = unbuilt
    partner = UUID(a.id)
    directory = hub.data_dir / "arrays" / a.id
    before = patching._get_sync(partner)  # the version before, on disk
    body = {"updates": [{"customer_ref": "u03", "consents": []}]}
    response = a.post(hub, "/v1/identifiers/consents", body)
    assert response.status_code == 200, response.text
    version = version_of(hub, a)
    assert version == before.version + 1
    # The hub patched it at once; as seen from here, that process is not done yet.
    patched = saved(hub, a, version)
    assert patched is not None
    remove_version(directory, version, before.key_version)
    array_files.mark_patching(directory, version, before.key_version)

    def patch_finishes() -> None:
        time.sleep(0.5)
        array_files.save(directory, patched)
        array_files.unmark_patching(directory, version, before.key_version)

    finisher = threading.Thread(target=patch_finishes)
    finisher.start()
    try:
        got = asyncio.run(asking.get(partner))
    finally:
        finisher.join()
    assert asking.builds == 0  # waited for the patch, read no record
    assert got.version == version
    (person,) = got.index_of(["u03"])
    assert (got.side.consent[got.side.person == person] == 0).all()  # the withdrawal is in
    assert_same_as_a_build(hub, a)


def test_a_question_does_not_wait_for_a_patch_given_up_long_ago(
    hub: Hub, unbuilt: tuple[Member, list[ArrayCache]]
) -> None:
    """A marker left by a stopped process (older than PATCH_MARKER_SECONDS) holds no one:
    the question builds the version itself, and the maintenance removes the marker."""
    a, (asking, _) = unbuilt
    directory = hub.data_dir / "arrays" / a.id
    version = version_of(hub, a)
    key_version = hub.app.state.identifier_crypto.keys.match_version
    array_files.mark_patching(directory, version, key_version)
    marker = array_files.patch_marker(directory, version, key_version)
    old = time.time() - array_files.PATCH_MARKER_SECONDS - 1
    os.utime(marker, (old, old))
    assert not array_files.patch_under_way(directory, version, key_version)
    got = asyncio.run(asking.get(UUID(a.id)))
    assert got.version == version
    assert asking.builds == 1
    assert not marker.exists()  # removed with the older versions after the build


def remove_version(directory: Path, version: int, key_version: int) -> None:
    target = directory / version_name(version, key_version)
    for file in target.iterdir():
        file.unlink()
    target.rmdir()


def test_a_patch_waits_for_the_version_before_when_another_process_is_patching_it(
    hub: Hub,
) -> None:
    """Two withdrawals answered by two processes one after the other: the second's patch
    finds the first's files not written yet, waits for them, and patches from them (before,
    it gave up and every process built the version from the records)."""
    a, _, partnership = shared_pair(hub, size=30)
    assert overlap(hub, a, partnership).json()["count"] == 30
    directory = hub.data_dir / "arrays" / a.id
    first = a.post(
        hub, "/v1/identifiers/consents", {"updates": [{"customer_ref": "a001", "consents": []}]}
    )
    assert first.status_code == 200, first.text
    version = version_of(hub, a)
    patched = saved(hub, a, version)
    assert patched is not None
    # As the second process sees it: the first's patch is announced, its files not there.
    remove_version(directory, version, patched.key_version)
    cache_of(hub).forget(UUID(a.id), before=2**31)
    array_files.mark_patching(directory, version, patched.key_version)

    def first_patch_finishes() -> None:
        time.sleep(0.5)
        array_files.save(directory, patched)
        array_files.unmark_patching(directory, version, patched.key_version)

    cache = cache_of(hub)
    builds, patches = cache.builds, cache.patches
    finisher = threading.Thread(target=first_patch_finishes)
    finisher.start()
    try:
        second = a.post(
            hub,
            "/v1/identifiers/consents",
            {"updates": [{"customer_ref": "a002", "consents": []}]},
        )
    finally:
        finisher.join()
    assert second.status_code == 200, second.text
    assert cache.patches == patches + 1  # patched from the first's files once they came
    assert saved(hub, a) is not None
    assert_same_as_a_build(hub, a)
    # 28 now, 30 before: too close to the earlier answer to be given (stale arrays would
    # have answered 30 again, the same as before, without a refusal).
    last = overlap(hub, a, partnership)
    assert last.status_code == 422, last.text
    assert last.json()["type"] == "urn:hub:problem:privacy-refusal"
    assert cache.builds == builds


# -- an upload's arrays are built before its flip and published with it -----------------------


def upload_phase(hub: Hub, member: Member, upload_id: str) -> tuple[str, str | None]:
    response = member.get(hub, f"/v1/identifiers/uploads/{upload_id}")
    assert response.status_code == 200, response.text
    return response.json()["status"], response.json()["phase"]


def partials(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_an_upload_becomes_visible_with_its_arrays(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the flip and the end of the tidying (held here for a few seconds) the upload's
    records are what questions see: their arrays are on disk already, and a question opens
    them instead of reading every record (before, they were built after the tidying)."""
    a, _, partnership = shared_pair(hub)
    monkeypatch.setenv("HUB_UPLOADS_TEST_FLIP_PAUSE_SECONDS", "3")
    more = [rec(email(f"{a.id}{n}"), f"a{n:03d}", tier="gold") for n in range(30, 45)]
    sent = send(hub, a.headers, ndjson(more))
    assert sent.status_code == 202, sent.text
    deadline = time.monotonic() + 60
    while upload_phase(hub, a, sent.json()["id"]) != ("processing", "tidying"):
        assert time.monotonic() < deadline, upload_phase(hub, a, sent.json()["id"])
        time.sleep(0.02)
    # Flipped, not completed: the new version is readable, and a question opens its files
    # (announced in the flip's transaction, in place a moment after its commit).
    builds = cache_of(hub).builds
    answer = overlap(hub, a, partnership)
    assert answer.status_code == 200, answer.text
    assert answer.json()["count"] == 30  # b holds 30 of a's 45 people
    assert cache_of(hub).builds == builds
    assert saved(hub, a) is not None
    assert upload_phase(hub, a, sent.json()["id"]) == ("processing", "tidying")
    done = wait_for(hub, a.headers, sent.json()["id"])
    assert done["status"] == "completed", done
    assert_same_as_a_build(hub, a)
    assert partials(hub.data_dir / "arrays" / a.id) == []


def recorded_changes(hub: Hub, member: Member) -> list[tuple[int, list[str]]]:
    """The people recorded for the partner's upload being applied (version, people)."""
    engine = create_hub_sync_engine(hub.database_url, writer=False)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(APPLY_CHANGES.c.version, APPLY_CHANGES.c.people)
                .where(APPLY_CHANGES.c.partner_id == UUID(member.id))
                .order_by(APPLY_CHANGES.c.version)
            ).all()
    finally:
        engine.dispose()
    return [(int(version), list(people)) for version, people in rows]


@contextlib.contextmanager
def held_before_the_flip(
    hub: Hub,
    member: Member,
    records: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    gate: Path,
) -> Iterator[None]:
    """An upload of ``records`` whose arrays are built ahead, its flip held while the block
    runs; completed after it."""
    directory = hub.data_dir / "arrays" / member.id
    gate.touch()
    monkeypatch.setenv("HUB_UPLOADS_TEST_FLIP_GATE", str(gate))
    try:
        sent = send(hub, member.headers, ndjson(records))
        assert sent.status_code == 202, sent.text
        deadline = time.monotonic() + 60
        while not partials(directory):  # built ahead, waiting at the gate
            assert time.monotonic() < deadline, upload_phase(hub, member, sent.json()["id"])
            time.sleep(0.02)
        yield
    finally:
        gate.unlink()
    done = wait_for(hub, member.headers, sent.json()["id"])
    assert done["status"] == "completed", done


def test_arrays_built_ahead_are_patched_with_the_changes_committed_before_the_flip(
    hub: Hub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Consent changes and erasures committed between the arrays' build and the flip move
    the counter. Their people are recorded while the upload is applied, and at the flip the
    arrays built ahead are patched with those people's records as the flip leaves them: the
    result equals a build at the flip's version, without reading every record again.

    Among them a withdrawal on a record the upload does not rewrite (shared by the old and
    the new generation): arrays published under the flip's version without the patch would
    still count that person."""
    a, _, partnership = shared_pair(hub)
    directory = hub.data_dir / "arrays" / a.id
    cache = cache_of(hub)
    outside = a.post(
        hub,
        "/v1/identifiers/consents",
        {"updates": [{"customer_ref": "a009", "consents": ["analytics"]}]},
    )
    assert outside.status_code == 200, outside.text
    assert recorded_changes(hub, a) == []  # no upload being applied: nothing recorded
    builds = cache.builds
    # a003-a005 rewritten with another tier, 15 new people.
    again = [rec(email(f"{a.id}{n}"), f"a{n:03d}", tier="silver") for n in range(3, 6)]
    more = [rec(email(f"{a.id}{n}"), f"a{n:03d}", tier="gold") for n in range(30, 45)]
    with held_before_the_flip(hub, a, again + more, monkeypatch, tmp_path / "gate"):
        before = version_of(hub, a)
        updates = [
            {"customer_ref": "a000", "consents": ["analytics"]},  # carried
            {"customer_ref": "a001", "consents": []},  # carried: the withdrawal to keep
            {"customer_ref": "a003", "consents": []},  # rewritten by the upload
        ]
        changed = a.post(hub, "/v1/identifiers/consents", {"updates": updates})
        assert changed.status_code == 200, changed.text
        erased = a.post(hub, "/v1/identifiers/erase", {"customer_refs": ["a002", "a031"]})
        assert erased.status_code == 200, erased.text
        by_hash = a.post(hub, "/v1/identifiers/erase", {"id_hashes": [email(f"{a.id}7")]})
        assert by_hash.status_code == 200, by_hash.text
        assert version_of(hub, a) == before + 3
        # a031 is the upload's only: the erasure found its row in the new generation.
        assert recorded_changes(hub, a) == [
            (before + 1, ["a000", "a001", "a003"]),
            (before + 2, ["a002", "a031"]),
            (before + 3, ["a007"]),
        ]
    assert version_of(hub, a) == before + 4
    assert cache.builds == builds + 1  # built ahead, patched at the flip: not built again
    assert partials(directory) == []
    assert not [p.name for p in directory.iterdir() if p.name.endswith(".patching")]
    assert recorded_changes(hub, a) == []  # forgotten by the flip
    assert_same_as_a_build(hub, a)
    got = saved(hub, a)
    assert got is not None
    (withdrawn,) = got.index_of(["a001"])
    assert (got.side.consent[got.side.person == withdrawn] == 0).all()
    assert len(got.index_of(["a002", "a031"])) == 0
    assert len(got.index_of(["a007"])) == 0  # its only record was erased by its key
    for ref in (b"a002", b"a031"):
        assert ref not in file_bytes(directory)
    answer = overlap(hub, a, partnership)
    assert answer.status_code == 200, answer.text


def test_a_change_of_more_people_than_one_lookup_holds_is_patched_in_at_the_flip(
    hub: Hub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The flip reads the people changed since the build 500 at a time: a withdrawal of 620
    people during the build (two lookups and part of a third) is in the arrays published."""
    a, _, _ = shared_pair(hub, size=700)
    cache = cache_of(hub)
    builds = cache.builds
    more = [rec(email(f"{a.id}{n}"), f"a{n:03d}", tier="gold") for n in range(700, 720)]
    withdrawn = [f"a{n:03d}" for n in range(40, 660)]
    with held_before_the_flip(hub, a, more, monkeypatch, tmp_path / "gate"):
        updates = [{"customer_ref": ref, "consents": []} for ref in withdrawn]
        changed = a.post(hub, "/v1/identifiers/consents", {"updates": updates})
        assert changed.status_code == 200, changed.text
        assert [len(people) for _, people in recorded_changes(hub, a)] == [620]
    assert cache.builds == builds + 1  # patched at the flip, not built again
    assert_same_as_a_build(hub, a)
    got = saved(hub, a)
    assert got is not None
    people = got.index_of(withdrawn)
    assert len(people) == 620
    assert (got.side.consent[np.isin(got.side.person, people)] == 0).all()


def test_arrays_built_ahead_are_built_again_when_a_change_left_no_record_of_its_people(
    hub: Hub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A change since the build whose people are not recorded (a writer that records none)
    cannot be followed: the arrays built ahead are dropped and the version the flip makes is
    built from the records after it, never published with a change missing from them."""
    a, _, _ = shared_pair(hub)
    directory = hub.data_dir / "arrays" / a.id
    cache = cache_of(hub)
    builds = cache.builds
    more = [rec(email(f"{a.id}{n}"), f"a{n:03d}", tier="gold") for n in range(30, 45)]
    with held_before_the_flip(hub, a, more, monkeypatch, tmp_path / "gate"):
        before = version_of(hub, a)
        withdrawn = a.post(
            hub,
            "/v1/identifiers/consents",
            {"updates": [{"customer_ref": "a004", "consents": []}]},
        )
        assert withdrawn.status_code == 200, withdrawn.text
        assert recorded_changes(hub, a) == [(before + 1, ["a004"])]
        engine = create_hub_sync_engine(hub.database_url)
        try:
            with engine.begin() as conn:
                conn.execute(delete(APPLY_CHANGES).where(APPLY_CHANGES.c.partner_id == UUID(a.id)))
        finally:
            engine.dispose()
    assert version_of(hub, a) == before + 2
    # Built ahead, then built once more right after the flip (announced meanwhile: no
    # question elsewhere builds it too); the announcement is withdrawn.
    assert cache.builds == builds + 2
    assert partials(directory) == []
    assert not [p.name for p in directory.iterdir() if p.name.endswith(".patching")]
    assert_same_as_a_build(hub, a)
    got = saved(hub, a)
    assert got is not None
    (person,) = got.index_of(["a004"])
    assert (got.side.consent[got.side.person == person] == 0).all()


def _declines(*args: object) -> None:
    return None


def _fails(*args: object) -> None:
    raise MemoryError("no room for the patch")


@pytest.mark.parametrize("patch", [_declines, _fails], ids=["declined", "failed"])
def test_arrays_built_ahead_that_cannot_be_patched_are_built_again_after_the_flip(
    hub: Hub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, patch: Any
) -> None:
    """A patch at the flip that declines (it could differ from a build) or fails (the flip
    has committed: the upload must not fail for it) leaves the version to a build right
    after the flip: the upload completes with arrays equal to a build, no file written
    aside and no announcement left behind."""
    a, _, _ = shared_pair(hub)
    directory = hub.data_dir / "arrays" / a.id
    cache = cache_of(hub)
    builds = cache.builds
    monkeypatch.setattr(array_patches, "with_rewritten", patch)
    more = [rec(email(f"{a.id}{n}"), f"a{n:03d}", tier="gold") for n in range(30, 45)]
    with held_before_the_flip(hub, a, more, monkeypatch, tmp_path / "gate"):
        withdrawn = a.post(
            hub,
            "/v1/identifiers/consents",
            {"updates": [{"customer_ref": "a002", "consents": []}]},
        )
        assert withdrawn.status_code == 200, withdrawn.text
    assert cache.builds == builds + 2
    assert partials(directory) == []
    assert not [p.name for p in directory.iterdir() if p.name.endswith(".patching")]
    assert_same_as_a_build(hub, a)


def test_changes_that_touch_no_record_leave_the_arrays_built_ahead_as_they_are(
    hub: Hub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A consent change naming no one the partner holds moves the counter and changes no
    record: the arrays built ahead are published under the flip's version unchanged."""
    a, _, _ = shared_pair(hub)
    cache = cache_of(hub)
    builds, patches = cache.builds, cache.patches
    more = [rec(email(f"{a.id}{n}"), f"a{n:03d}", tier="gold") for n in range(30, 45)]
    with held_before_the_flip(hub, a, more, monkeypatch, tmp_path / "gate"):
        before = version_of(hub, a)
        nobody = a.post(
            hub,
            "/v1/identifiers/consents",
            {"updates": [{"customer_ref": "nobody", "consents": []}]},
        )
        assert nobody.status_code == 200, nobody.text
        assert recorded_changes(hub, a) == [(before + 1, [])]
    assert version_of(hub, a) == before + 2
    # Built ahead only (the change's own patch is of the version before the upload's).
    assert (cache.builds, cache.patches) == (builds + 1, patches + 1)
    assert partials(hub.data_dir / "arrays" / a.id) == []
    assert_same_as_a_build(hub, a)


def test_rows_the_flip_itself_changes_are_patched_too(
    hub: Hub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The flip applies to the upload's new rows the erasures remembered since the upload was
    sent. One remembered after the arrays' build (inserted here as an erasure that reached
    no row yet) removes a row without moving the counter: the flip names the person whose
    row it deleted, and the arrays built ahead are patched without them."""
    a, _, _ = shared_pair(hub)
    cache = cache_of(hub)
    builds = cache.builds
    more = [rec(email(f"{a.id}{n}"), f"a{n:03d}", tier="gold") for n in range(30, 45)]
    with held_before_the_flip(hub, a, more, monkeypatch, tmp_path / "gate"):
        before = version_of(hub, a)
        engine = create_hub_sync_engine(hub.database_url)
        try:
            with engine.begin() as conn:
                conn.execute(
                    ERASURES.insert().values(
                        partner_id=UUID(a.id),
                        customer_ref="a033",
                        match_key=None,
                        erased_at=datetime.now(UTC),
                    )
                )
        finally:
            engine.dispose()
    assert version_of(hub, a) == before + 1  # the flip's own raise: no change came
    assert cache.builds == builds + 1
    assert_same_as_a_build(hub, a)
    got = saved(hub, a)
    assert got is not None
    assert len(got.index_of(["a033"])) == 0
    assert len(got.index_of(["a032", "a034"])) == 2


def test_recorded_people_are_forgotten_once_no_upload_of_the_partner_is_applied(
    hub: Hub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What the uploads' maintenance deletes: the people recorded for a partner none of whose
    uploads is being processed (an apply stopped for good leaves them), never those of an
    apply in progress."""
    a, b, _ = shared_pair(hub)
    more = [rec(email(f"{a.id}{n}"), f"a{n:03d}", tier="gold") for n in range(30, 45)]
    engine = create_hub_sync_engine(hub.database_url)
    try:
        with engine.begin() as conn:  # left by b's apply that never flipped
            conn.execute(
                APPLY_CHANGES.insert().values(partner_id=UUID(b.id), version=99, people=["b001"])
            )
        with held_before_the_flip(hub, a, more, monkeypatch, tmp_path / "gate"):
            changed = a.post(
                hub,
                "/v1/identifiers/consents",
                {"updates": [{"customer_ref": "a001", "consents": []}]},
            )
            assert changed.status_code == 200, changed.text
            assert forget_apply_changes(engine) >= 1  # b's (and any other idle partner's)
            assert recorded_changes(hub, b) == []
            assert [people for _, people in recorded_changes(hub, a)] == [["a001"]]
    finally:
        engine.dispose()
    assert recorded_changes(hub, a) == []
    assert_same_as_a_build(hub, a)


def test_the_maintenance_keeps_the_version_a_committed_change_patches_from(hub: Hub) -> None:
    """Between a change's commit and its patch, the counter names a version with no files
    yet, announced as on its way: the maintenance (every few seconds in each serving
    process) keeps the version before, which the patch is made from, and deletes it once the
    patch is done. (It deleted it at once, the patch found no base, and every process then
    read all the partner's records again.)"""
    a, _, partnership = shared_pair(hub)
    directory = hub.data_dir / "arrays" / a.id
    cache = cache_of(hub)
    key_version = hub.app.state.identifier_crypto.keys.match_version
    version = version_of(hub, a)
    assert saved(hub, a, version) is not None
    # A change commits version + 1, announced (as its transaction does), not patched yet.
    array_files.mark_patching(directory, version + 1, key_version)
    engine = create_hub_sync_engine(hub.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                update(STATE)
                .where(STATE.c.partner_id == UUID(a.id))
                .values(version=STATE.c.version + 1)
            )
    finally:
        engine.dispose()
    cache.discard_stale()
    assert saved(hub, a, version) is not None
    # The patch gave up (its marker gone): the version before is stale like any other.
    array_files.unmark_patching(directory, version + 1, key_version)
    cache.discard_stale()
    assert saved(hub, a, version) is None
    answer = overlap(hub, a, partnership)  # builds the version the patch did not make
    assert answer.status_code == 200, answer.text
    assert_same_as_a_build(hub, a)


def test_a_change_during_another_process_s_build_is_answered_then_patched_from_it(
    hub: Hub, unbuilt: tuple[Member, list[ArrayCache]]
) -> None:
    """Another process is building the version before (it holds the partner's build lock)
    when a withdrawal commits: the withdrawal is answered without waiting for that build,
    and once the build's files are there its arrays are patched from them (before, the patch
    was given up, and every process built the next version from the records again)."""
    a, (building, _) = unbuilt
    partner = UUID(a.id)
    directory = hub.data_dir / "arrays" / a.id
    key_version = building.crypto.keys.match_version
    cache = cache_of(hub)
    builds, patches = cache.builds, cache.patches
    with array_files.build_lock(directory, timeout=5) as taken:
        assert taken
        # The other process's build has read the records (the version before).
        with loader._snapshot(building.engine) as conn:
            before = loader._current_version(conn, partner)
            side, people, over = loader._build(conn, partner, building.crypto, key_version)
        body = {"updates": [{"customer_ref": "u05", "consents": []}]}
        response = a.post(hub, "/v1/identifiers/consents", body)
        assert response.status_code == 200, response.text
        version = version_of(hub, a)
        assert version == before + 1
        assert saved(hub, a, version) is None  # not patched yet: its base is being built
        # ... and saves its files, then lets go of the lock.
        array_files.save(directory, Loaded(partner, before, key_version, side, people, over))
    deadline = time.monotonic() + 10
    while saved(hub, a, version) is None:
        assert time.monotonic() < deadline, "the withdrawal's arrays never came"
        time.sleep(0.05)
    assert cache.patches == patches + 1
    assert cache.builds == builds
    got = saved(hub, a, version)
    assert got is not None
    (person,) = got.index_of(["u05"])
    assert (got.side.consent[got.side.person == person] == 0).all()
    assert_same_as_a_build(hub, a)


def test_a_withdrawal_during_the_apply_is_in_the_arrays_built_ahead(
    hub: Hub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A withdrawal sent while the upload is applied (after it was sent, before its arrays
    are built) is applied to the new rows before the build: the arrays built ahead are the
    flip's and are published (before, the flip changed the rows after the build, the arrays
    were dropped and every record was read a second time)."""
    a, _, _ = shared_pair(hub)
    directory = hub.data_dir / "arrays" / a.id
    builds = cache_of(hub).builds
    gate = tmp_path / "apply-gate"
    gate.touch()
    monkeypatch.setenv("HUB_UPLOADS_TEST_APPLY_GATE", str(gate))
    # a000-a004 again with another tier (rewritten in the new generation), and 15 new people.
    again = [rec(email(f"{a.id}{n}"), f"a{n:03d}", tier="silver") for n in range(5)]
    more = [rec(email(f"{a.id}{n}"), f"a{n:03d}", tier="gold") for n in range(30, 45)]
    try:
        sent = send(hub, a.headers, ndjson(again + more))
        assert sent.status_code == 202, sent.text
        deadline = time.monotonic() + 60
        while upload_phase(hub, a, sent.json()["id"]) != ("processing", "applying"):
            assert time.monotonic() < deadline, upload_phase(hub, a, sent.json()["id"])
            time.sleep(0.02)
        withdrawn = a.post(
            hub,
            "/v1/identifiers/consents",
            {"updates": [{"customer_ref": "a001", "consents": []}]},
        )
        assert withdrawn.status_code == 200, withdrawn.text
    finally:
        gate.unlink()
    done = wait_for(hub, a.headers, sent.json()["id"])
    assert done["status"] == "completed", done
    assert cache_of(hub).builds == builds + 1  # built ahead, published with the flip
    assert partials(directory) == []
    assert_same_as_a_build(hub, a)
    got = saved(hub, a)
    assert got is not None
    (person,) = got.index_of(["a001"])
    assert (got.side.consent[got.side.person == person] == 0).all()


def test_an_erasure_answered_while_a_build_is_under_way_leaves_no_older_file(
    hub: Hub,
) -> None:
    """An erasure whose patch cannot be made at once (the version before is being built by
    another process) is not left to a patch that follows later: the older versions' files,
    with the erased customer_ref, are gone before it is answered."""
    a, _, partnership = shared_pair(hub, size=30)
    directory = hub.data_dir / "arrays" / a.id
    key_version = hub.app.state.identifier_crypto.keys.match_version
    version = version_of(hub, a)
    # An older version still on disk (as another process may have left it), the current
    # one's files not written yet: another process is building them.
    (directory / version_name(version, key_version)).rename(
        directory / version_name(version - 1, key_version)
    )
    cache_of(hub).forget(UUID(a.id), before=2**31)
    assert b"a007" in file_bytes(directory)
    with array_files.build_lock(directory, timeout=5) as taken:
        assert taken
        erased = a.post(hub, "/v1/identifiers/erase", {"customer_refs": ["a007"]})
        assert erased.status_code == 200, erased.text
        assert b"a007" not in file_bytes(directory)
    answer = overlap(hub, a, partnership)
    assert answer.status_code in (200, 422), answer.text  # answered, from a fresh build
    assert b"a007" not in file_bytes(directory)
    assert_same_as_a_build(hub, a)
