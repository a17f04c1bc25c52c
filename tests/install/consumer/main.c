/* A program outside the tree using the installed library: creates an engine, writes to
 * itself with an immediate and waits for it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tendril/tendril.h>

int main(void)
{
    te_config cfg;
    te_config_init(&cfg);
    cfg.provider = "shm";
    te_engine *e;
    if (te_engine_create(&cfg, &e)) {
        fprintf(stderr, "engine: %s\n", te_last_error());
        return 1;
    }
    static char src[4096] = "hello", dst[4096];
    te_mr *s, *d;
    te_mr_desc desc;
    te_imm_counter *c;
    if (te_mr_register(e, src, sizeof src, TE_DEVICE_HOST, 0, &s) ||
        te_mr_register(e, dst, sizeof dst, TE_DEVICE_HOST, TE_MR_REMOTE_WRITE, &d) ||
        te_mr_desc_get(d, &desc) || te_imm_counter_create(e, 5, &c)) {
        fprintf(stderr, "setup: %s\n", te_last_error());
        return 1;
    }
    te_write_args w = {.src = s, .len = 6, .dst = &desc, .has_imm = true, .imm = 5};
    if (te_write(e, &w, NULL) || te_imm_counter_wait(c, 1, 10000)) {
        fprintf(stderr, "write: %s\n", te_last_error());
        return 1;
    }
    int ok = strcmp(dst, "hello") == 0;
    te_engine_destroy(e);
    puts(ok ? "consumer ok" : "consumer: wrong bytes");
    return ok ? 0 : 1;
}
