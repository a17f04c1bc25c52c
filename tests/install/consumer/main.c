/* A program outside the tree using the installed library: creates an engine, passes its
 * address and a memory descriptor through their text forms (as a program hands them to a
 * peer), writes to itself through the parsed descriptor with an immediate and waits. */
#include <errno.h>
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
    /* The text forms: what a peer would receive over its own channel. */
    char desc_text[TE_MR_DESC_TEXT_MAX], addr_text[TE_ADDR_TEXT_MAX];
    te_addr me, me_again;
    te_mr_desc parsed;
    if (te_mr_desc_format(&desc, desc_text, sizeof desc_text) ||
        te_mr_desc_parse(desc_text, &parsed) || te_main_address(e, &me) ||
        te_addr_format(&me, addr_text, sizeof addr_text) || te_addr_parse(addr_text, &me_again) ||
        !te_addr_equal(&me, &me_again) || !te_addr_equal(&parsed.nic[0].addr, &me)) {
        fprintf(stderr, "text forms: %s\n", te_last_error());
        return 1;
    }
    if (te_mr_desc_parse("0x1234", &parsed) != -EBADMSG) {
        fprintf(stderr, "text forms: a malformed descriptor was accepted\n");
        return 1;
    }
    te_write_args w = {.src = s, .len = 6, .dst = &parsed, .has_imm = true, .imm = 5};
    if (te_write(e, &w, NULL) || te_imm_counter_wait(c, 1, 10000)) {
        fprintf(stderr, "write: %s\n", te_last_error());
        return 1;
    }
    int ok = strcmp(dst, "hello") == 0;
    te_engine_destroy(e);
    puts(ok ? "consumer ok" : "consumer: wrong bytes");
    return ok ? 0 : 1;
}
