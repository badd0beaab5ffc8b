/*
 * fuzz-xml-domain.c: libFuzzer target for the <domain> parser and the
 * test driver's <node> fixture parser (file= references are refused
 * since no base directory is given, so the fuzzer never opens a file).
 * Nothing may crash, hang or leak; a formatted domain must parse again
 * and format to the same bytes.
 */
#include "node-conf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
domain_roundtrip(const VbkDomainDef *def)
{
    g_autoptr(VbkDomainDef) again = NULL;
    g_autofree char *out = vbk_domain_def_format(def, VBK_DOMAIN_FORMAT_SECURE);
    g_autofree char *out2 = NULL;

    if (!(again = vbk_domain_def_parse_string(out, 0, NULL)))
        abort();
    out2 = vbk_domain_def_format(again, VBK_DOMAIN_FORMAT_SECURE);
    if (strcmp(out, out2) != 0)
        abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autofree char *xml = g_strndup((const char *) data, size);
    g_autoptr(VbkDomainDef) def = NULL;
    g_autoptr(VbkNodeDef) node = NULL;
    guint i;

    if ((def = vbk_domain_def_parse_string(xml, 0, NULL))) {
        domain_roundtrip(def);
        if (def->disks->len > 0) {
            VbkDomainDisk *disk = def->disks->pdata[0];
            vbk_domain_def_find_disk(def, disk->src->path);
            vbk_domain_disk_set_source(disk, "/new", "qcow2");
            domain_roundtrip(def);
        }
    }
    if ((node = vbk_node_def_parse_string(xml, NULL, NULL))) {
        for (i = 0; i < node->domains->len; i++)
            domain_roundtrip(node->domains->pdata[i]);
    }
    return 0;
}
