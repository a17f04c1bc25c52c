/* Is anyone listening at a tcp peer's address? The engine asks when an operation to the
 * peer has made no progress for a while.
 *
 * Why: libfabric 1.17's ofi_rxm connects on the first operation to a peer and answers
 * every post with -FI_EAGAIN until connected. When the peer's process is gone its
 * listening port refuses the connection; rxm closes the attempt, reconnects on the next
 * post, and never reports anything, so the operation waits for its deadline. (A peer that
 * dies with requests in flight resets the connection instead, and rxm does fail those.)
 * A connection refused at the peer's address is the same evidence rxm throws away: a
 * non-blocking connect() to it, checked on later calls, says so without ever blocking
 * the worker. A successful probe connection is closed at once; the peer's provider sees a
 * connection that sends nothing and drops it. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "transport/fabric/fabric_internal.h"

#define PROBE_EVERY_NS 100000000ull  /* at most one probe per peer per 100 ms */
#define PROBE_GIVE_UP_NS 2000000000ull /* an unanswered connect: unknown, try again later */

typedef struct probe {
    uint64_t peer;
    int fd;            /* connect in progress, or -1 */
    uint64_t started;
    uint64_t next;     /* earliest start of the next probe */
} probe;

struct sock_probes {
    probe *v;
    size_t n, cap;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void sock_probes_free(sock_probes *s)
{
    if (!s) return;
    for (size_t k = 0; k < s->n; k++)
        if (s->v[k].fd >= 0) close(s->v[k].fd);
    free(s->v);
    free(s);
}

static probe *slot(sock_probes *s, uint64_t peer)
{
    for (size_t k = 0; k < s->n; k++)
        if (s->v[k].peer == peer) return &s->v[k];
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 16;
        probe *nv = realloc(s->v, cap * sizeof *nv);
        if (!nv) return NULL;
        s->v = nv;
        s->cap = cap;
    }
    probe *p = &s->v[s->n++];
    *p = (probe){.peer = peer, .fd = -1};
    return p;
}

/* 0 refused, 1 accepted or still unknown. */
static int finish(probe *p, int err, uint64_t now)
{
    close(p->fd);
    p->fd = -1;
    p->next = now + PROBE_EVERY_NS;
    return err == ECONNREFUSED ? 0 : 1;
}

int sock_probe_peer(sock_probes **sp, struct fid_av *av, uint64_t peer)
{
    if (!*sp && !(*sp = calloc(1, sizeof **sp))) return 1;
    probe *p = slot(*sp, peer);
    if (!p) return 1;
    uint64_t now = now_ns();
    if (p->fd >= 0) {
        struct pollfd pf = {.fd = p->fd, .events = POLLOUT};
        if (poll(&pf, 1, 0) == 1) {
            int err = 0;
            socklen_t len = sizeof err;
            if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len)) err = errno;
            return finish(p, err, now);
        }
        if (now - p->started > PROBE_GIVE_UP_NS) return finish(p, ETIMEDOUT, now);
        return 1;
    }
    if (now < p->next) return 1;
    struct sockaddr_storage ss;
    size_t alen = sizeof ss;
    memset(&ss, 0, sizeof ss);
    if (fi_av_lookup(av, (fi_addr_t)peer, &ss, &alen) || alen > sizeof ss ||
        (ss.ss_family != AF_INET && ss.ss_family != AF_INET6)) {
        p->next = now + PROBE_EVERY_NS; /* not a socket address: nothing to probe */
        return 1;
    }
    p->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (p->fd < 0) return 1;
    p->started = now;
    socklen_t sl = ss.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    if (connect(p->fd, (struct sockaddr *)&ss, sl) == 0) return finish(p, 0, now);
    if (errno != EINPROGRESS) return finish(p, errno, now);
    return 1;
}
