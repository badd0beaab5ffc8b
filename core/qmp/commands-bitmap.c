/*
 * commands-bitmap.c: QMP commands on dirty bitmaps.
 *
 * block-dirty-bitmap-add, -remove, -clear, -enable, -disable, -merge and
 * x-debug-block-dirty-bitmap-sha256.  Each is a thin wrapper over
 * core/block/dirty.h, which reports errors in QEMU's words; the
 * "dirty-bitmaps" member of the node queries is built here too.
 */
#include <glib/gi18n-lib.h>

#include "core/block/dirty.h"
#include "qmp-json.h"
#include "qmp.h"

const VbkQmpArg vbk_qmp_bitmap_args[] = {
    {"node", VBK_QMP_ARG_STR, false},
    {"name", VBK_QMP_ARG_STR, false},
    {NULL},
};

const VbkQmpArg vbk_qmp_bitmap_add_args[] = {
    {"node", VBK_QMP_ARG_STR, false},
    {"name", VBK_QMP_ARG_STR, false},
    {"granularity", VBK_QMP_ARG_SIZE, true},
    {"persistent", VBK_QMP_ARG_BOOL, true},
    {"disabled", VBK_QMP_ARG_BOOL, true},
    {NULL},
};

const VbkQmpArg vbk_qmp_bitmap_merge_args[] = {
    {"node", VBK_QMP_ARG_STR, false},
    {"target", VBK_QMP_ARG_STR, false},
    {"bitmaps", VBK_QMP_ARG_ANY, false},
    {NULL},
};

#define NODE(args) vbk_qmp_arg_str(args, "node", NULL)
#define NAME(args) vbk_qmp_arg_str(args, "name", NULL)

static bool
qmp_bitmap_add(JsonObject *args, JsonNode **ret, GError **error)
{
    return vbk_block_dirty_bitmap_add(
        NODE(args), NAME(args),
        (uint64_t) vbk_qmp_arg_int(args, "granularity", 0),
        vbk_qmp_arg_bool(args, "persistent", false),
        vbk_qmp_arg_bool(args, "disabled", false), error);
}

static bool
qmp_bitmap_remove(JsonObject *args, JsonNode **ret, GError **error)
{
    return vbk_block_dirty_bitmap_remove(NODE(args), NAME(args), error);
}

static bool
qmp_bitmap_clear(JsonObject *args, JsonNode **ret, GError **error)
{
    return vbk_block_dirty_bitmap_clear(NODE(args), NAME(args), NULL, error);
}

static bool
qmp_bitmap_enable(JsonObject *args, JsonNode **ret, GError **error)
{
    return vbk_block_dirty_bitmap_enable(NODE(args), NAME(args), error);
}

static bool
qmp_bitmap_disable(JsonObject *args, JsonNode **ret, GError **error)
{
    return vbk_block_dirty_bitmap_disable(NODE(args), NAME(args), error);
}

bool
vbk_qmp_bitmap_ref(JsonNode *el, VbkBitmapRef *ref, GError **error)
{
    static const VbkQmpArg ref_args[] = {
        {"node", VBK_QMP_ARG_STR, false},
        {"name", VBK_QMP_ARG_STR, false},
        {NULL},
    };

    if (JSON_NODE_HOLDS_VALUE(el) &&
        json_node_get_value_type(el) == G_TYPE_STRING) {
        ref->node = NULL;
        ref->name = json_node_get_string(el);
        return true;
    }
    if (!JSON_NODE_HOLDS_OBJECT(el)) {
        /* QAPI names list elements 'null' in this message */
        g_set_error(error, VBK_QMP_ERROR, VBK_QMP_ERROR_GENERIC,
                    _("Invalid parameter type for '%s', expected: %s"), "null",
                    "BlockDirtyBitmapOrStr");
        return false;
    }
    if (!vbk_qmp_check_args(json_node_get_object(el), "", ref_args, false,
                            error))
        return false;
    ref->node = vbk_qmp_arg_str(json_node_get_object(el), "node", NULL);
    ref->name = vbk_qmp_arg_str(json_node_get_object(el), "name", NULL);
    return true;
}

static bool
qmp_bitmap_merge(JsonObject *args, JsonNode **ret, GError **error)
{
    JsonNode *list = json_object_get_member(args, "bitmaps");
    g_autofree VbkBitmapRef *refs = NULL;
    JsonArray *arr;
    guint i, n;

    if (!JSON_NODE_HOLDS_ARRAY(list)) {
        g_set_error(error, VBK_QMP_ERROR, VBK_QMP_ERROR_GENERIC,
                    _("Invalid parameter type for '%s', expected: %s"),
                    "bitmaps", "array");
        return false;
    }
    arr = json_node_get_array(list);
    n = json_array_get_length(arr);
    refs = g_new0(VbkBitmapRef, n ? n : 1);
    for (i = 0; i < n; i++) {
        if (!vbk_qmp_bitmap_ref(json_array_get_element(arr, i), &refs[i],
                                error))
            return false;
    }
    return vbk_block_dirty_bitmap_merge(NODE(args),
                                        vbk_qmp_arg_str(args, "target", NULL),
                                        refs, n, NULL, error);
}

static bool
qmp_bitmap_sha256(JsonObject *args, JsonNode **ret, GError **error)
{
    g_autofree char *sum =
        vbk_block_dirty_bitmap_sha256(NODE(args), NAME(args), error);
    JsonObject *o;

    if (!sum)
        return false;
    o = json_object_new();
    json_object_set_string_member(o, "sha256", sum);
    *ret = vbk_qmp_node_object(o);
    return true;
}

JsonArray *
vbk_qmp_dirty_bitmaps_info(VbkBlockNode *bs)
{
    g_autoptr(GPtrArray) infos = vbk_block_dirty_bitmap_query(bs);
    JsonArray *arr;
    guint i;

    if (!infos || infos->len == 0)
        return NULL;
    arr = json_array_new();
    for (i = 0; i < infos->len; i++) {
        VbkDirtyBitmapInfo *info = infos->pdata[i];
        JsonObject *o = json_object_new();

        if (info->name)
            json_object_set_string_member(o, "name", info->name);
        json_object_set_int_member(o, "count", info->count);
        json_object_set_int_member(o, "granularity", info->granularity);
        json_object_set_boolean_member(o, "recording", info->recording);
        json_object_set_boolean_member(o, "busy", info->busy);
        json_object_set_boolean_member(o, "persistent", info->persistent);
        if (info->inconsistent)
            json_object_set_boolean_member(o, "inconsistent", true);
        json_array_add_object_element(arr, o);
    }
    return arr;
}

const VbkQmpCommand vbk_qmp_bitmap_commands[] = {
    {"block-dirty-bitmap-add", qmp_bitmap_add, vbk_qmp_bitmap_add_args},
    {"block-dirty-bitmap-remove", qmp_bitmap_remove, vbk_qmp_bitmap_args},
    {"block-dirty-bitmap-clear", qmp_bitmap_clear, vbk_qmp_bitmap_args},
    {"block-dirty-bitmap-enable", qmp_bitmap_enable, vbk_qmp_bitmap_args},
    {"block-dirty-bitmap-disable", qmp_bitmap_disable, vbk_qmp_bitmap_args},
    {"block-dirty-bitmap-merge", qmp_bitmap_merge, vbk_qmp_bitmap_merge_args},
    {"x-debug-block-dirty-bitmap-sha256", qmp_bitmap_sha256, vbk_qmp_bitmap_args},
    {NULL},
};
