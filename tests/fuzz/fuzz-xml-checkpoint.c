/*
 * fuzz-xml-checkpoint.c: libFuzzer target for the <domaincheckpoint>
 * parser (create and redefine), the aligner and the formatter. Nothing
 * may crash, hang or leak; formatted output must parse again (as a
 * redefinition) and format to the same bytes.
 */
#include "checkpoint-conf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
roundtrip(const char *xml, guint flags)
{
    g_autoptr(VbkCheckpointDef) def = NULL;
    g_autoptr(VbkCheckpointDef) again = NULL;
    g_autofree char *out = NULL;
    g_autofree char *out2 = NULL;
    const guint fmt = VBK_CHECKPOINT_FORMAT_SECURE | VBK_CHECKPOINT_FORMAT_SIZE;

    if (!(def = vbk_checkpoint_def_parse_string(xml, 1525889631, flags, NULL)))
        return;
    if (def->dom) {
        if (!vbk_checkpoint_def_align_disks(def, NULL))
            return;
    } else {
        vbk_checkpoint_def_assign_bitmap_names(def);
    }
    out = vbk_checkpoint_def_format(def, fmt);
    /* like libvirt, a creation time of 0 is not printed, and such output
     * cannot be redefined again */
    if (def->creation_time == 0)
        return;
    again = vbk_checkpoint_def_parse_string(
        out, 1, VBK_CHECKPOINT_PARSE_REDEFINE, NULL);
    if (!again)
        abort();
    out2 = vbk_checkpoint_def_format(again, fmt);
    if (strcmp(out, out2) != 0)
        abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autofree char *xml = g_strndup((const char *) data, size);

    roundtrip(xml, 0);
    roundtrip(xml, VBK_CHECKPOINT_PARSE_REDEFINE);
    return 0;
}
