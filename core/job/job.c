/*
 * job.c: the job state machine and the job registry.
 *
 * The tables below are the whole lifecycle: every status change goes
 * through job_transition(), which asserts vbk_job_stt[from][to], and
 * every user verb through job_check_verb(), which consults
 * vbk_job_verb_table.  The work itself runs in one GThread per job;
 * its end is handed to the owner context (job_completed_cb), where the
 * job walks WAITING -> PENDING -> CONCLUDED or ABORTING -> CONCLUDED,
 * calling the driver's prepare/commit/abort/clean on the way.
 */
#include <errno.h>
#include <string.h>
#include <glib/gi18n-lib.h>

#include "job.h"

/* Column order: U C R P Y S W D X E N */
/* clang-format off */
const bool vbk_job_stt[VBK_JOB_STATUS_LAST][VBK_JOB_STATUS_LAST] = {
    /*                           U  C  R  P  Y  S  W  D  X  E  N */
    [VBK_JOB_STATUS_UNDEFINED] = {0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    [VBK_JOB_STATUS_CREATED] =   {0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1},
    [VBK_JOB_STATUS_RUNNING] =   {0, 0, 0, 1, 1, 0, 1, 0, 1, 0, 0},
    [VBK_JOB_STATUS_PAUSED] =    {0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0},
    [VBK_JOB_STATUS_READY] =     {0, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0},
    [VBK_JOB_STATUS_STANDBY] =   {0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0},
    [VBK_JOB_STATUS_WAITING] =   {0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0},
    [VBK_JOB_STATUS_PENDING] =   {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0},
    [VBK_JOB_STATUS_ABORTING] =  {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0},
    [VBK_JOB_STATUS_CONCLUDED] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
    [VBK_JOB_STATUS_NULL] =      {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
};

const bool vbk_job_verb_table[VBK_JOB_VERB_LAST][VBK_JOB_STATUS_LAST] = {
    /*                         U  C  R  P  Y  S  W  D  X  E  N */
    [VBK_JOB_VERB_CANCEL] =    {0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0},
    [VBK_JOB_VERB_PAUSE] =     {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
    [VBK_JOB_VERB_RESUME] =    {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
    [VBK_JOB_VERB_SET_SPEED] = {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
    [VBK_JOB_VERB_COMPLETE] =  {0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0},
    [VBK_JOB_VERB_FINALIZE] =  {0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0},
    [VBK_JOB_VERB_DISMISS] =   {0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0},
};
/* clang-format on */

static const char *const job_status_names[VBK_JOB_STATUS_LAST] = {
    "undefined", "created", "running",  "paused",    "ready", "standby",
    "waiting",   "pending", "aborting", "concluded", "null",
};

static const char *const job_verb_names[VBK_JOB_VERB_LAST] = {
    "cancel", "pause", "resume", "set-speed", "complete", "finalize", "dismiss",
};

struct VbkJob {
    char *id;
    const VbkJobDriver *drv;
    void *opaque;
    VbkJobFlags flags;
    VbkJobStatus status;
    bool cancelled;   /* cancel requested */
    bool user_paused; /* job-pause without job-resume */
    int pause_count;  /* pause requests not yet resumed */
    bool completing;  /* run() has returned, completion queued */
    uint64_t progress_current;
    uint64_t progress_total;
    GError *err; /* why the job failed, or NULL */
    GThread *thread;
    bool ran;          /* run() is over (or never will run) */
    bool started;      /* vbk_job_start() was called */
    bool start_paused; /* started while paused: the thread resumes it */
    VbkJobTxn *txn;    /* the completion group; never NULL until concluded */
};

/*
 * A completion group (QEMU's JobTxn): its jobs go to PENDING and are
 * finalized together once all of them have run successfully; the first
 * failure cancels the others and, once every one has stopped, aborts
 * them all.  Jobs are listed newest first, which is also the order in
 * which they are finalized (as QEMU's).
 */
struct VbkJobTxn {
    gint refcnt;
    GList *jobs;
    bool aborting;
};

/* One lock for the registry and every job's mutable fields. */
static GMutex job_lock;
static GCond job_cond;
static GQueue job_list = G_QUEUE_INIT; /* newest first */
static VbkJobStatusFunc job_status_func;
static void *job_status_data;
static GMainContext *job_ctx;

const char *
vbk_job_status_to_string(VbkJobStatus status)
{
    g_return_val_if_fail(status < VBK_JOB_STATUS_LAST, NULL);
    return job_status_names[status];
}

const char *
vbk_job_verb_to_string(VbkJobVerb verb)
{
    g_return_val_if_fail(verb < VBK_JOB_VERB_LAST, NULL);
    return job_verb_names[verb];
}

void
vbk_job_set_status_handler(VbkJobStatusFunc func, void *user_data)
{
    g_mutex_lock(&job_lock);
    job_status_func = func;
    job_status_data = user_data;
    g_mutex_unlock(&job_lock);
}

void
vbk_job_set_context(GMainContext *ctx)
{
    g_mutex_lock(&job_lock);
    job_ctx = ctx;
    g_mutex_unlock(&job_lock);
}

static GMainContext *
job_context(void)
{
    return job_ctx ? job_ctx : g_main_context_default();
}

/* Called with job_lock held. */
static void
job_transition(VbkJob *job, VbkJobStatus to)
{
    VbkJobStatus from = job->status;

    g_assert(vbk_job_stt[from][to]);
    job->status = to;
    if (from != to && job_status_func)
        job_status_func(job, to, job_status_data);
    if (to == VBK_JOB_STATUS_PENDING &&
        (job->flags & VBK_JOB_MANUAL_FINALIZE) && job->drv->pending)
        job->drv->pending(job, job->opaque);
}

/* Called with job_lock held. */
static bool
job_check_verb(VbkJob *job, VbkJobVerb verb, GError **error)
{
    if (vbk_job_verb_table[verb][job->status])
        return true;
    g_set_error(error, VBK_JOB_ERROR, VBK_JOB_ERROR_STATE,
                _("Job '%s' in state '%s' cannot accept command verb '%s'"),
                job->id, job_status_names[job->status], job_verb_names[verb]);
    return false;
}

/* QEMU's id_wellformed(): a letter, then letters, digits, '-._'. */
static bool
job_id_wellformed(const char *id)
{
    size_t i;

    if (!g_ascii_isalpha(id[0]))
        return false;
    for (i = 1; id[i]; i++) {
        if (!g_ascii_isalnum(id[i]) && !strchr("-._", id[i]))
            return false;
    }
    return true;
}

static VbkJob *
job_find_locked(const char *id)
{
    GList *l;

    for (l = job_list.head; l; l = l->next) {
        VbkJob *job = l->data;
        if (g_str_equal(job->id, id))
            return job;
    }
    return NULL;
}

static VbkJobTxn *
job_txn_new(void)
{
    VbkJobTxn *txn = g_new0(VbkJobTxn, 1);

    txn->refcnt = 1;
    return txn;
}

VbkJobTxn *
vbk_job_txn_new(void)
{
    return job_txn_new();
}

void
vbk_job_txn_unref(VbkJobTxn *txn)
{
    if (txn && g_atomic_int_dec_and_test(&txn->refcnt)) {
        g_assert(!txn->jobs);
        g_free(txn);
    }
}

/* Take @job out of its group.  job_lock held. */
static void
job_txn_remove_locked(VbkJob *job)
{
    VbkJobTxn *txn = job->txn;

    if (!txn)
        return;
    txn->jobs = g_list_remove(txn->jobs, job);
    job->txn = NULL;
    vbk_job_txn_unref(txn);
}

void
vbk_job_txn_add(VbkJobTxn *txn, VbkJob *job)
{
    g_mutex_lock(&job_lock);
    g_assert(job->status == VBK_JOB_STATUS_CREATED);
    job_txn_remove_locked(job);
    g_atomic_int_inc(&txn->refcnt);
    job->txn = txn;
    txn->jobs = g_list_prepend(txn->jobs, job);
    g_mutex_unlock(&job_lock);
}

VbkJob *
vbk_job_create(const char *id,
               const VbkJobDriver *drv,
               void *opaque,
               VbkJobFlags flags,
               GError **error)
{
    VbkJob *job;

    g_return_val_if_fail(drv && drv->run, NULL);

    if (!id || !job_id_wellformed(id)) {
        g_set_error(error, VBK_JOB_ERROR, VBK_JOB_ERROR_FAILED,
                    _("Invalid job ID '%s'"), id ? id : "");
        goto fail;
    }
    g_mutex_lock(&job_lock);
    if (job_find_locked(id)) {
        g_mutex_unlock(&job_lock);
        g_set_error(error, VBK_JOB_ERROR, VBK_JOB_ERROR_FAILED,
                    _("Job ID '%s' already in use"), id);
        goto fail;
    }
    job = g_new0(VbkJob, 1);
    job->id = g_strdup(id);
    job->drv = drv;
    job->opaque = opaque;
    job->flags = flags;
    job->status = VBK_JOB_STATUS_UNDEFINED;
    job->txn = job_txn_new();
    job->txn->jobs = g_list_prepend(NULL, job);
    g_queue_push_head(&job_list, job);
    job_transition(job, VBK_JOB_STATUS_CREATED);
    g_mutex_unlock(&job_lock);
    return job;

fail:
    if (drv->free)
        drv->free(opaque);
    return NULL;
}

static void
job_free(VbkJob *job)
{
    if (job->thread)
        g_thread_join(job->thread);
    if (job->drv->free)
        job->drv->free(job->opaque);
    g_clear_error(&job->err);
    g_free(job->id);
    g_free(job);
}

/* CONCLUDED -> NULL and out of the registry.  Called with job_lock held;
 * returns the job for the caller to free after unlocking. */
static VbkJob *
job_do_dismiss_locked(VbkJob *job)
{
    job_transition(job, VBK_JOB_STATUS_NULL);
    g_queue_remove(&job_list, job);
    g_cond_broadcast(&job_cond);
    return job;
}

/*
 * The end of a job: the driver's abort or commit, clean, CONCLUDED (the
 * job leaves its group), and with auto-dismiss NULL.  Called with
 * job_lock held, from the owner thread; drops the lock around driver
 * callbacks.
 */
static void
job_conclude_locked(VbkJob *job, bool success)
{
    VbkJob *gone = NULL;

    g_mutex_unlock(&job_lock);
    if (success && job->drv->commit)
        job->drv->commit(job, job->opaque);
    if (!success && job->drv->abort)
        job->drv->abort(job, job->opaque);
    if (job->drv->clean)
        job->drv->clean(job, job->opaque);
    g_mutex_lock(&job_lock);

    job_txn_remove_locked(job);
    job_transition(job, VBK_JOB_STATUS_CONCLUDED);
    if (!(job->flags & VBK_JOB_MANUAL_DISMISS))
        gone = job_do_dismiss_locked(job);
    g_cond_broadcast(&job_cond);
    if (gone) {
        g_mutex_unlock(&job_lock);
        job_free(gone);
        g_mutex_lock(&job_lock);
    }
}

/* Why a failed job failed: a cancel wins over run()'s own error. */
static void
job_set_failure_locked(VbkJob *job)
{
    if (job->cancelled) {
        g_clear_error(&job->err);
        g_set_error_literal(&job->err, VBK_JOB_ERROR, VBK_JOB_ERROR_FAILED,
                            g_strerror(ECANCELED));
    }
    if (!job->err)
        g_set_error_literal(&job->err, VBK_JOB_ERROR, VBK_JOB_ERROR_FAILED,
                            g_strerror(EIO));
}

/* Once every job of an aborting group has stopped: abort them all. */
static void
job_txn_try_abort_locked(VbkJobTxn *txn)
{
    GList *l;

    for (l = txn->jobs; l; l = l->next) {
        if (!((VbkJob *) l->data)->ran)
            return;
    }
    g_atomic_int_inc(&txn->refcnt);
    while (txn->jobs) {
        VbkJob *job = txn->jobs->data;

        job_set_failure_locked(job);
        if (job->status != VBK_JOB_STATUS_ABORTING)
            job_transition(job, VBK_JOB_STATUS_ABORTING);
        job_conclude_locked(job, false);
    }
    vbk_job_txn_unref(txn);
}

/*
 * @job failed or was cancelled: -> ABORTING, and its group with it (the
 * others are cancelled).  job_lock held, owner thread.
 */
static void
job_fail_locked(VbkJob *job)
{
    VbkJobTxn *txn = job->txn;
    GList *l;

    job_set_failure_locked(job);
    job_transition(job, VBK_JOB_STATUS_ABORTING);
    if (!txn->aborting) {
        txn->aborting = true;
        for (l = txn->jobs; l; l = l->next) {
            VbkJob *other = l->data;

            if (other == job)
                continue;
            /* as QEMU's job_txn_abort: even a job that already ran to
             * its end is cancelled (it reports BLOCK_JOB_CANCELLED) */
            other->cancelled = true;
            if (other->status == VBK_JOB_STATUS_CREATED)
                other->ran = true; /* never started: nothing to wait for */
        }
        g_cond_broadcast(&job_cond);
    }
    job_txn_try_abort_locked(txn);
}

/* Every job PENDING: prepare all, then commit (or abort) all. */
static void
job_txn_finalize_locked(VbkJobTxn *txn)
{
    g_autoptr(GList) jobs = g_list_copy(txn->jobs);
    GList *l;

    for (l = jobs; l; l = l->next) {
        VbkJob *job = l->data;
        GError *err = NULL;
        bool ok = true;

        if (job->drv->prepare) {
            g_mutex_unlock(&job_lock);
            ok = job->drv->prepare(job, job->opaque, &err);
            g_mutex_lock(&job_lock);
        }
        if (!ok) {
            g_clear_error(&job->err);
            job->err = err;
            job_fail_locked(job);
            return;
        }
    }
    g_atomic_int_inc(&txn->refcnt);
    while (txn->jobs)
        job_conclude_locked(txn->jobs->data, true);
    vbk_job_txn_unref(txn);
}

/* @job ran successfully: when the whole group has, -> PENDING. */
static void
job_txn_try_success_locked(VbkJobTxn *txn)
{
    GList *l;

    for (l = txn->jobs; l; l = l->next) {
        if (((VbkJob *) l->data)->status != VBK_JOB_STATUS_WAITING)
            return;
    }
    for (l = txn->jobs; l; l = l->next)
        job_transition(l->data, VBK_JOB_STATUS_PENDING);
    for (l = txn->jobs; l; l = l->next) {
        if (((VbkJob *) l->data)->flags & VBK_JOB_MANUAL_FINALIZE)
            return;
    }
    job_txn_finalize_locked(txn);
}

static gboolean
job_completed_cb(gpointer data)
{
    VbkJob *job = data;

    g_thread_join(job->thread);
    job->thread = NULL;

    g_mutex_lock(&job_lock);
    job->completing = false;
    job->ran = true;
    if (job->err || job->cancelled) {
        job_fail_locked(job);
    } else {
        job_transition(job, VBK_JOB_STATUS_WAITING);
        job_txn_try_success_locked(job->txn);
    }
    g_cond_broadcast(&job_cond);
    g_mutex_unlock(&job_lock);
    return G_SOURCE_REMOVE;
}

static gpointer
job_thread_main(gpointer data)
{
    VbkJob *job = data;
    GError *err = NULL;
    GSource *src;
    bool ok;

    /* QEMU's job_co_entry pauses first: a job started inside a drained
     * section shows created, running, paused, running */
    g_mutex_lock(&job_lock);
    while (job->start_paused && !job->cancelled)
        g_cond_wait(&job_cond, &job_lock);
    if (job->start_paused) {
        /* cancelled while paused: resumed to abort */
        job->start_paused = false;
        job_transition(job, VBK_JOB_STATUS_RUNNING);
    }
    g_mutex_unlock(&job_lock);
    ok = job->drv->run(job, job->opaque, &err);

    g_mutex_lock(&job_lock);
    if (!ok && !err)
        g_set_error_literal(&err, VBK_JOB_ERROR, VBK_JOB_ERROR_FAILED,
                            g_strerror(EIO));
    job->err = err;
    job->completing = true;
    g_mutex_unlock(&job_lock);

    /* always deferred: the completion joins this thread */
    src = g_idle_source_new();
    g_source_set_callback(src, job_completed_cb, job, NULL);
    g_source_attach(src, job_context());
    g_source_unref(src);
    return NULL;
}

void
vbk_job_start(VbkJob *job)
{
    g_autofree char *name = g_strdup_printf("job-%s", job->id);

    g_mutex_lock(&job_lock);
    job->started = true;
    job_transition(job, VBK_JOB_STATUS_RUNNING);
    if (job->pause_count > 0 && !job->cancelled) {
        job->start_paused = true;
        job_transition(job, VBK_JOB_STATUS_PAUSED);
    }
    job->thread = g_thread_new(name, job_thread_main, job);
    g_mutex_unlock(&job_lock);
}

bool
vbk_job_started(VbkJob *job)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&job_lock);

    return job->started;
}

void
vbk_job_pause(VbkJob *job)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&job_lock);

    job->pause_count++;
}

void
vbk_job_resume(VbkJob *job)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&job_lock);

    g_return_if_fail(job->pause_count > 0);
    job->pause_count--;
    if (job->pause_count == 0 && job->start_paused) {
        /* RUNNING before the caller returns, as QEMU's drained_end */
        job->start_paused = false;
        job_transition(job, VBK_JOB_STATUS_RUNNING);
    }
    g_cond_broadcast(&job_cond);
}

VbkJob *
vbk_job_find(const char *id, GError **error)
{
    VbkJob *job;

    g_mutex_lock(&job_lock);
    job = id ? job_find_locked(id) : NULL;
    g_mutex_unlock(&job_lock);
    if (!job)
        g_set_error_literal(error, VBK_JOB_ERROR, VBK_JOB_ERROR_NOT_FOUND,
                            _("Job not found"));
    return job;
}

bool
vbk_job_cancel(VbkJob *job, GError **error)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&job_lock);

    if (!job_check_verb(job, VBK_JOB_VERB_CANCEL, error))
        return false;
    job->cancelled = true;
    switch (job->status) {
    case VBK_JOB_STATUS_CREATED:
        /* never started: no thread, end it (and its group) here */
        job->ran = true;
        job_fail_locked(job);
        break;
    case VBK_JOB_STATUS_WAITING:
    case VBK_JOB_STATUS_PENDING:
        if (job->ran)
            job_fail_locked(job);
        break;
    default:
        /* the thread sees the flag at its next check */
        g_cond_broadcast(&job_cond);
        break;
    }
    return true;
}

bool
vbk_job_user_pause(VbkJob *job, GError **error)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&job_lock);

    if (!job_check_verb(job, VBK_JOB_VERB_PAUSE, error))
        return false;
    if (job->user_paused) {
        g_set_error_literal(error, VBK_JOB_ERROR, VBK_JOB_ERROR_FAILED,
                            _("Job is already paused"));
        return false;
    }
    job->user_paused = true;
    job->pause_count++;
    return true;
}

bool
vbk_job_user_resume(VbkJob *job, GError **error)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&job_lock);

    if (!job_check_verb(job, VBK_JOB_VERB_RESUME, error))
        return false;
    if (!job->user_paused) {
        g_set_error_literal(error, VBK_JOB_ERROR, VBK_JOB_ERROR_FAILED,
                            _("Can't resume a job that was not paused"));
        return false;
    }
    job->user_paused = false;
    job->pause_count--;
    g_cond_broadcast(&job_cond);
    return true;
}

bool
vbk_job_finalize(VbkJob *job, GError **error)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&job_lock);

    if (!job_check_verb(job, VBK_JOB_VERB_FINALIZE, error))
        return false;
    job_txn_finalize_locked(job->txn);
    return true;
}

bool
vbk_job_dismiss(VbkJob *job, GError **error)
{
    VbkJob *gone;

    g_mutex_lock(&job_lock);
    if (!job_check_verb(job, VBK_JOB_VERB_DISMISS, error)) {
        g_mutex_unlock(&job_lock);
        return false;
    }
    gone = job_do_dismiss_locked(job);
    g_mutex_unlock(&job_lock);
    job_free(gone);
    return true;
}

bool
vbk_job_is_cancelled(VbkJob *job)
{
    bool ret;

    g_mutex_lock(&job_lock);
    ret = job->cancelled;
    g_mutex_unlock(&job_lock);
    return ret;
}

void
vbk_job_pause_point(VbkJob *job)
{
    VbkJobStatus resume_to;

    g_mutex_lock(&job_lock);
    if (job->pause_count > 0 && !job->cancelled) {
        resume_to = job->status;
        job_transition(job, resume_to == VBK_JOB_STATUS_READY
                                ? VBK_JOB_STATUS_STANDBY
                                : VBK_JOB_STATUS_PAUSED);
        while (job->pause_count > 0 && !job->cancelled)
            g_cond_wait(&job_cond, &job_lock);
        job_transition(job, resume_to);
    }
    g_mutex_unlock(&job_lock);
}

bool
vbk_job_pause_requested(VbkJob *job)
{
    bool ret;

    g_mutex_lock(&job_lock);
    ret = job->pause_count > 0;
    g_mutex_unlock(&job_lock);
    return ret;
}

VbkJobFlags
vbk_job_flags(VbkJob *job)
{
    return job->flags;
}

char *
vbk_job_dup_error(VbkJob *job)
{
    char *msg;

    g_mutex_lock(&job_lock);
    msg = job->err ? g_strdup(job->err->message) : NULL;
    g_mutex_unlock(&job_lock);
    return msg;
}

void
vbk_job_progress_set_total(VbkJob *job, uint64_t total)
{
    g_mutex_lock(&job_lock);
    job->progress_total = total;
    g_mutex_unlock(&job_lock);
}

void
vbk_job_progress_update(VbkJob *job, uint64_t done)
{
    g_mutex_lock(&job_lock);
    job->progress_current += done;
    g_mutex_unlock(&job_lock);
}

const char *
vbk_job_id(VbkJob *job)
{
    return job->id;
}

const char *
vbk_job_type(VbkJob *job)
{
    return job->drv->type;
}

VbkJobStatus
vbk_job_status(VbkJob *job)
{
    VbkJobStatus status;

    g_mutex_lock(&job_lock);
    status = job->status;
    g_mutex_unlock(&job_lock);
    return status;
}

void
vbk_job_info_free(VbkJobInfo *info)
{
    if (!info)
        return;
    g_free(info->id);
    g_free(info->type);
    g_free(info->error);
    g_free(info);
}

GPtrArray *
vbk_job_query_all(void)
{
    GPtrArray *arr =
        g_ptr_array_new_with_free_func((GDestroyNotify) vbk_job_info_free);
    GList *l;

    g_mutex_lock(&job_lock);
    for (l = job_list.head; l; l = l->next) {
        VbkJob *job = l->data;
        VbkJobInfo *info = g_new0(VbkJobInfo, 1);

        info->id = g_strdup(job->id);
        info->type = g_strdup(job->drv->type);
        info->status = job->status;
        info->current_progress = job->progress_current;
        info->total_progress = job->progress_total;
        /* a running job's error is not final yet */
        if (job->err && (job->status == VBK_JOB_STATUS_ABORTING ||
                         job->status == VBK_JOB_STATUS_CONCLUDED))
            info->error = g_strdup(job->err->message);
        g_ptr_array_add(arr, info);
    }
    g_mutex_unlock(&job_lock);
    return arr;
}

/* Is the job done moving on its own?  job_lock held. */
static bool
job_settled_locked(VbkJob *job)
{
    if (job->thread || job->completing)
        return job->status == VBK_JOB_STATUS_CONCLUDED;
    switch (job->status) {
    case VBK_JOB_STATUS_CONCLUDED:
    case VBK_JOB_STATUS_PENDING:
    case VBK_JOB_STATUS_CREATED:
        return true;
    default:
        return false;
    }
}

void
vbk_job_wait_settled(const char *id)
{
    GMainContext *ctx = job_context();

    for (;;) {
        VbkJob *job;
        bool settled;

        g_mutex_lock(&job_lock);
        job = job_find_locked(id);
        settled = !job || job_settled_locked(job);
        g_mutex_unlock(&job_lock);
        if (settled)
            return;
        g_main_context_iteration(ctx, TRUE);
    }
}

void
vbk_job_cancel_sync_all(void)
{
    g_autoptr(GPtrArray) ids = g_ptr_array_new_with_free_func(g_free);
    GList *l;
    guint i;

    g_mutex_lock(&job_lock);
    for (l = job_list.head; l; l = l->next)
        g_ptr_array_add(ids, g_strdup(((VbkJob *) l->data)->id));
    g_mutex_unlock(&job_lock);

    for (i = 0; i < ids->len; i++) {
        VbkJob *job = vbk_job_find(ids->pdata[i], NULL);

        if (job && vbk_job_verb_table[VBK_JOB_VERB_CANCEL][vbk_job_status(job)])
            vbk_job_cancel(job, NULL);
        vbk_job_wait_settled(ids->pdata[i]);
        job = vbk_job_find(ids->pdata[i], NULL);
        if (job && vbk_job_status(job) == VBK_JOB_STATUS_CONCLUDED)
            vbk_job_dismiss(job, NULL);
    }
}
