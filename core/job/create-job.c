/*
 * create-job.c: the job type "create" (blockdev-create).
 *
 * The job does one unit of work, so its progress is 0/1 while it runs
 * and 1/1 once it has run, whatever the outcome (as QEMU's).  The work
 * itself is one call into core/block: vbk_file_create() or
 * vbk_qcow2_create() on a node looked up when the job starts running.
 */
#include "create-job.h"

void
vbk_create_job_options_free(VbkCreateJobOptions *opts)
{
    if (!opts)
        return;
    g_free(opts->filename);
    g_free(opts->file_node);
    g_free(opts->backing_file);
    g_free(opts->backing_fmt);
    g_free(opts);
}

static bool
create_job_run_qcow2(VbkCreateJobOptions *opts, GError **error)
{
    VbkBlockNode *file;
    g_autoptr(VbkBlockNode) ref = NULL;

    file = vbk_block_node_lookup(opts->file_node, error);
    if (!file)
        return false;
    ref = vbk_block_node_ref(file);
    opts->qcow2.size = opts->size;
    opts->qcow2.backing_file = opts->backing_file;
    opts->qcow2.backing_fmt = opts->backing_fmt;
    return vbk_qcow2_create(ref, &opts->qcow2, error);
}

static bool
create_job_run(VbkJob *job, void *opaque, GError **error)
{
    VbkCreateJobOptions *opts = opaque;
    bool ok;

    vbk_job_progress_set_total(job, 1);
    if (opts->kind == VBK_CREATE_FILE)
        ok = vbk_file_create(opts->filename, opts->size, error);
    else
        ok = create_job_run_qcow2(opts, error);
    vbk_job_progress_update(job, 1);
    return ok;
}

static void
create_job_free(void *opaque)
{
    vbk_create_job_options_free(opaque);
}

static const VbkJobDriver create_job_driver = {
    .type = "create",
    .run = create_job_run,
    .free = create_job_free,
};

VbkJob *
vbk_create_job_start(const char *id, VbkCreateJobOptions *opts, GError **error)
{
    VbkJob *job;

    job = vbk_job_create(id, &create_job_driver, opts, VBK_JOB_MANUAL_DISMISS,
                         error);
    if (!job)
        return NULL;
    vbk_job_start(job);
    return job;
}
