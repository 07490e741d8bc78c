"""Running the engine's partitioned form on a ``dask.distributed`` cluster.

Configured by ``matching.dask_scheduler`` (an address such as ``tcp://10.0.0.5:8786``); empty
means in-process. One client per scheduler address is kept for the life of the process.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from matching.engine import Groups, Side

_clients: dict[str, Any] = {}
_lock = threading.Lock()


def client_for(address: str) -> Any:
    from distributed import Client

    with _lock:
        client = _clients.get(address)
        if client is None or client.status != "running":
            client = _clients[address] = Client(address, set_as_default=False)
        return client


async def match_on_cluster(address: str, a: Side, b: Side, mask: int, bits: int) -> Groups:
    from matching.partitioned import match_partitioned

    def run() -> Groups:
        return match_partitioned(a, b, mask, bits=bits, client=client_for(address))

    return await asyncio.to_thread(run)


def close_clients() -> None:
    with _lock:
        for client in _clients.values():
            client.close()
        _clients.clear()
