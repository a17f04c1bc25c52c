/*
 * File-descriptor exchange over abstract Unix sockets.
 *
 * Rank r listens on "\0tendril-a2a.<rendezvous>.<r>" (r: the physical rank). A server
 * thread accepts one connection per peer of the exchange (the node peers of r's slice), checks that the peer runs as the same user (SO_PEERCRED), reads
 * its hello (magic, rank, layout) and answers with its own hello plus the fd
 * (SCM_RIGHTS). The calling thread connects to every peer (retrying while the peer's
 * listener is not there yet) and collects their fds. No ptrace, no pidfd_getfd.
 */
#include "a2a_share.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/error.h"

#define HELLO_MAGIC 0x54413241u /* "TA2A" */

typedef struct hello {
    uint32_t magic;
    int32_t rank, world;
    uint32_t pad;
    uint64_t size;
    uint64_t layout;
} hello;

static socklen_t sock_name(struct sockaddr_un *a, const char *rdv, int rank) {
    memset(a, 0, sizeof(*a));
    a->sun_family = AF_UNIX;
    /* abstract namespace: leading NUL, no file to clean up */
    int n = snprintf(a->sun_path + 1, sizeof(a->sun_path) - 1, "tendril-a2a.%s.%d", rdv, rank);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

/* full read/write with a deadline */
static int io_all(int fd, void *buf, size_t len, int writing, int64_t deadline) {
    char *p = buf;
    while (len > 0) {
        struct pollfd pf = {.fd = fd, .events = writing ? POLLOUT : POLLIN};
        int64_t left = deadline - (int64_t)tn_now_ms();
        if (left <= 0) return -ETIMEDOUT;
        int rc = poll(&pf, 1, (int)left);
        if (rc < 0 && errno == EINTR) continue;
        if (rc < 0) return -errno;
        if (rc == 0) return -ETIMEDOUT;
        ssize_t n = writing ? send(fd, p, len, MSG_NOSIGNAL) : recv(fd, p, len, 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n < 0) return -errno;
        if (n == 0) return -ECONNRESET;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

typedef struct server {
    int lfd;
    const a2a_share_offer *offer;
    int npeers;
    const int *peers;
    int64_t deadline;
    int rc;
} server;

static int is_peer(const server *sv, int r)
{
    for (int i = 0; i < sv->npeers; i++)
        if (sv->peers[i] == r) return 1;
    return 0;
}

static int serve_one(server *sv, int cfd) {
    struct ucred cred;
    socklen_t cl = sizeof(cred);
    if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0) return -errno;
    if (cred.uid != geteuid()) return tn_err(-EPERM, "a2a connect: peer uid %u is not ours", cred.uid);
    hello in;
    int rc = io_all(cfd, &in, sizeof(in), 0, sv->deadline);
    if (rc) return rc;
    if (in.magic != HELLO_MAGIC || in.world != sv->offer->world || in.layout != sv->offer->layout)
        return tn_err(-EPROTO, "a2a connect: rank %d has a different configuration", in.rank);
    if (!is_peer(sv, in.rank))
        return tn_err(-EPROTO, "a2a connect: rank %d connected, but it is not a node peer of rank "
                               "%d's all-to-all (ranks_per_node or dp_size differ?)",
                      in.rank, sv->offer->rank);
    hello out = {HELLO_MAGIC, sv->offer->rank, sv->offer->world, 0, sv->offer->size,
                 sv->offer->layout};
    struct iovec iov = {.iov_base = &out, .iov_len = sizeof(out)};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    memset(&u, 0, sizeof(u));
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                         .msg_controllen = sizeof(u.buf)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &sv->offer->fd, sizeof(int));
    for (;;) {
        ssize_t n = sendmsg(cfd, &msg, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -errno;
        if ((size_t)n != sizeof(out)) return -EPROTO;
        break;
    }
    /* wait until the peer closes: it has its copy of the fd then */
    char b;
    struct pollfd pf = {.fd = cfd, .events = POLLIN};
    int64_t left = sv->deadline - (int64_t)tn_now_ms();
    if (left > 0 && poll(&pf, 1, (int)left) > 0) (void)!recv(cfd, &b, 1, 0);
    return 0;
}

static void *server_main(void *arg) {
    server *sv = arg;
    int need = sv->npeers;
    sv->rc = 0;
    while (need > 0) {
        struct pollfd pf = {.fd = sv->lfd, .events = POLLIN};
        int64_t left = sv->deadline - (int64_t)tn_now_ms();
        if (left <= 0) {
            sv->rc = -ETIMEDOUT;
            break;
        }
        int rc = poll(&pf, 1, (int)left);
        if (rc < 0 && errno == EINTR) continue;
        if (rc <= 0) {
            sv->rc = rc == 0 ? -ETIMEDOUT : -errno;
            break;
        }
        int cfd = accept4(sv->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (cfd < 0) continue;
        rc = serve_one(sv, cfd);
        close(cfd);
        if (rc) {
            sv->rc = rc;
            break;
        }
        need--;
    }
    return NULL;
}

static int fetch_one(const char *rdv, const a2a_share_offer *offer, int q, int64_t deadline,
                     int *fd_out, uint64_t *size_out) {
    struct sockaddr_un a;
    socklen_t al = sock_name(&a, rdv, q);
    int fd = -1;
    for (;;) {
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) return -errno;
        if (connect(fd, (struct sockaddr *)&a, al) == 0) break;
        int e = errno;
        close(fd);
        if (e != ECONNREFUSED && e != ENOENT && e != EAGAIN) return -e;
        if ((int64_t)tn_now_ms() >= deadline)
            return tn_err(-ETIMEDOUT, "a2a connect: rank %d did not show up", q);
        tn_sleep_us(2000);
    }
    hello out = {HELLO_MAGIC, offer->rank, offer->world, 0, offer->size, offer->layout};
    int rc = io_all(fd, &out, sizeof(out), 1, deadline);
    if (rc) goto done;
    hello in;
    struct iovec iov = {.iov_base = &in, .iov_len = sizeof(in)};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                         .msg_controllen = sizeof(u.buf)};
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    int64_t left = deadline - (int64_t)tn_now_ms();
    if (left <= 0 || poll(&pf, 1, (int)left) <= 0) {
        rc = tn_err(-ETIMEDOUT, "a2a connect: rank %d did not answer", q);
        goto done;
    }
    ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_WAITALL);
    if (n != (ssize_t)sizeof(in)) {
        rc = tn_err(-EPROTO, "a2a connect: short answer from rank %d", q);
        goto done;
    }
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (!c || c->cmsg_type != SCM_RIGHTS || in.magic != HELLO_MAGIC || in.rank != q) {
        rc = tn_err(-EPROTO, "a2a connect: bad answer from rank %d", q);
        goto done;
    }
    memcpy(fd_out, CMSG_DATA(c), sizeof(int));
    *size_out = in.size;
done:
    close(fd);
    return rc;
}

int a2a_share_exchange(const char *rdv, const a2a_share_offer *offer, int timeout_ms, int npeers,
                       const int *peers, int *fds, uint64_t *sizes) {
    const int64_t deadline = (int64_t)tn_now_ms() + (timeout_ms > 0 ? timeout_ms : 60000);
    for (int i = 0; i < npeers; i++) fds[i] = -1;
    if (npeers == 0) return 0;
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0) return tn_err(-errno, "a2a connect: socket: %s", strerror(errno));
    struct sockaddr_un a;
    socklen_t al = sock_name(&a, rdv, offer->rank);
    if (bind(lfd, (struct sockaddr *)&a, al) != 0 || listen(lfd, npeers) != 0) {
        int e = errno;
        close(lfd);
        return tn_err(-e, "a2a connect: cannot listen on tendril-a2a.%s.%d: %s", rdv, offer->rank,
                       strerror(e));
    }
    server sv = {.lfd = lfd, .offer = offer, .npeers = npeers, .peers = peers, .deadline = deadline,
                 .rc = 0};
    pthread_t th;
    if (pthread_create(&th, NULL, server_main, &sv) != 0) {
        close(lfd);
        return tn_err(-EAGAIN, "a2a connect: cannot start the server thread");
    }
    int rc = 0;
    /* start after our own position so that the ranks do not all queue on the same peer */
    int first = 0;
    while (first < npeers && peers[first] < offer->rank) first++;
    for (int i = 0; i < npeers && rc == 0; i++) {
        int k = (first + i) % npeers;
        rc = fetch_one(rdv, offer, peers[k], deadline, &fds[k], &sizes[k]);
    }
    pthread_join(th, NULL);
    close(lfd);
    if (rc == 0 && sv.rc != 0) rc = sv.rc == -ETIMEDOUT
                                        ? tn_err(-ETIMEDOUT, "a2a connect: not every peer fetched our buffer")
                                        : sv.rc;
    if (rc) {
        for (int i = 0; i < npeers; i++)
            if (fds[i] >= 0) {
                close(fds[i]);
                fds[i] = -1;
            }
    }
    return rc;
}
