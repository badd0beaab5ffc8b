/*
 * job.h: long-running operations (blockdev-create, later backup) as
 * QEMU-style jobs with an explicit state machine.
 *
 * A job has an id, a type ("create", "backup") and a status from
 * VbkJobStatus.  Which status may follow which is fixed by the
 * transition table vbk_job_stt (QEMU's JobSTT), and which user command
 * ("verb") a job accepts in which status by vbk_job_verb_table (QEMU's
 * JobVerbTable).  Both are public so that tests can check them.
 *
 * Life of a job:
 *
 *   vbk_job_create()  -> CREATED
 *   vbk_job_start()   -> RUNNING, the driver's run() in its own GThread
 *   run() returns 0   -> WAITING -> PENDING -> (finalize) -> CONCLUDED
 *   run() fails or the job was cancelled -> ABORTING -> CONCLUDED
 *   vbk_job_dismiss() -> NULL (the job leaves the registry)
 *
 * With auto-finalize the PENDING job is finalized at once; otherwise it
 * waits for vbk_job_finalize() (job-finalize).  With auto-dismiss a
 * CONCLUDED job goes to NULL at once.
 *
 * Threads: run() runs in the job's thread and may block; it checks
 * vbk_job_is_cancelled() and calls vbk_job_pause_point() between units
 * of work.  Every other transition (completion, finalize, dismiss)
 * happens in the thread that owns the job context (the daemon's main
 * loop; see vbk_job_set_context()).  A single registry mutex protects
 * every job's status; the status-change callback is invoked with it
 * held and must not call back into this API (the QMP monitor only
 * queues an event).
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <vbackup/vbackup.h>

G_BEGIN_DECLS

typedef enum {
    VBK_JOB_STATUS_UNDEFINED,
    VBK_JOB_STATUS_CREATED,
    VBK_JOB_STATUS_RUNNING,
    VBK_JOB_STATUS_PAUSED,
    VBK_JOB_STATUS_READY,
    VBK_JOB_STATUS_STANDBY,
    VBK_JOB_STATUS_WAITING,
    VBK_JOB_STATUS_PENDING,
    VBK_JOB_STATUS_ABORTING,
    VBK_JOB_STATUS_CONCLUDED,
    VBK_JOB_STATUS_NULL,
    VBK_JOB_STATUS_LAST
} VbkJobStatus;

typedef enum {
    VBK_JOB_VERB_CANCEL,
    VBK_JOB_VERB_PAUSE,
    VBK_JOB_VERB_RESUME,
    VBK_JOB_VERB_SET_SPEED,
    VBK_JOB_VERB_COMPLETE,
    VBK_JOB_VERB_FINALIZE,
    VBK_JOB_VERB_DISMISS,
    VBK_JOB_VERB_LAST
} VbkJobVerb;

/* vbk_job_stt[from][to]: may a job in @from move to @to? */
extern const bool vbk_job_stt[VBK_JOB_STATUS_LAST][VBK_JOB_STATUS_LAST];
/* vbk_job_verb_table[verb][status]: does a job in @status accept @verb? */
extern const bool vbk_job_verb_table[VBK_JOB_VERB_LAST][VBK_JOB_STATUS_LAST];

/* QAPI names: "created", "running", ...; "cancel", "set-speed", ... */
const char *vbk_job_status_to_string(VbkJobStatus status);
const char *vbk_job_verb_to_string(VbkJobVerb verb);

typedef struct VbkJob VbkJob;

typedef enum {
    VBK_JOB_DEFAULT = 0,
    VBK_JOB_MANUAL_FINALIZE = 1 << 0,
    VBK_JOB_MANUAL_DISMISS = 1 << 1,
} VbkJobFlags;

/*
 * What a job type provides.  Only run() is mandatory.
 *  run       the work, in the job's thread; returns FALSE with @error
 *            set on failure.  A cancelled job should return FALSE with
 *            G_IO_ERROR_CANCELLED (any error is replaced by "Operation
 *            canceled" when the job was cancelled).
 *  prepare   on the owner thread when the job is finalized after
 *            success; FALSE turns the outcome into a failure.
 *  commit    success, after prepare;  abort: failure or cancel;
 *  clean     always, last, before CONCLUDED.
 *  free      releases @opaque.
 */
typedef struct {
    const char *type;
    bool (*run)(VbkJob *job, void *opaque, GError **error);
    bool (*prepare)(VbkJob *job, void *opaque, GError **error);
    void (*commit)(VbkJob *job, void *opaque);
    void (*abort)(VbkJob *job, void *opaque);
    void (*clean)(VbkJob *job, void *opaque);
    void (*free)(void *opaque);
    /* optional: the job became PENDING and waits for job-finalize
     * (BLOCK_JOB_PENDING); called with the registry mutex held, so it
     * must not call back into this API */
    void (*pending)(VbkJob *job, void *opaque);
} VbkJobDriver;

/*
 * Called on every status change (JOB_STATUS_CHANGE), with the registry
 * mutex held, from whichever thread made the change.
 */
typedef void (*VbkJobStatusFunc)(VbkJob *job,
                                 VbkJobStatus status,
                                 void *user_data);

/* One listener (the QMP monitor); NULL removes it. */
void vbk_job_set_status_handler(VbkJobStatusFunc func, void *user_data);

/*
 * The GMainContext that completes jobs (default: the global default
 * context).  The owner of that context must iterate it.
 */
void vbk_job_set_context(GMainContext *ctx);

/*
 * Create a job in status CREATED.  Takes ownership of @opaque (freed by
 * drv->free when the job goes away, even on failure).  Fails with
 * "Job ID '%s' already in use" or "Invalid job ID '%s'".
 * Returns: (transfer none) the job, owned by the registry.
 */
VbkJob *vbk_job_create(const char *id,
                       const VbkJobDriver *drv,
                       void *opaque,
                       VbkJobFlags flags,
                       GError **error);

/*
 * Completion groups (QEMU's JobTxn, "completion-mode: grouped"): jobs in
 * one group reach PENDING together and are finalized together; when one
 * fails or is cancelled, the others are cancelled and all of them end
 * in ABORTING -> CONCLUDED.  A job not added to a group forms one on
 * its own.  Add jobs while they are CREATED; the group keeps itself
 * alive while it has jobs.
 */
typedef struct VbkJobTxn VbkJobTxn;

VbkJobTxn *vbk_job_txn_new(void);
void vbk_job_txn_unref(VbkJobTxn *txn);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VbkJobTxn, vbk_job_txn_unref)
void vbk_job_txn_add(VbkJobTxn *txn, VbkJob *job);

/* CREATED -> RUNNING; spawns the job's thread.  A job with a pause
 * pending starts as QEMU's: RUNNING then PAUSED at once, RUNNING again
 * when its thread is resumed. */
void vbk_job_start(VbkJob *job);
/* Has vbk_job_start() been called?  (QEMU emits BLOCK_JOB_CANCELLED and
 * _COMPLETED only for started jobs.) */
bool vbk_job_started(VbkJob *job);
/* Internal pause and resume (QEMU's drained sections), counted, unlike
 * the user's job-pause: no "Job is already paused". */
void vbk_job_pause(VbkJob *job);
void vbk_job_resume(VbkJob *job);

/* Registry lookup: "Job not found" when absent. (transfer none) */
VbkJob *vbk_job_find(const char *id, GError **error);

/* Verbs (QMP job-cancel, job-pause, job-resume, job-finalize,
 * job-dismiss).  Each first checks vbk_job_verb_table. */
bool vbk_job_cancel(VbkJob *job, GError **error);
bool vbk_job_user_pause(VbkJob *job, GError **error);
bool vbk_job_user_resume(VbkJob *job, GError **error);
bool vbk_job_finalize(VbkJob *job, GError **error);
bool vbk_job_dismiss(VbkJob *job, GError **error);

/* For run(): has cancel been requested? */
bool vbk_job_is_cancelled(VbkJob *job);
/* For run(): block here while the job is paused (PAUSED status). */
void vbk_job_pause_point(VbkJob *job);
/* Is a pause requested (pause count > 0; block jobs' "paused")? */
bool vbk_job_pause_requested(VbkJob *job);
/* The job's flags as created. */
VbkJobFlags vbk_job_flags(VbkJob *job);
/* The job's error message, NULL when none. (transfer full) */
char *vbk_job_dup_error(VbkJob *job);
/* For run(): progress counters shown by query-jobs. */
void vbk_job_progress_set_total(VbkJob *job, uint64_t total);
void vbk_job_progress_update(VbkJob *job, uint64_t done);

/* Accessors (valid while the job is in the registry). */
const char *vbk_job_id(VbkJob *job);
const char *vbk_job_type(VbkJob *job);
VbkJobStatus vbk_job_status(VbkJob *job);

/* A snapshot of one job for query-jobs. */
typedef struct {
    char *id;
    char *type;
    VbkJobStatus status;
    uint64_t current_progress;
    uint64_t total_progress;
    char *error; /* NULL when the job has not failed */
} VbkJobInfo;

void vbk_job_info_free(VbkJobInfo *info);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VbkJobInfo, vbk_job_info_free)

/* Newest job first, as QEMU's query-jobs. (transfer full) */
GPtrArray *vbk_job_query_all(void);

/*
 * Shutdown: cancel every job, wait for the threads, finalize and
 * dismiss them all (each ends in NULL).  Call from the owner thread.
 */
void vbk_job_cancel_sync_all(void);

/*
 * Iterate the job context until the job @id has settled: it is gone
 * (NULL), CONCLUDED, or PENDING awaiting a manual finalize.  For tests
 * and synchronous callers on the owner thread.
 */
void vbk_job_wait_settled(const char *id);

G_END_DECLS
