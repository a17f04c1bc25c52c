"""Configurations of the all-to-all GPU tests (name -> (kind, Cfg))."""
import torch

from a2a_worker import Cfg

F8 = torch.float8_e4m3fn
CASES = {}


def add(kind, cfg):
    CASES[cfg.name] = (kind, cfg)


# ---- EP2: shapes of the issue
add("run", Cfg("dsv3_fp8_bf16", H=7168, S=56, E=256, K=8, T=128, in_dtype=F8, iters=3))
add("run", Cfg("dsv3_fp8_bf16_partial_f32", H=7168, S=56, E=256, K=8, T=128, in_dtype=F8, iters=2,
               partial_f32=True))
add("run", Cfg("h2048_bf16_f16_pad16", H=2048, E=32, K=2, T=64, pad=16, out_dtype=torch.float16))
add("run", Cfg("h4096_bf16_f32_top1", H=4096, E=8, K=1, T=50, out_dtype=torch.float32))
add("run", Cfg("h2560_fp8_bf16_pad8", H=2560, S=20, E=64, K=6, T=77, pad=8, in_dtype=F8))
add("run", Cfg("h7168_bf16_bf16", H=7168, E=64, K=8, T=64))
# ---- every dtype combination
for iname, idt, S in (("fp8", F8, 4), ("bf16", torch.bfloat16, 0), ("f16", torch.float16, 0),
                      ("f32", torch.float32, 0)):
    for oname, odt in (("bf16", torch.bfloat16), ("f16", torch.float16), ("f32", torch.float32)):
        add("run", Cfg(f"dtype_{iname}_{oname}", H=256, S=S, E=16, K=4, T=40, in_dtype=idt, out_dtype=odt))
# ---- routing extremes, sizes, reuse
add("run", Cfg("one_expert_top1", K=1, E=16, T=64, routing="one_expert"))
add("run", Cfg("one_rank_receives_all", K=4, E=16, T=64, routing="one_rank", iters=3))
add("run", Cfg("dropped_routes", K=4, E=16, T=64, routing="dropped"))
add("run", Cfg("zero_tokens", E=16, K=4, T=33, iters=4,
               tokens=lambda r, it: (0, 33, 0, 5)[(r + it) % 4] if it < 2 else (0 if it == 2 else 33)))
add("run", Cfg("bound_m", E=16, K=4, T=64, iters=4, bound=lambda r, it: (17, 0, 64, 40)[it % 4] - (r % 2)))
add("run", Cfg("many_iters_split", H=512, E=32, K=8, T=48, iters=40, split=True,
               tokens=lambda r, it: (it * 7 + r * 5) % 49))
add("run", Cfg("accumulate_bf16", E=16, K=4, T=40, accumulate=True, iters=2))
add("run", Cfg("accumulate_f32_split", E=16, K=4, T=40, accumulate=True, split=True,
               out_dtype=torch.float32, iters=2))
# more tokens than blocks: dispatch send's chunked (block-wide) routing instead of the
# one-token-per-block path, one chunk per block and several
add("run", Cfg("chunked_fp8", H=2048, S=16, E=64, K=8, T=300, in_dtype=F8, sms=8, iters=3))
add("run", Cfg("chunked_multi_round", H=512, E=32, K=4, T=1000, sms=4, iters=2, split=True,
               tokens=lambda r, it: (1000, 777)[(r + it) % 2]))
# one rank runs both halves in one launch (it stores the rows it sends itself straight to
# its output) while the other runs them split, alternating: the counters must agree
add("run", Cfg("mixed_fused_split", H=1024, S=8, E=32, K=8, T=64, in_dtype=F8, iters=4,
               split=lambda r, it: (r + it) % 2 == 1))
add("run", Cfg("mixed_fused_split_chunked", H=1024, S=8, E=32, K=8, T=300, in_dtype=F8, sms=8, iters=4,
               split=lambda r, it: (r + it) % 2 == 1, tokens=lambda r, it: (300, 211)[(r + it) % 2]))
# fused, chunked, with bound_m sometimes at or below the block count (one token per chunk)
add("run", Cfg("chunked_bound", H=512, S=4, E=32, K=4, T=300, in_dtype=F8, sms=8, iters=4,
               bound=lambda r, it: (300, 5, 0, 150)[it % 4] - r))
add("graph", Cfg("graph_fp8", H=1024, S=8, E=32, K=4, T=64, in_dtype=F8,
                 bound=lambda r, it: (it * 13 + r * 3) % 65))
add("timeout", Cfg("timeout", T=8))
add("timeout", Cfg("timeout_direct", T=300))  # fused direct path: the wait for CNT mid-send
add("overflow", Cfg("overflow", T=16))          # recv half finds too many rows
# GPU RDMA buffers over shm: the default stream is refused, a side stream works
add("legacy_stream", Cfg("legacy_stream", E=8, K=2, T=32, iters=1))

add("overflow", Cfg("overflow_direct", T=300))  # fused direct path: own rows past the capacity

# ---- EP4 / EP8 (several ranks per GPU)
add("run", Cfg("ep_fp8_random", H=2048, S=16, E=64, K=8, T=32, in_dtype=F8, iters=5,
               tokens=lambda r, it: (r * 11 + it * 5) % 33))
add("run", Cfg("ep_f16_partial_f32", H=1024, E=64, K=8, T=32, out_dtype=torch.float16, iters=3,
               partial_f32=True))
add("run", Cfg("ep_one_rank", E=64, K=4, T=24, routing="one_rank", iters=2))
add("run", Cfg("ep_zero_and_bound", E=24, K=3, T=24, pad=4, iters=3, out_dtype=torch.float32,
               tokens=lambda r, it: 0 if (r + it) % 3 == 0 else 24, bound=lambda r, it: 24 - r, split=True))
add("run", Cfg("ep_chunked", H=512, E=64, K=8, T=300, sms=5, iters=2))  # fused: direct (T <= 64 x 5)
add("run", Cfg("ep_mixed_fused_split", H=512, E=64, K=8, T=32, iters=3, split=lambda r, it: (r + it) % 3 == 0))
add("killed", Cfg("killed"))  # the last rank is SIGKILLed mid-run (run_killed)
add("graph", Cfg("ep_graph", H=512, E=32, K=4, T=16, bound=lambda r, it: (it * 5 + r) % 17))

EP2 = [n for n in CASES if not n.startswith("ep_") and CASES[n][0] != "killed"]
EPN = [n for n in CASES if n.startswith("ep_")]
