/*
 * Argument converters of the _tendril extension (its all-to-all part included).
 *
 * PyArg_Parse's unsigned formats ("I", "k", "K") wrap out-of-range values silently; the
 * converters here ("O&") raise OverflowError instead, naming the range, so that every
 * integer argument of the binding is range-checked.
 */
#ifndef TENDRIL_PY_CONVERT_H
#define TENDRIL_PY_CONVERT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdbool.h>
#include <stdint.h>

/* Unsigned integers: OverflowError outside 0..2**64-1 / 0..2**32-1. out: uint64_t / uint32_t. */
int tpy_conv_u64(PyObject *o, void *out);
int tpy_conv_u32(PyObject *o, void *out);
/* C int: OverflowError outside -2**31..2**31-1. out: int. */
int tpy_conv_int(PyObject *o, void *out);

/* Optional u32: None -> has=false. out points at tpy_opt_u32. */
typedef struct {
    bool has;
    uint32_t v;
} tpy_opt_u32;
int tpy_conv_opt_u32(PyObject *o, void *out);

/* Timeout in seconds (None = no limit) -> milliseconds (-1 = no limit). out: int64_t. */
int tpy_conv_timeout(PyObject *o, void *out);

/* The one argument of a method that takes exactly one, given by position or by any of
 * the keyword names in `names` (NULL-terminated: pplx-garden's name first, then
 * accepted aliases). Returns a borrowed reference, or NULL with TypeError set. */
PyObject *tpy_one_arg(PyObject *args, PyObject *kw, const char *fname, const char *const *names);

#endif
