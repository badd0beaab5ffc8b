/*
 * block-job.c: block jobs as QMP's block-job-* commands see them.
 *
 * A block job is a job that copies between nodes — here, the backup
 * jobs of backup-job.c.  query-block-jobs reports QEMU's BlockJobInfo
 * (len/offset in bytes, busy, paused, speed, io-status, ready, status,
 * auto-finalize, auto-dismiss, error?); block-job-set-speed changes the
 * rate limit of the background copy; block-job-cancel refuses a paused
 * job unless forced.  The verbs pause/resume/finalize/dismiss are the
 * job layer's (job.h).
 */
#include <glib/gi18n-lib.h>

#include "backup-int.h"

void
vbk_block_job_info_free(VbkBlockJobInfo *info)
{
    if (!info)
        return;
    g_free(info->type);
    g_free(info->device);
    g_free(info->error);
    g_free(info);
}

static VbkBlockJobInfo *
info_of(VbkBackupJob *bj)
{
    VbkBlockJobInfo *info = g_new0(VbkBlockJobInfo, 1);
    VbkJobFlags flags = vbk_job_flags(bj->job);

    info->type = g_strdup("backup");
    info->device = g_strdup(bj->id);
    info->status = vbk_job_status(bj->job);
    info->paused = vbk_job_pause_requested(bj->job);
    /* QEMU's job is busy unless it sleeps: rate limit, sync=none's
     * wait for cancel, a pause */
    info->busy = (info->status == VBK_JOB_STATUS_RUNNING ||
                  info->status == VBK_JOB_STATUS_READY) &&
                 bj->sync != VBK_BACKUP_SYNC_NONE &&
                 !(bj->bc && vbk_block_copy_throttled(bj->bc));
    info->auto_finalize = !(flags & VBK_JOB_MANUAL_FINALIZE);
    info->auto_dismiss = !(flags & VBK_JOB_MANUAL_DISMISS);
    if (info->status == VBK_JOB_STATUS_ABORTING ||
        info->status == VBK_JOB_STATUS_CONCLUDED)
        info->error = vbk_job_dup_error(bj->job);
    g_mutex_lock(&bj->lock);
    info->len = bj->len;
    info->offset = bj->offset;
    info->speed = bj->speed;
    info->io_status = bj->io_status;
    g_mutex_unlock(&bj->lock);
    return info;
}

GPtrArray *
vbk_block_job_query_all(void)
{
    GPtrArray *arr = g_ptr_array_new_with_free_func(
        (GDestroyNotify) vbk_block_job_info_free);

    g_mutex_lock(&vbk_backup_lock);
    for (GList *l = vbk_backup_jobs; l; l = l->next)
        g_ptr_array_add(arr, info_of(l->data));
    g_mutex_unlock(&vbk_backup_lock);
    return arr;
}

/* vbk_backup_lock held. */
static VbkBackupJob *
find_locked(const char *id)
{
    for (GList *l = vbk_backup_jobs; id && l; l = l->next) {
        VbkBackupJob *bj = l->data;
        if (g_str_equal(bj->id, id))
            return bj;
    }
    return NULL;
}

VbkJob *
vbk_block_job_find(const char *id, GError **error)
{
    VbkBackupJob *bj;

    g_mutex_lock(&vbk_backup_lock);
    bj = find_locked(id);
    g_mutex_unlock(&vbk_backup_lock);
    if (!bj) {
        g_set_error(error, VBK_JOB_ERROR, VBK_JOB_ERROR_NOT_FOUND,
                    _("Block job '%s' not found"), id ? id : "");
        return NULL;
    }
    return bj->job;
}

static bool
check_verb(VbkJob *job, VbkJobVerb verb, GError **error)
{
    VbkJobStatus st = vbk_job_status(job);

    if (vbk_job_verb_table[verb][st])
        return true;
    g_set_error(error, VBK_JOB_ERROR, VBK_JOB_ERROR_STATE,
                _("Job '%s' in state '%s' cannot accept command verb '%s'"),
                vbk_job_id(job), vbk_job_status_to_string(st),
                vbk_job_verb_to_string(verb));
    return false;
}

bool
vbk_block_job_set_speed(VbkJob *job, int64_t speed, GError **error)
{
    VbkBackupJob *bj;

    if (!check_verb(job, VBK_JOB_VERB_SET_SPEED, error))
        return false;
    if (speed < 0) {
        g_set_error_literal(error, VBK_JOB_ERROR, VBK_JOB_ERROR_FAILED,
                            _("Parameter 'speed' expects a non-negative "
                              "value"));
        return false;
    }
    g_mutex_lock(&vbk_backup_lock);
    bj = find_locked(vbk_job_id(job));
    if (bj) {
        g_mutex_lock(&bj->lock);
        bj->speed = speed;
        g_mutex_unlock(&bj->lock);
        if (bj->bc)
            vbk_block_copy_set_speed(bj->bc, speed);
    }
    g_mutex_unlock(&vbk_backup_lock);
    return true;
}

bool
vbk_block_job_cancel(VbkJob *job, bool force, GError **error)
{
    if (!force && vbk_job_pause_requested(job) &&
        vbk_job_status(job) != VBK_JOB_STATUS_CONCLUDED) {
        g_set_error(error, VBK_JOB_ERROR, VBK_JOB_ERROR_FAILED,
                    _("The block job for device '%s' is currently paused"),
                    vbk_job_id(job));
        return false;
    }
    return vbk_job_cancel(job, error);
}
