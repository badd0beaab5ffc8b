/*
 * transaction.c: prepare / commit / abort over a list of actions.
 *
 * Every action type has a row in txn_ops: prepare does (or checks) the
 * work and records what abort needs to undo it; commit finishes work
 * that must wait for the whole transaction (bitmap removal).  The undo
 * state of each action lives in a TxnState beside it.
 */
#include <glib/gi18n-lib.h>

#include "transaction.h"

typedef struct {
    const VbkTxnAction *action;
    VbkHBitmap *backup; /* clear/merge: the bitmap before */
} TxnState;

typedef struct {
    const char *name;
    bool (*prepare)(TxnState *st, GError **error);
    void (*commit)(TxnState *st);
    void (*abort)(TxnState *st);
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
};

const char *
vbk_txn_action_name(VbkTxnActionType type)
{
    g_return_val_if_fail(type < VBK_TXN_LAST, NULL);
    return txn_ops[type].name;
}

/* Backups (later) are the only actions that start jobs. */
static bool
txn_action_supports_grouped(VbkTxnActionType type)
{
    return false;
}

bool
vbk_transaction_run(const VbkTxnAction *actions,
                    size_t n_actions,
                    bool grouped,
                    GError **error)
{
    g_autofree TxnState *states = g_new0(TxnState, n_actions ? n_actions : 1);
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
    for (done = 0; done < n_actions; done++) {
        states[done].action = &actions[done];
        if (!txn_ops[actions[done].type].prepare(&states[done], error))
            break;
    }
    if (done < n_actions) {
        for (i = done; i-- > 0;) {
            if (txn_ops[actions[i].type].abort)
                txn_ops[actions[i].type].abort(&states[i]);
        }
        return false;
    }
    for (i = 0; i < n_actions; i++) {
        if (txn_ops[actions[i].type].commit)
            txn_ops[actions[i].type].commit(&states[i]);
        g_clear_pointer(&states[i].backup, vbk_hbitmap_free);
    }
    return true;
}
