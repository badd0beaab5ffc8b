/*
 * options.c: typed access to blockdev-add style options.
 *
 * A node's options are a GVariant dictionary (a{sv}), the C analogue of the
 * JSON object QMP's blockdev-add receives.  Values arrive from JSON with
 * whatever integer type the converter picked (x, t, i, u ...), possibly
 * wrapped in a variant; these helpers accept every integer type, check the
 * sign and report type errors in QAPI's words:
 *
 *     Invalid parameter type for 'size', expected: integer
 *
 * Numbers given as strings are accepted too, as QEMU's keyval/-drive
 * syntax does ("size": "1048576").
 */
#include <glib/gi18n-lib.h>
#include <errno.h>
#include <stdlib.h>

#include "block-int.h"

static GVariant *
opts_lookup(GVariant *opts, const char *key)
{
    GVariant *v;

    if (!opts)
        return NULL;
    v = g_variant_lookup_value(opts, key, NULL);
    /* unwrap nested variants and "maybe" containers holding a value */
    while (v && (g_variant_is_of_type(v, G_VARIANT_TYPE_VARIANT) ||
                 g_variant_is_of_type(v, G_VARIANT_TYPE_MAYBE))) {
        GVariant *inner;

        if (g_variant_is_of_type(v, G_VARIANT_TYPE_VARIANT))
            inner = g_variant_get_variant(v);
        else
            inner = g_variant_get_maybe(v);
        g_variant_unref(v);
        v = inner;
    }
    return v;
}

static void
type_error(const char *key, const char *expected, GError **error)
{
    g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                _("Invalid parameter type for '%s', expected: %s"), key,
                expected);
}

int
vbk_opts_lookup_string(GVariant *opts, const char *key, const char **out,
                       GError **error)
{
    g_autoptr(GVariant) v = opts_lookup(opts, key);

    if (!v)
        return 0;
    if (!g_variant_is_of_type(v, G_VARIANT_TYPE_STRING)) {
        type_error(key, "string", error);
        return -1;
    }
    /* the string lives as long as @opts: lookup_value returned a child */
    *out = g_variant_get_string(v, NULL);
    return 1;
}

static bool
variant_to_uint64(GVariant *v, uint64_t *out)
{
    const GVariantType *t = g_variant_get_type(v);
    int64_t s;

    if (g_variant_type_equal(t, G_VARIANT_TYPE_UINT64)) {
        *out = g_variant_get_uint64(v);
        return true;
    }
    if (g_variant_type_equal(t, G_VARIANT_TYPE_INT64))
        s = g_variant_get_int64(v);
    else if (g_variant_type_equal(t, G_VARIANT_TYPE_INT32))
        s = g_variant_get_int32(v);
    else if (g_variant_type_equal(t, G_VARIANT_TYPE_UINT32))
        s = g_variant_get_uint32(v);
    else if (g_variant_type_equal(t, G_VARIANT_TYPE_INT16))
        s = g_variant_get_int16(v);
    else if (g_variant_type_equal(t, G_VARIANT_TYPE_UINT16))
        s = g_variant_get_uint16(v);
    else if (g_variant_type_equal(t, G_VARIANT_TYPE_BYTE))
        s = g_variant_get_byte(v);
    else if (g_variant_type_equal(t, G_VARIANT_TYPE_DOUBLE)) {
        double d = g_variant_get_double(v);
        if (d < 0 || d != (double) (uint64_t) d)
            return false;
        *out = (uint64_t) d;
        return true;
    } else if (g_variant_type_equal(t, G_VARIANT_TYPE_STRING)) {
        const char *str = g_variant_get_string(v, NULL);
        char *end = NULL;
        guint64 u;

        if (!*str || *str == '-')
            return false;
        errno = 0;
        u = g_ascii_strtoull(str, &end, 0);
        if (errno || *end)
            return false;
        *out = u;
        return true;
    } else
        return false;
    if (s < 0)
        return false;
    *out = (uint64_t) s;
    return true;
}

int
vbk_opts_lookup_uint64(GVariant *opts, const char *key, uint64_t *out,
                       GError **error)
{
    g_autoptr(GVariant) v = opts_lookup(opts, key);

    if (!v)
        return 0;
    if (!variant_to_uint64(v, out)) {
        type_error(key, "integer", error);
        return -1;
    }
    return 1;
}

int
vbk_opts_lookup_bool(GVariant *opts, const char *key, bool *out,
                     GError **error)
{
    g_autoptr(GVariant) v = opts_lookup(opts, key);

    if (!v)
        return 0;
    if (g_variant_is_of_type(v, G_VARIANT_TYPE_BOOLEAN)) {
        *out = g_variant_get_boolean(v);
        return 1;
    }
    if (g_variant_is_of_type(v, G_VARIANT_TYPE_STRING)) {
        const char *s = g_variant_get_string(v, NULL);
        if (g_str_equal(s, "on") || g_str_equal(s, "true")) {
            *out = true;
            return 1;
        }
        if (g_str_equal(s, "off") || g_str_equal(s, "false")) {
            *out = false;
            return 1;
        }
    }
    type_error(key, "boolean", error);
    return -1;
}

static void
missing_error(const char *key, GError **error)
{
    g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                _("Parameter '%s' is missing"), key);
}

bool
vbk_opts_get_string(GVariant *opts, const char *key, const char **out,
                    GError **error)
{
    int r = vbk_opts_lookup_string(opts, key, out, error);

    if (r == 0)
        missing_error(key, error);
    return r > 0;
}

bool
vbk_opts_get_uint64(GVariant *opts, const char *key, uint64_t *out,
                    GError **error)
{
    int r = vbk_opts_lookup_uint64(opts, key, out, error);

    if (r == 0)
        missing_error(key, error);
    return r > 0;
}

bool
vbk_opts_get_bool(GVariant *opts, const char *key, bool *out, GError **error)
{
    int r = vbk_opts_lookup_bool(opts, key, out, error);

    if (r == 0)
        missing_error(key, error);
    return r > 0;
}

char *
vbk_block_path_combine(const char *base, const char *rel)
{
    g_autofree char *dir = NULL;

    if (!rel || g_path_is_absolute(rel) || !base || strstr(rel, "://"))
        return g_strdup(rel);
    dir = g_path_get_dirname(base);
    return g_build_filename(dir, rel, NULL);
}
