/*
 * transaction.c: prepare / commit / abort over a list of actions.
 *
 * Every action type has a row in txn_ops: prepare does (or checks) the
 * work and records what abort needs to undo it; commit finishes work
 * that must wait for the whole transaction (bitmap removal, starting a
 * backup job).  The undo state of each action lives in a TxnState beside
 * it.  Backup jobs are remembered by id, not by pointer: aborting one job
 * of a completion group ends (and may free) the others.
 */
#include <glib/gi18n-lib.h>

#include "transaction.h"

typedef struct {
    const VbkTxnAction *action;
    VbkHBitmap *backup; /* clear/merge: the bitmap before */
    VbkJobTxn *group;   /* grouped: the jobs' completion group */
    char *job_id;       /* backups: the created job */
} TxnState;

typedef struct {
    const char *name;
    bool (*prepare)(TxnState *st, GError **error);
    void (*commit)(TxnState *st);
    void (*abort)(TxnState *st);
    void (*clean)(TxnState *st); /* after all commits */
} TxnOps;

static bool
txn_abort_prepare(TxnState *st, GError **error)
{
    g_set_error_literal(error, VBK_JOB_ERROR, VBK_JOB_ERROR_FAILED,
                        _("Transaction aborted using Abort action"));
    return false;
}

static bool
txn_add_prepare(TxnState *st, GError **error)
{
    const VbkTxnAction *a = st->action;

    return vbk_block_dirty_bitmap_add(a->node, a->name, a->granularity,
                                      a->persistent, a->disabled, error);
}

static void
txn_add_abort(TxnState *st)
{
    vbk_block_dirty_bitmap_remove(st->action->node, st->action->name, NULL);
}

/* Removal is checked now and done at commit. */
static bool
txn_remove_prepare(TxnState *st, GError **error)
{
    const VbkTxnAction *a = st->action;
    VbkBlockNode *bs = vbk_block_node_find(a->node);
    g_autoptr(GPtrArray) infos = NULL;
    guint i;

    if (!bs) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_NOT_FOUND,
                    _("Node '%s' not found"), a->node);
        return false;
    }
    infos = vbk_block_dirty_bitmap_query(bs);
    for (i = 0; infos && i < infos->len; i++) {
        VbkDirtyBitmapInfo *info = infos->pdata[i];
        if (info->name && g_str_equal(info->name, a->name))
            return true;
    }
    g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_NOT_FOUND,
                _("Dirty bitmap '%s' not found"), a->name);
    return false;
}

static void
txn_remove_commit(TxnState *st)
{
    g_autoptr(GError) err = NULL;

    if (!vbk_block_dirty_bitmap_remove(st->action->node, st->action->name,
                                       &err))
        g_warning("transaction: %s", err->message);
}

static bool
txn_clear_prepare(TxnState *st, GError **error)
{
    return vbk_block_dirty_bitmap_clear(st->action->node, st->action->name,
                                        &st->backup, error);
}

static bool
txn_merge_prepare(TxnState *st, GError **error)
{
    const VbkTxnAction *a = st->action;

    return vbk_block_dirty_bitmap_merge(a->node, a->name, a->sources,
                                        a->n_sources, &st->backup, error);
}

static void
txn_restore_abort(TxnState *st)
{
    if (st->backup) {
        vbk_block_dirty_bitmap_restore(st->action->node, st->action->name,
                                       st->backup);
        st->backup = NULL;
    }
}

static bool
txn_enable_prepare(TxnState *st, GError **error)
{
    return vbk_block_dirty_bitmap_enable(st->action->node, st->action->name,
                                         error);
}

static void
txn_enable_abort(TxnState *st)
{
    vbk_block_dirty_bitmap_disable(st->action->node, st->action->name, NULL);
}

static bool
txn_disable_prepare(TxnState *st, GError **error)
{
    return vbk_block_dirty_bitmap_disable(st->action->node, st->action->name,
                                          error);
}

static void
txn_disable_abort(TxnState *st)
{
    vbk_block_dirty_bitmap_enable(st->action->node, st->action->name, NULL);
}

/* Backups: the job is created (CREATED, filter and successor in place)
 * now, started at commit. */
static bool
txn_backup_prepare(TxnState *st, GError **error)
{
    const VbkTxnAction *a = st->action;
    VbkJob *job;

    if (a->type == VBK_TXN_DRIVE_BACKUP)
        job = vbk_drive_backup_create(&a->backup, a->format, a->mode, error);
    else
        job = vbk_backup_job_create(&a->backup, error);
    if (!job)
        return false;
    if (st->group)
        vbk_job_txn_add(st->group, job);
    /* QEMU prepares a backup in a drained section that ends after the
     * commit: the job starts paused (created, running, paused, running) */
    vbk_job_pause(job);
    st->job_id = g_strdup(vbk_job_id(job));
    return true;
}

static void
txn_backup_commit(TxnState *st)
{
    VbkJob *job = vbk_job_find(st->job_id, NULL);

    if (job && vbk_job_status(job) == VBK_JOB_STATUS_CREATED)
        vbk_job_start(job);
}

/* After every commit: the end of the drained section. */
static void
txn_backup_clean(TxnState *st)
{
    VbkJob *job = vbk_job_find(st->job_id, NULL);

    if (job && vbk_job_started(job))
        vbk_job_resume(job);
}

/* Cancelling the never-started job undoes filter and successor; it may
 * be gone already when its group was aborted through another job. */
static void
txn_backup_abort(TxnState *st)
{
    VbkJob *job = vbk_job_find(st->job_id, NULL);

    if (job && vbk_job_status(job) == VBK_JOB_STATUS_CREATED)
        vbk_job_cancel(job, NULL);
}

static const TxnOps txn_ops[VBK_TXN_LAST] = {
    [VBK_TXN_ABORT] = {"abort", txn_abort_prepare, NULL, NULL},
    [VBK_TXN_BITMAP_ADD] = {"block-dirty-bitmap-add", txn_add_prepare, NULL,
                            txn_add_abort},
    [VBK_TXN_BITMAP_REMOVE] = {"block-dirty-bitmap-remove", txn_remove_prepare,
                               txn_remove_commit, NULL},
    [VBK_TXN_BITMAP_CLEAR] = {"block-dirty-bitmap-clear", txn_clear_prepare,
                              NULL, txn_restore_abort},
    [VBK_TXN_BITMAP_ENABLE] = {"block-dirty-bitmap-enable", txn_enable_prepare,
                               NULL, txn_enable_abort},
    [VBK_TXN_BITMAP_DISABLE] = {"block-dirty-bitmap-disable",
                                txn_disable_prepare, NULL, txn_disable_abort},
    [VBK_TXN_BITMAP_MERGE] = {"block-dirty-bitmap-merge", txn_merge_prepare,
                              NULL, txn_restore_abort},
    [VBK_TXN_BLOCKDEV_BACKUP] = {"blockdev-backup", txn_backup_prepare,
                                 txn_backup_commit, txn_backup_abort,
                                 txn_backup_clean},
    [VBK_TXN_DRIVE_BACKUP] = {"drive-backup", txn_backup_prepare,
                              txn_backup_commit, txn_backup_abort,
                              txn_backup_clean},
};

const char *
vbk_txn_action_name(VbkTxnActionType type)
{
    g_return_val_if_fail(type < VBK_TXN_LAST, NULL);
    return txn_ops[type].name;
}

/* Backups are the only actions that start jobs. */
static bool
txn_action_supports_grouped(VbkTxnActionType type)
{
    return type == VBK_TXN_BLOCKDEV_BACKUP || type == VBK_TXN_DRIVE_BACKUP;
}

static void
txn_states_free(TxnState *states, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        g_clear_pointer(&states[i].backup, vbk_hbitmap_free);
        g_free(states[i].job_id);
    }
    g_free(states);
}

bool
vbk_transaction_run(const VbkTxnAction *actions,
                    size_t n_actions,
                    bool grouped,
                    GError **error)
{
    g_autoptr(VbkJobTxn) group = NULL;
    TxnState *states;
    size_t i, done;

    for (i = 0; grouped && i < n_actions; i++) {
        if (!txn_action_supports_grouped(actions[i].type)) {
            g_set_error(error, VBK_JOB_ERROR, VBK_JOB_ERROR_FAILED,
                        _("Action '%s' does not support Transaction "
                          "property completion-mode = %s"),
                        txn_ops[actions[i].type].name, "grouped");
            return false;
        }
    }
    if (grouped)
        group = vbk_job_txn_new();
    states = g_new0(TxnState, n_actions ? n_actions : 1);
    for (done = 0; done < n_actions; done++) {
        states[done].action = &actions[done];
        states[done].group = group;
        if (!txn_ops[actions[done].type].prepare(&states[done], error))
            break;
    }
    if (done < n_actions) {
        for (i = done; i-- > 0;) {
            if (txn_ops[actions[i].type].abort)
                txn_ops[actions[i].type].abort(&states[i]);
        }
        txn_states_free(states, n_actions);
        return false;
    }
    for (i = 0; i < n_actions; i++) {
        if (txn_ops[actions[i].type].commit)
            txn_ops[actions[i].type].commit(&states[i]);
    }
    for (i = 0; i < n_actions; i++) {
        if (txn_ops[actions[i].type].clean)
            txn_ops[actions[i].type].clean(&states[i]);
    }
    txn_states_free(states, n_actions);
    return true;
}
