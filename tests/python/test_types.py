"""Value types without an engine: addresses, descriptors, page indices, counters."""
import array
import errno
import pickle

import numpy as np
import pytest

import tendril
from tendril import (
    Counter,
    DomainAddress,
    MemoryRegionDescriptor,
    PageIndices,
    TendrilError,
    TendrilTimeoutError,
    TendrilValueError,
)


def test_import_surface():
    from tendril import fabric_lib

    for name in ["TransferEngine", "DomainAddress", "MemoryRegionDescriptor", "MemoryRegionHandle",
                 "PageIndices", "UvmWatcher", "TopologyGroup", "DomainInfo"]:
        assert getattr(fabric_lib, name) is getattr(tendril, name)
    assert issubclass(TendrilValueError, ValueError) and issubclass(TendrilValueError, TendrilError)
    assert issubclass(TendrilTimeoutError, TimeoutError)
    assert issubclass(TendrilError, RuntimeError)


def test_domain_address_round_trips(engine):
    a = engine.main_address
    b = DomainAddress.from_bytes(a.as_bytes())
    c = DomainAddress.from_str(str(a))
    d = pickle.loads(pickle.dumps(a))
    assert a == b == c == d == DomainAddress(str(a)) == DomainAddress(a.as_bytes())
    assert len({a, b, c, d}) == 1
    assert str(a) == a.as_bytes().hex()
    assert repr(a) == f"DomainAddress('{a}')"
    assert a != "not an address"
    assert a.transport == "fabric" and len(a.raw) > 0


@pytest.mark.parametrize("bad", ["", "0", "zz", "01", "ff" * 300])
def test_domain_address_rejects_bad_text(bad):
    with pytest.raises(TendrilValueError) as ei:
        DomainAddress.from_str(bad)
    assert ei.value.errno == errno.EBADMSG


def test_domain_address_rejects_bad_bytes():
    with pytest.raises(TendrilValueError, match="DomainAddress.from_bytes"):
        DomainAddress.from_bytes(b"\x07\x01\x01x")
    with pytest.raises(TypeError):
        DomainAddress.from_str(b"00")
    with pytest.raises(TypeError):
        DomainAddress.from_bytes(12)


def test_descriptor_round_trips(engine):
    buf = bytearray(10000)  # no 4096-multiple restriction
    h, d = engine.register_memory(buf)
    assert d.ptr == h.ptr and d.len == 10000 == h.len
    assert h.descriptor == d
    e = MemoryRegionDescriptor.from_bytes(d.as_bytes())
    f = pickle.loads(pickle.dumps(d))
    assert d == e == f == MemoryRegionDescriptor(d.as_bytes())
    assert hash(d) == hash(f)
    [(addr, rkey)] = d.addr_rkey_list
    assert addr == engine.main_address and isinstance(rkey, int)
    with pytest.raises(TendrilValueError) as ei:
        MemoryRegionDescriptor.from_bytes(d.as_bytes()[:-1])
    assert ei.value.errno == errno.EBADMSG
    with pytest.raises(TendrilValueError):
        MemoryRegionDescriptor.from_bytes(d.as_bytes() + b"\x00")


def test_page_indices():
    p = PageIndices([3, 1, 2])
    assert len(p) == 3 and p.tolist() == [3, 1, 2]
    assert PageIndices(range(1000)).tolist() == list(range(1000))
    assert PageIndices(np.array([5, 6], dtype=np.uint32)).tolist() == [5, 6]
    assert PageIndices(np.array([7, 8], dtype=np.int64)).tolist() == [7, 8]
    assert PageIndices(array.array("I", [9])).tolist() == [9]
    assert len(PageIndices([])) == 0
    assert pickle.loads(pickle.dumps(p)).tolist() == [3, 1, 2]
    # out-of-range integers raise OverflowError, as everywhere in the binding
    with pytest.raises(OverflowError, match="index 1"):
        PageIndices([0, -1])
    with pytest.raises(OverflowError):
        PageIndices([2**32])
    with pytest.raises(TypeError):
        PageIndices(["a"])
    with pytest.raises(TypeError):
        PageIndices(5)


def test_counter_alone():
    c = Counter()
    assert (c.done, c.errors, c.submitted) == (0, 0, 0)
    c.wait(timeout=1)  # nothing submitted: returns at once
    with pytest.raises(TendrilTimeoutError) as ei:
        c.wait(1, timeout=0.05)
    assert ei.value.errno == errno.ETIMEDOUT and "0 of 1" in str(ei.value)
    with pytest.raises(ValueError):
        c.wait(1, timeout=-1)


def test_strerror():
    assert "canceled" in tendril.strerror(errno.ECANCELED)
