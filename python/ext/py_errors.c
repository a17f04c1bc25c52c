/* te_ error codes -> Python exceptions, and the error strings given to on_error. */
#include <errno.h>

#include "tendril_py.h"

PyObject *ExcTendrilError;
PyObject *ExcValueError;
PyObject *ExcTimeoutError;
PyObject *ExcStoppedError;

const char *tpy_errno_name(int err)
{
    switch (-err) {
    case EINVAL: return "EINVAL";
    case ENOMEM: return "ENOMEM";
    case ETIMEDOUT: return "ETIMEDOUT";
    case ECANCELED: return "ECANCELED";
    case ECONNRESET: return "ECONNRESET";
    case ECONNREFUSED: return "ECONNREFUSED";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    case ENOTCONN: return "ENOTCONN";
    case ESHUTDOWN: return "ESHUTDOWN";
    case EBADMSG: return "EBADMSG";
    case ENOSPC: return "ENOSPC";
    case ERANGE: return "ERANGE";
    case ENODEV: return "ENODEV";
    case ENOENT: return "ENOENT";
    case EBUSY: return "EBUSY";
    case EPERM: return "EPERM";
    case EIO: return "EIO";
    case ENOSYS: return "ENOSYS";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EMSGSIZE: return "EMSGSIZE";
    case EAGAIN: return "EAGAIN";
    default: return NULL;
    }
}

/* pplx-garden raises ValueError for bad arguments and RuntimeError for failures: the
 * classes below derive from those, so callers that catch pplx's types catch ours. */
static PyObject *exc_type_for(int err)
{
    switch (-err) {
    case EINVAL:
    case ERANGE:
    case EMSGSIZE:
    case EBADMSG:
    case ENOSPC:
        return ExcValueError;
    case ETIMEDOUT:
        return ExcTimeoutError;
    case ESHUTDOWN:
        return ExcStoppedError;
    default:
        return ExcTendrilError;
    }
}

PyObject *tpy_raise(int err, const char *what)
{
    const char *msg = te_last_error();
    if (!msg || !*msg) msg = te_strerror(err);
    PyObject *text = what ? PyUnicode_FromFormat("%s: %s", what, msg) : PyUnicode_FromString(msg);
    if (!text) return NULL;
    return tpy_raise_text(err, text);
}

PyObject *tpy_raise_text(int err, PyObject *text)
{
    if (!text) return NULL;
    PyObject *type = exc_type_for(err);
    PyObject *exc = PyObject_CallFunctionObjArgs(type, text, NULL);
    Py_DECREF(text);
    if (!exc) return NULL;
    PyObject *code = PyLong_FromLong(-err);
    if (!code || PyObject_SetAttrString(exc, "errno", code) < 0) {
        Py_XDECREF(code);
        Py_DECREF(exc);
        return NULL;
    }
    Py_DECREF(code);
    PyErr_SetObject(type, exc);
    Py_DECREF(exc);
    return NULL;
}

PyObject *tpy_raise_wait_timeout(const char *what, uint64_t done, uint64_t n, const char *unit, int64_t tmo_ms)
{
    char t[32];
    snprintf(t, sizeof t, "%.3f", (double)tmo_ms / 1000.0);
    return tpy_raise_text(-ETIMEDOUT, PyUnicode_FromFormat("%s: %llu of %llu %s after %s s", what,
                                                           (unsigned long long)done, (unsigned long long)n,
                                                           unit, t));
}

PyObject *tpy_error_string(int status, const char *msg)
{
    const char *name = tpy_errno_name(status);
    char head[64];
    if (name) snprintf(head, sizeof head, "[%s]", name);
    else snprintf(head, sizeof head, "[errno %d]", -status);
    if (msg && *msg) return PyUnicode_FromFormat("%s %s: %s", head, te_strerror(status), msg);
    return PyUnicode_FromFormat("%s %s", head, te_strerror(status));
}
