/* The bridge from the library's log (te_log_set_handler) to Python's logging module:
 * _tendril._set_log_bridge(logger) makes every library message a logger.log() call,
 * _set_log_bridge(None) removes it and delivers what is still queued.
 *
 * The handler never takes the GIL: a thread that logs may hold an engine lock that a
 * thread holding the GIL waits for. It queues a copy of the message and, when the queue
 * was empty, asks the interpreter for a pending call (Py_AddPendingCall), which drains
 * the queue into the logger from the main thread at its next bytecode. Nothing is lost:
 * a failed pending-call request is retried with the next message, the queue is drained
 * when the bridge is removed (registered with atexit), and only beyond QUEUE_MAX queued
 * messages does a line go to stderr instead. */
#include <stdlib.h>
#include <string.h>

#include "tendril_py.h"

#define QUEUE_MAX 10000

typedef struct msg {
    struct msg *next;
    int level;
    char text[];
} msg;

static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static msg *q_head, *q_tail;
static size_t q_len;
static bool q_scheduled; /* a pending call is requested and has not run yet */
static PyObject *bridge_logger; /* strong reference; changed only with the GIL held */

static int drain(void *unused);

static void handler(void *arg, int level, const char *text)
{
    (void)arg;
    size_t n = strlen(text);
    msg *m = malloc(sizeof *m + n + 1);
    pthread_mutex_lock(&q_lock);
    if (!m || q_len >= QUEUE_MAX) {
        pthread_mutex_unlock(&q_lock);
        free(m);
        fprintf(stderr, "tendril (Python log queue full): %s\n", text);
        return;
    }
    m->next = NULL;
    m->level = level;
    memcpy(m->text, text, n + 1);
    if (q_tail) q_tail->next = m;
    else q_head = m;
    q_tail = m;
    q_len++;
    bool ask = !q_scheduled;
    q_scheduled = true;
    pthread_mutex_unlock(&q_lock);
    if (ask && Py_AddPendingCall(drain, NULL) != 0) {
        pthread_mutex_lock(&q_lock);
        q_scheduled = false; /* the next message asks again */
        pthread_mutex_unlock(&q_lock);
    }
}

/* With the GIL: hands every queued message to the logger (or drops them when there is
 * none any more: the bridge was removed and drained by the caller before). */
static void deliver_all(PyObject *logger)
{
    static const int py_level[] = {40, 30, 20, 10}; /* ERROR WARNING INFO DEBUG */
    for (;;) {
        pthread_mutex_lock(&q_lock);
        msg *m = q_head;
        if (m) {
            q_head = m->next;
            if (!q_head) q_tail = NULL;
            q_len--;
        } else {
            q_scheduled = false;
        }
        pthread_mutex_unlock(&q_lock);
        if (!m) return;
        int lvl = m->level >= 0 && m->level <= 3 ? py_level[m->level] : 30;
        if (logger) {
            PyObject *r = PyObject_CallMethod(logger, "log", "iss", lvl, "%s", m->text);
            if (r) Py_DECREF(r);
            else PyErr_WriteUnraisable(logger);
        }
        free(m);
    }
}

static int drain(void *unused)
{
    (void)unused;
    deliver_all(bridge_logger);
    return 0;
}

PyObject *tpy_set_log_bridge(PyObject *self, PyObject *logger)
{
    (void)self;
    if (logger != Py_None && !PyObject_HasAttrString(logger, "log")) {
        PyErr_SetString(PyExc_TypeError, "_set_log_bridge: expected a logging.Logger or None");
        return NULL;
    }
    /* TENDRIL_LOG_FILE asks for the file: leave the library's own sink alone. */
    const char *file = getenv("TENDRIL_LOG_FILE");
    if (logger != Py_None && file && *file) Py_RETURN_FALSE;
    PyObject *old = bridge_logger;
    if (logger != Py_None) Py_INCREF(logger);
    bridge_logger = logger != Py_None ? logger : NULL;
    int r;
    /* Without the GIL: te_log_set_handler waits for running handlers, and a handler must
     * be able to finish whatever it is doing. */
    Py_BEGIN_ALLOW_THREADS
    r = te_log_set_handler(bridge_logger ? handler : NULL, NULL);
    Py_END_ALLOW_THREADS
    /* What the old logger still had queued goes to it now. */
    deliver_all(old ? old : bridge_logger);
    Py_XDECREF(old);
    if (r) return tpy_raise(r, "_set_log_bridge");
    Py_RETURN_TRUE;
}
