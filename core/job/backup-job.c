/*
 * backup-job.c: the backup job — validation, start, run, bitmap outcome.
 *
 * Start (vbk_backup_job_start()) checks the arguments in QEMU's order
 * (do_backup_common, then backup_job_create), gives the sync bitmap a
 * successor (it freezes: busy, no longer recording; the successor
 * records the writes made during the job), puts a copy-before-write
 * filter above the source, fills the filter's copy bitmap for the sync
 * mode and starts the job:
 *
 *   full    everything          top   what the top layer allocates
 *   bitmap  the sync bitmap     none  nothing in the background; the
 *   (incremental = bitmap + on-success) filter copies until cancelled
 *
 * Run: the block-copy workers copy the copy bitmap; a failed chunk is
 * handled by on-source-error/on-target-error (report: fail; ignore:
 * retry; stop: pause, retry after job-resume; enospc/auto: stop on
 * ENOSPC, else report), each with a BLOCK_JOB_ERROR event.
 *
 * End (commit on success, abort on failure or cancel) settles the sync
 * bitmap: sync = (success || mode == always) && mode != never;
 * sync abdicates (the bitmap becomes "written during the job"), else the
 * parent reclaims (old | new); a failure with mode always also ORs in
 * what was left to copy.  Then the filter goes and BLOCK_JOB_COMPLETED
 * or BLOCK_JOB_CANCELLED is emitted, before the job concludes.
 *
 * Registry: vbk_backup_lock guards the list of live backup jobs (for
 * query-block-jobs); it is taken before the job registry's lock, never
 * after.  Each job's counters are atomics or under its own mutex.
 */
#include <errno.h>

#include "backup-int.h"
#include "core/block/cbw.h"
#include "core/block/dirty.h"

GMutex vbk_backup_lock;
GList *vbk_backup_jobs;

static GMutex event_lock;
static VbkBlockJobEventFunc event_func;
static void *event_data;

static const char *const sync_names[VBK_BACKUP_SYNC_LAST] = {
    "top", "full", "none", "incremental", "bitmap",
};
static const char *const mode_names[VBK_BITMAP_SYNC_LAST] = {
    "",
    "on-success",
    "never",
    "always",
};
const char *const vbk_error_action_names[VBK_ERROR_ACTION_LAST] = {
    "report", "ignore", "stop", "enospc", "auto",
};

static int
lookup_name(const char *const *names, int n, const char *s)
{
    for (int i = 0; s && i < n; i++) {
        if (names[i][0] && g_str_equal(names[i], s))
            return i;
    }
    return -1;
}

const char *
vbk_backup_sync_to_string(VbkBackupSync sync)
{
    g_return_val_if_fail(sync < VBK_BACKUP_SYNC_LAST, NULL);
    return sync_names[sync];
}

int
vbk_backup_sync_from_string(const char *s)
{
    return lookup_name(sync_names, VBK_BACKUP_SYNC_LAST, s);
}

int
vbk_bitmap_sync_mode_from_string(const char *s)
{
    return lookup_name(mode_names, VBK_BITMAP_SYNC_LAST, s);
}

int
vbk_error_action_from_string(const char *s)
{
    return lookup_name(vbk_error_action_names, VBK_ERROR_ACTION_LAST, s);
}

void
vbk_backup_options_init(VbkBackupOptions *opts)
{
    *opts = (VbkBackupOptions){
        .sync = VBK_BACKUP_SYNC_FULL,
        .auto_finalize = true,
        .auto_dismiss = true,
        .max_workers = 64,
    };
}

void
vbk_backup_set_event_func(VbkBlockJobEventFunc func, void *user_data)
{
    g_mutex_lock(&event_lock);
    event_func = func;
    event_data = user_data;
    g_mutex_unlock(&event_lock);
}

void
vbk_backup_emit(const VbkBlockJobEvent *ev)
{
    g_mutex_lock(&event_lock);
    if (event_func)
        event_func(ev, event_data);
    g_mutex_unlock(&event_lock);
}

/* ---- the job ---------------------------------------------------------- */

static void
backup_progress(uint64_t bytes, void *opaque)
{
    VbkBackupJob *bj = opaque;

    g_mutex_lock(&bj->lock);
    bj->offset += bytes;
    if (bj->sync == VBK_BACKUP_SYNC_NONE && bj->offset > bj->len) {
        /* sync=none: the filter copies what the guest overwrites */
        vbk_job_progress_set_total(bj->job, bj->offset);
        bj->len = bj->offset;
    }
    g_mutex_unlock(&bj->lock);
    vbk_job_progress_update(bj->job, bytes);
}

static bool
backup_should_stop(void *opaque)
{
    VbkBackupJob *bj = opaque;

    return vbk_job_is_cancelled(bj->job) || vbk_job_pause_requested(bj->job);
}

/* QEMU's block_job_error_action(): what to do, with its event. */
static VbkErrorAction
backup_error_action(VbkBackupJob *bj, const VbkBlockCopyError *err)
{
    VbkErrorAction a = err->is_read ? bj->on_source_error : bj->on_target_error;
    VbkBlockJobEvent ev = {
        .name = "BLOCK_JOB_ERROR",
        .id = bj->id,
        .operation = err->is_read ? "read" : "write",
    };

    if (a == VBK_ERROR_ACTION_ENOSPC || a == VBK_ERROR_ACTION_AUTO)
        a = err->ret == -ENOSPC ? VBK_ERROR_ACTION_STOP
                                : VBK_ERROR_ACTION_REPORT;
    ev.action = vbk_error_action_names[a];
    if (a == VBK_ERROR_ACTION_STOP) {
        g_mutex_lock(&bj->lock);
        bj->io_status = err->ret == -ENOSPC ? "nospace" : "failed";
        g_mutex_unlock(&bj->lock);
        vbk_job_user_pause(bj->job, NULL);
    }
    vbk_backup_emit(&ev);
    return a;
}

/* sync=top: drop what the top layer does not allocate. */
static int
backup_scan_top(VbkBackupJob *bj)
{
    uint64_t len = vbk_block_copy_length(bj->bc);
    uint64_t off = 0, n = 0;

    while (off < len && !vbk_job_is_cancelled(bj->job)) {
        int ret = vbk_block_copy_reset_unallocated(bj->bc, off, &n);

        if (ret < 0)
            return ret;
        off += n;
        vbk_job_pause_point(bj->job);
    }
    return 0;
}

static void
backup_pause_point(VbkBackupJob *bj)
{
    vbk_job_pause_point(bj->job);
    g_mutex_lock(&bj->lock);
    if (!vbk_job_pause_requested(bj->job))
        bj->io_status = "ok";
    g_mutex_unlock(&bj->lock);
}

static bool
backup_run(VbkJob *job, void *opaque, GError **error)
{
    VbkBackupJob *bj = opaque;
    VbkBlockCopyError err = {0, false};
    int ret = 0;

    vbk_block_copy_set_progress_func(bj->bc, backup_progress, bj);
    vbk_block_copy_set_stop_func(bj->bc, backup_should_stop, bj);
    if (bj->sync == VBK_BACKUP_SYNC_TOP)
        ret = backup_scan_top(bj);
    g_mutex_lock(&bj->lock);
    bj->len = bj->sync == VBK_BACKUP_SYNC_NONE
                  ? 0
                  : vbk_block_copy_dirty_bytes(bj->bc);
    vbk_job_progress_set_total(job, bj->len);
    g_mutex_unlock(&bj->lock);

    while (ret >= 0 && !vbk_job_is_cancelled(job)) {
        backup_pause_point(bj);
        if (vbk_job_is_cancelled(job))
            break;
        if (bj->sync == VBK_BACKUP_SYNC_NONE) {
            g_usleep(20 * 1000);
            continue;
        }
        ret = vbk_block_copy_run(bj->bc, &err);
        if (ret == 0)
            return true;
        if (ret == 1)
            continue;
        switch (backup_error_action(bj, &err)) {
        case VBK_ERROR_ACTION_IGNORE:
        case VBK_ERROR_ACTION_STOP:
            ret = 0;
            break;
        default:
            break;
        }
    }
    if (ret < 0) {
        g_set_error_literal(error, VBK_JOB_ERROR, VBK_JOB_ERROR_FAILED,
                            g_strerror(-ret));
        return false;
    }
    g_set_error_literal(error, VBK_JOB_ERROR, VBK_JOB_ERROR_FAILED,
                        g_strerror(ECANCELED));
    return false;
}

/*
 * Settle the sync bitmap (QEMU's backup_cleanup_sync_bitmap()).
 * @ok: the job succeeded.
 */
static void
backup_settle_bitmap(VbkBackupJob *bj, bool ok)
{
    VbkDirtyBitmap *parent = bj->sync_bitmap;
    bool sync;
    VbkDirtyBitmap *succ, *result;

    if (!parent)
        return;
    sync = (ok || bj->bitmap_mode == VBK_BITMAP_SYNC_ALWAYS) &&
           bj->bitmap_mode != VBK_BITMAP_SYNC_NEVER;
    vbk_block_dirty_lock(bj->source);
    if (sync) {
        succ = vbk_dirty_bitmap_abdicate(parent, NULL);
        vbk_block_dirty_detach_locked(bj->source, parent);
        result = succ;
    } else {
        succ = vbk_dirty_bitmap_reclaim(parent, NULL);
        vbk_block_dirty_detach_locked(bj->source, succ);
        result = parent;
    }
    if (!ok && bj->bitmap_mode == VBK_BITMAP_SYNC_ALWAYS && result && bj->bc)
        vbk_dirty_bitmap_merge(result, vbk_block_copy_bitmap(bj->bc), NULL,
                               NULL);
    vbk_block_dirty_unlock(bj->source);
    if (succ)
        vbk_dirty_bitmap_unref(succ);
    g_clear_pointer(&bj->sync_bitmap, vbk_dirty_bitmap_unref);
}

static void
backup_commit(VbkJob *job, void *opaque)
{
    VbkBackupJob *bj = opaque;

    bj->ended = true;
    bj->succeeded = true;
    backup_settle_bitmap(bj, true);
}

static void
backup_abort(VbkJob *job, void *opaque)
{
    VbkBackupJob *bj = opaque;

    bj->ended = true;
    backup_settle_bitmap(bj, false);
}

/* Take the filter out of the graph (and a drive-backup target). */
static void
backup_remove_filter(VbkBackupJob *bj)
{
    g_autofree char *fname = NULL;

    if (!bj->filter)
        return;
    fname = g_strdup(vbk_block_node_name(bj->filter));
    vbk_cbw_detach(bj->filter);
    bj->bc = NULL;
    g_clear_pointer(&bj->filter, vbk_block_node_unref);
    vbk_block_node_delete(fname, NULL);
}

static void
backup_clean(VbkJob *job, void *opaque)
{
    VbkBackupJob *bj = opaque;
    g_autofree char *err = vbk_job_dup_error(job);
    VbkBlockJobEvent ev = {.type = "backup", .id = bj->id};

    if (!bj->ended)
        backup_settle_bitmap(bj, false);
    backup_remove_filter(bj);
    if (bj->drop_target) {
        g_autofree char *tname = g_strdup(vbk_block_node_name(bj->target));

        vbk_block_flush(bj->target);
        g_clear_pointer(&bj->target, vbk_block_node_unref);
        vbk_block_node_delete(tname, NULL);
    }
    g_mutex_lock(&bj->lock);
    ev.len = bj->len;
    ev.offset = bj->offset;
    ev.speed = bj->speed;
    g_mutex_unlock(&bj->lock);
    if (!vbk_job_started(job)) {
        /* QEMU: "Emit events only if we actually started" */
        return;
    } else if (vbk_job_is_cancelled(job)) {
        ev.name = "BLOCK_JOB_CANCELLED";
    } else {
        ev.name = "BLOCK_JOB_COMPLETED";
        ev.error = bj->succeeded ? NULL : err;
    }
    vbk_backup_emit(&ev);
}

static void
backup_pending(VbkJob *job, void *opaque)
{
    VbkBackupJob *bj = opaque;
    VbkBlockJobEvent ev = {
        .name = "BLOCK_JOB_PENDING",
        .type = "backup",
        .id = bj->id,
    };

    vbk_backup_emit(&ev);
}

static void
backup_free(void *opaque)
{
    VbkBackupJob *bj = opaque;

    g_mutex_lock(&vbk_backup_lock);
    vbk_backup_jobs = g_list_remove(vbk_backup_jobs, bj);
    g_mutex_unlock(&vbk_backup_lock);
    if (bj->sync_bitmap)
        backup_settle_bitmap(bj, false);
    backup_remove_filter(bj);
    g_clear_pointer(&bj->source, vbk_block_node_unref);
    if (bj->target && bj->drop_target) {
        g_autofree char *tname = g_strdup(vbk_block_node_name(bj->target));
        g_clear_pointer(&bj->target, vbk_block_node_unref);
        vbk_block_node_delete(tname, NULL);
    }
    g_clear_pointer(&bj->target, vbk_block_node_unref);
    g_mutex_clear(&bj->lock);
    g_free(bj->id);
    g_free(bj);
}

const VbkJobDriver vbk_backup_job_driver = {
    .type = "backup",
    .run = backup_run,
    .commit = backup_commit,
    .abort = backup_abort,
    .clean = backup_clean,
    .free = backup_free,
    .pending = backup_pending,
};
