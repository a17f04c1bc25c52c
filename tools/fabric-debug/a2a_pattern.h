/* The write pattern of fabric-debug's a2a workload: one rank's RDMA writes of one
 * all-to-all iteration, read from a text file (docs/a2a-model.md, "Write pattern";
 * tools/a2a_model/a2a_model.py --pattern writes it) and laid out in the server's region
 * so that every peer has a destination slot range of its own. */
#ifndef FABRIC_DEBUG_A2A_PATTERN_H
#define FABRIC_DEBUG_A2A_PATTERN_H

#include <stddef.h>
#include <stdint.h>

enum { A2A_DSP = 0, A2A_WGT = 1, A2A_CMB = 2, A2A_PHASES = 3 };

#define A2A_MAX_WRITES 4096          /* lines; the contract posts 5 per RDMA peer */
#define A2A_MAX_PEER 1023            /* peer ranks 0..1023 */
#define A2A_MAX_FOOTPRINT (8ull << 30) /* bytes of the laid-out region */
#define A2A_ALIGN 4096ull            /* every write starts on its own 4 KiB boundary */

typedef struct a2a_write {
    uint32_t phase; /* A2A_DSP, A2A_WGT, A2A_CMB */
    uint32_t peer;  /* rank named in the file */
    uint32_t slot;  /* 0.. distinct peers - 1, by first appearance */
    uint64_t len;
    uint64_t off;   /* same offset in the client's source and the server's region */
} a2a_write;

typedef struct a2a_plan {
    a2a_write *w;               /* grouped by phase, file order within a phase */
    size_t n;
    size_t first[A2A_PHASES + 1]; /* phase p: w[first[p] .. first[p+1]) */
    uint64_t bytes[A2A_PHASES];
    uint32_t peers;
    uint64_t footprint;         /* bytes from offset 0 the layout needs */
} a2a_plan;

extern const char *const a2a_phase_name[A2A_PHASES];

/* Reads and lays out `path` (starting at offset `base`): 0, or a negative errno with a
 * message naming the file and line in err. */
int a2a_plan_load(const char *path, uint64_t base, a2a_plan *out, char *err, size_t cap);
void a2a_plan_free(a2a_plan *p);

#endif
