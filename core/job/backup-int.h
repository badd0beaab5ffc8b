/*
 * backup-int.h: what the files of the backup job share (backup-job.c:
 * the job driver; backup-start.c: validation and start; block-job.c:
 * query and control of block jobs).
 */
#pragma once

#include "backup-job.h"
#include "block-copy.h"

G_BEGIN_DECLS

typedef struct {
    VbkJob *job;
    char *id;
    VbkBackupSync sync;
    VbkBitmapSyncMode bitmap_mode;
    VbkErrorAction on_source_error;
    VbkErrorAction on_target_error;
    VbkBlockNode *source;
    VbkBlockNode *target;
    VbkBlockNode *filter;
    VbkBlockCopy *bc;            /* the filter's */
    VbkDirtyBitmap *sync_bitmap; /* the parent, a reference */
    bool drop_target;            /* drive-backup opened it */
    bool ended;                  /* commit or abort ran */
    bool succeeded;

    GMutex lock; /* the fields below */
    uint64_t len;
    uint64_t offset;
    int64_t speed;
    const char *io_status;
} VbkBackupJob;

/* Live backup jobs, newest first; the lock is taken before the job
 * registry's, never after. */
extern GMutex vbk_backup_lock;
extern GList *vbk_backup_jobs;

extern const VbkJobDriver vbk_backup_job_driver;
extern const char *const vbk_error_action_names[VBK_ERROR_ACTION_LAST];

/* Hand an event to the listener. */
void vbk_backup_emit(const VbkBlockJobEvent *ev);

G_END_DECLS
