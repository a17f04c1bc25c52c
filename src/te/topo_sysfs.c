/* Topology: reading sysfs. Path joining, small text files, PCI addresses and the PCI
 * chain of a device (from the root complex down), directory listings. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "te/topo_internal.h"

/* ------------------------------------------------------------ small helpers ---- */

int topo_path_join(char *buf, const char *a, const char *b, const char *c, const char *d)
{
    int n = snprintf(buf, PATHBUF, "%s%s%s%s%s%s%s", a, b ? "/" : "", b ? b : "",
                     c ? "/" : "", c ? c : "", d ? "/" : "", d ? d : "");
    return (n < 0 || n >= PATHBUF) ? -ENAMETOOLONG : 0;
}

/* Reads a small text file, newline stripped. */
int topo_read_text(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -errno;
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        buf[--n] = '\0';
    return 0;
}

int topo_read_long(const char *path, int base, long *out)
{
    char buf[64];
    if (topo_read_text(path, buf, sizeof buf) != 0)
        return -1;
    char *end;
    errno = 0;
    long v = strtol(buf, &end, base);
    if (errno || end == buf)
        return -1;
    *out = v;
    return 0;
}

static bool is_hex_run(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)s[i]))
            return false;
    return n > 0;
}

/* "dddd:bb:dd.f" (domain of 4 or more hex digits), n characters of s. */
static bool is_pci_addr(const char *s, size_t n)
{
    if (n < 12 || n >= TE_TOPO_PCI_MAX)
        return false;
    size_t dom = n - 8; /* ":bb:dd.f" */
    return is_hex_run(s, dom) && s[dom] == ':' && is_hex_run(s + dom + 1, 2) &&
           s[dom + 3] == ':' && is_hex_run(s + dom + 4, 2) && s[dom + 6] == '.' &&
           is_hex_run(s + dom + 7, 1);
}

/* "pcidddd:bb": a PCI root complex (host bridge) directory. */
static bool is_pci_root(const char *s, size_t n)
{
    if (n < 9 || strncmp(s, "pci", 3) != 0)
        return false;
    const char *colon = memchr(s + 3, ':', n - 3);
    return colon && is_hex_run(s + 3, (size_t)(colon - s - 3)) &&
           is_hex_run(colon + 1, n - (size_t)(colon + 1 - s));
}

int topo_pci_cmp(const char *a, const char *b)
{
    unsigned da = 0, ba = 0, sa = 0, fa = 0, db = 0, bb = 0, sb = 0, fb = 0;
    int na = sscanf(a, "%x:%x:%x.%x", &da, &ba, &sa, &fa);
    int nb = sscanf(b, "%x:%x:%x.%x", &db, &bb, &sb, &fb);
    if (na != 4 || nb != 4) {
        if ((na == 4) != (nb == 4))
            return na == 4 ? -1 : 1; /* devices with a PCI address first */
        return strcmp(a, b);
    }
    uint64_t ka = ((uint64_t)da << 32) | (ba << 16) | (sa << 8) | fa;
    uint64_t kb = ((uint64_t)db << 32) | (bb << 16) | (sb << 8) | fb;
    return ka < kb ? -1 : ka > kb ? 1 : 0;
}

/* Number of leading path components two chains share ("pci0000:00/0000:00:01.0/..."). */
int topo_common_depth(const char *a, const char *b)
{
    int d = 0;
    for (;;) {
        size_t la = strcspn(a, "/"), lb = strcspn(b, "/");
        if (la == 0 || la != lb || memcmp(a, b, la) != 0)
            return d;
        d++;
        if (a[la] == '\0' || b[lb] == '\0')
            return d;
        a += la + 1;
        b += lb + 1;
    }
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void topo_names_free(names *ns)
{
    for (size_t i = 0; i < ns->n; i++)
        free(ns->v[i]);
    free(ns->v);
    ns->v = NULL;
    ns->n = 0;
}

int topo_list_dir(const char *path, names *out)
{
    out->v = NULL;
    out->n = 0;
    DIR *d = opendir(path);
    if (!d)
        return -errno;
    size_t cap = 0;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (out->n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            char **nv = realloc(out->v, nc * sizeof *nv);
            if (!nv) {
                rc = -ENOMEM;
                break;
            }
            out->v = nv;
            cap = nc;
        }
        if (!(out->v[out->n] = strdup(e->d_name))) {
            rc = -ENOMEM;
            break;
        }
        out->n++;
    }
    closedir(d);
    if (rc) {
        topo_names_free(out);
        return rc;
    }
    if (out->n > 1)
        qsort(out->v, out->n, sizeof *out->v, name_cmp);
    return 0;
}
void topo_pdev_free(pdev *d)
{
    free(d->chain);
    free(d->pcidir);
    d->chain = d->pcidir = NULL;
}

/* Resolves `link` (a sysfs device path or symlink) to its PCI function: address, chain of
 * PCI components from the root complex, and the function's directory. A device below a
 * PCI function (virtio-net's "virtio2") resolves to that function. -ENOENT if no PCI
 * function is on the path. */
int topo_resolve_pci(const char *link, pdev *d)
{
    char real[PATHBUF];
    if (!realpath(link, real))
        return -errno;
    char chain[PATHBUF];
    size_t clen = 0, dir_end = 0;
    chain[0] = '\0';
    d->pci[0] = '\0';
    const char *p = real;
    while (*p) {
        while (*p == '/')
            p++;
        size_t n = strcspn(p, "/");
        if (n == 0)
            break;
        if (is_pci_root(p, n)) {
            /* (Re)start: the chain begins at the root complex. */
            memcpy(chain, p, n);
            clen = n;
            chain[clen] = '\0';
        } else if (is_pci_addr(p, n)) {
            if (clen + n + 2 < sizeof chain) {
                if (clen)
                    chain[clen++] = '/';
                memcpy(chain + clen, p, n);
                clen += n;
                chain[clen] = '\0';
            }
            memcpy(d->pci, p, n);
            d->pci[n] = '\0';
            dir_end = (size_t)(p - real) + n;
        }
        p += n;
    }
    if (d->pci[0] == '\0')
        return -ENOENT;
    real[dir_end] = '\0';
    d->pcidir = strdup(real);
    /* Without a root complex on the path the chain cannot be compared with others. */
    d->chain = strdup(strncmp(chain, "pci", 3) == 0 ? chain : "");
    if (!d->pcidir || !d->chain) {
        topo_pdev_free(d);
        return -ENOMEM;
    }
    char path[PATHBUF];
    long v;
    if (topo_path_join(path, d->pcidir, "vendor", NULL, NULL) == 0 && topo_read_long(path, 16, &v) == 0)
        d->vendor = (uint16_t)v;
    if (topo_path_join(path, d->pcidir, "device", NULL, NULL) == 0 && topo_read_long(path, 16, &v) == 0)
        d->device = (uint16_t)v;
    d->numa = -1;
    if (topo_path_join(path, d->pcidir, "numa_node", NULL, NULL) == 0 && topo_read_long(path, 10, &v) == 0)
        d->numa = (int)v;
    /* numa_node -1 (common in VMs and on some BIOSes): nearest ancestor that knows. */
    if (d->numa < 0) {
        char up[PATHBUF];
        snprintf(up, sizeof up, "%s", d->pcidir);
        for (char *slash = strrchr(up, '/'); slash && slash != up; slash = strrchr(up, '/')) {
            *slash = '\0';
            const char *base = strrchr(up, '/');
            base = base ? base + 1 : up;
            size_t bn = strlen(base);
            if (!is_pci_addr(base, bn) && !is_pci_root(base, bn))
                break;
            if (topo_path_join(path, up, "numa_node", NULL, NULL) == 0 &&
                topo_read_long(path, 10, &v) == 0 && v >= 0) {
                d->numa = (int)v;
                break;
            }
        }
    }
    return 0;
}
