/*
 * commands-block.c: QMP commands on the block graph.
 *
 * blockdev-add, blockdev-del, blockdev-reopen, block_resize,
 * query-named-block-nodes and query-block.  The query replies rebuild
 * QEMU 7.2's BlockDeviceInfo and ImageInfo for the drivers vbackup has,
 * adding members in QAPI declaration order (qmp-json.c writes them in
 * QEMU's wire order).
 *
 * Devices: QEMU's query-block lists BlockBackends (guest devices), and
 * qemu-storage-daemon has none.  vbackupd has no guest devices yet, so
 * it calls every root node (a node no other node uses as its file or
 * backing child) a device named after its node-name; query-block lists
 * those, and block_resize/qemu-io accept that name as "device".  The
 * libvirt driver will later attach domain disks as devices.
 */
#include <glib/gi18n-lib.h>

#include "core/block/block.h"
#include "qmp-json.h"
#include "qmp.h"

#define ROUND_UP(n, a) (((n) + (a) - 1) / (a) * (a))

/* QEMU 7.2's BlockdevDriver enum: anything else is not a driver name. */
static const char *const qemu_block_drivers[] = {
    "blkdebug",
    "blklogwrites",
    "blkreplay",
    "blkverify",
    "bochs",
    "cloop",
    "compress",
    "copy-before-write",
    "copy-on-read",
    "dmg",
    "file",
    "snapshot-access",
    "ftp",
    "ftps",
    "gluster",
    "host_cdrom",
    "host_device",
    "http",
    "https",
    "io_uring",
    "iscsi",
    "luks",
    "nbd",
    "nfs",
    "null-aio",
    "null-co",
    "nvme",
    "nvme-io_uring",
    "parallels",
    "preallocate",
    "qcow",
    "qcow2",
    "qed",
    "quorum",
    "raw",
    "rbd",
    "replication",
    "ssh",
    "throttle",
    "vdi",
    "vhdx",
    "virtio-blk-vfio-pci",
    "virtio-blk-vhost-user",
    "virtio-blk-vhost-vdpa",
    "vmdk",
    "vpc",
    "vvfat",
    NULL,
};

bool
vbk_qmp_is_qemu_block_driver(const char *name)
{
    return g_strv_contains(qemu_block_drivers, name);
}

/* ---- blockdev-add / blockdev-del --------------------------------- */

/*
 * The members QAPI would miss before blockdev-add's own node-name check:
 * the required ones of the drivers vbackup has.  Everything else is the
 * block layer's to check.
 */
static const VbkQmpArg blockdev_add_file_args[] = {
    {"filename", VBK_QMP_ARG_STR, false},
    {NULL},
};

static const VbkQmpArg blockdev_add_format_args[] = {
    {"file", VBK_QMP_ARG_REF, false},
    {NULL},
};

static bool
qmp_blockdev_add_precheck(JsonObject *args,
                          const char *driver,
                          const char *prefix,
                          GError **error)
{
    const VbkQmpArg *spec = NULL;

    if (g_str_equal(driver, "file"))
        spec = blockdev_add_file_args;
    else if (g_str_equal(driver, "qcow2") || g_str_equal(driver, "raw"))
        spec = blockdev_add_format_args;
    return !spec || vbk_qmp_check_args(args, prefix, spec, true, error);
}

static bool
qmp_blockdev_add(JsonObject *args, JsonNode **ret, GError **error)
{
    g_autoptr(JsonNode) node = NULL;
    g_autoptr(GVariant) opts = NULL;
    g_autoptr(VbkBlockNode) bs = NULL;
    const char *driver = vbk_qmp_arg_str(args, "driver", NULL);

    if (!vbk_qmp_is_qemu_block_driver(driver)) {
        vbk_qmp_error_bad_value(error, "", "driver", driver);
        return false;
    }
    if (!qmp_blockdev_add_precheck(args, driver, "", error))
        return false;
    if (!json_object_has_member(args, "node-name")) {
        g_set_error(error, VBK_QMP_ERROR, VBK_QMP_ERROR_GENERIC,
                    _("'node-name' must be specified for the root node"));
        return false;
    }
    node = vbk_qmp_node_object(json_object_ref(args));
    opts = g_variant_ref_sink(vbk_qmp_json_to_variant(node));
    bs = vbk_block_node_open(opts, error);
    return bs != NULL;
}

/* blockdev-add checks the driver here and leaves the rest of its
 * (driver-dependent) members to the block layer. */
static const VbkQmpArg blockdev_add_args[] = {
    {"driver", VBK_QMP_ARG_STR, false},
    {"node-name", VBK_QMP_ARG_STR, true},
    {NULL},
};

static bool
qmp_blockdev_del(JsonObject *args, JsonNode **ret, GError **error)
{
    return vbk_block_node_delete(vbk_qmp_arg_str(args, "node-name", NULL),
                                 error);
}

static const VbkQmpArg blockdev_del_args[] = {
    {"node-name", VBK_QMP_ARG_STR, false},
    {NULL},
};

/* ---- blockdev-reopen ------------------------------------------------ */

/* BlockdevOptions' base members, as QAPI checks them in each element. */
static const VbkQmpArg blockdev_reopen_base_args[] = {
    {"driver", VBK_QMP_ARG_STR, false},
    {"node-name", VBK_QMP_ARG_STR, true},
    {"discard", VBK_QMP_ARG_STR, true},
    {"cache", VBK_QMP_ARG_OBJECT, true},
    {"read-only", VBK_QMP_ARG_BOOL, true},
    {"auto-read-only", VBK_QMP_ARG_BOOL, true},
    {"force-share", VBK_QMP_ARG_BOOL, true},
    {"detect-zeroes", VBK_QMP_ARG_STR, true},
    {NULL},
};

/* QAPI's checks of options[@i]; the block layer does the rest. */
static bool
qmp_reopen_check_element(JsonNode *node, guint i, GError **error)
{
    g_autofree char *prefix = g_strdup_printf("options[%u].", i);
    JsonObject *obj;
    const char *driver;

    if (!JSON_NODE_HOLDS_OBJECT(node)) {
        g_set_error(error, VBK_QMP_ERROR, VBK_QMP_ERROR_GENERIC,
                    _("Invalid parameter type for 'options[%u]', expected: "
                      "object"),
                    i);
        return false;
    }
    obj = json_node_get_object(node);
    if (!vbk_qmp_check_args(obj, prefix, blockdev_reopen_base_args, true,
                            error))
        return false;
    driver = vbk_qmp_arg_str(obj, "driver", NULL);
    if (!vbk_qmp_is_qemu_block_driver(driver)) {
        /* QEMU names this member without the list position */
        vbk_qmp_error_bad_value(error, "", "driver", driver);
        return false;
    }
    return qmp_blockdev_add_precheck(obj, driver, prefix, error);
}

static bool
qmp_blockdev_reopen(JsonObject *args, JsonNode **ret, GError **error)
{
    JsonNode *list = json_object_get_member(args, "options");
    g_autoptr(GPtrArray) opts =
        g_ptr_array_new_with_free_func((GDestroyNotify) g_variant_unref);
    JsonArray *arr;

    if (!JSON_NODE_HOLDS_ARRAY(list)) {
        g_set_error(error, VBK_QMP_ERROR, VBK_QMP_ERROR_GENERIC,
                    _("Invalid parameter type for 'options', expected: "
                      "array"));
        return false;
    }
    arr = json_node_get_array(list);
    for (guint i = 0; i < json_array_get_length(arr); i++) {
        JsonNode *el = json_array_get_element(arr, i);

        if (!qmp_reopen_check_element(el, i, error))
            return false;
        g_ptr_array_add(opts,
                        g_variant_ref_sink(vbk_qmp_json_to_variant(el)));
    }
    return vbk_block_reopen_multiple((GVariant *const *) opts->pdata,
                                     opts->len, error);
}

static const VbkQmpArg blockdev_reopen_args[] = {
    {"options", VBK_QMP_ARG_ANY, false},
    {NULL},
};

/* ---- devices ------------------------------------------------------- */

/* Root nodes: not the file or backing child of any other node. */
static GPtrArray *
qmp_root_nodes(void)
{
    g_autoptr(GPtrArray) all = vbk_block_node_list();
    g_autoptr(GHashTable) children = g_hash_table_new(NULL, NULL);
    GPtrArray *roots =
        g_ptr_array_new_with_free_func((GDestroyNotify) vbk_block_node_unref);
    guint i;

    for (i = 0; i < all->len; i++) {
        VbkBlockNode *bs = all->pdata[i];
        if (vbk_block_node_file(bs))
            g_hash_table_add(children, vbk_block_node_file(bs));
        if (vbk_block_node_backing(bs))
            g_hash_table_add(children, vbk_block_node_backing(bs));
    }
    for (i = 0; i < all->len; i++) {
        if (!g_hash_table_contains(children, all->pdata[i]))
            g_ptr_array_add(roots, vbk_block_node_ref(all->pdata[i]));
    }
    return roots;
}

/* QEMU's bdrv_lookup_bs(device, node_name) with its message. */
static VbkBlockNode *
qmp_lookup_device_or_node(const char *device,
                          const char *node_name,
                          GError **error)
{
    VbkBlockNode *bs = NULL;

    if (device) {
        g_autoptr(GPtrArray) roots = qmp_root_nodes();
        guint i;

        for (i = 0; i < roots->len && !bs; i++) {
            if (g_str_equal(vbk_block_node_name(roots->pdata[i]), device))
                bs = roots->pdata[i];
        }
    }
    if (!bs && node_name)
        bs = vbk_block_node_find(node_name);
    if (!bs)
        g_set_error(error, VBK_QMP_ERROR, VBK_QMP_ERROR_GENERIC,
                    _("Cannot find device='%s' nor node-name='%s'"),
                    device ? device : "", node_name ? node_name : "");
    return bs;
}

/* For HMP qemu-io: a device name first, then a node-name. */
VbkBlockNode *
vbk_qmp_lookup_device(const char *name, GError **error)
{
    VbkBlockNode *bs = vbk_block_node_find(name);

    if (!bs)
        g_set_error(error, VBK_QMP_ERROR, VBK_QMP_ERROR_GENERIC,
                    _("Cannot find device='' nor node-name='%s'"), name);
    return bs;
}

/* ---- block_resize --------------------------------------------------- */

static bool
qmp_block_resize(JsonObject *args, JsonNode **ret, GError **error)
{
    gint64 size = vbk_qmp_arg_int(args, "size", 0);
    VbkBlockNode *bs;

    bs = qmp_lookup_device_or_node(vbk_qmp_arg_str(args, "device", NULL),
                                   vbk_qmp_arg_str(args, "node-name", NULL),
                                   error);
    if (!bs)
        return false;
    if (size < 0) {
        g_set_error(error, VBK_QMP_ERROR, VBK_QMP_ERROR_GENERIC,
                    _("Parameter '%s' expects %s"), "size", "a >0 size");
        return false;
    }
    return vbk_block_truncate(bs, size, error);
}

static const VbkQmpArg block_resize_args[] = {
    {"device", VBK_QMP_ARG_STR, true},
    {"node-name", VBK_QMP_ARG_STR, true},
    {"size", VBK_QMP_ARG_INT, false},
    {NULL},
};

/* ---- queries -------------------------------------------------------- */

/* Does this node answer QEMU's bdrv_get_info() (then "dirty-flag")? */
static bool
qmp_node_has_info(VbkBlockNode *bs)
{
    const char *drv = vbk_block_node_driver_name(bs);

    if (g_str_equal(drv, "file") || g_str_equal(drv, "qcow2"))
        return true;
    if (g_str_equal(drv, "raw") && vbk_block_node_file(bs))
        return qmp_node_has_info(vbk_block_node_file(bs));
    return false;
}

/* Qcow2BitmapInfo list: name, granularity, flags (in-use, auto). */
static JsonArray *
qmp_format_bitmaps(GPtrArray *bitmaps)
{
    JsonArray *arr = json_array_new();

    for (guint i = 0; i < bitmaps->len; i++) {
        const VbkFormatBitmap *b = bitmaps->pdata[i];
        JsonObject *o = json_object_new();
        JsonArray *flags = json_array_new();

        if (b->in_use)
            json_array_add_string_element(flags, "in-use");
        if (b->enabled)
            json_array_add_string_element(flags, "auto");
        json_object_set_string_member(o, "name", b->name);
        json_object_set_int_member(o, "granularity", b->granularity);
        json_object_set_array_member(o, "flags", flags);
        json_array_add_object_element(arr, o);
    }
    return arr;
}

static JsonObject *
qmp_format_specific(const VbkFormatInfo *fi)
{
    JsonObject *spec = json_object_new();
    JsonObject *data = json_object_new();

    if (fi->version == 2) {
        json_object_set_string_member(data, "compat", "0.10");
        json_object_set_int_member(data, "refcount-bits", fi->refcount_bits);
    } else {
        json_object_set_string_member(data, "compat", "1.1");
        json_object_set_boolean_member(data, "extended-l2", fi->extended_l2);
        json_object_set_boolean_member(data, "lazy-refcounts",
                                       fi->lazy_refcounts);
        json_object_set_boolean_member(data, "corrupt", fi->corrupt);
        json_object_set_int_member(data, "refcount-bits", fi->refcount_bits);
        if (fi->bitmaps && fi->bitmaps->len)
            json_object_set_array_member(data, "bitmaps",
                                         qmp_format_bitmaps(fi->bitmaps));
    }
    json_object_set_string_member(data, "compression-type",
                                  fi->zstd ? "zstd" : "zlib");
    json_object_set_string_member(spec, "type", fi->format);
    json_object_set_object_member(spec, "data", data);
    return spec;
}

static char *
qmp_full_backing_name(VbkBlockNode *bs, const char *rel)
{
    g_autofree char *dir = NULL;

    if (vbk_block_node_backing(bs))
        return g_strdup(vbk_block_node_filename(vbk_block_node_backing(bs)));
    if (g_path_is_absolute(rel))
        return g_strdup(rel);
    dir = g_path_get_dirname(vbk_block_node_filename(bs));
    return g_build_filename(dir, rel, NULL);
}

/* ImageInfo of @bs; with @chain the backing images are nested in. */
static JsonObject *
qmp_image_info(VbkBlockNode *bs, bool chain)
{
    JsonObject *img = json_object_new();
    VbkFormatInfo fi = {0};
    bool have_fi = vbk_block_node_format_info(bs, &fi);
    int64_t actual = vbk_block_node_allocated_size(bs);
    int64_t len = vbk_block_node_getlength(bs);
    uint32_t cluster = vbk_block_node_cluster_size(bs);

    json_object_set_string_member(img, "filename", vbk_block_node_filename(bs));
    json_object_set_string_member(img, "format",
                                  vbk_block_node_driver_name(bs));
    if (qmp_node_has_info(bs))
        json_object_set_boolean_member(img, "dirty-flag", false);
    /* QEMU reports 0 for drivers that allocate nothing (null-co) */
    json_object_set_int_member(img, "actual-size", MAX(actual, 0));
    /* QEMU's bdrv_getlength() counts whole 512-byte sectors */
    json_object_set_int_member(img, "virtual-size",
                               ROUND_UP(MAX(len, 0), 512));
    if (cluster)
        json_object_set_int_member(img, "cluster-size", cluster);
    if (have_fi && fi.backing_file) {
        g_autofree char *full = qmp_full_backing_name(bs, fi.backing_file);

        json_object_set_string_member(img, "backing-filename", fi.backing_file);
        json_object_set_string_member(img, "full-backing-filename", full);
        if (fi.backing_fmt)
            json_object_set_string_member(img, "backing-filename-format",
                                          fi.backing_fmt);
    }
    if (chain && vbk_block_node_backing(bs))
        json_object_set_object_member(
            img, "backing-image",
            qmp_image_info(vbk_block_node_backing(bs), true));
    if (have_fi)
        json_object_set_object_member(img, "format-specific",
                                      qmp_format_specific(&fi));
    vbk_format_info_clear(&fi);
    return img;
}

static void
qmp_set_zero_members(JsonObject *obj, const char *const *names)
{
    for (; *names; names++)
        json_object_set_int_member(obj, *names, 0);
}

/* QEMU 7.2's BlockDeviceInfo for @bs. */
static JsonObject *
qmp_block_device_info(VbkBlockNode *bs, bool flat)
{
    static const char *const throttle[] = {
        "bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr", NULL};
    JsonObject *info = json_object_new();
    JsonObject *cache = json_object_new();
    VbkFormatInfo fi = {0};
    JsonArray *bitmaps;
    VbkBlockNode *b;
    int depth = 0;

    json_object_set_string_member(info, "file", vbk_block_node_filename(bs));
    json_object_set_string_member(info, "node-name", vbk_block_node_name(bs));
    json_object_set_boolean_member(info, "ro", vbk_block_node_is_read_only(bs));
    json_object_set_string_member(info, "drv", vbk_block_node_driver_name(bs));
    if (vbk_block_node_format_info(bs, &fi) && fi.backing_file)
        json_object_set_string_member(info, "backing_file", fi.backing_file);
    vbk_format_info_clear(&fi);
    for (b = vbk_block_node_backing(bs); b && !flat;
         b = vbk_block_node_backing(b))
        depth++;
    json_object_set_int_member(info, "backing_file_depth", depth);
    json_object_set_boolean_member(info, "encrypted", false);
    json_object_set_string_member(info, "detect_zeroes", "off");
    qmp_set_zero_members(info, throttle);
    json_object_set_object_member(info, "image", qmp_image_info(bs, !flat));
    json_object_set_boolean_member(cache, "writeback", true);
    json_object_set_boolean_member(cache, "direct",
                                   vbk_block_node_cache_direct(bs));
    json_object_set_boolean_member(cache, "no-flush", false);
    json_object_set_object_member(info, "cache", cache);
    json_object_set_int_member(info, "write_threshold", 0);
    bitmaps = vbk_qmp_dirty_bitmaps_info(bs);
    if (bitmaps)
        json_object_set_array_member(info, "dirty-bitmaps", bitmaps);
    return info;
}

/*
 * QEMU registers a node after its file child and before its backing
 * chain; put @bs and its children in that order into @out.
 */
static void
qmp_graph_order_visit(VbkBlockNode *bs, GHashTable *seen, GPtrArray *out)
{
    if (!bs || g_hash_table_contains(seen, bs))
        return;
    g_hash_table_add(seen, bs);
    qmp_graph_order_visit(vbk_block_node_file(bs), seen, out);
    g_ptr_array_add(out, bs);
    qmp_graph_order_visit(vbk_block_node_backing(bs), seen, out);
}

static bool
qmp_query_named_block_nodes(JsonObject *args, JsonNode **ret, GError **error)
{
    g_autoptr(GPtrArray) nodes = vbk_block_node_list();
    g_autoptr(GPtrArray) order = g_ptr_array_new();
    g_autoptr(GHashTable) seen = g_hash_table_new(NULL, NULL);
    bool flat = vbk_qmp_arg_bool(args, "flat", false);
    JsonArray *arr = json_array_new();
    guint i;

    for (i = 0; i < nodes->len; i++)
        qmp_graph_order_visit(nodes->pdata[i], seen, order);
    /* newest first, as QEMU lists its graph */
    for (i = order->len; i > 0; i--)
        json_array_add_object_element(
            arr, qmp_block_device_info(order->pdata[i - 1], flat));
    *ret = vbk_qmp_node_array(arr);
    return true;
}

static const VbkQmpArg query_named_block_nodes_args[] = {
    {"flat", VBK_QMP_ARG_BOOL, true},
    {NULL},
};

static bool
qmp_query_block(JsonObject *args, JsonNode **ret, GError **error)
{
    g_autoptr(GPtrArray) roots = qmp_root_nodes();
    JsonArray *arr = json_array_new();
    guint i;

    for (i = 0; i < roots->len; i++) {
        VbkBlockNode *bs = roots->pdata[i];
        JsonObject *info = json_object_new();

        json_object_set_string_member(info, "device", vbk_block_node_name(bs));
        json_object_set_string_member(info, "type", "unknown");
        json_object_set_boolean_member(info, "removable", false);
        json_object_set_boolean_member(info, "locked", false);
        json_object_set_object_member(info, "inserted",
                                      qmp_block_device_info(bs, false));
        json_array_add_object_element(arr, info);
    }
    *ret = vbk_qmp_node_array(arr);
    return true;
}

const VbkQmpCommand vbk_qmp_block_commands[] = {
    {"blockdev-add", qmp_blockdev_add, blockdev_add_args, true},
    {"blockdev-del", qmp_blockdev_del, blockdev_del_args},
    {"blockdev-reopen", qmp_blockdev_reopen, blockdev_reopen_args},
    {"block_resize", qmp_block_resize, block_resize_args},
    {"query-named-block-nodes", qmp_query_named_block_nodes,
     query_named_block_nodes_args},
    {"query-block", qmp_query_block, NULL},
    {NULL},
};
