/*
 * dirty.c: dirty bitmaps attached to block nodes.
 *
 * The write path does not touch the bitmaps themselves.  Each node keeps
 * one pending-write log: an hbitmap, at the smallest granularity of the
 * node's recording bitmaps, of the granules written since the bitmaps
 * were last brought up to date.  A write marks the log once, whatever the
 * number of bitmaps — libvirt keeps one recording bitmap per checkpoint,
 * so long checkpoint chains are the normal case and must not slow every
 * guest write down.
 *
 * Everything that looks at or changes a node's bitmaps first takes the
 * node's bitmap lock through lock_node(), which merges the log into every
 * bitmap that records and empties it.  The set of recording bitmaps only
 * changes under that lock, so the log always holds exactly the writes
 * that every currently recording bitmap has yet to see: the observable
 * contents are those of QEMU, which marks each bitmap on each write.
 *
 * Exactness across granularities: the log's granularity p divides every
 * recording bitmap's granularity g (both powers of two, p <= g), so the
 * p-granules a write covers lie inside the g-granules it covers, and
 * marking a g-bitmap with them marks precisely those g-granules.
 *
 * Example: bitmaps A (64 KiB) and B (4 KiB) record; the log is at 4 KiB.
 * A write of [70 KiB, 75 KiB) sets log granules 17 and 18.  A query later
 * merges: B gets granules 17-18, A gets granule 1 ([64 KiB, 128 KiB)).
 */
#include <glib/gi18n-lib.h>
#include <errno.h>
#include <string.h>

#include "block-int.h"
#include "dirty.h"

void
vbk_dirty_bitmap_info_free(VbkDirtyBitmapInfo *info)
{
    if (!info)
        return;
    g_free(info->name);
    g_free(info);
}

/*
 * Merge the pending-write log into every recording bitmap.  Each bitmap
 * ORs in the log's non-zero words (or its dirty areas, for a coarser
 * bitmap), so a sync costs at most (bitmaps x log words) whatever the
 * number of writes: 1 GiB at 64 KiB granules is 256 words.
 */
static void
flush_pending_locked(VbkBlockNode *bs)
{
    VbkHBitmap *log = bs->dirty_log;
    unsigned log_bits;

    if (!log || vbk_hbitmap_count(log) == 0)
        return;
    log_bits = (unsigned) g_bit_nth_lsf(bs->dirty_log_granularity, -1);
    for (guint i = 0; i < bs->dirty_bitmaps->len; i++) {
        VbkDirtyBitmap *bm = bs->dirty_bitmaps->pdata[i];

        if (vbk_dirty_bitmap_enabled(bm) && !vbk_dirty_bitmap_readonly(bm))
            vbk_dirty_bitmap_mark_log(bm, log, log_bits);
    }
    vbk_hbitmap_reset_all(log);
}

/*
 * Re-shape the log after the set of recording bitmaps (or the node's
 * size) changed.  Called with the log empty.
 */
static void
reshape_log_locked(VbkBlockNode *bs)
{
    uint64_t g = 0;
    uint64_t size = 0;

    for (guint i = 0; i < bs->dirty_bitmaps->len; i++) {
        VbkDirtyBitmap *bm = bs->dirty_bitmaps->pdata[i];

        if (!vbk_dirty_bitmap_enabled(bm) || vbk_dirty_bitmap_readonly(bm))
            continue;
        if (!g || vbk_dirty_bitmap_granularity(bm) < g)
            g = vbk_dirty_bitmap_granularity(bm);
        size = MAX(size, vbk_dirty_bitmap_size(bm));
    }
    if (!g) {
        g_clear_pointer(&bs->dirty_log, vbk_hbitmap_free);
        g_atomic_int_set(&bs->dirty_active, 0);
        return;
    }
    if (!bs->dirty_log || bs->dirty_log_granularity != g ||
        bs->dirty_log_size != size) {
        g_clear_pointer(&bs->dirty_log, vbk_hbitmap_free);
        bs->dirty_log = vbk_hbitmap_new(VBK_DIV_ROUND_UP(size, g));
        bs->dirty_log_granularity = g;
        bs->dirty_log_size = size;
    }
    g_atomic_int_set(&bs->dirty_active, 1);
}

static void
ensure_list(VbkBlockNode *bs)
{
    if (!bs->dirty_bitmaps)
        bs->dirty_bitmaps = g_ptr_array_new_with_free_func(
            (GDestroyNotify) vbk_dirty_bitmap_unref);
}

void
vbk_block_dirty_lock(VbkBlockNode *bs)
{
    g_mutex_lock(&bs->dirty_lock);
    ensure_list(bs);
    flush_pending_locked(bs);
}

void
vbk_block_dirty_unlock(VbkBlockNode *bs)
{
    reshape_log_locked(bs);
    g_mutex_unlock(&bs->dirty_lock);
}

/* The hot path: io.c calls this after every write, zero and discard. */
void
vbk_block_dirty_mark(VbkBlockNode *bs, uint64_t offset, uint64_t bytes)
{
    uint64_t g, first, last;

    if (!g_atomic_int_get(&bs->dirty_active) || bytes == 0)
        return;
    g_mutex_lock(&bs->dirty_lock);
    if (bs->dirty_log && offset < bs->dirty_log_size) {
        g = bs->dirty_log_granularity;
        bytes = MIN(bytes, bs->dirty_log_size - offset);
        first = offset / g;
        last = (offset + bytes - 1) / g;
        vbk_hbitmap_set(bs->dirty_log, first, last - first + 1);
    }
    g_mutex_unlock(&bs->dirty_lock);
}

void
vbk_block_dirty_truncate(VbkBlockNode *bs, uint64_t size)
{
    vbk_block_dirty_lock(bs);
    for (guint i = 0; i < bs->dirty_bitmaps->len; i++)
        vbk_dirty_bitmap_truncate(bs->dirty_bitmaps->pdata[i], size);
    vbk_block_dirty_unlock(bs);
}

void
vbk_block_dirty_release_all(VbkBlockNode *bs)
{
    g_clear_pointer(&bs->dirty_bitmaps, g_ptr_array_unref);
    g_clear_pointer(&bs->dirty_log, vbk_hbitmap_free);
    g_atomic_int_set(&bs->dirty_active, 0);
}

VbkDirtyBitmap *
vbk_block_dirty_find_locked(VbkBlockNode *bs, const char *name)
{
    for (guint i = 0; name && i < bs->dirty_bitmaps->len; i++) {
        VbkDirtyBitmap *bm = bs->dirty_bitmaps->pdata[i];
        const char *n = vbk_dirty_bitmap_name(bm);

        if (n && g_str_equal(n, name))
            return bm;
    }
    return NULL;
}

void
vbk_block_dirty_attach_locked(VbkBlockNode *bs, VbkDirtyBitmap *bm)
{
    g_ptr_array_insert(bs->dirty_bitmaps, 0, vbk_dirty_bitmap_ref(bm));
}

void
vbk_block_dirty_detach_locked(VbkBlockNode *bs, VbkDirtyBitmap *bm)
{
    g_ptr_array_remove(bs->dirty_bitmaps, bm);
}

GPtrArray *
vbk_block_dirty_bitmaps_locked(VbkBlockNode *bs)
{
    return bs->dirty_bitmaps;
}

/* ---- QMP-level operations ------------------------------------------- */

/*
 * QEMU's block_dirty_bitmap_lookup(): find node and bitmap and return
 * the node locked (caller unlocks), or NULL with QEMU's message.
 */
static VbkBlockNode *
lookup_locked(const char *node, const char *name, VbkDirtyBitmap **pbm,
              GError **error)
{
    VbkBlockNode *bs = vbk_block_node_find(node);
    VbkDirtyBitmap *bm;

    if (!bs) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_NOT_FOUND,
                    _("Node '%s' not found"), node);
        return NULL;
    }
    vbk_block_dirty_lock(bs);
    bm = vbk_block_dirty_find_locked(bs, name);
    if (!bm) {
        vbk_block_dirty_unlock(bs);
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_NOT_FOUND,
                    _("Dirty bitmap '%s' not found"), name);
        return NULL;
    }
    *pbm = bm;
    return bs;
}

static bool
can_store(VbkBlockNode *bs, const char *name, uint64_t granularity,
          GError **error)
{
    if (!bs->drv->can_store_new_bitmap) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_UNSUPPORTED,
                    _("Can't store persistent bitmaps to %s: %s"),
                    bs->node_name, g_strerror(ENOTSUP));
        return false;
    }
    return bs->drv->can_store_new_bitmap(bs, name, granularity, error);
}

bool
vbk_block_dirty_bitmap_add(const char *node, const char *name,
                           uint64_t granularity, bool persistent,
                           bool disabled, GError **error)
{
    VbkBlockNode *bs = vbk_block_node_lookup(node, error);
    g_autoptr(VbkDirtyBitmap) bm = NULL;
    int64_t size;
    bool ok = false;

    if (!bs)
        return false;
    if (!name || !*name) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID, "%s",
                    _("Bitmap name cannot be empty"));
        return false;
    }
    if (granularity) {
        if (granularity < 512 || (granularity & (granularity - 1))) {
            g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID, "%s",
                        _("Granularity must be power of 2 and at least 512"));
            return false;
        }
    } else {
        granularity = vbk_dirty_bitmap_default_granularity(
            vbk_block_node_cluster_size(bs));
    }
    size = vbk_block_node_getlength(bs);
    if (size < 0) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_IO, "%s",
                    g_strerror((int) -size));
        return false;
    }

    vbk_block_dirty_lock(bs);
    if (persistent && !can_store(bs, name, granularity, error))
        goto out;
    if (vbk_block_dirty_find_locked(bs, name)) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("Bitmap already exists: %s"), name);
        goto out;
    }
    if (strlen(name) > VBK_DIRTY_BITMAP_MAX_NAME_SIZE) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("Bitmap name too long: %s"), name);
        goto out;
    }
    bm = vbk_dirty_bitmap_new(name, granularity, (uint64_t) size, error);
    if (!bm)
        goto out;
    if (disabled)
        vbk_dirty_bitmap_set_enabled(bm, false);
    vbk_dirty_bitmap_set_persistent(bm, persistent);
    vbk_block_dirty_attach_locked(bs, bm);
    ok = true;
out:
    vbk_block_dirty_unlock(bs);
    return ok;
}

bool
vbk_block_dirty_bitmap_remove(const char *node, const char *name,
                              GError **error)
{
    VbkDirtyBitmap *bm = NULL;
    VbkBlockNode *bs = lookup_locked(node, name, &bm, error);
    bool ok = false;

    if (!bs)
        return false;
    if (!vbk_dirty_bitmap_check(bm, VBK_DIRTY_BITMAP_BUSY |
                                        VBK_DIRTY_BITMAP_RO, error))
        goto out;
    if (vbk_dirty_bitmap_persistent(bm) && bs->drv->remove_persistent_bitmap &&
        !bs->drv->remove_persistent_bitmap(bs, name, error))
        goto out;
    vbk_block_dirty_detach_locked(bs, bm);
    ok = true;
out:
    vbk_block_dirty_unlock(bs);
    return ok;
}

bool
vbk_block_dirty_bitmap_clear(const char *node, const char *name,
                             VbkHBitmap **backup, GError **error)
{
    VbkDirtyBitmap *bm = NULL;
    VbkBlockNode *bs = lookup_locked(node, name, &bm, error);
    bool ok;

    if (!bs)
        return false;
    ok = vbk_dirty_bitmap_check(bm, VBK_DIRTY_BITMAP_DEFAULT, error);
    if (ok)
        vbk_dirty_bitmap_clear(bm, backup);
    vbk_block_dirty_unlock(bs);
    return ok;
}

static bool
set_enabled(const char *node, const char *name, bool enabled,
            GError **error)
{
    VbkDirtyBitmap *bm = NULL;
    VbkBlockNode *bs = lookup_locked(node, name, &bm, error);
    bool ok;

    if (!bs)
        return false;
    ok = vbk_dirty_bitmap_check(bm, VBK_DIRTY_BITMAP_ALLOW_RO, error);
    if (ok)
        vbk_dirty_bitmap_set_enabled(bm, enabled);
    vbk_block_dirty_unlock(bs);
    return ok;
}

bool
vbk_block_dirty_bitmap_enable(const char *node, const char *name,
                              GError **error)
{
    return set_enabled(node, name, true, error);
}

bool
vbk_block_dirty_bitmap_disable(const char *node, const char *name,
                               GError **error)
{
    return set_enabled(node, name, false, error);
}

/* A private copy of a merge source, taken under its node's lock. */
static VbkDirtyBitmap *
copy_source(const char *node, const char *name, GError **error)
{
    VbkDirtyBitmap *src = NULL;
    VbkBlockNode *bs = lookup_locked(node, name, &src, error);
    VbkDirtyBitmap *copy = NULL;

    if (!bs)
        return NULL;
    if (vbk_dirty_bitmap_check(src, VBK_DIRTY_BITMAP_ALLOW_RO, error)) {
        copy = vbk_dirty_bitmap_new(NULL, vbk_dirty_bitmap_granularity(src),
                                    vbk_dirty_bitmap_size(src), error);
        if (copy && !vbk_dirty_bitmap_merge(copy, src, NULL, error))
            g_clear_pointer(&copy, vbk_dirty_bitmap_unref);
    }
    vbk_block_dirty_unlock(bs);
    return copy;
}

bool
vbk_block_dirty_bitmap_merge(const char *node, const char *target,
                             const VbkBitmapRef *sources, size_t n_sources,
                             VbkHBitmap **backup, GError **error)
{
    g_autoptr(GPtrArray) copies =
        g_ptr_array_new_with_free_func((GDestroyNotify) vbk_dirty_bitmap_unref);
    g_autoptr(VbkDirtyBitmap) acc = NULL;
    VbkDirtyBitmap *dst = NULL;
    VbkBlockNode *bs;
    bool ok = false;

    /* copy the sources first: they may live on other nodes (other locks) */
    for (size_t i = 0; i < n_sources; i++) {
        VbkDirtyBitmap *c = copy_source(sources[i].node ? sources[i].node
                                                        : node,
                                        sources[i].name, error);
        if (!c)
            return false;
        g_ptr_array_add(copies, c);
    }
    bs = lookup_locked(node, target, &dst, error);
    if (!bs)
        return false;
    if (!vbk_dirty_bitmap_check(dst, VBK_DIRTY_BITMAP_DEFAULT, error))
        goto out;
    /* merge into an anonymous accumulator so a failure changes nothing */
    acc = vbk_dirty_bitmap_new(NULL, vbk_dirty_bitmap_granularity(dst),
                               vbk_dirty_bitmap_size(dst), error);
    if (!acc || !vbk_dirty_bitmap_merge(acc, dst, NULL, error))
        goto out;
    for (guint i = 0; i < copies->len; i++) {
        if (!vbk_dirty_bitmap_merge(acc, copies->pdata[i], NULL, error))
            goto out;
    }
    ok = vbk_dirty_bitmap_merge(dst, acc, backup, error);
out:
    vbk_block_dirty_unlock(bs);
    return ok;
}

void
vbk_block_dirty_bitmap_restore(const char *node, const char *name,
                               VbkHBitmap *backup)
{
    VbkDirtyBitmap *bm = NULL;
    VbkBlockNode *bs = lookup_locked(node, name, &bm, NULL);

    if (!bs) {
        vbk_hbitmap_free(backup);
        return;
    }
    vbk_dirty_bitmap_restore(bm, backup);
    vbk_block_dirty_unlock(bs);
}

char *
vbk_block_dirty_bitmap_sha256(const char *node, const char *name,
                              GError **error)
{
    VbkDirtyBitmap *bm = NULL;
    VbkBlockNode *bs = lookup_locked(node, name, &bm, error);
    char *sum;

    if (!bs)
        return NULL;
    sum = vbk_dirty_bitmap_sha256(bm);
    vbk_block_dirty_unlock(bs);
    return sum;
}

GPtrArray *
vbk_block_dirty_bitmap_query(VbkBlockNode *bs)
{
    GPtrArray *list =
        g_ptr_array_new_with_free_func((GDestroyNotify) vbk_dirty_bitmap_info_free);

    vbk_block_dirty_lock(bs);
    for (guint i = 0; i < bs->dirty_bitmaps->len; i++) {
        VbkDirtyBitmap *bm = bs->dirty_bitmaps->pdata[i];
        VbkDirtyBitmapInfo *info = g_new0(VbkDirtyBitmapInfo, 1);

        info->name = g_strdup(vbk_dirty_bitmap_name(bm));
        info->count = vbk_dirty_bitmap_count(bm);
        info->granularity = vbk_dirty_bitmap_granularity(bm);
        info->recording = vbk_dirty_bitmap_recording(bm);
        info->busy = vbk_dirty_bitmap_busy(bm);
        info->persistent = vbk_dirty_bitmap_persistent(bm);
        info->inconsistent = vbk_dirty_bitmap_inconsistent(bm);
        g_ptr_array_add(list, info);
    }
    vbk_block_dirty_unlock(bs);
    return list;
}
