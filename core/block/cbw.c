/*
 * cbw.c: the copy-before-write filter ("copy-before-write").
 *
 * Options: file (the source, a child), target (node-name of the node
 * that receives the old data), bitmap ({node, name}: copy only what it
 * marks), on-cbw-error ('break-guest-write' | 'break-snapshot'),
 * cbw-timeout (seconds, 0: none).
 *
 * Design.  In QEMU the filter is inserted above the source and every
 * parent's child pointer is moved to it.  Here users keep their
 * VbkBlockNode pointer of the source and address it by its name, so
 * the filter is a real node of the graph (its file child is the source,
 * it shows in query-named-block-nodes under its filter-node-name with
 * its bitmaps, as QEMU's "backup-top") and, in addition, registers
 * itself in the source's list of before-write filters.  io.c calls
 * vbk_block_before_write() for every write, write-zeroes and discard of
 * the source before the driver sees it, so guest writes to the source
 * and writes through the filter node take the same path:
 *
 *   guest write -> source: before_write -> filter: block-copy claims the
 *                  dirty clusters, copies old data to target -> driver
 *
 * A failed copy fails the guest request (break-guest-write) or breaks
 * the snapshot and lets the write proceed (break-snapshot).  The list is
 * guarded by one reader/writer lock: writers copy under the read side,
 * removing a filter takes the write side and so waits for every copy in
 * progress.
 *
 * Bitmaps on the filter node, as in QEMU: "done" (clusters whose old
 * data is safe: copied by copy-before-write, or written by the guest
 * after their copy) and "access" (what the snapshot may read: all).
 * The copy engine and its copy bitmap are block-copy.c's; the backup job
 * takes them from the filter (vbk_cbw_block_copy()).
 */
#include <glib/gi18n-lib.h>
#include <errno.h>

#include "block-int.h"
#include "cbw.h"
#include "dirty.h"

static GRWLock cbw_lock; /* every node's before_write list */

typedef struct {
    VbkBlockCopy *bc;
    VbkBlockNode *target;
    bool break_snapshot;
    int64_t timeout_us;
    gint snapshot_broken; /* atomic */
    VbkDirtyBitmap *done; /* attached to the filter node */
    VbkDirtyBitmap *access;
    bool watching; /* in the source's before_write list */
} CbwState;

static const char *const cbw_options[] = {
    "target", "bitmap", "on-cbw-error", "cbw-timeout", NULL,
};

int
vbk_block_before_write(VbkBlockNode *bs, uint64_t offset, uint64_t bytes)
{
    int ret = 0;

    if (!g_atomic_pointer_get(&bs->before_write))
        return 0;
    g_rw_lock_reader_lock(&cbw_lock);
    for (GSList *l = bs->before_write; l && ret == 0; l = l->next) {
        VbkBlockNode *f = l->data;
        CbwState *s = f->opaque;
        VbkBlockCopyError err;

        if (g_atomic_int_get(&s->snapshot_broken))
            continue;
        ret = vbk_block_copy_range(s->bc, offset, bytes, s->timeout_us,
                                   vbk_cbw_mark_done, f, &err);
        if (ret == 0) {
            /* QEMU marks the whole written range done once its old data
             * is safe, copied now or before (iotest 257's backup-top) */
            vbk_cbw_mark_done(offset, bytes, f);
        } else if (s->break_snapshot) {
            g_atomic_int_set(&s->snapshot_broken, 1);
            ret = 0;
        }
    }
    g_rw_lock_reader_unlock(&cbw_lock);
    return ret;
}

void
vbk_cbw_mark_done(uint64_t offset, uint64_t bytes, void *opaque)
{
    VbkBlockNode *f = opaque;
    CbwState *s = f->opaque;

    vbk_block_dirty_lock(f);
    vbk_dirty_bitmap_mark(s->done, offset, bytes);
    vbk_block_dirty_unlock(f);
}

static void
cbw_watch(VbkBlockNode *f, bool on)
{
    CbwState *s = f->opaque;
    VbkBlockNode *src = f->file;

    g_rw_lock_writer_lock(&cbw_lock);
    if (on && !s->watching)
        g_atomic_pointer_set(&src->before_write,
                             g_slist_append(src->before_write, f));
    else if (!on && s->watching)
        g_atomic_pointer_set(&src->before_write,
                             g_slist_remove(src->before_write, f));
    s->watching = on;
    g_rw_lock_writer_unlock(&cbw_lock);
}

void
vbk_cbw_detach(VbkBlockNode *filter)
{
    g_return_if_fail(filter->drv == &vbk_drv_cbw);
    cbw_watch(filter, false);
}

VbkBlockCopy *
vbk_cbw_block_copy(VbkBlockNode *filter)
{
    g_return_val_if_fail(filter->drv == &vbk_drv_cbw, NULL);
    return ((CbwState *) filter->opaque)->bc;
}

bool
vbk_cbw_snapshot_broken(VbkBlockNode *filter)
{
    g_return_val_if_fail(filter->drv == &vbk_drv_cbw, false);
    return g_atomic_int_get(&((CbwState *) filter->opaque)->snapshot_broken);
}

/* The copy bitmap becomes a copy of the bitmap {node, name}. */
static bool
cbw_use_bitmap(CbwState *s, VbkBlockNode *src, GVariant *opts, GError **error)
{
    g_autoptr(GVariant) v = g_variant_lookup_value(opts, "bitmap", NULL);
    const char *node = NULL, *name = NULL;
    VbkBlockNode *bs;
    VbkDirtyBitmap *bm, *copy = vbk_block_copy_bitmap(s->bc);
    bool ok;

    if (!v)
        return true;
    if (g_variant_is_of_type(v, G_VARIANT_TYPE_VARIANT)) {
        g_autoptr(GVariant) inner = g_variant_get_variant(v);
        g_variant_unref(v);
        v = g_steal_pointer(&inner);
    }
    if (!g_variant_is_of_type(v, G_VARIANT_TYPE_VARDICT) ||
        !vbk_opts_get_string(v, "node", &node, error) ||
        !vbk_opts_get_string(v, "name", &name, error))
        return false;
    bs = vbk_block_node_lookup(node, error);
    if (!bs)
        return false;
    vbk_block_dirty_lock(bs);
    bm = vbk_block_dirty_find_locked(bs, name);
    if (!bm) {
        vbk_block_dirty_unlock(bs);
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_NOT_FOUND,
                    _("Dirty bitmap '%s' not found"), name);
        return false;
    }
    if (bs != src)
        vbk_block_dirty_lock(src);
    vbk_dirty_bitmap_clear(copy, NULL);
    ok = vbk_dirty_bitmap_merge(copy, bm, NULL, error);
    if (bs != src)
        vbk_block_dirty_unlock(src);
    vbk_block_dirty_unlock(bs);
    return ok;
}

static bool
cbw_parse(CbwState *s, GVariant *opts, const char **target, GError **error)
{
    const char *mode = NULL;
    uint64_t timeout = 0;

    if (!vbk_opts_get_string(opts, "target", target, error) ||
        vbk_opts_lookup_string(opts, "on-cbw-error", &mode, error) < 0 ||
        vbk_opts_lookup_uint64(opts, "cbw-timeout", &timeout, error) < 0)
        return false;
    if (mode && !g_str_equal(mode, "break-guest-write") &&
        !g_str_equal(mode, "break-snapshot")) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("Parameter 'on-cbw-error' does not accept value '%s'"),
                    mode);
        return false;
    }
    s->break_snapshot = mode && g_str_equal(mode, "break-snapshot");
    s->timeout_us =
        (int64_t) MIN(timeout, (uint64_t) G_MAXINT32) * G_USEC_PER_SEC;
    return true;
}

static VbkDirtyBitmap *
cbw_bitmap(VbkBlockNode *f, uint64_t granularity, uint64_t len, bool full)
{
    VbkDirtyBitmap *bm = vbk_dirty_bitmap_new(NULL, granularity, len, NULL);

    vbk_dirty_bitmap_set_enabled(bm, false);
    if (full)
        vbk_dirty_bitmap_mark(bm, 0, len);
    vbk_block_dirty_lock(f);
    vbk_block_dirty_attach_locked(f, bm);
    vbk_block_dirty_unlock(f);
    return bm;
}

static void
cbw_close(VbkBlockNode *f)
{
    CbwState *s = f->opaque;

    if (f->file)
        cbw_watch(f, false);
    g_clear_pointer(&s->bc, vbk_block_copy_free);
    g_clear_pointer(&s->target, vbk_block_node_unref);
    g_clear_pointer(&s->done, vbk_dirty_bitmap_unref);
    g_clear_pointer(&s->access, vbk_dirty_bitmap_unref);
}

static bool
cbw_open(VbkBlockNode *f, GVariant *opts, GError **error)
{
    CbwState *s = f->opaque;
    const char *target = NULL;
    VbkBlockNode *tgt;
    uint64_t len, cluster;

    if (!vbk_block_open_file_child(f, opts, true, error) ||
        !cbw_parse(s, opts, &target, error))
        return false;
    tgt = vbk_block_node_lookup(target, error);
    if (!tgt)
        return false;
    if (vbk_block_node_getlength(tgt) != vbk_block_node_getlength(f->file)) {
        g_set_error_literal(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                            _("Source and target image have different "
                              "sizes"));
        return false;
    }
    s->target = vbk_block_node_ref(tgt);
    s->bc = vbk_block_copy_new(f->file, tgt, NULL, error);
    if (!s->bc || !cbw_use_bitmap(s, f->file, opts, error)) {
        /* the core does not close a node whose open failed */
        cbw_close(f);
        return false;
    }
    len = vbk_block_copy_length(s->bc);
    cluster = vbk_block_copy_cluster_size(s->bc);
    s->done = cbw_bitmap(f, cluster, len, false);
    s->access = cbw_bitmap(f, cluster, len, true);
    cbw_watch(f, true);
    return true;
}

const VbkBlockDriver vbk_drv_cbw = {
    .format_name = "copy-before-write",
    .instance_size = sizeof(CbwState),
    .is_filter = true,
    .options = cbw_options,
    .open = cbw_open,
    .close = cbw_close,
};
