"""Ranks of the bootstrap tests (test_bootstrap.py, new_user_path.py): real processes
that find each other through a store, then rank 0 writes into every other rank."""
import multiprocessing as mp
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
N = 64 * 1024
IMM = 77


def _rank_main(rank: int, world: int, store_kind: str, port: int, out) -> None:
    """One rank: engine, a region, exchange through the store, rank 0 writes a pattern
    into every other rank's region; each receiver checks it and reports."""
    sys.path.insert(0, HERE)
    import tendril
    from socket_store import SocketStore
    from tendril import bootstrap
    from tendril_peer import make_engine

    try:
        if store_kind == "torch":
            import datetime

            import torch.distributed as dist

            store = dist.TCPStore("127.0.0.1", port, world, is_master=False, timeout=datetime.timedelta(seconds=30))
        else:
            store = SocketStore(port)
        e = make_engine()
        buf = bytearray(N)
        h, d = e.register_memory(buf)
        counter = e.imm_counter(IMM)
        addrs = bootstrap.exchange_addresses(store, rank, world, e, timeout=30)
        descs = bootstrap.exchange_descriptors(store, rank, world, [d], timeout=30)
        assert addrs[rank] == e.main_address, "own address comes back at its own index"
        assert descs[rank] == [d]
        if rank == 0:
            buf[:] = bytes((i * 7 + 1) % 251 for i in range(N))
            done = tendril.Counter()
            for peer in range(1, world):
                e.submit_write(h, 0, N, IMM, descs[peer][0], 0, None, None, counter=done)
            done.wait(timeout=30)
            assert done.errors == 0
        else:
            counter.wait(1, timeout=30)
            assert bytes(buf) == bytes((i * 7 + 1) % 251 for i in range(N)), "payload written by rank 0"
        # a final exchange doubles as a barrier: nobody stops its engine while a peer writes
        bootstrap.store_all_gather(store, rank, world, "done", b"1", timeout=30)
        e.stop()
        out.put((rank, "ok", str(addrs[1 - rank] if world == 2 else "")))
    except BaseException as ex:  # noqa: BLE001 - reported to the parent
        out.put((rank, "error", f"{type(ex).__name__}: {ex}"))


def run_ranks(store_kind: str, port: int, world: int = 2):
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_rank_main, args=(r, world, store_kind, port, out)) for r in range(world)]
    for p in procs:
        p.start()
    results = {}
    deadline = time.monotonic() + 90
    try:
        while len(results) < world:
            left = deadline - time.monotonic()
            assert left > 0, f"ranks did not report within 90 s: {results}"
            rank, status, text = out.get(timeout=left)
            results[rank] = (status, text)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    return results
