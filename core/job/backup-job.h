/*
 * backup-job.h: the "backup" job (blockdev-backup, drive-backup).
 *
 * A backup copies a source node to a target node as it was when the job
 * started: a copy-before-write filter (core/block/cbw.c) is put above
 * the source for the job's lifetime and the job's background copy and
 * the filter share one block-copy state.  With a bitmap the job follows
 * QEMU's successor protocol; see backup-job.c for the outcome table.
 *
 * Both QMP commands and the libvirt driver call vbk_backup_job_start();
 * events (BLOCK_JOB_*) go to the listener set with
 * vbk_backup_set_event_func().
 */
#pragma once

#include "core/block/block.h"
#include "job.h"

G_BEGIN_DECLS

typedef enum {
    VBK_BACKUP_SYNC_TOP,
    VBK_BACKUP_SYNC_FULL,
    VBK_BACKUP_SYNC_NONE,
    VBK_BACKUP_SYNC_INCREMENTAL,
    VBK_BACKUP_SYNC_BITMAP,
    VBK_BACKUP_SYNC_LAST
} VbkBackupSync;

typedef enum {
    VBK_BITMAP_SYNC_UNSET, /* bitmap-mode not given */
    VBK_BITMAP_SYNC_ON_SUCCESS,
    VBK_BITMAP_SYNC_NEVER,
    VBK_BITMAP_SYNC_ALWAYS,
    VBK_BITMAP_SYNC_LAST
} VbkBitmapSyncMode;

typedef enum {
    VBK_ERROR_ACTION_REPORT,
    VBK_ERROR_ACTION_IGNORE,
    VBK_ERROR_ACTION_STOP,
    VBK_ERROR_ACTION_ENOSPC,
    VBK_ERROR_ACTION_AUTO,
    VBK_ERROR_ACTION_LAST
} VbkErrorAction;

/* QAPI names ("full", "on-success", "enospc"); -1 when unknown. */
const char *vbk_backup_sync_to_string(VbkBackupSync sync);
int vbk_backup_sync_from_string(const char *s);
int vbk_bitmap_sync_mode_from_string(const char *s);
int vbk_error_action_from_string(const char *s);

typedef struct {
    const char *job_id; /* NULL: the device name */
    const char *device; /* source node */
    const char *target; /* target node (blockdev-backup) */
    VbkBackupSync sync;
    int64_t speed;      /* bytes/s, 0 unlimited */
    const char *bitmap; /* NULL: none */
    VbkBitmapSyncMode bitmap_mode;
    bool compress;
    VbkErrorAction on_source_error;
    VbkErrorAction on_target_error;
    bool auto_finalize; /* callers set both to TRUE by default */
    bool auto_dismiss;
    const char *filter_node_name;
    int64_t max_workers; /* x-perf; default 64 */
    int64_t max_chunk;   /* x-perf; default 0 */
} VbkBackupOptions;

/* Fill @opts with QEMU's defaults. */
void vbk_backup_options_init(VbkBackupOptions *opts);

/*
 * blockdev-backup: validate in QEMU's order and create the job, with
 * its filter in place and its bitmap frozen, in status CREATED (a
 * transaction's prepare; vbk_job_start() is its commit, and cancelling
 * the CREATED job undoes everything).
 * Returns: (transfer none) the job, or NULL with QEMU's message.
 */
VbkJob *vbk_backup_job_create(const VbkBackupOptions *opts, GError **error);
/* Create and start at once (a lone blockdev-backup). */
VbkJob *vbk_backup_job_start(const VbkBackupOptions *opts, GError **error);

typedef enum {
    VBK_NEW_IMAGE_MODE_EXISTING,
    VBK_NEW_IMAGE_MODE_ABSOLUTE_PATHS,
} VbkNewImageMode;

/*
 * drive-backup: @opts->target is a file name.  Unless @mode is
 * existing, the target is created (format @format, default the
 * source's; for sync=top with the source's backing file, for sync=none
 * backed by the source); then it is opened and backed up to as
 * blockdev-backup does.
 */
VbkJob *vbk_drive_backup_create(const VbkBackupOptions *opts,
                                const char *format,
                                VbkNewImageMode mode,
                                GError **error);
VbkJob *vbk_drive_backup_start(const VbkBackupOptions *opts,
                               const char *format,
                               VbkNewImageMode mode,
                               GError **error);

/* ---- block jobs: query and control ---------------------------------- */

typedef struct {
    char *type;   /* "backup" */
    char *device; /* the job id */
    uint64_t len;
    uint64_t offset;
    bool busy;
    bool paused;
    int64_t speed;
    const char *io_status; /* "ok", "failed", "nospace" */
    bool ready;
    VbkJobStatus status;
    bool auto_finalize;
    bool auto_dismiss;
    char *error; /* NULL unless the job failed */
} VbkBlockJobInfo;

void vbk_block_job_info_free(VbkBlockJobInfo *info);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VbkBlockJobInfo, vbk_block_job_info_free)

/* query-block-jobs: newest first.  (transfer full) */
GPtrArray *vbk_block_job_query_all(void);

/* Find a block job by id: "Block job '%s' not found" (DeviceNotActive
 * class: VBK_JOB_ERROR_NOT_FOUND).  (transfer none) */
VbkJob *vbk_block_job_find(const char *id, GError **error);
/* block-job-set-speed. */
bool vbk_block_job_set_speed(VbkJob *job, int64_t speed, GError **error);
/* block-job-cancel: refuses a user-paused job unless @force. */
bool vbk_block_job_cancel(VbkJob *job, bool force, GError **error);

/*
 * Event listener (the QMP monitor).  Events: BLOCK_JOB_COMPLETED,
 * BLOCK_JOB_CANCELLED (type, device, len, offset, speed, error?),
 * BLOCK_JOB_ERROR (device, operation, action), BLOCK_JOB_PENDING (type,
 * id).  Called from the job's thread or the owner thread, with no lock
 * of this module held.
 */
typedef struct {
    const char *name; /* event name */
    const char *type; /* "backup" */
    const char *id;   /* job id ("device" / "id") */
    uint64_t len;
    uint64_t offset;
    int64_t speed;
    const char *error;     /* COMPLETED with an error, else NULL */
    const char *operation; /* ERROR: "read" | "write" */
    const char *action;    /* ERROR: "ignore" | "report" | "stop" */
} VbkBlockJobEvent;

typedef void (*VbkBlockJobEventFunc)(const VbkBlockJobEvent *ev,
                                     void *user_data);
void vbk_backup_set_event_func(VbkBlockJobEventFunc func, void *user_data);

G_END_DECLS
