/* Peers are isolated from each other's faults, and a peer cannot write where it was not
 * allowed to:
 *  - among three engines, a peer that stops reading and is then SIGKILLed affects only the
 *    operations to it: traffic to the live peer completes meanwhile, operations to the dead
 *    one fail quickly, its source region is released, the death is reported (callback and
 *    te_peer_state) within a second, and later operations to it fail;
 *  - a peer that dies while idle is reported within a second of the next operation to it;
 *  - writing to an engine of the same process after it stopped fails cleanly;
 *  - forged descriptors (wrong key, range past the region) do not change the target's
 *    memory or count as immediates; on tcp the sender sees the rejection (docs/engine.md,
 *    trust model). */
/* ctest-labels: threads (the TSan run: peer callbacks, the prober and the worker) */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/clock.h"
#include "harness.h"
#include "peer.h"

#define PEER_REGION "16777216"
#define LEN (64u << 10) /* above shm's inject size: completes only on the target's answer */
#define TMO 20000

typedef struct seen {
    _Atomic int downs;
    _Atomic uint64_t down_ns;
    te_addr down_addr;
} seen;

static void on_peer(void *arg, const te_addr *addr, int state)
{
    seen *s = arg;
    if (state != TE_PEER_DOWN) return;
    if (atomic_load(&s->downs) == 0) {
        s->down_addr = *addr;
        atomic_store(&s->down_ns, tn_now_ns());
    }
    atomic_fetch_add(&s->downs, 1);
}

static te_engine *engine(uint32_t timeout_ms)
{
    te_config cfg;
    th_config(&cfg);
    cfg.op_timeout_ms = timeout_ms;
    te_engine *e;
    assert_int_equal(te_engine_create(&cfg, &e), 0);
    return e;
}

static te_mr *region(te_engine *e, size_t len, uint8_t **buf)
{
    *buf = aligned_alloc(4096, len);
    th_fill(*buf, len, 7, 0);
    te_mr *mr;
    assert_int_equal(te_mr_register(e, *buf, len, TE_DEVICE_HOST, TE_MR_REMOTE_WRITE, &mr), 0);
    return mr;
}

static void start_peer(th_proc *p, te_addr *addr, te_mr_desc *d)
{
    char why[4200];
    if (th_peer_start(p, PEER_REGION, addr, d, TMO, why, sizeof why)) fail_msg("%s", why);
}

static int write_to(te_engine *e, te_mr *src, const te_mr_desc *d, uint64_t off, uint64_t len,
                    uint32_t imm, te_counter *c)
{
    te_write_args a = {.src = src, .len = len, .dst = d, .dst_offset = off, .has_imm = imm != 0,
                       .imm = imm, .route = {TE_ROUTE_SHARDED, 0}};
    te_completion comp = {.counter = c};
    return te_write(e, &a, &comp);
}

/* SIGSTOP is asynchronous: wait until the process is really stopped (state T). */
static void stop_process(pid_t pid)
{
    kill(pid, SIGSTOP);
    char path[64], st[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    for (int k = 0; k < 2000; k++) {
        FILE *f = fopen(path, "r");
        size_t n = f ? fread(st, 1, sizeof st - 1, f) : 0;
        if (f) fclose(f);
        st[n] = '\0';
        const char *rp = strrchr(st, ')');
        if (rp && rp[1] == ' ' && rp[2] == 'T') return;
        usleep(1000);
    }
    fail_msg("process %d did not stop", (int)pid);
}

/* The source region of operations that failed because their peer is gone is free soon
 * after the failure (the transport returns their work requests: shm with the peer, tcp
 * with the connection; docs/engine.md, Peers), never only at the operation timeout. */
static int deregister_freed(te_mr *mr)
{
    int r = te_mr_deregister(mr);
    for (int k = 0; k < 400 && r == -EBUSY; k++) {
        usleep(5000);
        r = te_mr_deregister(mr);
    }
    return r;
}

static void test_dead_peer_isolated(void **state)
{
    (void)state;
    te_engine *e = engine(15000);
    seen s = {0};
    assert_int_equal(te_peer_set_callback(e, on_peer, &s), 0);
    uint8_t *buf_live, *buf_dead;
    te_mr *to_live = region(e, LEN, &buf_live), *to_dead = region(e, LEN, &buf_dead);
    th_proc live, dead;
    te_addr live_addr, dead_addr;
    te_mr_desc live_d, dead_d;
    start_peer(&live, &live_addr, &live_d);
    start_peer(&dead, &dead_addr, &dead_d);
    char reply[256];
    assert_int_equal(th_ask(&live, reply, sizeof reply, TMO, "counter 5"), 0);

    /* Both peers work. */
    te_counter *c_live, *c_dead;
    assert_int_equal(te_counter_create(&c_live), 0);
    assert_int_equal(te_counter_create(&c_dead), 0);
    assert_int_equal(write_to(e, to_dead, &dead_d, 0, LEN, 0, c_dead), 0);
    assert_int_equal(write_to(e, to_live, &live_d, 0, LEN, 5, c_live), 0);
    th_assert_counter(c_dead, 1, TMO);
    th_assert_counter(c_live, 1, TMO);
    th_assert_peer_imms(&live, 5, 1, TMO, 0);
    assert_int_equal(te_peer_state(e, &dead_addr), TE_PEER_UP);

    /* The doomed peer stops reading: writes to it stay outstanding, and the live peer's
     * traffic must flow past them. */
    stop_process(dead.pid);
    const int n_dead = 16, n_live = 64;
    for (int k = 0; k < n_dead; k++)
        assert_int_equal(write_to(e, to_dead, &dead_d, (uint64_t)k * LEN, LEN, 9, c_dead), 0);
    for (int k = 0; k < n_live; k++)
        assert_int_equal(write_to(e, to_live, &live_d, (uint64_t)(k % 128) * LEN, LEN, 5, c_live), 0);
    th_assert_counter(c_live, 1 + n_live, TMO);
    th_assert_peer_imms(&live, 5, n_live, TMO, 0);

    /* Now it dies. Everything to it fails soon (well before the 15 s deadline), the death
     * is reported, and its source region is free again. */
    th_kill(&dead, SIGKILL);
    kill(dead.pid, SIGCONT);
    int rc = th_wait(&dead, TMO);
    uint64_t reaped = tn_now_ns();
    assert_int_equal(rc, 128 + SIGKILL);
    if (te_counter_wait(c_dead, 1 + n_dead, 10000))
        fail_msg("operations to the dead peer did not complete: %llu of %d",
                 (unsigned long long)te_counter_done(c_dead), 1 + n_dead);
    assert_true(te_counter_errors(c_dead) > 0);
    for (int k = 0; k < 400 && atomic_load(&s.downs) == 0; k++) usleep(5000);
    assert_true(atomic_load(&s.downs) > 0);
    uint64_t down_ns = atomic_load(&s.down_ns);
    double after = down_ns > reaped ? (double)(down_ns - reaped) / 1e9 : 0.0;
    print_message("dead peer reported %.3f s after it was reaped; %llu of %d operations to it "
                  "failed\n", after, (unsigned long long)te_counter_errors(c_dead), 1 + n_dead);
    /* well under the 10 s the test waits: the death is seen, not timed out (slack for a
     * loaded CI machine) */
    assert_true(after < 3.0);
    assert_true(te_addr_equal(&s.down_addr, &dead_addr));
    assert_int_equal(te_peer_state(e, &dead_addr), TE_PEER_DOWN);
    assert_int_equal(te_peer_state(e, &live_addr), TE_PEER_UP);
    assert_int_equal(deregister_freed(to_dead), 0);

    /* Operations submitted after the death fail, small ones included, and because the
     * peer is known down, not by the 15 s operation timeout: on tcp a peer down after a
     * reset is not probed, and an operation that cannot post to it fails after 300 ms
     * (worker.c, check_stalled). */
    te_mr *small;
    uint8_t *buf_small;
    small = region(e, 4096, &buf_small);
    te_counter *c_after;
    assert_int_equal(te_counter_create(&c_after), 0);
    uint64_t t_after = tn_now_ns();
    for (int k = 0; k < 20; k++) assert_int_equal(write_to(e, small, &dead_d, 0, 64, 0, c_after), 0);
    te_completion sc = {.counter = c_after};
    assert_int_equal(te_send(e, &dead_addr, "ping", 4, &sc), 0);
    th_assert_counter(c_live, 1 + n_live, TMO); /* unchanged, and nothing failed there */
    assert_int_equal(te_counter_wait(c_after, 21, 10000), 0);
    assert_int_equal(te_counter_errors(c_after), 21);
    print_message("21 operations submitted after the death failed within %.3f s\n",
                  (double)(tn_now_ns() - t_after) / 1e9);

    /* The live peer is unaffected. */
    for (int k = 0; k < n_live; k++)
        assert_int_equal(write_to(e, to_live, &live_d, (uint64_t)k * LEN, LEN, 5, c_live), 0);
    th_assert_counter(c_live, 1 + 2 * n_live, TMO);
    th_assert_peer_imms(&live, 5, n_live, TMO, 100);
    th_send(&live, "quit");
    assert_int_equal(th_wait(&live, TMO), 0);
    te_engine_destroy(e);
    te_counter_destroy(c_live);
    te_counter_destroy(c_dead);
    te_counter_destroy(c_after);
    free(buf_live);
    free(buf_dead);
    free(buf_small);
}

/* A peer that dies while idle (nothing in flight, so its connection closes cleanly) is
 * reported within a second of the next operation to it, and that operation fails. */
static void test_idle_peer_death(void **state)
{
    (void)state;
    te_engine *e = engine(15000);
    seen s = {0};
    assert_int_equal(te_peer_set_callback(e, on_peer, &s), 0);
    uint8_t *buf;
    te_mr *src = region(e, LEN, &buf);
    th_proc p;
    te_addr pa;
    te_mr_desc pd;
    start_peer(&p, &pa, &pd);
    te_counter *c;
    assert_int_equal(te_counter_create(&c), 0);
    assert_int_equal(write_to(e, src, &pd, 0, LEN, 0, c), 0);
    th_assert_counter(c, 1, TMO);
    th_kill(&p, SIGKILL);
    assert_int_equal(th_wait(&p, TMO), 128 + SIGKILL);
    uint64_t t0 = tn_now_ns();
    assert_int_equal(write_to(e, src, &pd, 0, LEN, 0, c), 0);
    assert_int_equal(te_counter_wait(c, 2, TMO), 0);
    double failed = (double)(tn_now_ns() - t0) / 1e9;
    for (int k = 0; k < 400 && atomic_load(&s.downs) == 0; k++) usleep(5000);
    assert_true(atomic_load(&s.downs) > 0);
    /* shm's prober may see the death before the write is even submitted (negative). */
    double reported = (double)((int64_t)atomic_load(&s.down_ns) - (int64_t)t0) / 1e9;
    print_message("idle peer killed: the next write failed after %.3f s, peer reported down "
                  "after %.3f s (operation timeout 15 s)\n", failed, reported);
    assert_int_equal(te_counter_errors(c), 1);
    /* a fifth of the 15 s operation timeout: the death is seen, not timed out (slack for a
     * loaded CI machine; typically 0.4 s) */
    assert_true(reported < 3.0);
    assert_true(failed < 3.0);
    assert_int_equal(te_peer_state(e, &pa), TE_PEER_DOWN);
    assert_int_equal(deregister_freed(src), 0);
    te_engine_destroy(e);
    te_counter_destroy(c);
    free(buf);
}

static void test_stopped_engine_same_process(void **state)
{
    (void)state;
    te_engine *a = engine(5000), *b = engine(5000);
    uint8_t *src_buf, *dst_buf;
    te_mr *src = region(a, LEN, &src_buf), *dst = region(b, LEN, &dst_buf);
    te_mr_desc d;
    te_addr b_addr;
    assert_int_equal(te_mr_desc_get(dst, &d), 0);
    assert_int_equal(te_main_address(b, &b_addr), 0);
    te_counter *c;
    assert_int_equal(te_counter_create(&c), 0);
    assert_int_equal(write_to(a, src, &d, 0, LEN, 0, c), 0);
    th_assert_counter(c, 1, TMO);
    assert_int_equal(te_engine_stop(b), 0);
    for (int k = 0; k < 10; k++) {
        assert_int_equal(write_to(a, src, &d, 0, k % 2 ? 64 : LEN, 3, c), 0);
        te_completion sc = {.counter = c};
        assert_int_equal(te_send(a, &b_addr, "x", 1, &sc), 0);
    }
    uint64_t t0 = tn_now_ns();
    assert_int_equal(te_counter_wait(c, 21, TMO), 0);
    double secs = (double)(tn_now_ns() - t0) / 1e9;
    print_message("after the target engine stopped: %llu of 20 operations failed within %.2f s "
                  "(timeout 5 s)\n", (unsigned long long)te_counter_errors(c), secs);
    /* The promise is errors, not a hang: every operation fails by the operation timeout.
     * Usually they fail at once (the connection reset is seen); libfabric 2.1's tcp under
     * a loaded CI machine once lost one write posted while the connection was being torn
     * down, and the engine's timeout reported it at 5.0 s. Slack covers a loaded machine. */
    assert_true(secs < 5.0 + 2.0);
    assert_int_equal(te_counter_errors(c), 20);
    for (int k = 0; k < 200 && te_peer_state(a, &b_addr) != TE_PEER_DOWN; k++) usleep(5000);
    assert_int_equal(te_peer_state(a, &b_addr), TE_PEER_DOWN);
    assert_int_equal(deregister_freed(src), 0);
    te_engine_destroy(a);
    te_engine_destroy(b);
    te_counter_destroy(c);
    free(src_buf);
    free(dst_buf);
}

static uint64_t peer_hash(th_proc *p, uint64_t off, uint64_t len)
{
    char reply[256];
    unsigned long long h = 0;
    if (th_ask(p, reply, sizeof reply, TMO, "hash %llu %llu", (unsigned long long)off,
               (unsigned long long)len) || sscanf(reply, "hash %llu", &h) != 1)
        fail_msg("hash: %s", reply);
    return h;
}

typedef struct forged {
    const char *what;
    te_mr_desc d;
    uint64_t off, len;
} forged;

static void test_forged_descriptors(void **state)
{
    (void)state;
    te_engine *e = engine(3000);
    uint8_t *buf;
    te_mr *src = region(e, 2 * LEN, &buf);
    th_proc p;
    te_addr pa;
    te_mr_desc pd;
    start_peer(&p, &pa, &pd);
    char reply[256];
    assert_int_equal(th_ask(&p, reply, sizeof reply, TMO, "counter 11"), 0);
    assert_int_equal(th_ask(&p, reply, sizeof reply, TMO, "counter 12"), 0);

    forged f[4];
    f[0] = (forged){"wrong key, small", pd, 0, 64};
    f[0].d.nic[0].rkey ^= 0x5a5a5a5a5a5a5a5aull;
    f[1] = (forged){"range past the end", pd, pd.len - 32, 64};
    f[1].d.len = pd.len + 4096;
    f[2] = (forged){"range before the start", pd, 0, 64};
    f[2].d.base -= 4096;
    f[3] = (forged){"wrong key, large", pd, 0, LEN};
    f[3].d.nic[0].rkey += 1;
    bool tcp = !strcmp(th_provider(), "tcp");
    for (size_t k = 0; k < sizeof f / sizeof *f; k++) {
        /* shm: a large write the target refused is never answered (the sender's request
         * then times out and its source stays held): only small ones are sent there. */
        if (!tcp && f[k].len > 4096) continue;
        for (int with_imm = 0; with_imm < 2; with_imm++) {
            te_counter *c;
            assert_int_equal(te_counter_create(&c), 0);
            /* The forged base may be a legitimate offset-0 write (see below): its
             * immediate is a different one, not checked. */
            uint32_t imm = !with_imm ? 0 : k == 2 ? 13 : 11;
            assert_int_equal(write_to(e, src, &f[k].d, f[k].off, f[k].len, imm, c), 0);
            assert_int_equal(te_counter_wait(c, 1, TMO), 0);
            print_message("%s, %s immediate: sender sees %s\n", f[k].what, with_imm ? "with" : "without",
                          te_counter_errors(c) ? "an error" : "success");
            if (tcp && k != 2) assert_int_equal(te_counter_errors(c), 1);
            te_counter_destroy(c);
        }
    }
    /* A real write after the forgeries still lands (the target is healthy) and acts as a
     * fence: forged writes posted before it have been processed by the target.
     * tcp tears the connection down after a rejected write: the next write may be
     * canceled with it, and the one after that reconnects. */
    te_counter *c;
    assert_int_equal(te_counter_create(&c), 0);
    uint64_t sent = 0;
    for (; sent < 5 && te_counter_errors(c) == sent; usleep(100000)) {
        assert_int_equal(write_to(e, src, &pd, LEN, 64, 12, c), 0);
        assert_int_equal(te_counter_wait(c, ++sent, TMO), 0);
    }
    assert_true(te_counter_errors(c) < sent);
    th_assert_peer_imms(&p, 12, 1, TMO, 0);
    assert_int_equal(te_peer_state(e, &pa), TE_PEER_UP);
    /* Nothing forged reached the target's memory: the region was all zero, and the only
     * bytes written since are the real write's at [LEN, LEN + 64). */
    uint8_t *zero = calloc(1, LEN);
    /* "Before the start" forges the descriptor's base. Where the provider addresses
     * regions by offset (shm with its direct path off) the base is not used at all: the
     * write is a legitimate one at offset 0. Elsewhere the target rejects it. */
    uint64_t head = peer_hash(&p, 0, 64);
    print_message("forged base: the first 64 bytes are %s\n",
                  head == th_hash(zero, 64) ? "untouched" : "the source's (offset addressing)");
    assert_true(head == th_hash(zero, 64) || head == th_hash(buf, 64));
    assert_true(peer_hash(&p, 64, LEN - 64) == th_hash(zero, LEN - 64));
    assert_true(peer_hash(&p, pd.len - 4096, 4096) == th_hash(zero, 4096));
    assert_true(peer_hash(&p, LEN, 64) == th_hash(buf, 64));
    free(zero);
    assert_int_equal(th_ask(&p, reply, sizeof reply, TMO, "value 11"), 0);
    assert_string_equal(reply, "value 0"); /* no forged immediate was counted */
    th_send(&p, "quit");
    assert_int_equal(th_wait(&p, TMO), 0);
    te_counter_destroy(c);
    te_engine_destroy(e);
    free(buf);
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "--child")) return th_peer_main(argc > 3 ? argv[3] : NULL);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dead_peer_isolated),
        cmocka_unit_test(test_idle_peer_death),
        cmocka_unit_test(test_stopped_engine_same_process),
        cmocka_unit_test(test_forged_descriptors),
    };
    return cmocka_run_group_tests_name(th_provider(), tests, NULL, NULL);
}
