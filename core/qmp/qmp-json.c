/*
 * qmp-json.c: writing JSON the way QEMU's monitor writes it.
 *
 * QEMU keeps a JSON object in a hash table of 512 buckets and writes its
 * members bucket by bucket; inside a bucket the member added last comes
 * first.  The bucket of a key is a fixed function of its bytes (the
 * "tdb" string hash, then modulo 512), so the member order of every
 * QEMU reply is predictable from its key names alone.  Handlers here add
 * members in QAPI declaration order (QEMU's insertion order) and
 * vbk_qmp_json_to_string() writes them in QEMU's wire order.  Clients do
 * not depend on the order; tests that compare our replies with
 * qemu-storage-daemon's byte for byte do.
 */
#include <string.h>

#include "qmp-json.h"

#define QMP_JSON_BUCKETS 512

guint
vbk_qmp_json_key_bucket(const char *key)
{
    const unsigned char *p = (const unsigned char *) key;
    guint32 value = 0x238F13AFu * (guint32) strlen(key);
    guint i;

    for (i = 0; p[i]; i++)
        value += (guint32) p[i] << (i * 5 % 24);
    value = 1103515243u * value + 12345u;
    return value % QMP_JSON_BUCKETS;
}

typedef struct {
    const char *name;
    JsonNode *node;
    guint bucket;
    guint index; /* insertion position */
} QmpMember;

static int
qmp_member_cmp(const void *a, const void *b)
{
    const QmpMember *ma = a;
    const QmpMember *mb = b;

    if (ma->bucket != mb->bucket)
        return ma->bucket < mb->bucket ? -1 : 1;
    /* same bucket: the later insertion is listed first */
    return ma->index > mb->index ? -1 : (ma->index < mb->index);
}

static void qmp_json_write(GString *out, JsonNode *node);

static void
qmp_json_write_string(GString *out, const char *s)
{
    const char *p;

    g_string_append_c(out, '"');
    for (p = s; *p; p = g_utf8_next_char(p)) {
        gunichar c = g_utf8_get_char(p);

        switch (c) {
        case '"':
            g_string_append(out, "\\\"");
            break;
        case '\\':
            g_string_append(out, "\\\\");
            break;
        case '\b':
            g_string_append(out, "\\b");
            break;
        case '\f':
            g_string_append(out, "\\f");
            break;
        case '\n':
            g_string_append(out, "\\n");
            break;
        case '\r':
            g_string_append(out, "\\r");
            break;
        case '\t':
            g_string_append(out, "\\t");
            break;
        default:
            if (c >= 0x20 && c < 0x7f) {
                g_string_append_c(out, (char) c);
            } else if (c > 0xffff) {
                c -= 0x10000;
                g_string_append_printf(out, "\\u%04X\\u%04X",
                                       0xd800 | (c >> 10),
                                       0xdc00 | (c & 0x3ff));
            } else {
                g_string_append_printf(out, "\\u%04X", c);
            }
        }
    }
    g_string_append_c(out, '"');
}

static void
qmp_json_write_object(GString *out, JsonObject *obj)
{
    g_autofree QmpMember *members = NULL;
    JsonObjectIter iter;
    const char *name;
    JsonNode *node;
    guint n = json_object_get_size(obj);
    guint i = 0;

    members = g_new0(QmpMember, n ? n : 1);
    json_object_iter_init_ordered(&iter, obj);
    while (json_object_iter_next_ordered(&iter, &name, &node)) {
        members[i].name = name;
        members[i].node = node;
        members[i].bucket = vbk_qmp_json_key_bucket(name);
        members[i].index = i;
        i++;
    }
    qsort(members, i, sizeof(*members), qmp_member_cmp);

    g_string_append_c(out, '{');
    for (n = 0; n < i; n++) {
        if (n)
            g_string_append(out, ", ");
        qmp_json_write_string(out, members[n].name);
        g_string_append(out, ": ");
        qmp_json_write(out, members[n].node);
    }
    g_string_append_c(out, '}');
}

static void
qmp_json_write_value(GString *out, JsonNode *node)
{
    char buf[G_ASCII_DTOSTR_BUF_SIZE];

    switch (json_node_get_value_type(node)) {
    case G_TYPE_INT64:
        g_string_append_printf(out, "%" G_GINT64_FORMAT,
                               json_node_get_int(node));
        break;
    case G_TYPE_DOUBLE:
        g_string_append(
            out, g_ascii_dtostr(buf, sizeof(buf), json_node_get_double(node)));
        break;
    case G_TYPE_BOOLEAN:
        g_string_append(out, json_node_get_boolean(node) ? "true" : "false");
        break;
    case G_TYPE_STRING:
        qmp_json_write_string(out, json_node_get_string(node));
        break;
    default:
        g_string_append(out, "null");
        break;
    }
}

static void
qmp_json_write(GString *out, JsonNode *node)
{
    JsonArray *arr;
    guint i;

    switch (JSON_NODE_TYPE(node)) {
    case JSON_NODE_OBJECT:
        qmp_json_write_object(out, json_node_get_object(node));
        break;
    case JSON_NODE_ARRAY:
        arr = json_node_get_array(node);
        g_string_append_c(out, '[');
        for (i = 0; i < json_array_get_length(arr); i++) {
            if (i)
                g_string_append(out, ", ");
            qmp_json_write(out, json_array_get_element(arr, i));
        }
        g_string_append_c(out, ']');
        break;
    case JSON_NODE_VALUE:
        qmp_json_write_value(out, node);
        break;
    case JSON_NODE_NULL:
        g_string_append(out, "null");
        break;
    }
}

char *
vbk_qmp_json_to_string(JsonNode *node)
{
    GString *out = g_string_new(NULL);

    qmp_json_write(out, node);
    return g_string_free(out, FALSE);
}

JsonNode *
vbk_qmp_node_object(JsonObject *obj)
{
    JsonNode *node = json_node_new(JSON_NODE_OBJECT);

    json_node_take_object(node, obj);
    return node;
}

JsonNode *
vbk_qmp_node_array(JsonArray *arr)
{
    JsonNode *node = json_node_new(JSON_NODE_ARRAY);

    json_node_take_array(node, arr);
    return node;
}

JsonNode *
vbk_qmp_node_empty_object(void)
{
    return vbk_qmp_node_object(json_object_new());
}
