/* A kernel polls the GPU-visible flag of an immediate counter and then reads the data
 * that arrived before it: two engines in this process, the receiver's region is mapped
 * pinned host memory, the sender writes E chunks with the immediate per round. The
 * kernel compares every byte against the round's pattern, so data read before it was
 * placed shows up as a mismatch (the previous round's bytes are different). */
#include <unistd.h>

#include "gpu_common.h"

#define CHUNKS 8
#define CHUNK (256u * 1024u)
#define LEN (CHUNKS * CHUNK)
#define ROUNDS 20
#define IMM 0x5157u

__host__ __device__ static unsigned char pat(unsigned round, unsigned i)
{
    return (unsigned char)(i * 37u + round * 101u + (i >> 11));
}

struct result {
    unsigned long long epoch_seen;
    unsigned long long mismatches;
    unsigned timed_out;
};

__device__ static unsigned long long load_acquire_sys(const unsigned long long *p)
{
    unsigned long long v;
    asm volatile("ld.acquire.sys.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
    return v;
}

__global__ void k_wait_and_check(const unsigned long long *flag, unsigned long long round,
                                 const unsigned char *data, struct result *res)
{
    __shared__ int ok;
    if (threadIdx.x == 0) {
        unsigned long long t0, t;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
        unsigned long long v;
        ok = 1;
        while ((v = load_acquire_sys(flag)) < round) {
            asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
            if (t - t0 > 20000000000ull) { /* 20 s */
                ok = 0;
                res->timed_out = 1;
                break;
            }
        }
        __threadfence_system();
        res->epoch_seen = v;
    }
    __syncthreads();
    if (!ok) return;
    unsigned long long bad = 0;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < LEN; i += blockDim.x * gridDim.x)
        if (((volatile const unsigned char *)data)[i] != pat((unsigned)round, i)) bad++;
    if (bad) atomicAdd(&res->mismatches, bad);
}

int main(void)
{
    if (!gpu_or_skip()) return SKIP;
    const char *prov = test_provider();
    te_config cfg;
    engine_config(&cfg, prov, TE_DEVICE_HOST);
    te_engine *snd = NULL, *rcv = NULL;
    REQUIRE(te_engine_create(&cfg, &snd) == 0, "%s", te_last_error());
    REQUIRE(te_engine_create(&cfg, &rcv) == 0, "%s", te_last_error());

    unsigned char *dst = NULL, *ddst = NULL, *src = (unsigned char *)aligned_alloc(4096, LEN);
    CK(cudaHostAlloc((void **)&dst, LEN, cudaHostAllocMapped | cudaHostAllocPortable));
    CK(cudaHostGetDevicePointer((void **)&ddst, dst, 0));
    memset(dst, 0, LEN);
    te_mr *ms = NULL, *md = NULL;
    te_mr_desc d;
    REQUIRE(te_mr_register(snd, src, LEN, TE_DEVICE_HOST, TE_MR_LOCAL, &ms) == 0, "%s", te_last_error());
    REQUIRE(te_mr_register(rcv, dst, LEN, TE_DEVICE_HOST, TE_MR_REMOTE_WRITE, &md) == 0, "%s",
            te_last_error());
    REQUIRE(te_mr_desc_get(md, &d) == 0, "desc");
    te_imm_flag *f = NULL;
    REQUIRE(te_imm_flag_create(rcv, IMM, CHUNKS, &f) == 0, "%s", te_last_error());
    printf("provider %s, flag memory %s\n", te_provider_name(rcv), te_imm_flag_memory_kind(f));
    REQUIRE(strcmp(te_imm_flag_memory_kind(f), "host"), "flag must be GPU-visible here");

    struct result *res = NULL;
    CK(cudaMalloc(&res, sizeof *res));
    te_counter *c = NULL;
    REQUIRE(te_counter_create(&c) == 0, "counter");
    cudaStream_t s;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    for (unsigned r = 1; r <= ROUNDS; r++) {
        CK(cudaMemsetAsync(res, 0, sizeof *res, s));
        k_wait_and_check<<<64, 256, 0, s>>>((const unsigned long long *)te_imm_flag_device_ptr(f), r,
                                              ddst, res);
        CK(cudaGetLastError());
        usleep(2000); /* let the kernel start polling before anything arrives */
        for (unsigned i = 0; i < LEN; i++) src[i] = pat(r, i);
        for (unsigned k = 0; k < CHUNKS; k++) {
            te_write_args w;
            memset(&w, 0, sizeof w);
            w.src = ms;
            w.src_offset = (uint64_t)k * CHUNK;
            w.len = CHUNK;
            w.dst = &d;
            w.dst_offset = (uint64_t)k * CHUNK;
            w.has_imm = true;
            w.imm = IMM;
            w.route.kind = TE_ROUTE_PINNED;
            te_completion comp = {NULL, NULL, c};
            REQUIRE(te_write(snd, &w, &comp) == 0, "%s", te_last_error());
        }
        REQUIRE(te_counter_wait(c, (uint64_t)r * CHUNKS, 20000) == 0, "%s", te_last_error());
        CK(cudaStreamSynchronize(s));
        struct result h;
        CK(cudaMemcpy(&h, res, sizeof h, cudaMemcpyDeviceToHost));
        REQUIRE(!h.timed_out, "round %u: kernel never saw the flag (host epoch %llu)", r,
                (unsigned long long)te_imm_flag_value(f));
        REQUIRE(h.epoch_seen >= r, "round %u: epoch %llu", r, h.epoch_seen);
        REQUIRE(h.mismatches == 0, "round %u: %llu bytes read before they arrived", r, h.mismatches);
        REQUIRE(te_imm_flag_value(f) == r, "host epoch %llu after round %u",
                (unsigned long long)te_imm_flag_value(f), r);
    }
    printf("%d rounds: kernel saw the flag and all %u bytes of each round\n", ROUNDS, LEN);
    CK(cudaStreamDestroy(s));
    te_imm_flag_destroy(f);
    te_mr_deregister(ms);
    te_mr_deregister(md);
    te_engine_destroy(snd);
    te_engine_destroy(rcv);
    te_counter_destroy(c);
    CK(cudaFree(res));
    CK(cudaFreeHost(dst));
    free(src);
    printf("PASS\n");
    return 0;
}
