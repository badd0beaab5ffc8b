/*
 * transaction.h: all-or-nothing groups of block operations (QEMU's
 * `transaction` command).
 *
 * Each action is prepared in order; the first failure undoes every
 * prepared action in reverse order and is reported; otherwise every
 * action is committed.  Bitmap additions, clears, merges and
 * enable/disable take effect in prepare (and are undone on abort);
 * removals are checked in prepare and done in commit, so a later action
 * in the same transaction still sees the bitmap (QEMU: "Bitmap already
 * exists" for remove-then-add of one name).  Backup actions
 * (blockdev-backup, drive-backup) create their job in prepare (filter
 * inserted, bitmap frozen, status CREATED), start it in commit and cancel
 * the never-started job on abort.  With completion-mode grouped their
 * jobs share one completion group (core/job/job.h): a failing job cancels
 * the others and every bitmap is reclaimed, keeping its point in time.
 */
#pragma once

#include "backup-job.h"
#include "core/block/dirty.h"

G_BEGIN_DECLS

typedef enum {
    VBK_TXN_ABORT,
    VBK_TXN_BITMAP_ADD,
    VBK_TXN_BITMAP_REMOVE,
    VBK_TXN_BITMAP_CLEAR,
    VBK_TXN_BITMAP_ENABLE,
    VBK_TXN_BITMAP_DISABLE,
    VBK_TXN_BITMAP_MERGE,
    VBK_TXN_BLOCKDEV_BACKUP,
    VBK_TXN_DRIVE_BACKUP,
    VBK_TXN_LAST
} VbkTxnActionType;

typedef struct {
    VbkTxnActionType type;
    const char *node;
    const char *name;            /* the bitmap; the target of a merge */
    uint64_t granularity;        /* add: 0 for the node's default */
    bool persistent;             /* add */
    bool disabled;               /* add */
    const VbkBitmapRef *sources; /* merge */
    size_t n_sources;
    VbkBackupOptions backup; /* blockdev-backup, drive-backup */
    const char *format;      /* drive-backup: NULL for the default */
    VbkNewImageMode mode;    /* drive-backup */
} VbkTxnAction;

/* QAPI's name of an action type: "block-dirty-bitmap-add", "abort", ... */
const char *vbk_txn_action_name(VbkTxnActionType type);

/*
 * Run @actions as one transaction.  With @grouped (completion-mode
 * grouped) only job-starting actions are allowed: "Action '%s' does not
 * support Transaction property completion-mode = grouped"; their jobs
 * form one completion group.
 */
bool vbk_transaction_run(const VbkTxnAction *actions,
                         size_t n_actions,
                         bool grouped,
                         GError **error);

G_END_DECLS
