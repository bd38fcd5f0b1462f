"""Two processes updating one trust store at once lose no entry (file lock + re-read)."""

import multiprocessing

from stack.base.identity import Identity
from stack.store.trust import Status, TrustStore

PER_PROCESS = 50


def _worker(data_dir: str, first: int, start) -> None:
    store = TrustStore(data_dir)
    start.wait()                      # both processes begin together
    for i in range(first, first + PER_PROCESS):
        pid = Identity.from_seed(i.to_bytes(32, "big")).peer_id
        store.check_address(f"10.0.{i // 256}.{i % 256}:39001", pid)


def test_two_processes_lose_no_entry(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), n * PER_PROCESS, start))
             for n in range(2)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(timeout=50)
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    store = TrustStore(tmp_path)
    entries = store.entries()
    assert len(entries) == 2 * PER_PROCESS
    assert all(e.status is Status.TRUSTED for e in entries)
    assert len(store.address_pins()) == 2 * PER_PROCESS
    assert store.corrupt_backups == []


def _async_worker(data_dir: str, first: int, start) -> None:
    import asyncio

    async def main() -> None:
        store = TrustStore(data_dir)
        start.wait()
        futures = [store.check_address_async(f"10.0.{i // 256}.{i % 256}:39001",
                                             Identity.from_seed(i.to_bytes(32, "big")).peer_id)
                   for i in range(first, first + PER_PROCESS)]
        await asyncio.gather(*futures)   # group commits, interleaved with the other process
        store.close()

    asyncio.run(main())


def test_two_processes_on_the_async_path_lose_no_entry(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_async_worker, args=(str(tmp_path), n * PER_PROCESS, start))
             for n in range(2)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(timeout=50)
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    store = TrustStore(tmp_path)
    assert len(store.entries()) == 2 * PER_PROCESS
    assert len(store.address_pins()) == 2 * PER_PROCESS
