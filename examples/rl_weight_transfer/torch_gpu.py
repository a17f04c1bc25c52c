"""RL weight transfer on GPUs: a trainer process writes its PyTorch parameters (CUDA
tensors) into another process's PyTorch parameters (CUDA tensors) through the Python
binding, the way pplx-garden's TransferEngine is used for RL weight updates.

    PYTHONPATH=python:build/python python3 examples/rl_weight_transfer/torch_gpu.py \
        [--size-gib 4] [--provider shm] [--device 0] [--steps 3] [--page-mib 4]

Model: a synthetic transformer of bf16 tensors with Llama-like shapes (hidden 4096, MLP
11008, vocab 32000; --hidden scales hidden and MLP: embedding, per layer q/k/v/o, gate/up/down and two norms, final norm,
LM head); the number of layers is chosen so that the model is about --size-gib GiB.

Each step: the trainer fills its parameters with new values on the GPU (a seeded
torch.Generator per step and parameter), the inference process arms an ImmCounter for the
step's immediate and says go; the trainer writes every parameter into the matching
inference parameter: tensors larger than a page as paged writes (submit_paged_writes, one
immediate per page) plus one submit_write for the tail, small tensors as one submit_write
(one immediate). The inference process waits for exactly that many immediates and then
regenerates the expected values itself and compares every parameter with torch.equal.
The update time is measured on the inference side from "go" to the last immediate.

Exit status: 0 when every step's every parameter matched, 1 on any failure, 77 (skipped,
with the reason) without torch, a CUDA device, the extension, or a provider that can
register GPU memory (libfabric without FI_HMEM) - unless TENDRIL_GPU_REQUIRE_HMEM=1.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from typing import Any, List, Tuple

SKIP = 77
IMM_BASE = 0x52570000  # "RW" + step
HIDDEN, MLP, VOCAB = 4096, 11008, 32000


def model_shapes(size_gib: float, hidden: int = HIDDEN, mlp: int = MLP, vocab: int = VOCAB) -> List[Tuple[str, Tuple[int, ...]]]:
    """Parameter names and shapes of a transformer of about size_gib GiB in bf16."""
    per_layer = 4 * hidden * hidden + 3 * hidden * mlp + 2 * hidden
    fixed = 2 * vocab * hidden + hidden
    layers = max(1, round((size_gib * 2**30 / 2 - fixed) / per_layer))
    shapes: List[Tuple[str, Tuple[int, ...]]] = [("embed_tokens", (vocab, hidden))]
    for i in range(layers):
        p = f"layers.{i}."
        shapes += [(p + "input_norm", (hidden,))]
        shapes += [(p + n, (hidden, hidden)) for n in ("q_proj", "k_proj", "v_proj", "o_proj")]
        shapes += [(p + "post_norm", (hidden,))]
        shapes += [(p + "gate_proj", (mlp, hidden)), (p + "up_proj", (mlp, hidden)), (p + "down_proj", (hidden, mlp))]
    shapes += [("norm", (hidden,)), ("lm_head", (vocab, hidden))]
    return shapes


def shapes_of(args: Any) -> List[Tuple[str, Tuple[int, ...]]]:
    return model_shapes(args.size_gib, args.hidden, args.hidden * 43 // 16 // 64 * 64)


def fill(torch: Any, t: Any, step: int, index: int) -> None:
    """Values of parameter `index` at `step`, generated on the GPU (both sides)."""
    g = torch.Generator(device=t.device)
    g.manual_seed(step * 1_000_003 + index)
    t.normal_(generator=g)


def skip_or_fail(reason: str) -> int:
    if os.environ.get("TENDRIL_GPU_REQUIRE_HMEM") == "1":
        print(f"FAIL: {reason}")
        return 1
    print(f"SKIP: {reason}")
    return SKIP


def cannot_register(exc: BaseException) -> bool:
    import errno

    return getattr(exc, "errno", None) in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS)


def make_engine(tendril: Any, provider: str, device: int) -> Any:
    names = ["lo"] if "tcp" in provider else [None]
    return tendril.TransferEngine(1, [device], provider=provider, nics={device: names})


def writes_for(nbytes: int, page: int) -> Tuple[int, int]:
    """(full pages, tail bytes) of a parameter: immediates = pages + (1 if tail)."""
    if nbytes <= page:
        return 0, nbytes
    return nbytes // page, nbytes % page


# ------------------------------------------------------------------- inference ----

def inference_main(conn: Any, args: Any) -> None:
    try:
        conn.send(_inference(conn, args))
    except BaseException as e:  # reported to the trainer, which prints it
        conn.send(("error", f"{type(e).__name__}: {e}"))


def _inference(conn: Any, args: Any) -> Any:
    import torch
    import tendril

    torch.cuda.set_device(args.device)
    e = make_engine(tendril, args.provider, args.device)
    shapes = shapes_of(args)
    params = [torch.zeros(s, dtype=torch.bfloat16, device=f"cuda:{args.device}") for _, s in shapes]
    descs = []
    for p in params:
        try:
            _, d = e.register_tensor(p)
        except tendril.TendrilError as exc:
            if cannot_register(exc):
                return ("cannot", str(exc))
            raise
        descs.append(d)
    conn.send(("ready", descs))
    results = []
    while True:
        msg = conn.recv()
        if msg[0] == "quit":
            break
        _, step, expected = msg
        ctr = e.imm_counter(IMM_BASE + step)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        conn.send(("go", step))
        try:
            ctr.wait(expected, timeout=120.0)
        except tendril.TendrilTimeoutError:
            results.append((step, None, f"only {ctr.value} of {expected} immediates arrived"))
            conn.send(("checked", step))
            continue
        secs = time.perf_counter() - t0
        time.sleep(0.05)
        extra = ctr.value
        ctr.close()
        bad = []
        want = torch.empty_like(params[0])
        for i, ((name, _), p) in enumerate(zip(shapes, params)):
            if want.shape != p.shape:
                want = torch.empty_like(p)
            fill(torch, want, step, i)
            if not torch.equal(p, want):
                diff = (p.view(torch.int16) != want.view(torch.int16)).flatten().nonzero()
                bad.append(f"{name}: {diff.numel()} elements differ, first at {int(diff[0])}")
        err = "; ".join(bad[:5]) if bad else (f"{extra} immediates beyond {expected}" if extra else None)
        results.append((step, secs, err))
        conn.send(("checked", step))
    e.stop()
    return ("results", results)


# --------------------------------------------------------------------- trainer ----

def recv(conn: Any, secs: float = 300.0) -> Any:
    """The inference process's next message; a dead or silent peer is an error, not a hang."""
    if not conn.poll(secs):
        return ("error", f"no message from the inference process within {secs:.0f} s")
    try:
        return conn.recv()
    except EOFError:
        return ("error", "the inference process exited")

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gib", type=float, default=4.0, help="model size in GiB of bf16 (default 4)")
    ap.add_argument("--provider", default=os.environ.get("TENDRIL_TEST_PROVIDER", "shm"))
    ap.add_argument("--device", type=int, default=0, help="CUDA device of both processes")
    ap.add_argument("--steps", type=int, default=3, help="weight updates (the first one is a warm-up)")
    ap.add_argument("--page-mib", type=float, default=4.0, help="page size of the paged writes")
    ap.add_argument("--hidden", type=int, default=HIDDEN,
                    help=f"hidden size (default {HIDDEN}; MLP = 43/16 x hidden, as 11008/4096)")
    args = ap.parse_args()
    # CUDA IPC (shm's path for device memory) needs plain cudaMalloc blocks, not the
    # caching allocator's expandable (VMM) segments.
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:False")
    try:
        import torch
    except ImportError as e:
        print(f"SKIP: PyTorch is not installed ({e})")
        return SKIP
    if not torch.cuda.is_available() or torch.cuda.device_count() <= args.device:
        print(f"SKIP: no CUDA device {args.device} ({torch.cuda.device_count()} visible)")
        return SKIP
    try:
        import tendril
    except ImportError as e:
        print(f"SKIP: the tendril extension is not importable ({e}); PYTHONPATH=python:build/python")
        return SKIP

    shapes = shapes_of(args)
    n_params = sum(int(torch.Size(s).numel()) for _, s in shapes)
    nbytes = 2 * n_params
    page = int(args.page_mib * 2**20)
    page -= page % 2
    print(f"model: {len(shapes)} tensors, {n_params:,} parameters, {nbytes:,} bytes "
          f"({nbytes / 2**30:.2f} GiB bf16), provider {args.provider}, cuda:{args.device}, "
          f"pages of {page / 2**20:g} MiB", flush=True)

    ctx = mp.get_context("spawn")  # CUDA in the child needs a fresh process
    conn, child_conn = ctx.Pipe()
    child = ctx.Process(target=inference_main, args=(child_conn, args))
    child.start()
    child_conn.close()  # only the child holds its end: its exit shows up as EOF here
    try:
        return _trainer(torch, tendril, args, shapes, page, nbytes, conn)
    finally:
        if child.is_alive():
            try:
                conn.send(("quit",))
            except OSError:
                pass
            child.join(60)
        if child.is_alive():
            child.kill()


def _trainer(torch: Any, tendril: Any, args: Any, shapes: Any, page: int, nbytes: int, conn: Any) -> int:
    torch.cuda.set_device(args.device)
    e = make_engine(tendril, args.provider, args.device)
    params = [torch.empty(s, dtype=torch.bfloat16, device=f"cuda:{args.device}") for _, s in shapes]
    mrs = []
    for p in params:
        try:
            mr, _ = e.register_tensor(p, remote=False)
        except tendril.TendrilError as exc:
            if cannot_register(exc):
                return skip_or_fail(f"provider {args.provider} cannot register GPU memory: {exc}")
            raise
        mrs.append(mr)
    msg = recv(conn)
    if msg[0] == "cannot":
        return skip_or_fail(f"provider {args.provider} cannot register GPU memory: {msg[1]}")
    if msg[0] != "ready":
        print(f"FAIL: inference process: {msg}")
        return 1
    descs = msg[1]
    plan = [writes_for(p.numel() * 2, page) for p in params]
    expected = sum(n + (1 if tail else 0) for n, tail in plan)
    print(f"schedule: {expected} writes per update "
          f"({sum(n for n, _ in plan)} pages in paged writes, {sum(1 for _, t in plan if t)} single writes)",
          flush=True)
    done = tendril.Counter()
    submitted = 0
    for step in range(1, args.steps + 1):
        for i, p in enumerate(params):
            fill(torch, p, step, i)
        torch.cuda.synchronize()  # the values are in place before any write reads them
        conn.send(("step", step, expected))
        msg = recv(conn)
        if msg[0] != "go":
            print(f"FAIL: inference process: {msg}")
            return 1
        t0 = time.perf_counter()
        for mr, desc, (n_pages, tail) in zip(mrs, descs, plan):
            imm = IMM_BASE + step
            if n_pages:
                idx = tendril.PageIndices(range(n_pages))
                e.submit_paged_writes(page, mr, idx, page, 0, desc, idx, page, 0, imm, counter=done)
                submitted += 1
            if tail:
                off = n_pages * page
                e.submit_write(mr, off, tail, imm, desc, off, counter=done)
                submitted += 1
        done.wait(submitted, timeout=120.0)
        local = time.perf_counter() - t0
        if done.errors:
            print(f"FAIL: {done.errors} write(s) failed")
            return 1
        msg = recv(conn)
        if msg[0] != "checked":
            print(f"FAIL: inference process: {msg}")
            return 1
        print(f"step {step}: submitted and locally complete in {local * 1e3:.1f} ms", flush=True)
    conn.send(("quit",))
    msg = recv(conn)
    if msg[0] != "results":
        print(f"FAIL: inference process: {msg}")
        return 1
    fails = 0
    times = []
    for step, secs, err in msg[1]:
        if err:
            fails += 1
            print(f"step {step}: FAIL: {err}")
        else:
            print(f"step {step}: update {secs * 1e3:.1f} ms ({nbytes / secs / 1e9:.2f} GB/s), "
                  f"all {len(params)} tensors torch.equal")
            if step > 1:
                times.append(secs)
    e.stop()
    if fails or len(msg[1]) != args.steps:
        print(f"FAIL: {fails} step(s) failed")
        return 1
    if times:
        best, mean = min(times), sum(times) / len(times)
        print(f"RESULT rl-weights model_bytes={nbytes} params={sum(p.numel() for p in params)} "
              f"tensors={len(params)} update_ms_min={best * 1e3:.1f} update_ms_mean={mean * 1e3:.1f} "
              f"GBps={nbytes / best / 1e9:.2f} provider={args.provider}")
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
