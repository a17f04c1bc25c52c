"""MoE dispatch/combine between the GPUs of one NVLink domain.

`P2PAllToAll` follows pplx-garden's constructor and `dispatch`/`combine` signatures. The
kernels live in the C library (include/tendril/a2a.h); this module turns tensors into
pointers and strides and bootstraps the peers from a torch.distributed process group or
a pplx-garden ParallelGroup (what pplx-garden users pass):
rank 0 draws a job-unique name, every rank exports its GPU buffer as a file descriptor
and the peers fetch it over a Unix socket (SCM_RIGHTS; no ptrace capability needed).
"""
from __future__ import annotations

import uuid
from typing import Any, Optional

# torch and the CUDA extension are needed only to construct one: `tendril.P2PAllToAll`
# resolves without them (a CPU-only install, a build without nvcc).
try:
    import torch
    import torch.distributed as dist
except ImportError:  # pragma: no cover - depends on the environment
    torch = None  # type: ignore[assignment]
    dist = None  # type: ignore[assignment]

try:
    from . import _a2a
except ImportError as _e:  # pragma: no cover - depends on the build
    _a2a = None  # type: ignore[assignment]
    _A2A_MISSING = str(_e)


def _require() -> None:
    if torch is None:
        raise ImportError("tendril.P2PAllToAll needs PyTorch: pip install torch")
    if _a2a is None:
        if "libcuda" in _A2A_MISSING:
            raise ImportError(f"tendril.P2PAllToAll needs the NVIDIA driver (libcuda.so.1): {_A2A_MISSING}")
        raise ImportError(
            "tendril.P2PAllToAll needs the CUDA build of tendril: this install has no tendril._a2a "
            f"({_A2A_MISSING}). Install the CUDA toolkit (nvcc on PATH) and reinstall: pip install ."
        )


def _ptr(t: Optional["torch.Tensor"]) -> int:
    return 0 if t is None else t.data_ptr()


class _Group:
    """The operations P2PAllToAll needs from a group, over either a torch.distributed
    ProcessGroup (None: the default group) or a pplx-garden ParallelGroup (an object with
    ``rank``, ``size``, ``broadcast_object(obj, root)`` and ``barrier()``)."""

    def __init__(self, group: Any) -> None:
        self.pg = group
        self.pplx = group is not None and hasattr(group, "broadcast_object") and hasattr(group, "size")
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

    def barrier(self) -> None:
        if self.pplx:
            self.pg.barrier()
        else:
            dist.barrier(group=self.pg)


class P2PAllToAll:
    """Expert-parallel all-to-all over NVLink (every rank of `global_group` on one node).

    Experts are placed in contiguous blocks: rank r owns experts
    [r * ceil(E/W), min((r+1) * ceil(E/W), E)).

    Extensions beyond pplx-garden's signature (keyword-only): `num_sms` (blocks per
    kernel, default every SM), `timeout_ms` (bound of every in-kernel wait on a peer;
    a timeout raises TimeoutError at the next call or poll_error()), and
    `combine_partial_dtype` (torch.float32: expert ranks send fp32 partial sums; default:
    partials travel as out_dtype, half the NVLink bytes for bf16/f16).
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
    ) -> None:
        _require()
        out_dtypes = {
            torch.bfloat16: _a2a.DTYPE_BF16,
            torch.float16: _a2a.DTYPE_F16,
            torch.float32: _a2a.DTYPE_F32,
        }
        grp = _Group(global_group if global_group is not None else node_group)
        world, rank = grp.size, grp.rank
        if dp_group is not None and _Group(dp_group).size > 1:
            raise NotImplementedError("P2PAllToAll: dp_group (TP) size > 1 is not supported yet")
        if node_group is not None and _Group(node_group).size != world:
            raise NotImplementedError(
                "P2PAllToAll: ranks on several nodes need the RDMA path, which is not part of this build; "
                "node_group must span global_group")
        if out_dtype not in out_dtypes:
            raise ValueError(f"P2PAllToAll: out_dtype {out_dtype} must be bfloat16, float16 or float32")
        scales = int(hidden_dim_scale or 0)
        if scales and scale_dtype not in (None, torch.float32):
            raise ValueError("P2PAllToAll: scale_dtype must be torch.float32")
        # nets_per_gpu and max_private_tokens size the RDMA path of pplx-garden; over
        # NVLink every token goes straight to its final slot, so they have no effect.
        del nets_per_gpu, max_private_tokens
        self.device = torch.device(device)
        if self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self._group = grp
        self.group = grp.pg
        self.rank, self.world_size = rank, world
        self.max_num_tokens = max_num_tokens
        self.num_experts = num_experts
        self.hidden_dim = hidden_dim
        self.hidden_dim_scale = scales
        self.in_dtype, self.out_dtype = in_dtype, out_dtype
        self.num_experts_per_token = num_experts_per_token
        self.expert_padding = expert_padding

        name = grp.broadcast_from_0(uuid.uuid4().hex[:24] if rank == 0 else None)
        itemsize = torch.empty((), dtype=in_dtype).element_size()
        self._ctx = _a2a.create(
            rank=rank, world_size=world, device=self.device.index, max_num_tokens=max_num_tokens,
            num_experts=num_experts, experts_per_token=num_experts_per_token,
            expert_padding=expert_padding, hidden_dim=hidden_dim, hidden_dim_scale=scales,
            in_elem_size=itemsize, out_dtype=out_dtypes[out_dtype], num_sms=int(num_sms or 0),
            timeout_ms=int(timeout_ms), rendezvous=f"{name}",
            partial_f32=int(combine_partial_dtype == torch.float32))
        try:
            _a2a.connect(self._ctx, max(int(timeout_ms), 60000))
        except Exception:
            _a2a.destroy(self._ctx)
            raise
        grp.barrier()
        info = _a2a.info(self._ctx)
        self.max_recv_tokens = info["max_recv_tokens"]
        self.num_local_experts = info["num_local_experts"]
        self.first_expert = info["first_expert"]
        self.memory_bytes = info["memory_bytes"]

    # ------------------------------------------------------------------ helpers ----
    def _stream(self) -> int:
        return torch.cuda.current_stream(self.device).cuda_stream

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

    def abort(self) -> None:
        _a2a.abort(self._ctx)

    def destroy(self) -> None:
        if self._ctx is None:
            return
        torch.cuda.synchronize(self.device)
        self._group.barrier()
        _a2a.destroy(self._ctx)
        self._ctx = None
        self._group.barrier()
