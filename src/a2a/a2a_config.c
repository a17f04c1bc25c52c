/*
 * Configuration of an all-to-all context: the struct_size growth rules, every check
 * (before anything touches a GPU, so that a machine without one can test them), the
 * node/slice topology, and the error texts.
 */
#include <errno.h>
#include <string.h>

#include "a2a_internal.h"

const char *a2a_last_error(void) { return te_last_error(); }

const char *a2a_strerror(int err)
{
    /* the meanings specific to the all-to-all; the rest are the engine's */
    switch (err) {
    case -ETIMEDOUT: return "timed out waiting for a peer";
    case -EOVERFLOW: return "more rows than the output holds";
    case -ECANCELED: return "aborted";
    case -EPROTO: return "protocol violation (phase order or peer configuration)";
    case -ECONNABORTED: return "a peer failed to connect";
    default: return te_strerror(err);
    }
}

int a2a_config_load(const a2a_config *in, a2a_config *c)
{
    if (!in) return tn_err(-EINVAL, "a2a_create: cfg is NULL");
    if (in->struct_size < A2A_CONFIG_SIZE_V1 || in->struct_size > sizeof(a2a_config))
        return tn_err(-EINVAL, "a2a_create: cfg->struct_size %zu not in [%zu, %zu] (set it to "
                               "sizeof(a2a_config))",
                      in->struct_size, (size_t)A2A_CONFIG_SIZE_V1, sizeof(a2a_config));
    memset(c, 0, sizeof(*c));
    memcpy(c, in, in->struct_size);
    c->struct_size = sizeof(*c);
    if (c->dp_size == 0) c->dp_size = 1;
    if (c->ranks_per_node == 0) c->ranks_per_node = c->world_size;

    const int W = c->world_size;
    if (W < 1) return tn_err(-EINVAL, "a2a_create: world_size %d must be >= 1", W);
    if (c->dp_size < 1 || c->dp_size > W)
        return tn_err(-EINVAL, "a2a_create: dp_size %d not in [1, world_size %d] (0 means 1)",
                      c->dp_size, W);
    if (W % c->dp_size)
        return tn_err(-EINVAL, "a2a_create: world_size %d is not a multiple of dp_size %d", W,
                      c->dp_size);
    if (W / c->dp_size > A2A_MAX_RANKS)
        return tn_err(-EINVAL, "a2a_create: world_size / dp_size = %d / %d = %d ranks per "
                               "all-to-all, more than A2A_MAX_RANKS (%d)",
                      W, c->dp_size, W / c->dp_size, A2A_MAX_RANKS);
    if (c->ranks_per_node < 1 || c->ranks_per_node > W)
        return tn_err(-EINVAL, "a2a_create: ranks_per_node %d not in [1, world_size %d] (0 means "
                               "world_size: one node)",
                      c->ranks_per_node, W);
    if (W % c->ranks_per_node)
        return tn_err(-EINVAL, "a2a_create: world_size %d is not a multiple of ranks_per_node %d "
                               "(ranks are node-major, every node has the same number)",
                      W, c->ranks_per_node);
    if (c->rank < 0 || c->rank >= W)
        return tn_err(-EINVAL, "a2a_create: rank %d not in [0, %d)", c->rank, W);
    if (c->max_num_tokens < 1 || c->max_num_tokens > A2A_MAX_TOKENS)
        return tn_err(-EINVAL, "a2a_create: max_num_tokens %u not in [1, %u]", c->max_num_tokens,
                      A2A_MAX_TOKENS);
    if (c->num_experts < 1 || c->num_experts > A2A_MAX_EXPERTS)
        return tn_err(-EINVAL, "a2a_create: num_experts %u not in [1, %d]", c->num_experts,
                      A2A_MAX_EXPERTS);
    if (c->experts_per_token < 1 || c->experts_per_token > A2A_MAX_TOPK)
        return tn_err(-EINVAL, "a2a_create: experts_per_token %u not in [1, %d]",
                      c->experts_per_token, A2A_MAX_TOPK);
    if (c->expert_padding < 1 || c->expert_padding > 65536)
        return tn_err(-EINVAL, "a2a_create: expert_padding %u not in [1, 65536]", c->expert_padding);
    if (c->hidden_dim < 8 || c->hidden_dim % 8)
        return tn_err(-EINVAL, "a2a_create: hidden_dim %u must be a positive multiple of 8",
                      c->hidden_dim);
    if (c->in_elem_size != 1 && c->in_elem_size != 2 && c->in_elem_size != 4)
        return tn_err(-EINVAL, "a2a_create: in_elem_size %u must be 1, 2 or 4", c->in_elem_size);
    if ((size_t)c->hidden_dim * c->in_elem_size % 16)
        return tn_err(-EINVAL, "a2a_create: hidden_dim * in_elem_size = %zu must be a multiple of 16",
                      (size_t)c->hidden_dim * c->in_elem_size);
    if (c->hidden_dim_scale > 4096)
        return tn_err(-EINVAL, "a2a_create: hidden_dim_scale %u > 4096", c->hidden_dim_scale);
    if (c->out_dtype != A2A_DTYPE_BF16 && c->out_dtype != A2A_DTYPE_F16 && c->out_dtype != A2A_DTYPE_F32)
        return tn_err(-EINVAL, "a2a_create: out_dtype %d is not bf16, f16 or f32", (int)c->out_dtype);
    if (c->rdma_buffers != A2A_RDMA_AUTO && c->rdma_buffers != A2A_RDMA_GPU &&
        c->rdma_buffers != A2A_RDMA_HOST)
        return tn_err(-EINVAL, "a2a_create: rdma_buffers %d is not A2A_RDMA_AUTO, _GPU or _HOST",
                      (int)c->rdma_buffers);
    if (c->imm_base > UINT32_MAX - A2A_PX_N * A2A_MAX_RANKS + 1)
        return tn_err(-EINVAL, "a2a_create: imm_base %u leaves no room for the %d immediates the "
                               "context uses",
                      c->imm_base, A2A_PX_N * A2A_MAX_RANKS);
    if (c->rendezvous && (!c->rendezvous[0] || strlen(c->rendezvous) > 80))
        return tn_err(-EINVAL, "a2a_create: rendezvous must be a name of 1..80 characters");

    a2a_topo t;
    a2a_topo_of(c, &t);
    if (t.n_nvl > 0 && !c->rendezvous && !c->allgather)
        return tn_err(-EINVAL, "a2a_create: rendezvous is NULL and there is no allgather to agree "
                               "on one (rank %d has %d peers on its node)",
                      c->rank, t.n_nvl);
    if (t.n_rdma > 0 && !c->engine)
        return tn_err(-EINVAL, "a2a_create: rank %d has %d peers on other nodes (ranks_per_node %d, "
                               "world_size %d, dp_size %d) but cfg->engine is NULL: RDMA peers "
                               "need a TransferEngine",
                      c->rank, t.n_rdma, c->ranks_per_node, W, c->dp_size);
    if (t.n_rdma > 0 && !c->allgather)
        return tn_err(-EINVAL, "a2a_create: rank %d has %d peers on other nodes but cfg->allgather "
                               "is NULL: it is how the ranks exchange engine addresses and buffer "
                               "descriptors",
                      c->rank, t.n_rdma);
    return 0;
}

void a2a_topo_of(const a2a_config *cfg, a2a_topo *t)
{
    memset(t, 0, sizeof(*t));
    t->rank = cfg->rank;
    t->world = cfg->world_size;
    t->rpn = cfg->ranks_per_node > 0 ? cfg->ranks_per_node : cfg->world_size;
    t->dp = cfg->dp_size > 0 ? cfg->dp_size : 1;
    t->node = t->rank / t->rpn;
    t->srank = t->rank / t->dp;
    t->sworld = t->world / t->dp;
    t->dp_rank = t->rank % t->dp;
    for (int q = 0; q < t->sworld; q++) {
        if (q == t->srank) continue;
        if (a2a_phys(t, q) / t->rpn == t->node) {
            t->n_nvl++;
        } else {
            t->rdma_mask |= 1ull << q;
            t->n_rdma++;
        }
    }
}

static uint64_t fnv(uint64_t h, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        h ^= (v >> (8 * i)) & 0xff;
        h *= 0x100000001b3ull;
    }
    return h;
}

uint64_t a2a_config_hash(const a2a_config *c)
{
    /* everything that fixes the shared block's layout and the kernels' behaviour; the
     * block's size follows from these */
    uint64_t h = 0xcbf29ce484222325ull;
    h = fnv(h, (uint64_t)c->world_size);
    h = fnv(h, (uint64_t)c->ranks_per_node);
    h = fnv(h, (uint64_t)c->dp_size);
    h = fnv(h, c->max_num_tokens);
    h = fnv(h, c->num_experts);
    h = fnv(h, c->experts_per_token);
    h = fnv(h, c->expert_padding);
    h = fnv(h, c->hidden_dim);
    h = fnv(h, c->hidden_dim_scale);
    h = fnv(h, c->in_elem_size);
    h = fnv(h, (uint64_t)c->out_dtype);
    h = fnv(h, (uint64_t)(c->partial_f32 || c->out_dtype == A2A_DTYPE_F32));
    return fnv(h, c->imm_base);
}
