/* The shared command-line conventions (cli.h). */
#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tendril/te.h"

void cli_common(const cli_tool *t, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--")) return;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(t->usage, stdout);
            exit(0);
        }
        if (!strcmp(argv[i], "--version")) {
            printf("%s (tendril %s)\n", t->name, te_version());
            exit(0);
        }
    }
}

void cli_fail(const cli_tool *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", t->name);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '%s --help' for the options.\n", t->name);
    exit(2);
}

const char *cli_value(const cli_tool *t, int argc, char **argv, int *i)
{
    if (*i + 1 >= argc) cli_fail(t, "option '%s' needs a value", argv[*i]);
    return argv[++*i];
}

uint64_t cli_u64(const cli_tool *t, const char *opt, const char *val, uint64_t lo, uint64_t hi)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(val, &end, 0);
    if (!*val || *val == '-' || *val == '+' || *end || errno || v < lo || v > hi)
        cli_fail(t, "option '%s': '%s' is not an integer in %llu..%llu", opt, val,
                 (unsigned long long)lo, (unsigned long long)hi);
    return v;
}

double cli_double(const cli_tool *t, const char *opt, const char *val, double lo, double hi)
{
    char *end;
    errno = 0;
    double v = strtod(val, &end);
    if (!*val || *end || errno || !(v >= lo && v <= hi))
        cli_fail(t, "option '%s': '%s' is not a number in %g..%g", opt, val, lo, hi);
    return v;
}
