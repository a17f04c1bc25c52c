/* CUDA device memory through the engine: what te_mr_register accepts and rejects, and,
 * where the provider can register GPU memory, writes GPU->GPU, host->GPU and GPU->host
 * between two engines of this process. Where the provider cannot, the test checks that
 * the refusal is the documented one (-EOPNOTSUPP naming FI_HMEM) and that host memory
 * still works on the same GPU group. Prints one RESULT line per provider. */
#include "gpu_common.h"

#define LEN (1u << 20)

/* Local completion only says the source may be reused; the data is known to be in
 * place when the receiver has counted the write's immediate. */
static te_imm_counter *g_arrived;

static int write_and_wait(te_engine *a, te_mr *src, const te_mr_desc *dst, te_counter *c,
                          uint64_t target)
{
    te_write_args w;
    memset(&w, 0, sizeof w);
    w.src = src;
    w.len = LEN;
    w.dst = dst;
    w.has_imm = true;
    w.imm = 0x600d;
    te_completion comp = {NULL, NULL, c};
    int r = te_write(a, &w, &comp);
    if (r) return r;
    r = te_counter_wait(c, target, 20000);
    if (r) return r;
    if (te_counter_errors(c)) return -EIO;
    return te_imm_counter_wait(g_arrived, 1, 20000);
}

static unsigned char pat(int seed, size_t i) { return (unsigned char)(i * 131 + seed * 7 + (i >> 9)); }

static void fill(unsigned char *h, int seed)
{
    for (size_t i = 0; i < LEN; i++) h[i] = pat(seed, i);
}

static int check(const unsigned char *h, int seed)
{
    for (size_t i = 0; i < LEN; i++)
        if (h[i] != pat(seed, i)) return (int)i + 1;
    return 0;
}

static void rejections(te_engine *e)
{
    void *managed = NULL, *pinned = NULL, *plain = malloc(LEN), *dev = NULL;
    te_mr *mr = NULL;
    CK(cudaMallocManaged(&managed, LEN));
    CK(cudaMallocHost(&pinned, LEN));
    CK(cudaMalloc(&dev, LEN));
    int r = te_mr_register(e, managed, LEN, 0, TE_MR_REMOTE_WRITE, &mr);
    REQUIRE(r == -EINVAL && strstr(te_last_error(), "managed"), "managed: %d %s", r, te_last_error());
    printf("  managed memory rejected: %s\n", te_last_error());
    r = te_mr_register(e, pinned, LEN, 0, TE_MR_REMOTE_WRITE, &mr);
    REQUIRE(r == -EINVAL && strstr(te_last_error(), "host"), "pinned: %d %s", r, te_last_error());
    printf("  pinned host memory as device 0 rejected: %s\n", te_last_error());
    r = te_mr_register(e, plain, LEN, 0, TE_MR_REMOTE_WRITE, &mr);
    REQUIRE(r == -EINVAL, "plain: %d %s", r, te_last_error());
    printf("  malloc memory as device 0 rejected: %s\n", te_last_error());
    r = te_mr_register(e, dev, LEN, 5, TE_MR_REMOTE_WRITE, &mr);
    REQUIRE(r == -ENODEV, "device 5: %d %s", r, te_last_error());
    r = te_mr_register(e, (char *)dev + LEN - 16, 2 * LEN, 0, TE_MR_REMOTE_WRITE, &mr);
    REQUIRE(r == -EINVAL && strstr(te_last_error(), "past the end"), "overrun: %d %s", r,
            te_last_error());
    CK(cudaFree(managed));
    CK(cudaFreeHost(pinned));
    CK(cudaFree(dev));
    free(plain);
}

static int run_provider(const char *prov)
{
    te_config cfg;
    engine_config(&cfg, prov, 0);
    te_engine *a = NULL, *b = NULL;
    int r = te_engine_create(&cfg, &a);
    if (r) {
        printf("RESULT provider=%s engine=unavailable reason=\"%s\"\n", prov, te_last_error());
        return 0;
    }
    REQUIRE(te_engine_create(&cfg, &b) == 0, "second engine: %s", te_last_error());
    printf("provider %s (%s)\n", prov, te_provider_name(a));
    rejections(a);

    unsigned char *h = (unsigned char *)malloc(LEN), *hsrc = NULL, *hdst = NULL;
    void *dsrc = NULL, *ddst = NULL;
    CK(cudaMalloc(&dsrc, LEN));
    CK(cudaMalloc(&ddst, LEN));
    CK(cudaMemset(ddst, 0, LEN));
    hsrc = (unsigned char *)aligned_alloc(4096, LEN);
    hdst = (unsigned char *)aligned_alloc(4096, LEN);
    memset(hdst, 0, LEN);
    te_counter *c = NULL;
    REQUIRE(te_counter_create(&c) == 0, "counter");
    REQUIRE(te_imm_counter_create(b, 0x600d, &g_arrived) == 0, "imm counter");

    /* Host memory on the GPU group: must work whatever the provider does with GPUs. */
    te_mr *mh_src = NULL, *mh_dst = NULL;
    te_mr_desc dh;
    REQUIRE(te_mr_register(a, hsrc, LEN, TE_DEVICE_HOST, TE_MR_LOCAL, &mh_src) == 0, "%s", te_last_error());
    REQUIRE(te_mr_register(b, hdst, LEN, TE_DEVICE_HOST, TE_MR_REMOTE_WRITE, &mh_dst) == 0, "%s",
            te_last_error());
    REQUIRE(te_mr_desc_get(mh_dst, &dh) == 0, "desc");
    fill(hsrc, 1);
    uint64_t target = 1;
    REQUIRE(write_and_wait(a, mh_src, &dh, c, target) == 0, "host->host: %s", te_last_error());
    REQUIRE(check(hdst, 1) == 0, "host->host data");
    printf("  host->host write on the GPU group: ok\n");

    te_mr *md_src = NULL, *md_dst = NULL;
    r = te_mr_register(a, dsrc, LEN, 0, TE_MR_LOCAL, &md_src);
    if (r) {
        char why[600];
        snprintf(why, sizeof why, "%s", te_last_error());
        REQUIRE(r == -EOPNOTSUPP && strstr(why, "FI_HMEM"), "unexpected refusal %d: %s", r, why);
        printf("RESULT provider=%s gpu-registration=unsupported host-on-gpu-group=ok reason=\"%s\"\n",
               prov, why);
    } else {
        int r2 = te_mr_register(b, ddst, LEN, 0, TE_MR_REMOTE_WRITE, &md_dst);
        REQUIRE(r2 == 0, "dst registration after src succeeded: %s", te_last_error());
        te_mr_desc dd;
        REQUIRE(te_mr_desc_get(md_dst, &dd) == 0, "desc");
        /* GPU -> GPU */
        fill(h, 2);
        CK(cudaMemcpy(dsrc, h, LEN, cudaMemcpyHostToDevice));
        REQUIRE(write_and_wait(a, md_src, &dd, c, ++target) == 0, "gpu->gpu: %s", te_last_error());
        CK(cudaMemcpy(h, ddst, LEN, cudaMemcpyDeviceToHost));
        REQUIRE(check(h, 2) == 0, "gpu->gpu data");
        /* host -> GPU */
        fill(hsrc, 3);
        REQUIRE(write_and_wait(a, mh_src, &dd, c, ++target) == 0, "host->gpu: %s", te_last_error());
        CK(cudaMemcpy(h, ddst, LEN, cudaMemcpyDeviceToHost));
        REQUIRE(check(h, 3) == 0, "host->gpu data");
        /* GPU -> host */
        fill(h, 4);
        CK(cudaMemcpy(dsrc, h, LEN, cudaMemcpyHostToDevice));
        REQUIRE(write_and_wait(a, md_src, &dh, c, ++target) == 0, "gpu->host: %s", te_last_error());
        REQUIRE(check(hdst, 4) == 0, "gpu->host data");
        printf("RESULT provider=%s gpu-registration=ok gpu->gpu=ok host->gpu=ok gpu->host=ok\n", prov);
        te_mr_deregister(md_dst);
        te_mr_deregister(md_src);
    }
    te_mr_deregister(mh_src);
    te_mr_deregister(mh_dst);
    te_imm_counter_destroy(g_arrived);
    te_engine_destroy(a);
    te_engine_destroy(b);
    te_counter_destroy(c);
    CK(cudaFree(dsrc));
    CK(cudaFree(ddst));
    free(h);
    free(hsrc);
    free(hdst);
    return 0;
}

int main(void)
{
    if (!gpu_or_skip()) return SKIP;
    const char *one = getenv("TENDRIL_TEST_PROVIDER");
    if (one && *one) return run_provider(one);
    run_provider("tcp");
    run_provider("shm");
    printf("PASS\n");
    return 0;
}
