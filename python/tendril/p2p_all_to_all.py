"""MoE dispatch/combine between GPUs: over NVLink inside a node, over RDMA between nodes.

`P2PAllToAll` follows pplx-garden's constructor and `dispatch`/`combine` signatures. The
kernels live in the C library (include/tendril/a2a.h); this module turns tensors into
pointers and strides and bootstraps the peers from torch.distributed process groups or
pplx-garden ParallelGroups (what pplx-garden users pass): the ranks exchange their
configuration, node identity, a job-unique rendezvous name and (between nodes) engine
addresses and buffer descriptors with an all-gather on `global_group`; the GPUs of one
node then hand each other their buffers as file descriptors over a Unix socket
(SCM_RIGHTS; no ptrace capability needed). docs/a2a.md, docs/a2a-internode.md.
"""
from __future__ import annotations

import uuid
import weakref
from typing import Any, List, Optional

# torch and the CUDA part of the extension are needed only to construct one:
# `tendril.P2PAllToAll` resolves without them (a CPU-only install, a build without nvcc).
try:
    import torch
    import torch.distributed as dist
except ImportError:  # pragma: no cover - depends on the environment
    torch = None  # type: ignore[assignment]
    dist = None  # type: ignore[assignment]

from . import _tendril
from ._engine import shared_memory_provider

_a2a = getattr(_tendril, "_a2a", None)
_A2A_MISSING = "the extension was built without CUDA (no nvcc)"

_RDMA_BUFFERS = {"auto": 0, "gpu": 1, "host": 2}
# Immediates of one context: 3 phases x A2A_MAX_RANKS (docs/a2a-internode.md). Contexts
# that share an engine take consecutive ranges, in creation order (the same on every
# rank, as the constructor is collective).
_IMM_BASE = 0x7A2A0000
_IMM_SPAN = 3 * 64
_next_imm: "weakref.WeakKeyDictionary[Any, int]" = weakref.WeakKeyDictionary()
_next_imm_by_id: dict = {}


def _take_imm_range(engine: Any) -> int:
    """The next free range of immediates on this engine (weakly keyed; an engine type
    without weak references falls back to its id, which lives as long as it does)."""
    try:
        base = _next_imm.get(engine, _IMM_BASE)
        _next_imm[engine] = base + _IMM_SPAN
    except TypeError:
        base = _next_imm_by_id.get(id(engine), _IMM_BASE)
        _next_imm_by_id[id(engine)] = base + _IMM_SPAN
    return base


def _require() -> None:
    if torch is None:
        raise ImportError("tendril.P2PAllToAll needs PyTorch: pip install torch")
    if _a2a is None:
        raise ImportError(
            "tendril.P2PAllToAll needs the CUDA build of tendril: this install has no all-to-all "
            f"({_A2A_MISSING}). Install the CUDA toolkit (nvcc on PATH) and reinstall: pip install ."
        )


def _ptr(t: Optional["torch.Tensor"]) -> int:
    return 0 if t is None else t.data_ptr()


def _has_rdma_peers(rank: int, world: int, per_node: int, dp: int) -> bool:
    """Whether some rank of this rank's slice {g*dp + rank % dp} is on another node."""
    return any((g * dp + rank % dp) // per_node != rank // per_node for g in range(world // dp))


class _Group:
    """The operations P2PAllToAll needs from a group, over either a torch.distributed
    ProcessGroup (None: the default group) or a pplx-garden ParallelGroup (an object with
    ``rank``, ``size``, ``broadcast_object(obj, root)``, ``barrier()`` and, for the
    all-gather, ``all_gather_object(obj)``)."""

    @staticmethod
    def is_pplx(group: Any) -> bool:
        return group is not None and hasattr(group, "broadcast_object") and hasattr(group, "size")

    def __init__(self, group: Any) -> None:
        self.pg = group
        self.pplx = _Group.is_pplx(group)
        if self.pplx:
            self.rank, self.size = int(group.rank), int(group.size)
        else:
            self.rank, self.size = dist.get_rank(group), dist.get_world_size(group)

    def broadcast_from_0(self, obj: Any) -> Any:
        if self.pplx:
            return self.pg.broadcast_object(obj, 0)
        box = [obj]
        src = dist.get_global_rank(self.pg, 0) if self.pg is not None else 0
        dist.broadcast_object_list(box, src=src, group=self.pg)
        return box[0]

    @property
    def can_all_gather(self) -> bool:
        return not self.pplx or hasattr(self.pg, "all_gather_object")

    def all_gather(self, obj: Any) -> List[Any]:
        """Every rank's obj in rank order (all_gather_object: CPU/gloo-friendly)."""
        if self.pplx:
            return list(self.pg.all_gather_object(obj))
        out: List[Any] = [None] * self.size
        dist.all_gather_object(out, obj, group=self.pg)
        return out

    def barrier(self) -> None:
        if self.pplx:
            self.pg.barrier()
        else:
            dist.barrier(group=self.pg)


def _size(group: Any) -> Optional[int]:
    return None if group is None else _Group(group).size



def _usable_stream(handle: int, legacy_stream_deadlocks: bool) -> int:
    """The stream handle the kernels launch on, or RuntimeError where it would hang:
    CUDA's legacy (0) or per-thread (2) default stream with GPU RDMA buffers over shm."""
    if legacy_stream_deadlocks and handle in (0, 2):
        raise RuntimeError(
            "P2PAllToAll: GPU RDMA buffers over shm need the all-to-all on a non-default "
            "stream (e.g. `with torch.cuda.stream(torch.cuda.Stream()):`): shm copies the "
            "incoming data with cudaMemcpy on the legacy default stream, which would wait "
            "for the receiving kernel forever (docs/a2a-internode.md)")
    return handle

class P2PAllToAll:
    """Expert-parallel all-to-all: NVLink between the ranks of a node, RDMA between nodes.

    Groups, as in pplx-garden: ``global_group`` holds every rank (default: torch.distributed's
    default group; rank r is on node ``r // node_group size``: ranks are numbered node by
    node), ``node_group`` the ranks of this node (its size is the NVLink domain; default:
    all of global_group), ``dp_group`` the TP replicas of this rank (size D: experts are
    split over ``world / D`` groups and rank r talks only to the ranks with the same
    ``r % D``). Experts are placed in contiguous blocks: slice rank s = r // D owns
    experts [s * L, min((s+1) * L, E)), L = ceil(E / (world / D)).

    Ranks on other nodes are reached through a TransferEngine: ``engine=`` (keyword-only;
    a ``tendril.TransferEngine`` or its ``fabric_engine``), else one is created for this
    GPU with ``nets_per_gpu`` NICs of its topology group, and stopped by ``destroy()``.
    ``rdma_buffers`` ("auto", "gpu", "host") says where the RDMA staging and receive
    buffers live; the property ``rdma_buffer_kind`` reports the choice ("gpu", "host", or
    "none" without RDMA peers).

    Extensions beyond pplx-garden's signature (keyword-only): `num_sms` (blocks per
    kernel, default every SM), `timeout_ms` (bound of every in-kernel wait on a peer;
    a timeout raises TimeoutError at the next call or poll_error()),
    `combine_partial_dtype` (torch.float32: expert ranks send fp32 partial sums; default:
    partials travel as out_dtype, half the bytes for bf16/f16), `engine`, `rdma_buffers`,
    `imm_base` (first of the 192 immediates the context uses on the engine; default: a
    range per context of the engine, in creation order).
    """

    def __init__(
        self,
        *,
        max_num_tokens: int,
        num_experts: int,
        expert_padding: int,
        hidden_dim: int,
        hidden_dim_scale: Optional[int],
        in_dtype: "torch.dtype",
        out_dtype: "torch.dtype",
        scale_dtype: Optional["torch.dtype"],
        num_experts_per_token: int,
        nets_per_gpu: int = 1,
        max_private_tokens: Optional[int] = None,
        device: "torch.device",
        dp_group: Any = None,
        node_group: Any = None,
        global_group: Any = None,
        num_sms: Optional[int] = None,
        timeout_ms: int = 10000,
        combine_partial_dtype: Optional["torch.dtype"] = None,
        engine: Any = None,
        rdma_buffers: str = "auto",
        imm_base: Optional[int] = None,
    ) -> None:
        self._ctx = None
        self._legacy_stream_deadlocks = False
        self._own_engine = None
        _require()
        out_dtypes = {
            torch.bfloat16: _a2a.DTYPE_BF16,
            torch.float16: _a2a.DTYPE_F16,
            torch.float32: _a2a.DTYPE_F32,
        }
        if global_group is None:
            # pplx-garden's groups without one: a single node; else torch's default group
            global_group = node_group if _Group.is_pplx(node_group) else None
        grp = _Group(global_group)
        world, rank = grp.size, grp.rank
        per_node = _size(node_group) or world
        dp = _size(dp_group) or 1
        if world % per_node:
            raise ValueError(f"P2PAllToAll: global_group has {world} ranks, not a multiple of the node_group "
                             f"size {per_node} (every node has the same number of ranks)")
        if world % dp:
            raise ValueError(f"P2PAllToAll: global_group has {world} ranks, not a multiple of the dp_group "
                             f"size {dp}")
        if world // dp > _a2a.MAX_RANKS:
            raise ValueError(f"P2PAllToAll: {world} ranks / dp_group size {dp} = {world // dp} ranks per "
                             f"all-to-all, more than {_a2a.MAX_RANKS}")
        if rdma_buffers not in _RDMA_BUFFERS:
            raise ValueError(f"P2PAllToAll: rdma_buffers must be one of {sorted(_RDMA_BUFFERS)}, got {rdma_buffers!r}")
        if out_dtype not in out_dtypes:
            raise ValueError(f"P2PAllToAll: out_dtype {out_dtype} must be bfloat16, float16 or float32")
        scales = int(hidden_dim_scale or 0)
        if scales and scale_dtype not in (None, torch.float32):
            raise ValueError("P2PAllToAll: scale_dtype must be torch.float32")
        # max_private_tokens sizes pplx-garden's private RDMA buffers; here every token
        # goes straight to its slot in the peer's block, so it has no effect.
        del max_private_tokens
        self.device = torch.device(device)
        if self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self._group = grp
        self.group = grp.pg
        self.rank, self.world_size = rank, world
        self.ranks_per_node, self.dp_size = per_node, dp
        self.max_num_tokens = max_num_tokens
        self.num_experts = num_experts
        self.hidden_dim = hidden_dim
        self.hidden_dim_scale = scales
        self.in_dtype, self.out_dtype = in_dtype, out_dtype
        self.num_experts_per_token = num_experts_per_token
        self.expert_padding = expert_padding

        rdma = _has_rdma_peers(rank, world, per_node, dp)
        if rdma and not grp.can_all_gather:
            raise ValueError("P2PAllToAll: ranks on several nodes need an all-gather on global_group; this "
                             "group has no all_gather_object")
        if hasattr(engine, "engine") and not isinstance(engine, _tendril.TransferEngine):
            engine = engine.engine  # pplx-garden's TransferEngine.fabric_engine
        if engine is not None and not isinstance(engine, _tendril.TransferEngine):
            raise TypeError("P2PAllToAll: engine must be a tendril.TransferEngine")
        if rdma and engine is None:
            from ._engine import TransferEngine
            try:
                engine = self._own_engine = TransferEngine(nets_per_gpu, [self.device.index])
            except Exception as e:
                raise RuntimeError(
                    f"P2PAllToAll: ranks on other nodes need a TransferEngine; creating one for {self.device} "
                    f"with nets_per_gpu={nets_per_gpu} failed ({e}). Pass engine=TransferEngine(...)") from e
        if not rdma:
            engine = None  # every peer over NVLink: no engine involved
        if imm_base is None and engine is not None:
            imm_base = _take_imm_range(engine)
        self._engine = engine

        itemsize = torch.empty((), dtype=in_dtype).element_size()
        kw = dict(
            rank=rank, world_size=world, device=self.device.index, max_num_tokens=max_num_tokens,
            num_experts=num_experts, experts_per_token=num_experts_per_token,
            expert_padding=expert_padding, hidden_dim=hidden_dim, hidden_dim_scale=scales,
            in_elem_size=itemsize, out_dtype=out_dtypes[out_dtype], num_sms=int(num_sms or 0),
            timeout_ms=int(timeout_ms), partial_f32=int(combine_partial_dtype == torch.float32),
            ranks_per_node=per_node, dp_size=dp, engine=engine, rdma_buffers=_RDMA_BUFFERS[rdma_buffers],
            imm_base=int(imm_base or 0))
        if grp.can_all_gather:
            # rank 0 draws the rendezvous name inside a2a_connect
            kw.update(rendezvous=None, allgather=grp.all_gather)
        else:
            kw.update(rendezvous=grp.broadcast_from_0(uuid.uuid4().hex[:24] if rank == 0 else None))
        try:
            self._ctx = _a2a.create(**kw)
            _a2a.connect(self._ctx, max(int(timeout_ms), 60000))
        except BaseException:
            self._release()
            raise
        grp.barrier()
        info = _a2a.info(self._ctx)
        self.max_recv_tokens = info["max_recv_tokens"]
        self.num_local_experts = info["num_local_experts"]
        self.first_expert = info["first_expert"]
        self.memory_bytes = info["memory_bytes"]
        self.num_rdma_peers = info["num_rdma_peers"]
        self._kind = info["rdma_buffer_kind"]
        # shm/sm2 (the single-machine stand-in for GPUDirect RDMA) move device memory with
        # a cudaMemcpy that the *receiving* process issues on CUDA's legacy default
        # stream; it waits for every kernel on a blocking stream of that process, so a
        # receive kernel there (waiting for this very data) would never finish.
        prov = getattr(getattr(engine, "engine", engine), "provider", "")
        self._legacy_stream_deadlocks = self._kind == "gpu" and shared_memory_provider(prov)

    @property
    def rdma_buffer_kind(self) -> str:
        """Where the RDMA buffers live: "gpu", "host", or "none" (every peer over NVLink)."""
        return self._kind

    # ------------------------------------------------------------------ helpers ----
    def _stream(self) -> int:
        return _usable_stream(torch.cuda.current_stream(self.device).cuda_stream, self._legacy_stream_deadlocks)

    @staticmethod
    def _indices(indices: torch.Tensor) -> torch.Tensor:
        if indices.dtype not in (torch.int32, getattr(torch, "uint32", torch.int32)):
            indices = indices.to(torch.int32)
        return indices.contiguous()

    def _bound(self, bound_m: Optional[torch.Tensor]) -> int:
        if bound_m is None:
            return 0
        if bound_m.dtype != torch.int32 or bound_m.numel() != 1 or not bound_m.is_cuda:
            raise ValueError("bound_m must be a one-element int32 CUDA tensor")
        return bound_m.data_ptr()

    # ----------------------------------------------------------------- dispatch ----
    def dispatch(
        self,
        out_expert_num_tokens: torch.Tensor,
        out_expert_x: torch.Tensor,
        out_expert_x_scale: Optional[torch.Tensor],
        dp_x: torch.Tensor,
        dp_x_scale: Optional[torch.Tensor],
        indices: torch.Tensor,
        weights: torch.Tensor,
        bound_m: Optional[torch.Tensor] = None,
        do_send: bool = True,
        do_recv: bool = True,
    ) -> None:
        flags = (_a2a.SEND if do_send else 0) | (_a2a.RECV if do_recv else 0)
        if not flags:
            raise ValueError("dispatch: do_send or do_recv must be true")
        T = dp_x.shape[0]
        if dp_x.dim() != 2 or dp_x.shape[1] != self.hidden_dim or dp_x.stride(1) != 1:
            raise ValueError(f"dispatch: dp_x must be [T, {self.hidden_dim}] with unit inner stride")
        if dp_x.dtype.itemsize != self.in_dtype.itemsize:
            raise ValueError(f"dispatch: dp_x dtype {dp_x.dtype} does not match in_dtype {self.in_dtype}")
        if out_expert_x.dim() != 2 or out_expert_x.stride(1) != 1:
            raise ValueError("dispatch: out_expert_x must be 2-D with unit inner stride")
        idx = self._indices(indices)
        if idx.shape != (T, self.num_experts_per_token):
            raise ValueError(f"dispatch: indices must be [{T}, {self.num_experts_per_token}]")
        es = dp_x.element_size()
        xs, xs0, xs1 = 0, 0, 0
        os, os0, os1 = 0, 0, 0
        if self.hidden_dim_scale:
            if dp_x_scale is None or out_expert_x_scale is None:
                raise ValueError("dispatch: dp_x_scale and out_expert_x_scale are required")
            if dp_x_scale.dtype != torch.float32 or out_expert_x_scale.dtype != torch.float32:
                raise ValueError("dispatch: scales must be float32")
            xs, xs0, xs1 = dp_x_scale.data_ptr(), dp_x_scale.stride(0), dp_x_scale.stride(1)
            os, os0, os1 = (out_expert_x_scale.data_ptr(), out_expert_x_scale.stride(0),
                            out_expert_x_scale.stride(1))
        if out_expert_num_tokens.dtype != torch.int32:
            raise ValueError("dispatch: out_expert_num_tokens must be int32")
        _a2a.dispatch(
            self._ctx, flags, T, self._bound(bound_m), dp_x.data_ptr(), dp_x.stride(0) * es, xs, xs0, xs1,
            idx.data_ptr(), out_expert_num_tokens.data_ptr(), out_expert_x.data_ptr(),
            out_expert_x.stride(0) * out_expert_x.element_size(), os, os0, os1, out_expert_x.shape[0],
            self._stream())

    # ------------------------------------------------------------------ combine ----
    def combine(
        self,
        out_tokens: torch.Tensor,
        indices: torch.Tensor,
        weights: torch.Tensor,
        expert_y: torch.Tensor,
        bound_m: Optional[torch.Tensor] = None,
        do_send: bool = True,
        do_recv: bool = True,
        accumulate: bool = False,
    ) -> None:
        flags = (_a2a.SEND if do_send else 0) | (_a2a.RECV if do_recv else 0)
        if not flags:
            raise ValueError("combine: do_send or do_recv must be true")
        T = out_tokens.shape[0]
        if out_tokens.dtype != self.out_dtype or expert_y.dtype != self.out_dtype:
            raise ValueError(f"combine: out_tokens and expert_y must be {self.out_dtype}")
        if out_tokens.stride(-1) != 1 or expert_y.stride(-1) != 1:
            raise ValueError("combine: out_tokens and expert_y need a unit inner stride")
        idx = self._indices(indices)
        if idx.shape != (T, self.num_experts_per_token):
            raise ValueError(f"combine: indices must be [{T}, {self.num_experts_per_token}]")
        w = weights
        if w.dtype != torch.float32:
            w = w.to(torch.float32)
        w = w.contiguous()
        es = expert_y.element_size()
        _a2a.combine(
            self._ctx, flags, T, self._bound(bound_m), idx.data_ptr(), w.data_ptr(), expert_y.data_ptr(),
            expert_y.stride(0) * es, expert_y.shape[0], out_tokens.data_ptr(), out_tokens.stride(0) * es,
            bool(accumulate), self._stream())

    # -------------------------------------------------------------------- misc -----
    def poll_error(self) -> None:
        """Raises the error a kernel recorded (TimeoutError when a peer did not answer)."""
        _a2a.poll_error(self._ctx)

    def proxy_timing(self, reset: bool = False) -> Optional[dict]:
        """Host side of this rank's RDMA proxy per phase ("dispatch", "weights",
        "combine"): doorbells timed (count, window, dropped) and four spans, each
        {p50_ns, p99_ns, max_ns}: seen_first (watcher saw the kernel's doorbell -> first
        write posted), first_last, last_done (-> the phase's writes locally complete),
        seen_done. None where this rank has no RDMA peer. reset=True starts the samples
        afresh (after warm-up) and returns None. Tendril's own; pplx-garden has none."""
        return _a2a.proxy_timing(self._ctx, bool(reset))

    def phase_trace(self, epoch: int) -> Optional[dict]:
        """Where iteration `epoch` (1 = the first after connect) spent its time, per RDMA
        phase ("dispatch", "weights", "combine"): host CLOCK_MONOTONIC ns (time.monotonic_ns)
        of bell_ns (the send kernel rang the proxy's doorbell; GPU clock mapped by
        clock_sync), seen_ns / first_ns / last_ns / done_ns (this rank's proxy saw it,
        posted its first and last write, saw them complete) and flag_ns {slice rank:
        ns} (the recv kernel saw that RDMA source's arrival flag). 0 or absent where not
        recorded. Read after the iteration's kernels finished; the last 16 iterations
        are kept. None without an RDMA peer. Tendril's own; pplx-garden has none."""
        return _a2a.phase_trace(self._ctx, int(epoch))

    def trace_newest_epoch(self) -> int:
        """The newest iteration whose dispatch doorbell the kernels stamped (0: none)."""
        return _a2a.trace_newest_epoch(self._ctx)

    def clock_sync(self) -> Optional[int]:
        """Measures the GPU clock against the host's again (connect does it once); the
        uncertainty in ns, or None without an RDMA peer."""
        return _a2a.clock_sync(self._ctx)

    def abort(self) -> None:
        _a2a.abort(self._ctx)

    def _release(self) -> None:
        if self._ctx is not None:
            _a2a.destroy(self._ctx)
            self._ctx = None
        if self._own_engine is not None:
            self._own_engine.stop()
            self._own_engine = None

    def destroy(self, barrier: bool = True) -> None:
        """Frees the context. By default collectively: the group's barriers make sure no
        peer still writes into this rank's buffers when they are freed. After a failure
        that involves a dead or stalled rank (poll_error raised), pass ``barrier=False``:
        the barrier would wait for a rank that never comes, so this rank frees its own
        resources at once (its kernels have stopped; a peer that still writes here fails
        with the engine's error, since the regions are unregistered first)."""
        if self._ctx is None:
            return
        torch.cuda.synchronize(self.device)
        if barrier:
            self._group.barrier()
        self._release()
        if barrier:
            self._group.barrier()
