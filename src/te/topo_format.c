/* Topology output: te_topo as a table for people or as JSON (te_topo_format). */
#include "tendril/te_topo.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

/* ---------------------------------------------------------------- output ---- */

const char *te_topo_nic_kind_name(te_topo_nic_kind kind)
{
    switch (kind) {
    case TE_TOPO_NIC_VERBS: return "verbs";
    case TE_TOPO_NIC_EFA: return "efa";
    case TE_TOPO_NIC_NET: return "net";
    }
    return "unknown";
}

/* "0-13,112-125" */
static void print_cpulist(FILE *f, const int *cpus, uint32_t n, bool sorted_copy)
{
    int *s = NULL;
    if (sorted_copy && n) {
        s = malloc(n * sizeof *s);
        if (s) {
            memcpy(s, cpus, n * sizeof *s);
            for (uint32_t i = 1; i < n; i++)
                for (uint32_t j = i; j > 0 && s[j - 1] > s[j]; j--) {
                    int x = s[j];
                    s[j] = s[j - 1];
                    s[j - 1] = x;
                }
            cpus = s;
        }
    }
    if (n == 0)
        fputs("-", f);
    for (uint32_t i = 0; i < n;) {
        uint32_t j = i;
        while (j + 1 < n && cpus[j + 1] == cpus[j] + 1)
            j++;
        if (j > i)
            fprintf(f, "%s%d-%d", i ? "," : "", cpus[i], cpus[j]);
        else
            fprintf(f, "%s%d", i ? "," : "", cpus[i]);
        i = j + 1;
    }
    free(s);
}

/* "400G", "100M", "?" (unknown or down). */
static void speed_text(char *buf, size_t cap, uint64_t bps)
{
    if (bps == 0)
        snprintf(buf, cap, "?");
    else if (bps >= 1000000000u)
        snprintf(buf, cap, "%gG", (double)bps / 1e9);
    else
        snprintf(buf, cap, "%gM", (double)bps / 1e6);
}

static void format_text(const te_topo *t, FILE *f)
{
    fprintf(f, "GPU groups: %u\n", t->n_groups);
    if (t->n_groups) {
        fprintf(f, "%-5s %-4s %-13s %-9s %-4s %-24s %s\n", "group", "cuda", "gpu", "id",
                "numa", "cpus", "nics (kind, link speed)");
        for (uint32_t g = 0; g < t->n_groups; g++) {
            const te_topo_group *gr = &t->groups[g];
            char ord[16], id[16];
            snprintf(ord, sizeof ord, "%d", gr->cuda_ordinal);
            snprintf(id, sizeof id, "%04x:%04x", gr->gpu_vendor, gr->gpu_device);
            fprintf(f, "%-5u %-4s %-13s %-9s %-4d ", g, gr->cuda_ordinal >= 0 ? ord : "-",
                    gr->gpu_pci, id, gr->numa);
            /* The CPU list, padded to its column through a memory stream. */
            char *cl = NULL;
            size_t cl_len = 0;
            FILE *m = open_memstream(&cl, &cl_len);
            if (m) {
                print_cpulist(m, gr->cpus, gr->n_cpus, true);
                if (gr->cpus_remote)
                    fputs("(remote)", m);
                fclose(m);
            }
            fprintf(f, "%-24s", cl ? cl : "?");
            free(cl);
            if (gr->n_nics == 0)
                fputs(" -", f);
            for (uint32_t k = 0; k < gr->n_nics; k++) {
                const te_topo_nic *n = &t->nics[gr->nics[k]];
                char sp[32];
                speed_text(sp, sizeof sp, n->speed_bps);
                fprintf(f, " %s(%s,%s)", n->name, te_topo_nic_kind_name(n->kind), sp);
            }
            fputc('\n', f);
        }
        if (!t->ordinals_known)
            fputs("note: CUDA ordinals are not reliable (see CUDA_VISIBLE_DEVICES / "
                  "CUDA_DEVICE_ORDER)\n", f);
    }
    fprintf(f, "\nNICs: %u (%u near no GPU)\n", t->n_nics, t->n_unattached);
    if (t->n_nics) {
        fprintf(f, "%-16s %-5s %-13s %-9s %-7s %-4s %-5s %s\n", "name", "kind", "pci", "id",
                "speed", "numa", "group", "netdev");
        for (uint32_t i = 0; i < t->n_nics; i++) {
            const te_topo_nic *n = &t->nics[i];
            char id[16], grp[16];
            snprintf(id, sizeof id, "%04x:%04x", n->vendor, n->device);
            snprintf(grp, sizeof grp, "%d", n->group);
            fprintf(f, "%-16s %-5s %-13s %-9s ", n->name, te_topo_nic_kind_name(n->kind),
                    n->pci[0] ? n->pci : "-", id);
            char sp[32];
            speed_text(sp, sizeof sp, n->speed_bps);
            fprintf(f, "%-7s %-4d %-5s %s\n", sp, n->numa, n->group >= 0 ? grp : "-",
                    n->netdev[0] ? n->netdev : "-");
        }
    }
    fprintf(f, "\nNUMA nodes: %u (allowed CPUs: ", t->n_numa);
    print_cpulist(f, t->cpus, t->n_cpus, false);
    fputs(")\n", f);
    for (uint32_t i = 0; i < t->n_numa; i++) {
        const te_topo_numa *nm = &t->numa[i];
        fprintf(f, "  node %d: %u allowed CPUs: ", nm->node, nm->n_cpus);
        print_cpulist(f, nm->cpus, nm->n_cpus, true);
        fputc('\n', f);
    }
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static void json_ints(FILE *f, const int *v, uint32_t n)
{
    fputc('[', f);
    for (uint32_t i = 0; i < n; i++)
        fprintf(f, "%s%d", i ? "," : "", v[i]);
    fputc(']', f);
}

static void format_json(const te_topo *t, FILE *f)
{
    fputs("{\"groups\":[", f);
    for (uint32_t g = 0; g < t->n_groups; g++) {
        const te_topo_group *gr = &t->groups[g];
        fprintf(f, "%s{\"gpu\":", g ? "," : "");
        json_str(f, gr->gpu_pci);
        fprintf(f, ",\"vendor\":\"%04x\",\"device\":\"%04x\",\"cuda_ordinal\":%d,\"numa\":%d,"
                   "\"nics\":[", gr->gpu_vendor, gr->gpu_device, gr->cuda_ordinal, gr->numa);
        for (uint32_t k = 0; k < gr->n_nics; k++) {
            fputs(k ? "," : "", f);
            json_str(f, t->nics[gr->nics[k]].name);
        }
        fputs("],\"cpus\":", f);
        json_ints(f, gr->cpus, gr->n_cpus);
        fprintf(f, ",\"cpus_remote\":%s}", gr->cpus_remote ? "true" : "false");
    }
    fputs("],\"nics\":[", f);
    for (uint32_t i = 0; i < t->n_nics; i++) {
        const te_topo_nic *n = &t->nics[i];
        fputs(i ? ",{\"name\":" : "{\"name\":", f);
        json_str(f, n->name);
        fprintf(f, ",\"kind\":\"%s\",\"pci\":", te_topo_nic_kind_name(n->kind));
        json_str(f, n->pci);
        fprintf(f, ",\"vendor\":\"%04x\",\"device\":\"%04x\",\"speed_bps\":%llu,\"numa\":%d,"
                   "\"group\":%d,\"netdev\":", n->vendor, n->device,
                (unsigned long long)n->speed_bps, n->numa, n->group);
        json_str(f, n->netdev);
        fputc('}', f);
    }
    fputs("],\"numa\":[", f);
    for (uint32_t i = 0; i < t->n_numa; i++) {
        fprintf(f, "%s{\"node\":%d,\"cpus\":", i ? "," : "", t->numa[i].node);
        json_ints(f, t->numa[i].cpus, t->numa[i].n_cpus);
        fputc('}', f);
    }
    fputs("],\"cpus\":", f);
    json_ints(f, t->cpus, t->n_cpus);
    fprintf(f, ",\"ordinals_known\":%s}\n", t->ordinals_known ? "true" : "false");
}

int te_topo_format(const te_topo *topo, FILE *f, int format)
{
    tn_err_clear();
    if (!topo)
        return tn_err(-EINVAL, "te_topo_format: topo is NULL");
    if (!f)
        return tn_err(-EINVAL, "te_topo_format: f is NULL");
    if (format == TE_TOPO_FORMAT_JSON)
        format_json(topo, f);
    else if (format == TE_TOPO_FORMAT_TEXT)
        format_text(topo, f);
    else
        return tn_err(-EINVAL, "te_topo_format: format %d (expected TE_TOPO_FORMAT_TEXT or "
                               "TE_TOPO_FORMAT_JSON)", format);
    if (ferror(f))
        return tn_err(-EIO, "te_topo_format: write failed");
    return 0;
}
