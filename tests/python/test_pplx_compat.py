"""Every name of pplx-garden's fabric_lib, called as its .pyi spells it: positional
arguments in its order and every keyword argument by its name, with the exception types
its callers catch (ValueError for bad arguments, RuntimeError for failures)."""
import pickle
import threading

import numpy as np
import pytest

import tendril
from conftest import TMO, wait_until
from tendril import fabric_lib
from tendril_peer import make_engine

PPLX_NAMES = ["DomainAddress", "DomainInfo", "MemoryRegionDescriptor", "MemoryRegionHandle", "PageIndices",
              "TopologyGroup", "TransferEngine", "TransferEngineBuilder", "UvmWatcher", "FabricEngine"]


@pytest.fixture
def pair():
    a, b = make_engine(), make_engine()
    yield a, b
    a.stop()
    b.stop()


def test_module_names():
    for n in PPLX_NAMES:
        assert getattr(fabric_lib, n) is getattr(tendril, n)
    assert isinstance(tendril.__version__, str) and tendril.__version__.count(".") >= 2


def test_engine_static_and_properties(pair):
    a, _ = pair
    assert isinstance(fabric_lib.TransferEngine.detect_topology(), list)
    assert isinstance(fabric_lib.TransferEngine.builder(), fabric_lib.TransferEngineBuilder)
    assert isinstance(a.main_address, fabric_lib.DomainAddress)
    assert a.num_domains == 1 and a.nets_per_gpu == 1
    assert isinstance(a.aggregated_link_speed, int)
    assert isinstance(a.fabric_engine, fabric_lib.FabricEngine) and a.fabric_engine.engine is a
    # pplx's constructor, by keyword (no GPU here: no CUDA devices)
    e = fabric_lib.TransferEngine(nets_per_gpu=1, cuda_devices=[], provider=a.provider.split(";")[0],
                                  nics=a.nic_names[0] if "tcp" in a.provider else None)
    e.stop()


def test_builder_keywords():
    b = fabric_lib.TransferEngine.builder()
    with pytest.raises(ValueError):  # pplx: a domain list is required per GPU; an empty one is bad input
        b.add_gpu_domains(cuda_device=0, domains=[], pin_worker_cpu=0, pin_uvm_cpu=1)
    assert b.add_gpu_domains(cuda_device=0, domains=["lo"], pin_worker_cpu=0, pin_uvm_cpu=1) is b


def test_address_and_descriptor_keywords(pair):
    a, _ = pair
    raw = a.main_address.as_bytes()
    assert fabric_lib.DomainAddress.from_bytes(bytes=raw) == a.main_address
    assert fabric_lib.DomainAddress(bytes=raw) == a.main_address
    assert fabric_lib.DomainAddress.from_str(s=str(a.main_address)) == a.main_address
    assert hash(fabric_lib.DomainAddress.from_bytes(raw)) == hash(a.main_address)
    assert repr(a.main_address) and str(a.main_address)
    with pytest.raises(ValueError):
        fabric_lib.DomainAddress.from_str(s="not hex")
    buf = bytearray(8192)
    h, d = a.register_memory(ptr=buf)
    wire = d.as_bytes()
    assert fabric_lib.MemoryRegionDescriptor.from_bytes(bytes_=wire) == d  # the .pyi's name
    assert fabric_lib.MemoryRegionDescriptor.from_bytes(bytes=wire) == d   # pplx's runtime name
    assert fabric_lib.MemoryRegionDescriptor(bytes=wire) == d
    assert pickle.loads(pickle.dumps(d)) == d
    with pytest.raises(ValueError):
        fabric_lib.MemoryRegionDescriptor.from_bytes(bytes_=b"\xff\x00")
    text = d.debug_str()
    assert str(a.main_address) in text and hex(h.ptr) in text and "rkey" in text
    assert hex(h.ptr) in h.debug_str()
    assert h.capsule() is not None
    a.unregister_memory(ptr=h.ptr)
    with pytest.raises(ValueError):  # pplx: "Invalid data pointer"
        a.unregister_memory(ptr=h.ptr)
    assert fabric_lib.PageIndices(indices=[1, 2, 3]).tolist() == [1, 2, 3]


def test_register_memory_pplx_form(pair):
    a, _ = pair
    arr = np.zeros(16384, dtype=np.uint8)
    ptr = arr.ctypes.data
    h, d = a.register_memory(ptr=ptr, len=arr.nbytes, device="cpu", owner=arr)
    assert (h.ptr, h.len, d.ptr, d.len) == (ptr, arr.nbytes, ptr, arr.nbytes)
    a.unregister_memory(ptr)
    h, d = a.register_memory(ptr, arr.nbytes, None, owner=arr)  # positional, as pplx
    a.unregister_memory(ptr=ptr)
    with pytest.raises(RuntimeError):  # pplx: "Failed to register memory" (no group for that GPU)
        a.register_memory(ptr=ptr, len=4096, device="cuda:0")


def test_transfers_with_pplx_keywords(pair):
    a, b = pair
    n, page = 1 << 16, 4096
    src = bytearray((i * 13) % 256 for i in range(n))
    dst = bytearray(n)
    hs, _ = a.register_memory(ptr=src)
    _, dd = b.register_memory(ptr=dst)
    got, lock = [], threading.Lock()

    def rec(tag):
        def f(*args):
            with lock:
                got.append((tag,) + args)
        return f

    assert b.set_imm_count_expected(imm=5, expected_count=2, on_reached=rec("reached")) is None
    assert b.set_imm_count_expected(5, expected_count=2, on_reached=rec("reached2")) == (0, 2)
    assert b.remove_imm_count(imm=5) == (0, 2)
    b.set_imm_count_expected(5, 2, rec("reached"))
    b.set_imm_callback(callback=rec("imm"))
    a.submit_write(src_mr=hs, offset=0, length=page, imm_data=5, dst_mr=dd, dst_offset=0,
                   on_done=rec("w"), on_error=rec("err"), num_shards=None)
    a.submit_paged_writes(length=page, src_mr=hs, src_page_indices=tendril.PageIndices([1]), src_stride=page,
                          src_offset=0, dst_mr=dd, dst_page_indices=tendril.PageIndices([1]), dst_stride=page,
                          dst_offset=0, imm_data=5, on_done=rec("p"), on_error=rec("err"))
    a.submit_imm(imm_data=9, dst_mr=dd, on_done=rec("i"), on_error=rec("err"))
    wait_until(lambda: {"w", "p", "i", "reached", "imm"} <= {g[0] for g in got}, what="pplx callbacks")
    assert ("imm", 9) in got and not [g for g in got if g[0] == "err"]
    assert dst[: 2 * page] == src[: 2 * page]
    w = a.alloc_scalar_watcher(callback=lambda old, new: False)
    assert isinstance(w, fabric_lib.UvmWatcher) and isinstance(w.ptr, int)
    w.free()


def test_submit_send_has_no_64k_cap(pair):
    """A pickled control message of 117 kB arrives whole (pplx-garden has no send cap)."""
    a, b = pair
    msg = pickle.dumps({"blocks": list(range(20000)), "pad": b"x" * 60000})
    assert len(msg) > 117_000
    got, errs = [], []
    b.submit_bouncing_recvs(count=4, len=256 * 1024, on_recv=got.append, on_error=errs.append)
    done = []
    a.submit_send(addr=b.main_address, data=msg, on_done=lambda: done.append(1), on_error=errs.append)
    wait_until(lambda: got or errs, timeout=TMO, what="the 117 kB message")
    assert not errs, errs
    assert got[0] == msg and pickle.loads(got[0])["pad"] == b"x" * 60000
    wait_until(lambda: done, what="send completion")


def test_p2p_all_to_all_takes_pplx_arguments():
    """Every keyword pplx-garden's P2PAllToAll constructor, dispatch and combine take."""
    import inspect

    init = inspect.signature(tendril.P2PAllToAll.__init__).parameters
    for name in ["max_num_tokens", "num_experts", "expert_padding", "hidden_dim", "hidden_dim_scale", "in_dtype",
                 "out_dtype", "scale_dtype", "num_experts_per_token", "nets_per_gpu", "max_private_tokens",
                 "device", "dp_group", "node_group", "global_group"]:
        assert name in init and init[name].kind == inspect.Parameter.KEYWORD_ONLY, name
    assert list(inspect.signature(tendril.P2PAllToAll.dispatch).parameters)[1:] == [
        "out_expert_num_tokens", "out_expert_x", "out_expert_x_scale", "dp_x", "dp_x_scale", "indices", "weights",
        "bound_m", "do_send", "do_recv"]
    assert list(inspect.signature(tendril.P2PAllToAll.combine).parameters)[1:] == [
        "out_tokens", "indices", "weights", "expert_y", "bound_m", "do_send", "do_recv", "accumulate"]
    assert hasattr(tendril.P2PAllToAll, "destroy")


def test_p2p_all_to_all_uses_a_pplx_parallel_group():
    """pplx-garden users pass ParallelGroup objects (rank, size, broadcast_object,
    barrier): the group adapter drives them without torch.distributed."""
    from tendril.p2p_all_to_all import _Group

    class ParallelGroupLike:  # the part of pplx_garden.distributed.ParallelGroup used
        rank, size = 1, 4

        def __init__(self):
            self.calls = []

        def broadcast_object(self, obj, root):
            self.calls.append(("broadcast", obj, root))
            return "name-from-rank-0"

        def barrier(self):
            self.calls.append(("barrier",))

    pg = ParallelGroupLike()
    g = _Group(pg)
    assert (g.rank, g.size) == (1, 4)
    assert g.broadcast_from_0(None) == "name-from-rank-0"
    g.barrier()
    assert pg.calls == [("broadcast", None, 0), ("barrier",)]
