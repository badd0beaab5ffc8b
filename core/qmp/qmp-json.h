/*
 * qmp-json.h: JSON as QEMU's monitor writes it.
 *
 * json-glib parses and holds the documents; this module only decides
 * how a JsonNode is written on the wire: compact with ", " and ": "
 * separators, non-ASCII escaped, and object members in the order
 * QEMU's QDict iterates them (see qmp-json.c), so that replies compare
 * byte for byte with qemu-storage-daemon's.
 */
#pragma once

#include <json-glib/json-glib.h>

G_BEGIN_DECLS

/* Serialize @node as one line (no trailing newline). */
char *vbk_qmp_json_to_string(JsonNode *node);

/* The wire position (bucket) of an object member named @key. */
guint vbk_qmp_json_key_bucket(const char *key);

/* Small builders for handlers. */
JsonNode *vbk_qmp_node_object(JsonObject *obj); /* takes @obj */
JsonNode *vbk_qmp_node_array(JsonArray *arr);   /* takes @arr */
JsonNode *vbk_qmp_node_empty_object(void);

G_END_DECLS
