/*
 * block.c: the block graph — node creation, naming, children, registry.
 *
 * Every node lives in one registry (creation order) under a graph mutex.
 * Nodes made by vbk_block_node_open() are "monitor owned": the registry
 * holds a reference until vbk_block_node_delete() (QMP's blockdev-del) or
 * vbk_block_graph_close_all().  Children opened inline get generated
 * names ("#block123") and live as long as their parent references them.
 *
 * Reference counting: a node is closed and freed when its last reference
 * goes; closing a node drops its references on its children, so a chain
 * unwinds from the top.
 */
#include <glib/gi18n-lib.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "block-int.h"
#include "dirty.h"

static GMutex graph_lock;
static GPtrArray *all_nodes;     /* non-owning, creation order */
static GPtrArray *monitor_nodes; /* owning: blockdev-add'ed nodes */
static guint64 anon_counter;

/* Keys every driver accepts (BlockdevOptions' base). */
static const char *const common_keys[] = {
    "driver", "node-name", "read-only", "auto-read-only", "cache",
    "discard", "detect-zeroes", "force-share", NULL,
};

static const VbkBlockDriver *const drivers[] = {
    &vbk_drv_file,
    &vbk_drv_raw,
    &vbk_drv_null_co,
    &vbk_drv_blkdebug,
    &vbk_drv_qcow2,
    &vbk_drv_cbw,
};

const VbkBlockDriver *
vbk_block_driver_find(const char *name)
{
    for (size_t i = 0; i < G_N_ELEMENTS(drivers); i++) {
        if (g_str_equal(drivers[i]->format_name, name))
            return drivers[i];
    }
    return NULL;
}

bool
vbk_block_driver_known(const char *name)
{
    return name && vbk_block_driver_find(name) != NULL;
}

static void
registry_init_locked(void)
{
    if (!all_nodes) {
        all_nodes = g_ptr_array_new();
        monitor_nodes = g_ptr_array_new();
    }
}

static VbkBlockNode *
find_locked(const char *name)
{
    registry_init_locked();
    for (guint i = 0; i < all_nodes->len; i++) {
        VbkBlockNode *bs = all_nodes->pdata[i];
        if (g_str_equal(bs->node_name, name))
            return bs;
    }
    return NULL;
}

VbkBlockNode *
vbk_block_node_find(const char *node_name)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&graph_lock);

    if (!node_name)
        return NULL;
    return find_locked(node_name);
}

VbkBlockNode *
vbk_block_node_lookup(const char *device_or_node, GError **error)
{
    VbkBlockNode *bs = vbk_block_node_find(device_or_node);

    if (!bs)
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_NOT_FOUND,
                    _("Cannot find device='%s' nor node-name='%s'"),
                    device_or_node, device_or_node);
    return bs;
}

/* QEMU's id_wellformed(): a letter, then letters, digits, '-', '.', '_' */
static bool
node_name_wellformed(const char *name)
{
    if (!g_ascii_isalpha(name[0]))
        return false;
    for (const char *p = name + 1; *p; p++) {
        if (!g_ascii_isalnum(*p) && !strchr("-._", *p))
            return false;
    }
    return true;
}

bool
vbk_block_check_keys(GVariant *opts,
                     const VbkBlockDriver *drv,
                     const char *prefix,
                     GError **error)
{
    GVariantIter iter;
    const char *key;

    g_variant_iter_init(&iter, opts);
    while (g_variant_iter_next(&iter, "{&sv}", &key, NULL)) {
        if (g_strv_contains(common_keys, key))
            continue;
        if (drv->options && g_strv_contains(drv->options, key))
            continue;
        if ((drv->is_format || drv->is_filter) &&
            g_str_equal(key, drv->file_key ? drv->file_key : "file"))
            continue;
        if (drv->supports_backing && g_str_equal(key, "backing"))
            continue;
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("Parameter '%s%s' is unexpected"), prefix, key);
        return false;
    }
    return true;
}

static bool
parse_common(VbkBlockNode *bs, GVariant *opts, GError **error)
{
    g_autoptr(GVariant) cache = NULL;
    const char *discard = NULL;
    bool ro = false;

    int ro_given = vbk_opts_lookup_bool(opts, "read-only", &ro, error);

    if (ro_given < 0)
        return false;
    bs->read_only = ro;
    /* resolve_child() corrects it for inherited values */
    bs->ro_explicit = ro_given > 0;

    cache = g_variant_lookup_value(opts, "cache", G_VARIANT_TYPE_VARDICT);
    if (cache) {
        bool v;
        int r = vbk_opts_lookup_bool(cache, "direct", &v, error);
        if (r < 0)
            return false;
        if (r > 0)
            bs->cache_direct = v;
        r = vbk_opts_lookup_bool(cache, "no-flush", &v, error);
        if (r < 0)
            return false;
        if (r > 0)
            bs->cache_no_flush = v;
    }

    if (vbk_opts_lookup_string(opts, "discard", &discard, error) < 0)
        return false;
    if (discard) {
        if (g_str_equal(discard, "unmap") || g_str_equal(discard, "on"))
            bs->discard_unmap = true;
        else if (g_str_equal(discard, "ignore") || g_str_equal(discard, "off"))
            bs->discard_unmap = false;
        else {
            g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                        _("Parameter 'discard' does not accept value '%s'"),
                        discard);
            return false;
        }
    }
    return true;
}

static bool
assign_node_name(VbkBlockNode *bs, GVariant *opts, GError **error)
{
    const char *name = NULL;

    if (vbk_opts_lookup_string(opts, "node-name", &name, error) < 0)
        return false;
    if (!name) {
        bs->node_name = g_strdup_printf("#block%03" G_GUINT64_FORMAT,
                                        ++anon_counter);
        bs->auto_named = true;
        return true;
    }
    if (!node_name_wellformed(name)) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("Invalid node-name: '%s'"), name);
        return false;
    }
    if (strlen(name) >= 32) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID, "%s",
                    _("Node name too long"));
        return false;
    }
    if (find_locked(name)) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("Duplicate nodes with node-name='%s'"), name);
        return false;
    }
    bs->node_name = g_strdup(name);
    bs->name_explicit = true;
    return true;
}

static void
node_free(VbkBlockNode *bs)
{
    /* close first: a format stores its persistent bitmaps there */
    if (bs->drv && bs->drv->close && bs->opaque)
        bs->drv->close(bs);
    vbk_block_dirty_release_all(bs);
    g_mutex_clear(&bs->dirty_lock);
    if (bs->file) {
        bs->file->parents--;
        vbk_block_node_unref(bs->file);
    }
    if (bs->backing) {
        bs->backing->parents--;
        vbk_block_node_unref(bs->backing);
    }
    g_free(bs->opaque);
    g_free(bs->node_name);
    g_free(bs->filename);
    g_free(bs->backing_filename);
    g_free(bs);
}

/* Open a node; not monitor owned.  Returns (transfer full). */
static VbkBlockNode *
node_open(GVariant *opts, GError **error)
{
    const VbkBlockDriver *drv;
    const char *driver = NULL;
    VbkBlockNode *bs;

    if (!g_variant_is_of_type(opts, G_VARIANT_TYPE_VARDICT)) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID, "%s",
                    _("Invalid parameter type, expected: object"));
        return NULL;
    }
    if (!vbk_opts_get_string(opts, "driver", &driver, error))
        return NULL;
    drv = vbk_block_driver_find(driver);
    if (!drv) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("Parameter 'driver' does not accept value '%s'"),
                    driver);
        return NULL;
    }
    if (!vbk_block_check_keys(opts, drv, "", error))
        return NULL;

    bs = g_new0(VbkBlockNode, 1);
    bs->refcnt = 1;
    g_mutex_init(&bs->dirty_lock);
    bs->dirty_bitmaps = g_ptr_array_new_with_free_func(
        (GDestroyNotify) vbk_dirty_bitmap_unref);
    bs->drv = drv;
    bs->request_alignment = 1;
    if (!parse_common(bs, opts, error)) {
        node_free(bs);
        return NULL;
    }

    g_mutex_lock(&graph_lock);
    registry_init_locked();
    if (!assign_node_name(bs, opts, error)) {
        g_mutex_unlock(&graph_lock);
        node_free(bs);
        return NULL;
    }
    /* register before open so that a duplicate name in a child fails */
    g_ptr_array_add(all_nodes, bs);
    g_mutex_unlock(&graph_lock);

    bs->opaque = g_malloc0(MAX(drv->instance_size, 1));
    if (!drv->open(bs, opts, error)) {
        /* close must not run on a half-opened node */
        g_clear_pointer(&bs->opaque, g_free);
        vbk_block_node_unref(bs);
        return NULL;
    }
    return bs;
}

VbkBlockNode *
vbk_block_node_open(GVariant *opts, GError **error)
{
    g_autoptr(GVariant) sunk = g_variant_ref_sink(opts);
    VbkBlockNode *bs = node_open(sunk, error);

    if (!bs)
        return NULL;
    g_mutex_lock(&graph_lock);
    g_ptr_array_add(monitor_nodes, vbk_block_node_ref(bs));
    g_mutex_unlock(&graph_lock);
    return bs;
}

VbkBlockNode *
vbk_block_node_open_image(const char *filename, const char *format,
                          bool read_only, const char *node_name,
                          GError **error)
{
    GVariantBuilder b;
    GVariantBuilder fb;

    g_variant_builder_init(&fb, G_VARIANT_TYPE_VARDICT);
    g_variant_builder_add(&fb, "{sv}", "driver", g_variant_new_string("file"));
    g_variant_builder_add(&fb, "{sv}", "filename",
                          g_variant_new_string(filename));

    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    g_variant_builder_add(&b, "{sv}", "driver",
                          g_variant_new_string(format ? format : "qcow2"));
    if (node_name)
        g_variant_builder_add(&b, "{sv}", "node-name",
                              g_variant_new_string(node_name));
    g_variant_builder_add(&b, "{sv}", "read-only",
                          g_variant_new_boolean(read_only));
    g_variant_builder_add(&b, "{sv}", "file", g_variant_builder_end(&fb));
    return vbk_block_node_open(g_variant_builder_end(&b), error);
}

bool
vbk_block_node_delete(const char *node_name, GError **error)
{
    VbkBlockNode *bs;
    bool owned = false;

    g_mutex_lock(&graph_lock);
    bs = find_locked(node_name);
    if (!bs) {
        g_mutex_unlock(&graph_lock);
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_NOT_FOUND,
                    _("Failed to find node with node-name='%s'"), node_name);
        return false;
    }
    owned = g_ptr_array_find(monitor_nodes, bs, NULL);
    if (!owned) {
        g_mutex_unlock(&graph_lock);
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_IN_USE,
                    _("Node %s is not owned by the monitor"), node_name);
        return false;
    }
    if (g_atomic_int_get(&bs->refcnt) > 1 || bs->parents > 0) {
        g_mutex_unlock(&graph_lock);
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_IN_USE,
                    _("Block device %s is in use"), node_name);
        return false;
    }
    g_ptr_array_remove(monitor_nodes, bs);
    g_mutex_unlock(&graph_lock);
    vbk_block_node_unref(bs);
    return true;
}

VbkBlockNode *
vbk_block_node_ref(VbkBlockNode *bs)
{
    g_atomic_int_inc(&bs->refcnt);
    return bs;
}

void
vbk_block_node_unref(VbkBlockNode *bs)
{
    if (!bs || !g_atomic_int_dec_and_test(&bs->refcnt))
        return;
    g_mutex_lock(&graph_lock);
    g_ptr_array_remove(all_nodes, bs);
    g_mutex_unlock(&graph_lock);
    node_free(bs);
}

GPtrArray *
vbk_block_node_list(void)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&graph_lock);
    GPtrArray *list =
        g_ptr_array_new_with_free_func((GDestroyNotify) vbk_block_node_unref);

    registry_init_locked();
    for (guint i = 0; i < all_nodes->len; i++)
        g_ptr_array_add(list, vbk_block_node_ref(all_nodes->pdata[i]));
    return list;
}

void
vbk_block_graph_close_all(void)
{
    for (;;) {
        VbkBlockNode *bs;

        g_mutex_lock(&graph_lock);
        registry_init_locked();
        if (monitor_nodes->len == 0) {
            g_mutex_unlock(&graph_lock);
            return;
        }
        /* newest first: users of a node were added after it */
        bs = g_ptr_array_steal_index(monitor_nodes, monitor_nodes->len - 1);
        g_mutex_unlock(&graph_lock);
        vbk_block_flush(bs);
        vbk_block_node_unref(bs);
    }
}

/* ---- children ------------------------------------------------------- */

/*
 * Return a copy of the a{sv} @child with @key set to @value unless the
 * child sets it itself: inline children inherit read-only, cache and
 * discard from their parent as in QEMU.
 */
static GVariant *
inherit_option(GVariant *child, const char *key, GVariant *value)
{
    GVariantBuilder b;
    GVariantIter iter;
    const char *k;
    GVariant *v;

    g_autoptr(GVariant) present = g_variant_lookup_value(child, key, NULL);

    g_variant_ref_sink(value);
    if (present) {
        g_variant_unref(value);
        return g_variant_ref(child);
    }
    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    g_variant_iter_init(&iter, child);
    while (g_variant_iter_next(&iter, "{&sv}", &k, &v)) {
        g_variant_builder_add(&b, "{sv}", k, v);
        g_variant_unref(v);
    }
    g_variant_builder_add(&b, "{sv}", key, value);
    g_variant_unref(value);
    return g_variant_ref_sink(g_variant_builder_end(&b));
}

static GVariant *
child_options(VbkBlockNode *parent, GVariant *child, bool force_ro)
{
    g_autoptr(GVariant) a = NULL;
    g_autoptr(GVariant) b = NULL;
    GVariantDict cache;

    a = inherit_option(child, "read-only",
                       g_variant_new_boolean(force_ro || parent->read_only));
    b = inherit_option(a, "discard",
                       g_variant_new_string(parent->discard_unmap ? "unmap"
                                                                  : "ignore"));
    g_variant_dict_init(&cache, NULL);
    g_variant_dict_insert(&cache, "direct", "b", parent->cache_direct);
    g_variant_dict_insert(&cache, "no-flush", "b", parent->cache_no_flush);
    return inherit_option(b, "cache", g_variant_dict_end(&cache));
}

/* Resolve @value (string reference or inline a{sv}) to a node. */
static VbkBlockNode *
resolve_child(VbkBlockNode *parent, GVariant *value, bool force_ro,
              GError **error)
{
    if (g_variant_is_of_type(value, G_VARIANT_TYPE_STRING)) {
        const char *ref = g_variant_get_string(value, NULL);
        VbkBlockNode *child = vbk_block_node_find(ref);

        if (!child) {
            g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_NOT_FOUND,
                        _("Cannot find device='%s' nor node-name='%s'"), ref,
                        ref);
            return NULL;
        }
        if (child == parent) {
            g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID, "%s",
                        _("Making a node its own child is not allowed"));
            return NULL;
        }
        return vbk_block_node_ref(child);
    }
    if (g_variant_is_of_type(value, G_VARIANT_TYPE_VARDICT)) {
        g_autoptr(GVariant) o = child_options(parent, value, force_ro);
        g_autoptr(GVariant) own_ro =
            g_variant_lookup_value(value, "read-only", NULL);
        VbkBlockNode *child = node_open(o, error);

        if (child)
            child->ro_explicit = own_ro != NULL;
        return child;
    }
    g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID, "%s",
                _("Invalid parameter type for 'file', expected: "
                  "BlockdevRef"));
    return NULL;
}

static GVariant *
unwrap_child_value(GVariant *opts, const char *key)
{
    GVariant *v = g_variant_lookup_value(opts, key, NULL);

    while (v && g_variant_is_of_type(v, G_VARIANT_TYPE_VARIANT)) {
        GVariant *inner = g_variant_get_variant(v);
        g_variant_unref(v);
        v = inner;
    }
    return v;
}

bool
vbk_block_open_file_child(VbkBlockNode *parent, GVariant *opts,
                          bool required, GError **error)
{
    return vbk_block_open_file_child_key(parent, opts, "file", required,
                                         error);
}

bool
vbk_block_open_file_child_key(VbkBlockNode *parent, GVariant *opts,
                              const char *key, bool required, GError **error)
{
    g_autoptr(GVariant) v = unwrap_child_value(opts, key);
    VbkBlockNode *child;

    if (!v) {
        if (required)
            g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                        _("Parameter '%s' is missing"), key);
        return !required;
    }
    child = resolve_child(parent, v, false, error);
    if (!child)
        return false;
    if (!parent->read_only && child->read_only) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("Block node '%s' is read-only"), child->node_name);
        vbk_block_node_unref(child);
        return false;
    }
    child->parents++;
    parent->file = child;
    if (!parent->filename)
        parent->filename = g_strdup(child->filename);
    return true;
}

/* Guess the format of an image file: qcow2 by its magic, else raw. */
static const char *
probe_format(const char *path)
{
    unsigned char magic[4] = {0};
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd >= 0) {
        if (pread(fd, magic, 4, 0) != 4)
            memset(magic, 0, sizeof(magic));
        close(fd);
    }
    return memcmp(magic, "QFI\xfb", 4) == 0 ? "qcow2" : "raw";
}

static GVariant *
backing_options_from_header(VbkBlockNode *parent, const char *filename,
                            const char *format)
{
    g_autofree char *path = NULL;
    GVariantBuilder b;
    GVariantBuilder fb;

    path = vbk_block_path_combine(parent->filename, filename);
    g_variant_builder_init(&fb, G_VARIANT_TYPE_VARDICT);
    g_variant_builder_add(&fb, "{sv}", "driver", g_variant_new_string("file"));
    g_variant_builder_add(&fb, "{sv}", "filename", g_variant_new_string(path));
    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    g_variant_builder_add(&b, "{sv}", "driver",
                          g_variant_new_string(format ? format
                                                      : probe_format(path)));
    g_variant_builder_add(&b, "{sv}", "file", g_variant_builder_end(&fb));
    return g_variant_ref_sink(g_variant_builder_end(&b));
}

bool
vbk_block_open_backing(VbkBlockNode *parent, GVariant *opts,
                       const char *header_filename, const char *header_format,
                       GError **error)
{
    g_autoptr(GVariant) v = NULL;
    VbkBlockNode *child;

    g_variant_lookup(opts, "backing", "@*", &v);
    while (v && g_variant_is_of_type(v, G_VARIANT_TYPE_VARIANT)) {
        GVariant *inner = g_variant_get_variant(v);
        g_variant_unref(v);
        v = inner;
    }
    if (v && g_variant_is_of_type(v, G_VARIANT_TYPE_MAYBE)) {
        GVariant *inner = g_variant_get_maybe(v);
        g_variant_unref(v);
        v = inner;
        if (!v)
            return true; /* "backing": null */
    }
    if (v && g_variant_is_of_type(v, G_VARIANT_TYPE_STRING) &&
        !*g_variant_get_string(v, NULL))
        return true;
    if (!v) {
        if (!header_filename || !*header_filename)
            return true;
        v = backing_options_from_header(parent, header_filename,
                                        header_format);
    }
    child = resolve_child(parent, v, true, error);
    if (!child) {
        if (header_filename && error && *error)
            g_prefix_error(error, _("Could not open backing file: "));
        return false;
    }
    child->parents++;
    parent->backing = child;
    return true;
}

/* ---- accessors ------------------------------------------------------ */

const char *
vbk_block_node_name(VbkBlockNode *bs)
{
    return bs->node_name;
}

const char *
vbk_block_node_driver_name(VbkBlockNode *bs)
{
    return bs->drv->format_name;
}

const char *
vbk_block_node_filename(VbkBlockNode *bs)
{
    return bs->filename ? bs->filename : "";
}

VbkBlockNode *
vbk_block_node_file(VbkBlockNode *bs)
{
    return bs->file;
}

VbkBlockNode *
vbk_block_node_backing(VbkBlockNode *bs)
{
    return bs->backing;
}

bool
vbk_block_node_is_read_only(VbkBlockNode *bs)
{
    return bs->read_only;
}

bool
vbk_block_node_is_filter(VbkBlockNode *bs)
{
    return bs->drv->is_filter;
}

bool
vbk_block_node_cache_direct(VbkBlockNode *bs)
{
    return bs->cache_direct;
}

uint32_t
vbk_block_node_cluster_size(VbkBlockNode *bs)
{
    return bs->drv->cluster_size ? bs->drv->cluster_size(bs) : 0;
}

bool
vbk_block_node_supports_compressed_writes(VbkBlockNode *bs)
{
    return bs->drv->supports_compressed_writes;
}

void
vbk_format_info_clear(VbkFormatInfo *info)
{
    g_clear_pointer(&info->backing_file, g_free);
    g_clear_pointer(&info->backing_fmt, g_free);
    g_clear_pointer(&info->bitmaps, g_ptr_array_unref);
}

static void
format_bitmap_free(gpointer p)
{
    VbkFormatBitmap *b = p;

    g_free(b->name);
    g_free(b);
}

VbkFormatBitmap *
vbk_format_info_add_bitmap(VbkFormatInfo *info, const char *name)
{
    VbkFormatBitmap *b = g_new0(VbkFormatBitmap, 1);

    if (!info->bitmaps)
        info->bitmaps = g_ptr_array_new_with_free_func(format_bitmap_free);
    b->name = g_strdup(name);
    g_ptr_array_add(info->bitmaps, b);
    return b;
}

bool
vbk_block_node_format_info(VbkBlockNode *bs, VbkFormatInfo *info)
{
    memset(info, 0, sizeof(*info));
    if (!bs->drv->format_info)
        return false;
    return bs->drv->format_info(bs, info);
}
