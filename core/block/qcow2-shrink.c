/*
 * qcow2-shrink.c: making a qcow2 image smaller (block_resize, qemu-img
 * resize --shrink), with the outcome of QEMU 7.2's qcow2_co_truncate().
 *
 * Shrinking to @size, for an image whose L2 tables each map P bytes:
 *  1. the clusters from ROUND_UP(size, cluster) on are given up: in the
 *     L2 table that straddles that point the entries are set to 0
 *     (unallocated) and their clusters freed (a missing table is
 *     allocated, as QEMU's discard does);
 *  2. the L1 table keeps its size on disk (QEMU does not rewrite its
 *     length in the header either) but its entries from DIV_ROUND_UP(
 *     size, P) on are zeroed and flushed; only then are the L2 tables they
 *     pointed to released, with one reference of each cluster they map
 *     (a table shared with an internal snapshot keeps the snapshot's);
 *  3. refcount blocks that now count nothing but themselves are unhooked
 *     from the refcount table and freed;
 *  4. the file is truncated after its last cluster in use, if that
 *     makes it shorter (a failure there is only a warning, as in QEMU);
 *  5. the new size is written to the header.
 * Steps 1-3 unlink before they free, so a crash leaks clusters at worst.
 * Failures carry QEMU's messages ("Failed to discard cropped clusters",
 * "Failed to reduce the number of L2 tables", "Failed to discard unused
 * refblocks").  The dirty bitmaps follow in the generic layer (io.c),
 * which truncates every bitmap of the node after the driver.
 *
 * Caller: qcow2_truncate() in qcow2.c, holding VbkQcow2State.lock.
 */
#include "qcow2.h"

#include <errno.h>
#include <glib/gi18n-lib.h>
#include <string.h>

static bool
shrink_fail(GError **error, int ret, const char *what)
{
    /* TRANSLATORS: %1$s says what failed, %2$s is strerror() */
    g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_IO, _("%1$s: %2$s"),
                what, g_strerror(-ret));
    return false;
}

/* Drop one reference of every cluster the L2 entries @e[0..n) map. */
static int
shrink_free_entries(VbkBlockNode *bs, const uint64_t *e, uint64_t n)
{
    int ret;

    for (uint64_t i = 0; i < n; i++) {
        if (e[i] && (ret = vbk_qcow2_free_entry(bs, e[i])) < 0)
            return ret;
    }
    return 0;
}

/* The L2 table of L1 entry @idx, copied to host order; NULL if none. */
static int
shrink_read_l2(VbkBlockNode *bs, uint64_t idx, uint64_t **out)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t off = s->l1[idx] & QCOW2_OFFSET_MASK;
    uint8_t *l2;
    int ret;

    *out = NULL;
    if (!off)
        return 0;
    if (!vbk_qcow2_meta_offset_valid(s, off))
        return -EIO;
    ret = vbk_qcow2_cache_get(bs, s->l2_cache, off, false, &l2);
    if (ret < 0)
        return ret;
    *out = g_new(uint64_t, s->l2_entries);
    for (uint64_t i = 0; i < s->l2_entries; i++)
        (*out)[i] = qcow2_table_get(l2, i);
    return 0;
}

/* Step 1: unallocate the clusters from @start in the L2 table that
 * holds @start (when @start is not where a table begins). */
static int
shrink_partial_table(VbkBlockNode *bs, uint64_t start)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t idx = start >> (s->cluster_bits + s->l2_bits);
    uint64_t first = (start >> s->cluster_bits) & (s->l2_entries - 1);
    uint64_t n = s->l2_entries - first;
    g_autofree uint64_t *l2 = NULL;
    g_autofree uint64_t *zero = NULL;
    bool any = false;
    int ret;

    if (first == 0 || idx >= s->l1_size)
        return 0;
    if (!(s->l1[idx] & QCOW2_OFFSET_MASK)) {
        /* QEMU's discard gives the straddling range a (zeroed) table */
        uint8_t *fresh;
        uint64_t fresh_off;

        return vbk_qcow2_l2_prepare(bs, start, &fresh, &fresh_off);
    }
    ret = shrink_read_l2(bs, idx, &l2);
    if (ret < 0 || !l2)
        return ret;
    for (uint64_t i = first; i < s->l2_entries; i++)
        any |= l2[i] != 0;
    if (!any)
        return 0;
    zero = g_new0(uint64_t, n);
    ret = vbk_qcow2_l2_set(bs, start, n, zero);
    if (ret < 0)
        return ret;
    return shrink_free_entries(bs, l2 + first, n);
}

/*
 * Step 2: zero L1 entries [@keep, l1_size) on disk, then give up what
 * their tables map, table by table in ascending order, and the tables
 * last.  QEMU discards the range through L2 tables it allocates where
 * an L1 entry is empty, and frees them with the others; the same
 * allocations are made here (as placeholders, never linked) so that the
 * file grows, and is later cut, exactly where QEMU's does (for the
 * tables below @old_tables, which cover the old size).  *@file_end gets
 * the end of the highest cluster allocated.
 */
static int
shrink_l1(VbkBlockNode *bs,
          uint64_t keep,
          uint64_t old_tables,
          uint64_t *file_end)
{
    VbkQcow2State *s = bs->opaque;
    g_autofree uint64_t *tables = NULL;
    g_autofree uint8_t *zero = NULL;
    uint64_t n = s->l1_size > keep ? s->l1_size - keep : 0;
    int ret = 0;

    if (!n)
        return 0;
    zero = g_malloc0(n * 8);
    vbk_block_event(bs->file, VBK_EVENT_L1_SHRINK_WRITE_TABLE);
    ret = vbk_block_pwrite(bs->file, s->hdr.l1_table_offset + keep * 8,
                           n * 8, zero, 0);
    if (ret >= 0)
        ret = vbk_block_flush(bs->file);
    if (ret < 0) {
        /* part of the table on disk may be zero: forget those tables */
        memset(s->l1 + keep, 0, n * 8);
        return ret;
    }
    tables = g_new0(uint64_t, n);
    for (uint64_t i = 0; i < n; i++) {
        tables[i] = s->l1[keep + i] & QCOW2_OFFSET_MASK;
        s->l1[keep + i] = 0; /* unlinked on disk: leak rather than reuse */
    }
    for (uint64_t i = 0; ret >= 0 && i < n; i++) {
        g_autofree uint64_t *l2 = NULL;
        int64_t off;

        if (tables[i]) {
            s->l1[keep + i] = tables[i];
            ret = shrink_read_l2(bs, keep + i, &l2);
            s->l1[keep + i] = 0;
            if (ret < 0)
                tables[i] = 0; /* unreadable or invalid: leak it */
            else
                ret = shrink_free_entries(bs, l2, s->l2_entries);
            continue;
        }
        if (keep + i >= old_tables)
            continue; /* past the old size: QEMU's discard stops there */
        off = vbk_qcow2_alloc_clusters(bs, 1);
        ret = off < 0 ? (int) off : 0;
        tables[i] = off < 0 ? 0 : (uint64_t) off;
        *file_end = MAX(*file_end, tables[i] + s->cluster_size);
    }
    vbk_block_event(bs->file, VBK_EVENT_L1_SHRINK_FREE_L2_CLUSTERS);
    for (uint64_t i = n; i-- > 0;) {
        int r = tables[i] ? vbk_qcow2_free_clusters(bs, tables[i], 1) : 0;

        ret = ret < 0 ? ret : r;
    }
    return ret;
}

/* Does refcount block @idx at @off count nothing but itself? */
static int
shrink_refblock_unused(VbkBlockNode *bs, uint64_t idx, uint64_t off)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t self = off >> s->cluster_bits;
    bool self_described = (self >> s->rb_bits) == idx;
    uint8_t *rb;
    int ret;

    ret = vbk_qcow2_cache_get(bs, s->rb_cache, off, false, &rb);
    if (ret < 0)
        return ret;
    for (uint64_t i = 0; i < s->rb_entries; i++) {
        if (self_described && i == (self & (s->rb_entries - 1)))
            continue;
        if (vbk_qcow2_rb_get(s, rb, i))
            return 0;
    }
    return 1;
}

/* Step 3: unhook and free the refcount blocks that count nothing. */
static int
shrink_reftable(VbkBlockNode *bs)
{
    VbkQcow2State *s = bs->opaque;
    g_autofree uint64_t *drop = g_new0(uint64_t, s->reftable_entries);
    g_autofree uint8_t *buf = g_malloc0(s->reftable_entries * 8);
    bool any = false;
    int ret;

    for (uint64_t i = 0; i < s->reftable_entries; i++) {
        uint64_t off = s->reftable[i] & ~511ull;

        if (off) {
            if (!vbk_qcow2_meta_offset_valid(s, off))
                return -EIO;
            ret = shrink_refblock_unused(bs, i, off);
            if (ret < 0)
                return ret;
            drop[i] = ret ? off : 0;
            any |= ret;
        }
        qcow2_table_set(buf, i, drop[i] ? 0 : s->reftable[i]);
    }
    if (!any)
        return 0;
    vbk_block_event(bs->file, VBK_EVENT_REFTABLE_UPDATE);
    ret = vbk_block_pwrite(bs->file, s->hdr.refcount_table_offset,
                           s->reftable_entries * 8, buf, 0);
    if (ret >= 0)
        ret = vbk_block_flush(bs->file);
    if (ret < 0)
        return ret;
    for (uint64_t i = 0; i < s->reftable_entries; i++) {
        uint64_t self;

        if (!drop[i])
            continue;
        self = drop[i] >> s->cluster_bits;
        s->reftable[i] = 0;
        vbk_qcow2_cache_drop(s->rb_cache, drop[i]);
        s->free_hint = MIN(s->free_hint, i << s->rb_bits);
        /* a block that counted itself took its count with it */
        if ((self >> s->rb_bits) != i &&
            (ret = vbk_qcow2_free_clusters(bs, drop[i], 1)) < 0)
            return ret;
    }
    return 0;
}

/* Step 4: cut the file after its last cluster in use. */
static int
shrink_file(VbkBlockNode *bs, uint64_t file_end)
{
    VbkQcow2State *s = bs->opaque;
    int64_t len = vbk_block_node_getlength(bs->file);
    uint64_t c, rc = 0;
    g_autoptr(GError) err = NULL;
    int ret;

    if (len < 0)
        return (int) len;
    len = MAX((uint64_t) len, file_end);
    for (c = VBK_DIV_ROUND_UP((uint64_t) len, s->cluster_size); c > 0; c--) {
        ret = vbk_qcow2_get_refcount(bs, c - 1, &rc);
        if (ret < 0)
            return ret;
        if (rc)
            break;
    }
    if (c * s->cluster_size >= (uint64_t) len)
        return 0;
    if (!vbk_block_truncate(bs->file, c * s->cluster_size, &err)) {
        g_printerr(_("warning: Failed to truncate the tail of the image: %s\n"),
                   err->message);
        return 0;
    }
    s->file_size = c * s->cluster_size;
    return 0;
}

bool
vbk_qcow2_shrink(VbkBlockNode *bs, uint64_t size, GError **error)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t per_l1 = s->cluster_size << s->l2_bits;
    uint64_t start = VBK_ROUND_UP(size, s->cluster_size);
    uint64_t file_end = 0;
    int ret;

    /* no write may still be installing clusters in the range given up */
    vbk_qcow2_wait_alloc(s, size, s->hdr.size - size);
    ret = shrink_partial_table(bs, start);
    if (ret < 0)
        return shrink_fail(error, ret, _("Failed to discard cropped clusters"));
    ret = shrink_l1(bs, VBK_DIV_ROUND_UP(size, per_l1),
                    VBK_DIV_ROUND_UP(s->hdr.size, per_l1), &file_end);
    if (ret < 0)
        return shrink_fail(error, ret,
                           _("Failed to reduce the number of L2 tables"));
    /* the cleared L2 entries and dropped refcounts reach the disk before
     * a refcount block is unhooked or the file is cut (the metadata cache
     * is write-back) */
    ret = vbk_qcow2_meta_flush(bs);
    if (ret >= 0)
        ret = shrink_reftable(bs);
    if (ret < 0)
        return shrink_fail(error, ret, _("Failed to discard unused refblocks"));
    ret = vbk_qcow2_meta_flush(bs);
    if (ret < 0)
        return shrink_fail(error, ret, _("Failed to find the last cluster"));
    ret = shrink_file(bs, file_end);
    if (ret < 0)
        return shrink_fail(error, ret,
                           _("Failed to find the last cluster"));
    ret = vbk_qcow2_header_write_u64(bs, 24, size);
    if (ret >= 0)
        ret = vbk_block_flush(bs->file);
    if (ret < 0)
        return shrink_fail(error, ret, _("Failed to update the image size"));
    s->hdr.size = size;
    return true;
}
