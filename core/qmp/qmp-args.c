/*
 * qmp-args.c: checking QMP arguments the way QEMU's QAPI visitor does.
 *
 * QEMU visits the members of a command's argument struct in declaration
 * order, complaining about the first missing or mistyped one, and only
 * then about members it did not visit.  vbk_qmp_check_args() follows the
 * same order and words; nested structs pass a "outer." prefix, as QAPI
 * names nested members ("options.size").  Also here: the QMP error
 * domain and its mapping to QEMU's error classes, and the JSON to
 * GVariant conversion blockdev-add needs.
 */
#include <glib/gi18n-lib.h>

#include "qmp.h"

G_DEFINE_QUARK(vbk - qmp - error - quark, vbk_qmp_error)

const char *
vbk_qmp_error_class(const GError *err)
{
    if (err && err->domain == VBK_QMP_ERROR) {
        switch ((VbkQmpErrorCode) err->code) {
        case VBK_QMP_ERROR_COMMAND_NOT_FOUND:
            return "CommandNotFound";
        case VBK_QMP_ERROR_DEVICE_NOT_FOUND:
            return "DeviceNotFound";
        case VBK_QMP_ERROR_DEVICE_NOT_ACTIVE:
            return "DeviceNotActive";
        case VBK_QMP_ERROR_GENERIC:
            break;
        }
    }
    return "GenericError";
}

static const char *
qmp_arg_type_name(VbkQmpArgType type)
{
    switch (type) {
    case VBK_QMP_ARG_STR:
        return "string";
    case VBK_QMP_ARG_INT:
    case VBK_QMP_ARG_SIZE:
        return "integer";
    case VBK_QMP_ARG_BOOL:
        return "boolean";
    case VBK_QMP_ARG_OBJECT:
        return "object";
    case VBK_QMP_ARG_REF:
        return "BlockdevRef";
    case VBK_QMP_ARG_ANY:
        break;
    }
    return "any";
}

static bool
qmp_node_is_type(JsonNode *node, GType gtype)
{
    return JSON_NODE_HOLDS_VALUE(node) &&
           json_node_get_value_type(node) == gtype;
}

/* Does @node fit @arg?  Sets the error when not. */
static bool
qmp_check_one(JsonNode *node,
              const VbkQmpArg *arg,
              const char *prefix,
              GError **error)
{
    bool ok = true;

    switch (arg->type) {
    case VBK_QMP_ARG_STR:
        ok = qmp_node_is_type(node, G_TYPE_STRING);
        break;
    case VBK_QMP_ARG_INT:
        ok = qmp_node_is_type(node, G_TYPE_INT64);
        break;
    case VBK_QMP_ARG_SIZE:
        if (qmp_node_is_type(node, G_TYPE_DOUBLE)) {
            g_set_error(error, VBK_QMP_ERROR, VBK_QMP_ERROR_GENERIC,
                        _("Parameter '%s%s' expects uint64"), prefix,
                        arg->name);
            return false;
        }
        ok = qmp_node_is_type(node, G_TYPE_INT64);
        break;
    case VBK_QMP_ARG_BOOL:
        ok = qmp_node_is_type(node, G_TYPE_BOOLEAN);
        break;
    case VBK_QMP_ARG_OBJECT:
        ok = JSON_NODE_HOLDS_OBJECT(node);
        break;
    case VBK_QMP_ARG_REF:
        ok = JSON_NODE_HOLDS_OBJECT(node) ||
             qmp_node_is_type(node, G_TYPE_STRING);
        if (!ok) {
            /* QAPI names alternates without the prefix */
            g_set_error(error, VBK_QMP_ERROR, VBK_QMP_ERROR_GENERIC,
                        _("Invalid parameter type for '%s', expected: %s"),
                        arg->name, qmp_arg_type_name(arg->type));
            return false;
        }
        break;
    case VBK_QMP_ARG_ANY:
        break;
    }
    if (!ok)
        g_set_error(error, VBK_QMP_ERROR, VBK_QMP_ERROR_GENERIC,
                    _("Invalid parameter type for '%s%s', expected: %s"),
                    prefix, arg->name, qmp_arg_type_name(arg->type));
    return ok;
}

static bool
qmp_spec_has(const VbkQmpArg *spec, const char *name)
{
    for (; spec && spec->name; spec++) {
        if (g_str_equal(spec->name, name))
            return true;
    }
    return false;
}

bool
vbk_qmp_check_args(JsonObject *args,
                   const char *prefix,
                   const VbkQmpArg *spec,
                   bool loose,
                   GError **error)
{
    const VbkQmpArg *arg;
    JsonObjectIter iter;
    const char *name;
    JsonNode *node;

    for (arg = spec; arg && arg->name; arg++) {
        node = args ? json_object_get_member(args, arg->name) : NULL;
        if (!node) {
            if (arg->optional)
                continue;
            g_set_error(error, VBK_QMP_ERROR, VBK_QMP_ERROR_GENERIC,
                        _("Parameter '%s%s' is missing"), prefix, arg->name);
            return false;
        }
        if (!qmp_check_one(node, arg, prefix, error))
            return false;
    }
    if (!args || loose)
        return true;
    json_object_iter_init_ordered(&iter, args);
    while (json_object_iter_next_ordered(&iter, &name, &node)) {
        if (!qmp_spec_has(spec, name)) {
            g_set_error(error, VBK_QMP_ERROR, VBK_QMP_ERROR_GENERIC,
                        _("Parameter '%s%s' is unexpected"), prefix, name);
            return false;
        }
    }
    return true;
}

void
vbk_qmp_error_bad_value(GError **error,
                        const char *prefix,
                        const char *param,
                        const char *value)
{
    g_set_error(error, VBK_QMP_ERROR, VBK_QMP_ERROR_GENERIC,
                _("Parameter '%s%s' does not accept value '%s'"), prefix, param,
                value);
}

const char *
vbk_qmp_arg_str(JsonObject *args, const char *name, const char *def)
{
    JsonNode *node = args ? json_object_get_member(args, name) : NULL;

    return node && qmp_node_is_type(node, G_TYPE_STRING)
               ? json_node_get_string(node)
               : def;
}

gint64
vbk_qmp_arg_int(JsonObject *args, const char *name, gint64 def)
{
    JsonNode *node = args ? json_object_get_member(args, name) : NULL;

    return node && qmp_node_is_type(node, G_TYPE_INT64)
               ? json_node_get_int(node)
               : def;
}

bool
vbk_qmp_arg_bool(JsonObject *args, const char *name, bool def)
{
    JsonNode *node = args ? json_object_get_member(args, name) : NULL;

    return node && qmp_node_is_type(node, G_TYPE_BOOLEAN)
               ? json_node_get_boolean(node)
               : def;
}

static GVariant *
qmp_value_to_variant(JsonNode *node)
{
    switch (json_node_get_value_type(node)) {
    case G_TYPE_INT64:
        return g_variant_new_int64(json_node_get_int(node));
    case G_TYPE_DOUBLE:
        return g_variant_new_double(json_node_get_double(node));
    case G_TYPE_BOOLEAN:
        return g_variant_new_boolean(json_node_get_boolean(node));
    case G_TYPE_STRING:
        return g_variant_new_string(json_node_get_string(node));
    default:
        return g_variant_new_maybe(G_VARIANT_TYPE_VARIANT, NULL);
    }
}

GVariant *
vbk_qmp_json_to_variant(JsonNode *node)
{
    GVariantBuilder b;
    JsonObjectIter iter;
    const char *name;
    JsonNode *member;
    JsonArray *arr;
    guint i;

    switch (JSON_NODE_TYPE(node)) {
    case JSON_NODE_OBJECT:
        g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
        json_object_iter_init_ordered(&iter, json_node_get_object(node));
        while (json_object_iter_next_ordered(&iter, &name, &member))
            g_variant_builder_add(&b, "{sv}", name,
                                  vbk_qmp_json_to_variant(member));
        return g_variant_builder_end(&b);
    case JSON_NODE_ARRAY:
        g_variant_builder_init(&b, G_VARIANT_TYPE("av"));
        arr = json_node_get_array(node);
        for (i = 0; i < json_array_get_length(arr); i++)
            g_variant_builder_add(
                &b, "v",
                vbk_qmp_json_to_variant(json_array_get_element(arr, i)));
        return g_variant_builder_end(&b);
    case JSON_NODE_VALUE:
        return qmp_value_to_variant(node);
    case JSON_NODE_NULL:
        break;
    }
    return g_variant_new_maybe(G_VARIANT_TYPE_VARIANT, NULL);
}
