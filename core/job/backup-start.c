/*
 * backup-start.c: checking and starting a backup (blockdev-backup and
 * drive-backup).
 *
 * The checks run in QEMU's order, because clients and the iotests see
 * the first failing one: first do_backup_common()'s bitmap rules, then
 * backup_job_create()'s (same node, compression, a node already being
 * backed up, x-perf limits, the bitmap's DEFAULT check and successor,
 * lengths, the filter, max-chunk versus the cluster size, speed).  Every
 * failure after the successor was created reclaims it, so a refused
 * backup leaves the bitmap as it was.
 */
#include <glib/gi18n-lib.h>
#include <errno.h>

#include "backup-int.h"
#include "core/block/cbw.h"
#include "core/block/dirty.h"

static bool
fail(GError **error, const char *msg)
{
    g_set_error_literal(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID, msg);
    return false;
}

/* do_backup_common(): the bitmap rules.  *sync and *mode may change
 * (incremental = bitmap + on-success); *pbm is the bitmap or NULL. */
static bool
check_bitmap_args(VbkBlockNode *bs,
                  const VbkBackupOptions *o,
                  VbkBackupSync *sync,
                  VbkBitmapSyncMode *mode,
                  VbkDirtyBitmap **pbm,
                  GError **error)
{
    VbkDirtyBitmap *bm = NULL;
    bool ok = true;

    *sync = o->sync;
    *mode = o->bitmap_mode;
    if ((*sync == VBK_BACKUP_SYNC_BITMAP ||
         *sync == VBK_BACKUP_SYNC_INCREMENTAL) &&
        !o->bitmap) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("must provide a valid bitmap name for '%s' sync mode"),
                    vbk_backup_sync_to_string(*sync));
        return false;
    }
    if (*sync == VBK_BACKUP_SYNC_INCREMENTAL) {
        if (*mode != VBK_BITMAP_SYNC_UNSET &&
            *mode != VBK_BITMAP_SYNC_ON_SUCCESS)
            return fail(error, _("Bitmap sync mode must be 'on-success' "
                                 "when using sync mode 'incremental'"));
        *sync = VBK_BACKUP_SYNC_BITMAP;
        *mode = VBK_BITMAP_SYNC_ON_SUCCESS;
    }
    if (o->bitmap) {
        vbk_block_dirty_lock(bs);
        bm = vbk_block_dirty_find_locked(bs, o->bitmap);
        if (!bm) {
            g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_NOT_FOUND,
                        _("Bitmap '%s' could not be found"), o->bitmap);
            ok = false;
        } else if (*mode == VBK_BITMAP_SYNC_UNSET) {
            ok = fail(error, _("Bitmap sync mode must be given when "
                               "providing a bitmap"));
        } else if (!vbk_dirty_bitmap_check(bm, VBK_DIRTY_BITMAP_ALLOW_RO,
                                           error)) {
            ok = false;
        } else if (*sync == VBK_BACKUP_SYNC_NONE) {
            ok = fail(error, _("sync mode 'none' does not produce "
                               "meaningful bitmap outputs"));
        } else if (*mode == VBK_BITMAP_SYNC_NEVER &&
                   *sync != VBK_BACKUP_SYNC_BITMAP) {
            g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                        _("Bitmap sync mode 'never' has no meaningful effect "
                          "when combined with sync mode '%s'"),
                        vbk_backup_sync_to_string(*sync));
            ok = false;
        }
        vbk_block_dirty_unlock(bs);
        *pbm = ok ? bm : NULL;
        return ok;
    }
    if (*mode != VBK_BITMAP_SYNC_UNSET)
        return fail(error, _("Cannot specify bitmap sync mode without a "
                             "bitmap"));
    *pbm = NULL;
    return true;
}

/*
 * QEMU's op blockers as a backup sees them: a running backup's target is
 * taken whole (no second job may read or write it); its source may feed
 * other backups.
 */
static bool
check_not_target(VbkBlockNode *bs, GError **error)
{
    bool busy = false;

    g_mutex_lock(&vbk_backup_lock);
    for (GList *l = vbk_backup_jobs; l && !busy; l = l->next) {
        VbkBackupJob *other = l->data;

        busy = other->target == bs && other->filter;
    }
    g_mutex_unlock(&vbk_backup_lock);
    if (busy)
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_IN_USE,
                    _("Node '%s' is busy: block device is in use by block "
                      "job: %s"),
                    vbk_block_node_name(bs), "backup");
    return !busy;
}

/* backup_job_create()'s first checks, before anything changes. */
static bool
check_nodes(VbkBlockNode *bs,
            VbkBlockNode *target,
            const VbkBackupOptions *o,
            GError **error)
{
    if (bs == target)
        return fail(error, _("Source and target cannot be the same"));
    if (o->compress && !vbk_block_node_supports_compressed_writes(target)) {
        /* QEMU names the target's device (its BlockBackend), which a
         * node of blockdev-add or drive-backup's target does not have:
         * qemu-storage-daemon 7.2 prints an empty name */
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_UNSUPPORTED,
                    _("Compression is not supported for this drive %s"), "");
        return false;
    }
    if (!check_not_target(bs, error) || !check_not_target(target, error))
        return false;
    if (o->max_workers < 1 || o->max_workers > G_MAXINT32)
        return fail(error, _("max-workers must be between 1 and "
                             "2147483647"));
    if (o->max_chunk < 0)
        return fail(error, _("max-chunk must be zero (which means no limit) "
                             "or positive"));
    return true;
}

/* Freeze @bm: DEFAULT check (unless never), successor on the node. */
static bool
freeze_bitmap(VbkBlockNode *bs,
              VbkDirtyBitmap *bm,
              VbkBitmapSyncMode mode,
              GError **error)
{
    VbkDirtyBitmap *succ;
    bool ok = false;

    vbk_block_dirty_lock(bs);
    if (mode == VBK_BITMAP_SYNC_NEVER ||
        vbk_dirty_bitmap_check(bm, VBK_DIRTY_BITMAP_DEFAULT, error)) {
        succ = vbk_dirty_bitmap_create_successor(bm, error);
        if (succ) {
            vbk_block_dirty_attach_locked(bs, succ);
            ok = true;
        }
    }
    vbk_block_dirty_unlock(bs);
    return ok;
}

static bool
check_lengths(VbkBlockNode *bs, VbkBlockNode *target, GError **error)
{
    int64_t len = vbk_block_node_getlength(bs);
    int64_t tlen = vbk_block_node_getlength(target);

    if (len < 0 || tlen < 0) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_IO,
                    _("Unable to get length for '%s'"),
                    vbk_block_node_name(len < 0 ? bs : target));
        return false;
    }
    if (len != tlen)
        return fail(error, _("Source and target image have different "
                             "sizes"));
    return true;
}

static VbkBlockNode *
insert_filter(VbkBlockNode *bs,
              VbkBlockNode *target,
              const char *name,
              GError **error)
{
    GVariantBuilder b;

    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    g_variant_builder_add(&b, "{sv}", "driver",
                          g_variant_new_string("copy-before-write"));
    if (name)
        g_variant_builder_add(&b, "{sv}", "node-name",
                              g_variant_new_string(name));
    g_variant_builder_add(&b, "{sv}", "file",
                          g_variant_new_string(vbk_block_node_name(bs)));
    g_variant_builder_add(&b, "{sv}", "target",
                          g_variant_new_string(vbk_block_node_name(target)));
    return vbk_block_node_open(g_variant_builder_end(&b), error);
}

/* The copy bitmap for the sync mode (top is narrowed when running). */
static bool
init_copy_bitmap(VbkBackupJob *bj, GError **error)
{
    VbkDirtyBitmap *copy = vbk_block_copy_bitmap(bj->bc);
    bool ok = true;

    if (bj->sync != VBK_BACKUP_SYNC_BITMAP)
        return true;
    vbk_block_dirty_lock(bj->source);
    vbk_dirty_bitmap_clear(copy, NULL);
    /* the frozen parent is busy (ours); merge checks are for users */
    vbk_dirty_bitmap_set_busy(bj->sync_bitmap, false);
    ok = vbk_dirty_bitmap_merge(copy, bj->sync_bitmap, NULL, error);
    vbk_dirty_bitmap_set_busy(bj->sync_bitmap, true);
    vbk_block_dirty_unlock(bj->source);
    return ok;
}

static VbkBackupJob *
backup_new(VbkBlockNode *bs,
           VbkBlockNode *target,
           const VbkBackupOptions *o,
           VbkBackupSync sync,
           VbkBitmapSyncMode mode)
{
    VbkBackupJob *bj = g_new0(VbkBackupJob, 1);

    g_mutex_init(&bj->lock);
    bj->id = g_strdup(o->job_id ? o->job_id : o->device);
    bj->sync = sync;
    bj->bitmap_mode = mode;
    bj->on_source_error = o->on_source_error;
    bj->on_target_error = o->on_target_error;
    bj->source = vbk_block_node_ref(bs);
    bj->target = vbk_block_node_ref(target);
    bj->speed = o->speed;
    bj->io_status = "ok";
    return bj;
}

/* After the successor exists: filter, chunk check, speed. */
static bool
backup_setup(VbkBackupJob *bj, const VbkBackupOptions *o, GError **error)
{
    VbkBlockCopyOptions copts = {o->max_workers, o->max_chunk, o->compress};
    uint64_t cluster;

    if (!check_lengths(bj->source, bj->target, error))
        return false;
    bj->filter =
        insert_filter(bj->source, bj->target, o->filter_node_name, error);
    if (!bj->filter)
        return false;
    bj->bc = vbk_cbw_block_copy(bj->filter);
    cluster = vbk_block_copy_cluster_size(bj->bc);
    if (o->max_chunk && (uint64_t) o->max_chunk < cluster) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("Required max-chunk (%" G_GINT64_FORMAT ") is less "
                      "than backup cluster size (%" G_GUINT64_FORMAT ")"),
                    o->max_chunk, cluster);
        return false;
    }
    if (o->speed < 0)
        return fail(error, _("Parameter 'speed' expects a non-negative "
                             "value"));
    if (!init_copy_bitmap(bj, error))
        return false;
    vbk_block_copy_configure(bj->bc, &copts);
    vbk_block_copy_set_speed(bj->bc, o->speed);
    return true;
}

/* Undo a setup that failed before a job owned @bj: a plain reclaim of
 * the successor, whatever the bitmap mode, as QEMU's error path. */
static void
backup_discard(VbkBackupJob *bj)
{
    bj->bitmap_mode = VBK_BITMAP_SYNC_NEVER;
    vbk_backup_job_driver.free(bj);
}

VbkJob *
vbk_backup_job_create(const VbkBackupOptions *o, GError **error)
{
    VbkBlockNode *bs, *target;
    VbkDirtyBitmap *bm = NULL;
    VbkBackupSync sync;
    VbkBitmapSyncMode mode;
    VbkBackupJob *bj;
    VbkJobFlags flags = VBK_JOB_DEFAULT;
    VbkJob *job;

    bs = vbk_block_node_lookup(o->device, error);
    if (!bs)
        return NULL;
    target = vbk_block_node_lookup(o->target, error);
    if (!target)
        return NULL;
    if (!check_bitmap_args(bs, o, &sync, &mode, &bm, error) ||
        !check_nodes(bs, target, o, error))
        return NULL;
    if (bm && !freeze_bitmap(bs, bm, mode, error))
        return NULL;

    bj = backup_new(bs, target, o, sync, mode);
    if (bm)
        bj->sync_bitmap = vbk_dirty_bitmap_ref(bm);
    if (!backup_setup(bj, o, error)) {
        backup_discard(bj);
        return NULL;
    }
    if (!o->auto_finalize)
        flags |= VBK_JOB_MANUAL_FINALIZE;
    if (!o->auto_dismiss)
        flags |= VBK_JOB_MANUAL_DISMISS;
    /* on failure the job layer frees @bj through the driver */
    job = vbk_job_create(bj->id, &vbk_backup_job_driver, bj, flags, error);
    if (!job)
        return NULL;
    bj->job = job;
    g_mutex_lock(&vbk_backup_lock);
    vbk_backup_jobs = g_list_prepend(vbk_backup_jobs, bj);
    g_mutex_unlock(&vbk_backup_lock);
    return job;
}

VbkJob *
vbk_backup_job_start(const VbkBackupOptions *o, GError **error)
{
    VbkJob *job = vbk_backup_job_create(o, error);

    if (job)
        vbk_job_start(job);
    return job;
}

/* ---- drive-backup --------------------------------------------------- */

/* Create the image @path for drive-backup's mode absolute-paths. */
static bool
create_target(VbkBlockNode *bs,
              const char *path,
              const char *format,
              VbkBlockNode *backing,
              GError **error)
{
    int64_t len = vbk_block_node_getlength(bs);
    VbkQcow2CreateOptions q = {0};
    g_autoptr(VbkBlockNode) file = NULL;
    g_autofree char *name = NULL;
    GVariantBuilder b;
    bool ok;

    if (len < 0) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_IO,
                    _("Unable to get length for '%s'"),
                    vbk_block_node_name(bs));
        return false;
    }
    if (g_str_equal(format, "raw"))
        return vbk_file_create(path, len, error);
    if (!vbk_block_driver_known(format)) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("Unknown file format '%s'"), format);
        return false;
    }
    if (!g_str_equal(format, "qcow2")) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_UNSUPPORTED,
                    _("Format driver '%s' does not support image creation"),
                    format);
        return false;
    }
    if (!vbk_file_create(path, 0, error))
        return false;
    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    g_variant_builder_add(&b, "{sv}", "driver", g_variant_new_string("file"));
    g_variant_builder_add(&b, "{sv}", "filename", g_variant_new_string(path));
    file = vbk_block_node_open(g_variant_builder_end(&b), error);
    if (!file)
        return false;
    q.size = len;
    q.backing_file = backing ? vbk_block_node_filename(backing) : NULL;
    q.backing_fmt = backing ? vbk_block_node_driver_name(backing) : NULL;
    ok = vbk_qcow2_create(file, &q, error);
    name = g_strdup(vbk_block_node_name(file));
    g_clear_pointer(&file, vbk_block_node_unref);
    vbk_block_node_delete(name, NULL);
    return ok;
}

/* Open a drive-backup target as QEMU does: discard=unmap (and its
 * detect-zeroes=unmap, which vbackup's write-zeroes already are). */
static VbkBlockNode *
open_drive_target(const char *path, const char *format, GError **error)
{
    GVariantBuilder b, fb;

    if (!format)
        return vbk_block_node_open_image(path, NULL, false, NULL, error);
    g_variant_builder_init(&fb, G_VARIANT_TYPE_VARDICT);
    g_variant_builder_add(&fb, "{sv}", "driver", g_variant_new_string("file"));
    g_variant_builder_add(&fb, "{sv}", "filename", g_variant_new_string(path));
    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    g_variant_builder_add(&b, "{sv}", "driver", g_variant_new_string(format));
    g_variant_builder_add(&b, "{sv}", "discard", g_variant_new_string("unmap"));
    g_variant_builder_add(&b, "{sv}", "file", g_variant_builder_end(&fb));
    return vbk_block_node_open(g_variant_builder_end(&b), error);
}

VbkJob *
vbk_drive_backup_create(const VbkBackupOptions *o,
                        const char *format,
                        VbkNewImageMode mode,
                        GError **error)
{
    VbkBackupOptions opts = *o;
    VbkBlockNode *bs = vbk_block_node_lookup(o->device, error);
    g_autoptr(VbkBlockNode) target = NULL;
    VbkBlockNode *backing = NULL;
    VbkBackupJob *bj;
    VbkJob *job;

    if (!bs)
        return NULL;
    if (!format && mode != VBK_NEW_IMAGE_MODE_EXISTING)
        format = vbk_block_node_driver_name(bs);
    if (opts.sync == VBK_BACKUP_SYNC_TOP) {
        backing = vbk_block_node_backing(bs);
        if (!backing)
            opts.sync = VBK_BACKUP_SYNC_FULL;
    } else if (opts.sync == VBK_BACKUP_SYNC_NONE) {
        backing = bs;
    }
    if (mode != VBK_NEW_IMAGE_MODE_EXISTING &&
        !create_target(bs, o->target, format, backing, error))
        return NULL;
    target = open_drive_target(o->target, format, error);
    if (!target)
        return NULL;
    opts.target = vbk_block_node_name(target);
    job = vbk_backup_job_create(&opts, error);
    if (!job) {
        g_autofree char *name = g_strdup(vbk_block_node_name(target));
        g_clear_pointer(&target, vbk_block_node_unref);
        vbk_block_node_delete(name, NULL);
        return NULL;
    }
    /* the job closes the image when it ends */
    g_mutex_lock(&vbk_backup_lock);
    for (GList *l = vbk_backup_jobs; l; l = l->next) {
        bj = l->data;
        if (bj->job == job)
            bj->drop_target = true;
    }
    g_mutex_unlock(&vbk_backup_lock);
    return job;
}

VbkJob *
vbk_drive_backup_start(const VbkBackupOptions *o,
                       const char *format,
                       VbkNewImageMode mode,
                       GError **error)
{
    VbkJob *job = vbk_drive_backup_create(o, format, mode, error);

    if (job)
        vbk_job_start(job);
    return job;
}
