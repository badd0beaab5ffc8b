/*
 * commands-txn.c: the QMP `transaction` command.
 *
 * Checks the actions the way QAPI visits them (members named
 * "actions[N].data.x"), turns each into a VbkTxnAction and hands the list
 * to core/job/transaction.c, which prepares, commits or undoes them.
 * Backup actions take the members of their commands (commands-backup.c).
 */
#include <glib/gi18n-lib.h>

#include "core/job/transaction.h"
#include "qmp.h"

static const VbkQmpArg txn_no_args[] = {
    {NULL},
};

static const VbkQmpArg *const txn_data_args[VBK_TXN_LAST] = {
    [VBK_TXN_ABORT] = txn_no_args,
    [VBK_TXN_BITMAP_ADD] = vbk_qmp_bitmap_add_args,
    [VBK_TXN_BITMAP_REMOVE] = vbk_qmp_bitmap_args,
    [VBK_TXN_BITMAP_CLEAR] = vbk_qmp_bitmap_args,
    [VBK_TXN_BITMAP_ENABLE] = vbk_qmp_bitmap_args,
    [VBK_TXN_BITMAP_DISABLE] = vbk_qmp_bitmap_args,
    [VBK_TXN_BITMAP_MERGE] = vbk_qmp_bitmap_merge_args,
    [VBK_TXN_BLOCKDEV_BACKUP] = vbk_qmp_blockdev_backup_args,
    [VBK_TXN_DRIVE_BACKUP] = vbk_qmp_drive_backup_args,
};

static const VbkQmpArg txn_action_args[] = {
    {"type", VBK_QMP_ARG_STR, false},
    {"data", VBK_QMP_ARG_OBJECT, true},
    {NULL},
};

/* What the actions point into; freed after the transaction ran. */
typedef struct {
    GArray *actions;  /* VbkTxnAction */
    GPtrArray *lists; /* VbkBitmapRef arrays of merges */
} TxnBuild;

static bool
txn_parse_sources(JsonObject *data,
                  VbkTxnAction *a,
                  TxnBuild *b,
                  GError **error)
{
    JsonNode *list = json_object_get_member(data, "bitmaps");
    JsonArray *arr;
    VbkBitmapRef *refs;
    guint i;

    if (!JSON_NODE_HOLDS_ARRAY(list)) {
        g_set_error(error, VBK_QMP_ERROR, VBK_QMP_ERROR_GENERIC,
                    _("Invalid parameter type for '%s', expected: %s"),
                    "bitmaps", "array");
        return false;
    }
    arr = json_node_get_array(list);
    a->n_sources = json_array_get_length(arr);
    refs = g_new0(VbkBitmapRef, a->n_sources ? a->n_sources : 1);
    g_ptr_array_add(b->lists, refs);
    a->sources = refs;
    for (i = 0; i < a->n_sources; i++) {
        if (!vbk_qmp_bitmap_ref(json_array_get_element(arr, i), &refs[i],
                                error))
            return false;
    }
    return true;
}

/* actions[@i]: check and convert one action. */
static bool
txn_parse_action(JsonNode *node, guint i, TxnBuild *b, GError **error)
{
    g_autofree char *prefix = g_strdup_printf("actions[%u].", i);
    g_autofree char *dprefix = g_strdup_printf("actions[%u].data.", i);
    VbkTxnAction a = {0};
    JsonObject *obj, *data;
    const char *type;
    int t;

    if (!JSON_NODE_HOLDS_OBJECT(node)) {
        g_set_error(error, VBK_QMP_ERROR, VBK_QMP_ERROR_GENERIC,
                    _("Invalid parameter type for '%s', expected: %s"), "null",
                    "object");
        return false;
    }
    obj = json_node_get_object(node);
    if (!vbk_qmp_check_args(obj, prefix, txn_action_args, true, error))
        return false;
    type = vbk_qmp_arg_str(obj, "type", NULL);
    for (t = 0; t < VBK_TXN_LAST; t++) {
        if (g_str_equal(type, vbk_txn_action_name(t)))
            break;
    }
    if (t == VBK_TXN_LAST) {
        vbk_qmp_error_bad_value(error, "", "type", type);
        return false;
    }
    if (!vbk_qmp_check_args(obj, prefix, txn_action_args, false, error))
        return false;
    if (!json_object_has_member(obj, "data")) {
        g_set_error(error, VBK_QMP_ERROR, VBK_QMP_ERROR_GENERIC,
                    _("Parameter '%s%s' is missing"), prefix, "data");
        return false;
    }
    data = json_object_get_object_member(obj, "data");
    if (!vbk_qmp_check_args(data, dprefix, txn_data_args[t], false, error))
        return false;
    a.type = t;
    a.node = vbk_qmp_arg_str(data, "node", NULL);
    a.name = vbk_qmp_arg_str(
        data, t == VBK_TXN_BITMAP_MERGE ? "target" : "name", NULL);
    a.granularity = (uint64_t) vbk_qmp_arg_int(data, "granularity", 0);
    a.persistent = vbk_qmp_arg_bool(data, "persistent", false);
    a.disabled = vbk_qmp_arg_bool(data, "disabled", false);
    if (t == VBK_TXN_BITMAP_MERGE && !txn_parse_sources(data, &a, b, error))
        return false;
    if (t == VBK_TXN_BLOCKDEV_BACKUP || t == VBK_TXN_DRIVE_BACKUP) {
        vbk_qmp_backup_events_init();
        if (!vbk_qmp_backup_options(data, dprefix, t == VBK_TXN_DRIVE_BACKUP,
                                    &a.backup, &a.format, &a.mode, error))
            return false;
    }
    g_array_append_val(b->actions, a);
    return true;
}

static bool
txn_parse_properties(JsonObject *args, bool *grouped, GError **error)
{
    static const VbkQmpArg props_args[] = {
        {"completion-mode", VBK_QMP_ARG_STR, true},
        {NULL},
    };
    JsonObject *props;
    const char *mode;

    *grouped = false;
    if (!json_object_has_member(args, "properties"))
        return true;
    props = json_object_get_object_member(args, "properties");
    if (!vbk_qmp_check_args(props, "properties.", props_args, false, error))
        return false;
    mode = vbk_qmp_arg_str(props, "completion-mode", "individual");
    if (!g_str_equal(mode, "individual") && !g_str_equal(mode, "grouped")) {
        vbk_qmp_error_bad_value(error, "", "completion-mode", mode);
        return false;
    }
    *grouped = g_str_equal(mode, "grouped");
    return true;
}

static bool
qmp_transaction(JsonObject *args, JsonNode **ret, GError **error)
{
    JsonNode *list = json_object_get_member(args, "actions");
    TxnBuild b;
    JsonArray *arr;
    bool grouped, ok = false;
    guint i;

    if (!JSON_NODE_HOLDS_ARRAY(list)) {
        g_set_error(error, VBK_QMP_ERROR, VBK_QMP_ERROR_GENERIC,
                    _("Invalid parameter type for '%s', expected: %s"),
                    "actions", "array");
        return false;
    }
    arr = json_node_get_array(list);
    b.actions = g_array_new(FALSE, TRUE, sizeof(VbkTxnAction));
    b.lists = g_ptr_array_new_with_free_func(g_free);
    for (i = 0; i < json_array_get_length(arr); i++) {
        if (!txn_parse_action(json_array_get_element(arr, i), i, &b, error))
            goto out;
    }
    if (!txn_parse_properties(args, &grouped, error))
        goto out;
    ok = vbk_transaction_run((VbkTxnAction *) (void *) b.actions->data,
                             b.actions->len, grouped, error);
out:
    g_array_free(b.actions, TRUE);
    g_ptr_array_free(b.lists, TRUE);
    return ok;
}

static const VbkQmpArg transaction_args[] = {
    {"actions", VBK_QMP_ARG_ANY, false},
    {"properties", VBK_QMP_ARG_OBJECT, true},
    {NULL},
};

const VbkQmpCommand vbk_qmp_txn_commands[] = {
    {"transaction", qmp_transaction, transaction_args},
    {NULL},
};
