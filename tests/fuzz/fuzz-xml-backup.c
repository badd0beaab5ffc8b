/*
 * fuzz-xml-backup.c: libFuzzer target for the <domainbackup> parser,
 * aligner and formatter. Whatever the input, nothing may crash, hang or
 * leak, and every document the formatter writes must parse again and
 * format to the same bytes.
 */
#include "backup-conf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char domain_xml[] =
    "<domain type='kvm'><name>f</name><devices>"
    "<disk type='file'><source file='/a.qcow2'/><target dev='vda'/></disk>"
    "<disk type='block'><source dev='/dev/b'/><target dev='vdb'/></disk>"
    "<disk type='file' device='cdrom'><target dev='hdc'/></disk>"
    "</devices></domain>";

static void
roundtrip(const char *xml, guint flags, const VbkDomainDef *dom)
{
    g_autoptr(VbkBackupDef) def = NULL;
    g_autoptr(VbkBackupDef) again = NULL;
    g_autofree char *out = NULL;
    g_autofree char *out2 = NULL;
    gboolean internal = (flags & VBK_BACKUP_PARSE_INTERNAL) != 0;

    if (!(def = vbk_backup_def_parse_string(xml, flags, NULL)))
        return;
    /* a failed alignment leaves the def half-done, as in libvirt; such a
     * def is never formatted */
    if (!vbk_backup_def_align_disks(def, dom, "S", NULL))
        return;
    out = vbk_backup_def_format(def, internal);
    if (!(again = vbk_backup_def_parse_string(out, flags, NULL)))
        abort();
    out2 = vbk_backup_def_format(again, internal);
    if (strcmp(out, out2) != 0)
        abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static VbkDomainDef *dom;
    g_autofree char *xml = g_strndup((const char *) data, size);

    if (!dom)
        dom = vbk_domain_def_parse_string(domain_xml, 0, NULL);
    roundtrip(xml, 0, dom);
    roundtrip(xml, VBK_BACKUP_PARSE_INTERNAL, dom);
    return 0;
}
