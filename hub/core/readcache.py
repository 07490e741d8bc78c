"""Answers of hot, rarely changing reads served from memory (``GET /v1/me``).

Freshness rules, the same as the revocation cache's:

* in the process that made a change, at once: a commit whose flush touched a watched model
  (see :func:`watch`) empties every cache of the process after the commit;
* in any other process (another worker, the CLI), within ``ttl`` seconds: an entry is never
  served older than that (``oauth.revocation_poll_seconds``, 1 s by default).

A load that overlapped a local change is returned to its caller but not kept, so a cache can
never hold data older than a change this process has committed.

An entry that is read in the last quarter of its life is reloaded in the background while it
is still served (:meth:`ReadCache.fresh` with ``reload``): under steady traffic no request
waits for a load. (Every second, all the requests of a partner waited for one load of its
``/v1/me`` view: about 1.5 ms of ORM work plus four round trips to the database.) The reloaded
entry lives ``ttl`` from the moment its load started, so the rules above still hold.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from itertools import chain
from typing import Generic, TypeVar

import structlog
from sqlalchemy import event
from sqlalchemy.orm import Session, UOWTransaction

K = TypeVar("K")
V = TypeVar("V")

log = structlog.get_logger("hub.readcache")

_DIRTY = "hub_readcache_dirty"
# An entry read with less than this share of its life left is reloaded in the background.
REFRESH_AHEAD_SHARE = 0.25
_watched: tuple[type, ...] = ()
_generation = 0


def watch(*models: type) -> None:
    """Changes to instances of ``models`` invalidate every read cache."""
    global _watched
    _watched = tuple({*_watched, *models})


def generation() -> int:
    return _generation


def invalidate_all() -> None:
    global _generation
    _generation += 1


class ReadCache(Generic[K, V]):
    def __init__(self, ttl_seconds: float, max_entries: int = 100_000) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._entries: dict[K, tuple[float, V]] = {}
        self._generation = _generation
        self._loading: dict[K, tuple[int, asyncio.Future[V]]] = {}
        self._refreshing: set[asyncio.Task[None]] = set()  # held: a bare task may be collected

    def fresh(self, key: K, reload: Callable[[], Awaitable[V]] | None = None) -> V | None:
        """The entry of ``key`` if it may still be served, else None (no load, no await: the
        hot path of a hit; :meth:`get` on a miss). With ``reload``, an entry near its end is
        reloaded in the background, one load at a time, and served meanwhile."""
        if self._generation != _generation:
            self._entries.clear()
            self._generation = _generation
            return None
        hit = self._entries.get(key)
        if hit is None:
            return None
        left = hit[0] - time.monotonic()
        if left <= 0:
            return None
        ending = left < self.ttl * REFRESH_AHEAD_SHARE
        if ending and reload is not None and key not in self._loading:
            task = asyncio.get_running_loop().create_task(self._refresh(key, reload))
            self._refreshing.add(task)
            task.add_done_callback(self._refreshing.discard)
        return hit[1]

    async def _refresh(self, key: K, reload: Callable[[], Awaitable[V]]) -> None:
        try:
            await self._load(key, reload)
        except Exception:  # the entry expires as usual; the next request loads it itself
            log.warning("read cache refresh failed", exc_info=True)

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        if self._generation != _generation:
            self._entries.clear()
            self._generation = _generation
        hit = self._entries.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        return await self._load(key, load)

    async def _load(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        # One load per key at a time: when an entry expires under load, the requests that
        # arrive meanwhile wait for that load instead of all going to the database.
        pending = self._loading.get(key)
        if pending is not None and pending[0] == _generation:
            try:
                return await asyncio.shield(pending[1])
            except asyncio.CancelledError:
                if not pending[1].cancelled():
                    raise  # this request was cancelled, not the shared load
                # The shared load was cancelled with its request: load here instead.
        now = time.monotonic()
        started = _generation
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._loading[key] = (started, future)
        try:
            value = await load()
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning if nobody waited
            raise
        except BaseException:
            future.cancel()
            raise
        else:
            future.set_result(value)
        finally:
            if self._loading.get(key, (0, None))[1] is future:
                del self._loading[key]
        if started == _generation == self._generation:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key] = (now + self.ttl, value)
        return value


@event.listens_for(Session, "after_flush")
def _note_changes(session: Session, _: UOWTransaction) -> None:
    if _watched and any(
        isinstance(obj, _watched) for obj in chain(session.new, session.dirty, session.deleted)
    ):
        session.info[_DIRTY] = True


@event.listens_for(Session, "after_commit")
def _invalidate_after_commit(session: Session) -> None:
    # (A rolled-back change leaves the flag set: the next commit invalidates needlessly, which
    # is harmless, whereas clearing it on a savepoint's rollback could lose a real change.)
    if session.info.pop(_DIRTY, False):
        invalidate_all()
