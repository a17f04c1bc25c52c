/* Command-line conventions shared by every Tendril tool, benchmark and example program:
 *   --help / -h   usage on stdout, exit 0
 *   --version     "NAME (tendril X.Y.Z)" on stdout, exit 0
 *   a bad option or value: "NAME: what is wrong" and a pointer to --help on stderr, exit 2
 * Each program keeps its own option loop; these calls replace the glue every loop needs
 * (the common options, a value after an option, numbers checked against a range). */
#ifndef TENDRIL_TOOLS_CLI_H
#define TENDRIL_TOOLS_CLI_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cli_tool {
    const char *name;  /* program name, as in messages */
    const char *usage; /* the whole --help text (ends with a newline) */
} cli_tool;

/* Handles --help/-h and --version wherever they appear in argv[1..argc) (exits 0). */
void cli_common(const cli_tool *t, int argc, char **argv);

/* Reports a usage error (printf-style message) and exits 2. */
__attribute__((noreturn, format(printf, 2, 3))) void cli_fail(const cli_tool *t,
                                                              const char *fmt, ...);

/* The value of the option at argv[*i], advancing *i; exits 2 naming it when missing. */
const char *cli_value(const cli_tool *t, int argc, char **argv, int *i);

/* Numbers given to option `opt`: decimal (or 0x hex for u64) within [lo, hi]; anything
 * else exits 2 naming the option, the value and the range. */
uint64_t cli_u64(const cli_tool *t, const char *opt, const char *val, uint64_t lo, uint64_t hi);
double cli_double(const cli_tool *t, const char *opt, const char *val, double lo, double hi);

#ifdef __cplusplus
}
#endif

#endif
