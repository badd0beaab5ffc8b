/*
 * backup-align.c: completing a <domainbackup> request against the domain
 * it is for (libvirt's virDomainBackupAlignDisks).
 *
 * 1. Every listed disk must name a domain disk, at most once; an
 *    explicit backupmode='incremental' needs a checkpoint, either the
 *    disk's own incremental='' or the backup's <incremental>.
 * 2. A listed disk with backup='yes' keeps the store it was given, even
 *    without a path (libvirt 9.0 only generates names for the disks it
 *    adds itself); an empty domain disk cannot be backed up.
 * 3. Domain disks not listed are appended in domain order: as
 *    backup='no', unless <disks> was absent, in which case every disk
 *    that has media and is writable is backed up into
 *    "<source path>.<suffix>".
 * 4. backupmode defaults to incremental when the disk or the backup has
 *    a checkpoint, else full; an incremental disk inherits the
 *    backup's checkpoint name.
 */
#include "backup-conf.h"

#include <glib/gi18n-lib.h>

static gboolean
assign_store(VbkBackupDiskDef *disk,
             const VbkDomainDisk *domdisk,
             const char *suffix,
             GError **error)
{
    if (vbk_domain_disk_is_empty(domdisk)) {
        if (disk->store) {
            g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_CONFIG_UNSUPPORTED,
                        _("disk '%s' has no media"), disk->name);
            return FALSE;
        }
        return TRUE;
    }
    if (disk->store)
        return TRUE;
    if (domdisk->src->type != VBK_STORAGE_TYPE_FILE) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_CONFIG_UNSUPPORTED,
                    _("refusing to generate file name for disk '%s'"),
                    disk->name);
        return FALSE;
    }
    disk->store = vbk_storage_source_new(VBK_STORAGE_TYPE_FILE);
    disk->store->path = g_strdup_printf("%s.%s", domdisk->src->path, suffix);
    return TRUE;
}

static gboolean
check_listed(VbkBackupDef *def,
             const VbkDomainDef *dom,
             GHashTable *seen,
             const char *suffix,
             GError **error)
{
    guint i;

    for (i = 0; i < def->disks->len; i++) {
        VbkBackupDiskDef *disk = def->disks->pdata[i];
        const VbkDomainDisk *domdisk;

        if (!(domdisk = vbk_domain_def_disk_by_target(dom, disk->name))) {
            g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_CONFIG_UNSUPPORTED,
                        _("no disk named '%s'"), disk->name);
            return FALSE;
        }
        if (!g_hash_table_add(seen, disk->name)) {
            g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_CONFIG_UNSUPPORTED,
                        _("disk '%s' specified twice"), disk->name);
            return FALSE;
        }
        if (disk->backupmode == VBK_BACKUP_DISK_MODE_INCREMENTAL &&
            !disk->incremental && !def->incremental) {
            g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_CONFIG_UNSUPPORTED,
                        _("'incremental' backup mode of disk '%s' requires "
                          "setting 'incremental' field for disk or backup"),
                        disk->name);
            return FALSE;
        }
        if (disk->backup == VBK_TRISTATE_YES &&
            !assign_store(disk, domdisk, suffix, error))
            return FALSE;
    }
    return TRUE;
}

gboolean
vbk_backup_def_align_disks(VbkBackupDef *def,
                           const VbkDomainDef *dom,
                           const char *suffix,
                           GError **error)
{
    g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);
    gboolean backup_all = def->disks->len == 0;
    guint i;

    if (dom->disks->len == 0) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_CONFIG_UNSUPPORTED, "%s",
                    _("domain must have at least one disk to perform backup"));
        return FALSE;
    }
    if (!check_listed(def, dom, seen, suffix, error))
        return FALSE;

    for (i = 0; i < dom->disks->len; i++) {
        const VbkDomainDisk *domdisk = dom->disks->pdata[i];
        VbkBackupDiskDef *disk;

        if (g_hash_table_contains(seen, domdisk->dst))
            continue;
        disk = g_new0(VbkBackupDiskDef, 1);
        g_ptr_array_add(def->disks, disk);
        disk->name = g_strdup(domdisk->dst);
        disk->backup = VBK_TRISTATE_NO;
        if (backup_all && !vbk_domain_disk_is_empty(domdisk) &&
            !domdisk->readonly) {
            disk->backup = VBK_TRISTATE_YES;
            if (!assign_store(disk, domdisk, suffix, error))
                return FALSE;
        }
    }

    for (i = 0; i < def->disks->len; i++) {
        VbkBackupDiskDef *disk = def->disks->pdata[i];

        if (disk->backupmode == VBK_BACKUP_DISK_MODE_DEFAULT) {
            disk->backupmode = (def->incremental || disk->incremental)
                                   ? VBK_BACKUP_DISK_MODE_INCREMENTAL
                                   : VBK_BACKUP_DISK_MODE_FULL;
        }
        if (!disk->incremental &&
            disk->backupmode == VBK_BACKUP_DISK_MODE_INCREMENTAL)
            disk->incremental = g_strdup(def->incremental);
    }
    return TRUE;
}
