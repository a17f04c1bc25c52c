/* The remote end of the integration tests: a real process with its own engine that
 * exposes a registered region and answers line commands on stdin (see th_peer_main). */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "harness.h"
#include "peer.h"

#define MAX_IMMS 256

static struct {
    te_engine *e;
    te_mr *mr;
    uint8_t *region;
    size_t size;
    pthread_mutex_t lock;
    uint32_t imm_val[MAX_IMMS];
    uint64_t imm_plain[MAX_IMMS];
    uint64_t imm_reached[MAX_IMMS];
    bool keep[MAX_IMMS];
    int n_imm;
    uint64_t msgs, msg_hash_sum;
    te_imm_counter *counters[MAX_IMMS];
    uint32_t counter_imm[MAX_IMMS];
    int n_counters;
} P = {.lock = PTHREAD_MUTEX_INITIALIZER};

static int imm_slot(uint32_t imm)
{
    for (int k = 0; k < P.n_imm; k++)
        if (P.imm_val[k] == imm) return k;
    if (P.n_imm == MAX_IMMS) return -1;
    P.imm_val[P.n_imm] = imm;
    return P.n_imm++;
}

static void on_imm(void *arg, uint32_t imm)
{
    pthread_mutex_lock(&P.lock);
    int s = imm_slot(imm);
    if (s >= 0) P.imm_plain[s]++;
    pthread_mutex_unlock(&P.lock);
}

static bool on_reached(void *arg, uint32_t imm)
{
    pthread_mutex_lock(&P.lock);
    int s = imm_slot(imm);
    bool keep = false;
    if (s >= 0) {
        P.imm_reached[s]++;
        keep = P.keep[s];
    }
    pthread_mutex_unlock(&P.lock);
    return keep;
}

static void on_msg(void *arg, const void *data, size_t len)
{
    pthread_mutex_lock(&P.lock);
    P.msgs++;
    P.msg_hash_sum += th_hash(data, len) ^ len;
    pthread_mutex_unlock(&P.lock);
}

static te_imm_counter *counter_for(uint32_t imm)
{
    for (int k = 0; k < P.n_counters; k++)
        if (P.counter_imm[k] == imm) return P.counters[k];
    return NULL;
}

static void on_send_done(void *arg, int status, const char *msg)
{
    atomic_store((_Atomic int *)arg, status ? status : 1);
}

int th_peer_main(const char *arg)
{
    size_t size = arg && *arg ? strtoull(arg, NULL, 0) : (8u << 20);
    te_config cfg;
    th_config(&cfg);
    int r = te_engine_create(&cfg, &P.e);
    if (r) {
        th_child_reply("error %d %s", r, te_last_error());
        return 2;
    }
    P.size = size;
    P.region = aligned_alloc(4096, (size + 4095) & ~(size_t)4095);
    memset(P.region, 0, size);
    if ((r = te_mr_register(P.e, P.region, size, TE_DEVICE_HOST, TE_MR_REMOTE_WRITE, &P.mr))) {
        th_child_reply("error %d %s", r, te_last_error());
        return 2;
    }
    te_imm_set_callback(P.e, on_imm, NULL);
    te_recv_pool *pool;
    if ((r = te_recv_pool_create(P.e, 4096, 32, on_msg, NULL, NULL, &pool))) {
        th_child_reply("error %d %s", r, te_last_error());
        return 2;
    }
    te_mr_desc d;
    te_addr a;
    char dhex[TE_MR_DESC_TEXT_MAX], ahex[TE_ADDR_TEXT_MAX];
    te_mr_desc_get(P.mr, &d);
    te_main_address(P.e, &a);
    te_mr_desc_format(&d, dhex, sizeof dhex);
    te_addr_format(&a, ahex, sizeof ahex);
    th_child_reply("ready %s %s", ahex, dhex);

    char line[4096];
    while (th_child_read(line, sizeof line, 300000) == 0) {
        char cmd[32] = "";
        sscanf(line, "%31s", cmd);
        unsigned long long x, y, z;
        unsigned imm;
        if (!strcmp(cmd, "quit")) break;
        if (!strcmp(cmd, "hash") && sscanf(line, "hash %llu %llu", &x, &y) == 2) {
            if (x > P.size || y > P.size - x) th_child_reply("err range");
            else th_child_reply("hash %" PRIu64, th_hash(P.region + x, y));
        } else if (!strcmp(cmd, "zero")) {
            memset(P.region, 0, P.size);
            th_child_reply("ok");
        } else if (!strcmp(cmd, "counter") && sscanf(line, "counter %u", &imm) == 1) {
            te_imm_counter *c;
            r = te_imm_counter_create(P.e, imm, &c);
            if (!r && P.n_counters < MAX_IMMS) {
                P.counters[P.n_counters] = c;
                P.counter_imm[P.n_counters++] = imm;
            }
            th_child_reply(r ? "err %d" : "ok", r);
        } else if (!strcmp(cmd, "wait") && sscanf(line, "wait %u %llu %llu", &imm, &x, &y) == 3) {
            te_imm_counter *c = counter_for(imm);
            r = c ? te_imm_counter_wait(c, x, (int)y) : -ENOENT;
            th_child_reply("%s %d %" PRIu64, r ? "err" : "ok", r, c ? te_imm_counter_value(c) : 0);
        } else if (!strcmp(cmd, "value") && sscanf(line, "value %u", &imm) == 1) {
            te_imm_counter *c = counter_for(imm);
            th_child_reply("value %" PRIu64, c ? te_imm_counter_value(c) : 0);
        } else if (!strcmp(cmd, "expect") && sscanf(line, "expect %u %llu %llu", &imm, &x, &y) == 3) {
            pthread_mutex_lock(&P.lock);
            int s = imm_slot(imm);
            if (s >= 0) {
                P.keep[s] = y != 0;
                P.imm_reached[s] = 0;
                P.imm_plain[s] = 0;
            }
            pthread_mutex_unlock(&P.lock);
            r = te_imm_expect(P.e, imm, x, on_reached, NULL, NULL);
            th_child_reply(r ? "err %d" : "ok", r);
        } else if (!strcmp(cmd, "imms") && sscanf(line, "imms %u", &imm) == 1) {
            pthread_mutex_lock(&P.lock);
            int s = imm_slot(imm);
            th_child_reply("imms %" PRIu64 " %" PRIu64, s >= 0 ? P.imm_reached[s] : 0,
                           s >= 0 ? P.imm_plain[s] : 0);
            pthread_mutex_unlock(&P.lock);
        } else if (!strcmp(cmd, "msgs")) {
            pthread_mutex_lock(&P.lock);
            th_child_reply("msgs %" PRIu64 " %" PRIu64, P.msgs, P.msg_hash_sum);
            pthread_mutex_unlock(&P.lock);
        } else if (!strcmp(cmd, "send")) {
            char to[TE_ADDR_TEXT_MAX];
            if (sscanf(line, "send %511s %llu %llu", to, &x, &z) != 3) {
                th_child_reply("err args");
                continue;
            }
            te_addr dst;
            /* On the heap: if the wait gives up, the send may still complete into it, so
             * it is then left allocated rather than freed under the engine. */
            struct {
                _Atomic int done;
                uint8_t buf[];
            } *sw = calloc(1, sizeof *sw + (x ? x : 1));
            if (!sw) {
                th_child_reply("err %d", -ENOMEM);
                continue;
            }
            th_fill(sw->buf, x, z, 0);
            te_completion comp = {.fn = on_send_done, .arg = (void *)&sw->done};
            r = te_addr_parse(to, &dst);
            if (!r) r = te_send(P.e, &dst, sw->buf, x, &comp);
            uint64_t deadline = tn_now_ns() + 60000000000ull;
            while (!r && !atomic_load(&sw->done) && tn_now_ns() < deadline) usleep(1000);
            int fin = atomic_load(&sw->done);
            if (r || fin) free(sw);
            th_child_reply("%s %d", !r && fin == 1 ? "ok" : "err", r ? r : fin);
        } else if (!strcmp(cmd, "stats")) {
            te_nic_stats s;
            te_nic_stats_get(P.e, 0, 0, &s);
            th_child_reply("stats %" PRIu64 " %" PRIu64 " %" PRIu64, s.imms_received, s.recv_ops, s.errors);
        } else if (!strcmp(cmd, "nicstats") && sscanf(line, "nicstats %llu", &x) == 1) {
            te_nic_stats s;
            r = te_nic_stats_get(P.e, 0, (uint32_t)x, &s);
            if (r) th_child_reply("err %d", r);
            else th_child_reply("nicstats %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64,
                                s.imms_received, s.recv_ops, s.errors, s.write_ops, s.write_bytes);
        } else if (!strcmp(cmd, "sleep")) {
            /* no reply: the parent kills us */
        } else {
            th_child_reply("err unknown command '%s'", cmd);
        }
    }
    te_engine_destroy(P.e);
    free(P.region);
    return 0;
}

int th_peer_start(th_proc *p, const char *arg, te_addr *addr, te_mr_desc *desc, int timeout_ms,
                  char *why, size_t why_cap)
{
    return th_peer_start_as(p, "peer", arg, addr, desc, timeout_ms, why, why_cap);
}

int th_peer_start_as(th_proc *p, const char *role, const char *arg, te_addr *addr, te_mr_desc *desc,
                     int timeout_ms, char *why, size_t why_cap)
{
    char line[4096], ahex[TE_ADDR_TEXT_MAX], dhex[TE_MR_DESC_TEXT_MAX];
    int r = th_spawn(p, role, arg);
    if (!r) r = th_recv(p, line, sizeof line, timeout_ms);
    if (!r && sscanf(line, "ready %511s %2047s", ahex, dhex) != 2) r = -EPROTO;
    if (!r) r = te_addr_parse(ahex, addr);
    if (!r) r = te_mr_desc_parse(dhex, desc);
    if (r && why) snprintf(why, why_cap, "peer failed to start (%d): %s", r, r == -EPROTO ? line : "");
    return r;
}

int th_peer_expect_imms(th_proc *p, uint32_t imm, uint64_t n, int timeout_ms, int settle_ms,
                        char *why, size_t why_cap)
{
    char reply[256];
    int r = th_ask(p, reply, sizeof reply, timeout_ms + 5000, "wait %u %" PRIu64 " %d", imm, n,
                   timeout_ms);
    if (r || strncmp(reply, "ok", 2)) {
        snprintf(why, why_cap, "waiting for %" PRIu64 " immediates %u: %s", n, imm, r ? "no answer" : reply);
        return -1;
    }
    usleep((useconds_t)settle_ms * 1000); /* a surplus immediate would show up now */
    r = th_ask(p, reply, sizeof reply, timeout_ms, "value %u", imm);
    if (r || strcmp(reply, "value 0")) {
        snprintf(why, why_cap, "immediates %u: %s after the expected %" PRIu64 " (surplus)", imm,
                 r ? "no answer" : reply, n);
        return -1;
    }
    return 0;
}
