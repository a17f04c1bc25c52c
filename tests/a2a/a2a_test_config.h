/* The small all-to-all configuration the CPU tests of the host side start from (valid:
 * a2a_create's checks pass on it; no GPU is touched before them). */
#ifndef TENDRIL_TEST_A2A_CONFIG_H
#define TENDRIL_TEST_A2A_CONFIG_H

#include <string.h>
#include <tendril/a2a.h>

static inline a2a_config a2a_test_config(int rank, int world, int ranks_per_node)
{
    a2a_config c;
    memset(&c, 0, sizeof c);
    c.struct_size = sizeof c;
    c.rank = rank;
    c.world_size = world;
    c.ranks_per_node = ranks_per_node;
    c.max_num_tokens = 16;
    c.num_experts = 8;
    c.experts_per_token = 2;
    c.expert_padding = 1;
    c.hidden_dim = 128;
    c.in_elem_size = 2;
    c.out_dtype = A2A_DTYPE_BF16;
    return c;
}

#endif
