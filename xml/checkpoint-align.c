/*
 * checkpoint-align.c: completing a checkpoint against its domain
 * (libvirt's virDomainCheckpointAlignDisks and the checks of
 * virDomainCheckpointRedefinePrep).
 *
 * After alignment the checkpoint has exactly one disk entry per domain
 * disk, in the domain's disk order. A requested disk may be named by
 * target or by an unambiguous source path and is renamed to its target.
 * Disks that were not requested get checkpoint='bitmap' when the
 * request had no <disks> at all and the disk is writable and has media,
 * checkpoint='no' otherwise. Every bitmap disk without a bitmap name
 * gets the checkpoint's name.
 */
#include "checkpoint-conf.h"

#include <glib/gi18n-lib.h>

static gboolean
place_requested(VbkCheckpointDef *def,
                GPtrArray *slots,
                GPtrArray *requested,
                GError **error)
{
    const VbkDomainDef *dom = def->dom;
    guint i;

    for (i = 0; i < requested->len; i++) {
        VbkCheckpointDiskDef *disk = requested->pdata[i];
        VbkDomainDisk *domdisk = vbk_domain_def_find_disk(dom, disk->name);
        int idx;

        if (!domdisk) {
            g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_CONFIG_UNSUPPORTED,
                        _("no disk named '%s'"), disk->name);
            return FALSE;
        }
        idx = vbk_domain_def_disk_index(dom, domdisk);
        if (slots->pdata[idx]) {
            g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_CONFIG_UNSUPPORTED,
                        _("disk '%s' specified twice"), disk->name);
            return FALSE;
        }
        if ((vbk_domain_disk_is_empty(domdisk) || domdisk->readonly) &&
            disk->type != VBK_CHECKPOINT_TYPE_NONE) {
            g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_CONFIG_UNSUPPORTED,
                        _("disk '%s' is empty or readonly"), disk->name);
            return FALSE;
        }
        if (g_strcmp0(disk->name, domdisk->dst) != 0) {
            g_free(disk->name);
            disk->name = g_strdup(domdisk->dst);
        }
        /* move ownership from @requested into the slot */
        slots->pdata[idx] = disk;
        requested->pdata[i] = NULL;
    }
    return TRUE;
}

gboolean
vbk_checkpoint_def_align_disks(VbkCheckpointDef *def, GError **error)
{
    const VbkDomainDef *dom = def->dom;
    g_autoptr(GPtrArray) requested = NULL;
    g_autoptr(GPtrArray) slots = NULL;
    VbkCheckpointType fallback = VBK_CHECKPOINT_TYPE_NONE;
    guint i;

    if (!dom) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_INTERNAL_ERROR, "%s",
                    _("missing domain in checkpoint"));
        return FALSE;
    }
    if (def->disks->len > dom->disks->len) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_CONFIG_UNSUPPORTED, "%s",
                    _("too many disk checkpoint requests for domain"));
        return FALSE;
    }
    if (dom->disks->len == 0) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_CONFIG_UNSUPPORTED, "%s",
                    _("domain must have at least one disk to perform "
                      "checkpoints"));
        return FALSE;
    }
    if (def->disks->len == 0)
        fallback = VBK_CHECKPOINT_TYPE_BITMAP;

    /* On failure both arrays free whatever they still hold, so the def
     * keeps an empty disk list rather than a half-aligned one. */
    requested = g_steal_pointer(&def->disks);
    def->disks = g_ptr_array_new_with_free_func(vbk_checkpoint_disk_def_free);
    slots = g_ptr_array_new_full(dom->disks->len, vbk_checkpoint_disk_def_free);
    g_ptr_array_set_size(slots, dom->disks->len);
    if (!place_requested(def, slots, requested, error))
        return FALSE;

    for (i = 0; i < dom->disks->len; i++) {
        const VbkDomainDisk *domdisk = dom->disks->pdata[i];
        VbkCheckpointDiskDef *disk = slots->pdata[i];

        if (!disk) {
            disk = g_new0(VbkCheckpointDiskDef, 1);
            disk->name = g_strdup(domdisk->dst);
            disk->type =
                (vbk_domain_disk_is_empty(domdisk) || domdisk->readonly)
                    ? VBK_CHECKPOINT_TYPE_NONE
                    : fallback;
        }
        slots->pdata[i] = NULL;
        g_ptr_array_add(def->disks, disk);
    }
    vbk_checkpoint_def_assign_bitmap_names(def);
    return TRUE;
}

gboolean
vbk_checkpoint_def_redefine_prep(VbkCheckpointDef *def,
                                 const VbkDomainDef *vm,
                                 GError **error)
{
    if (!def->dom) {
        vbk_checkpoint_def_assign_bitmap_names(def);
        return TRUE;
    }
    if (g_ascii_strcasecmp(def->dom->uuid, vm->uuid) != 0) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_INVALID_ARG,
                    _("definition for checkpoint %s must use uuid %s"),
                    def->name, vm->uuid);
        return FALSE;
    }
    return vbk_checkpoint_def_align_disks(def, error);
}
