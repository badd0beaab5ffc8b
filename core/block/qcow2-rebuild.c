/*
 * qcow2-rebuild.c: recompute all refcounts of an image from scratch.
 *
 * An image with lazy refcounts whose writer died keeps the dirty bit
 * set: its refcounts may be stale.  Opened read-write, such an image is
 * repaired before use, as `qemu-img check -r all` would:
 *
 *  1. count every reference in memory: the header cluster, the active
 *     L1 table, each L2 table and each data cluster it maps (compressed
 *     clusters count every host cluster their bytes touch), the snapshot
 *     table and, per snapshot, its L1 table and everything under it, and
 *     the bitmap directory, bitmap tables and bitmap data clusters;
 *  2. lay out a brand new refcount table and refcount blocks right after
 *     the end of the file (the old ones are simply not counted, so they
 *     become free clusters), such that the new blocks also count
 *     themselves and the new table;
 *  3. write blocks and table, flush, switch the header to the new table,
 *     flush, and clear the dirty bit.
 *
 * A reference outside the file or to an unaligned cluster means real
 * corruption, not stale refcounts: the image is refused with an error
 * and nothing is written.
 */
#include "qcow2.h"

#include <errno.h>
#include <glib/gi18n-lib.h>
#include <string.h>

typedef struct {
    VbkBlockNode *bs;
    VbkQcow2State *s;
    uint32_t *counts;
    uint64_t nb; /* clusters in the file */
    GError **error;
} QcowRebuild;

static bool
rebuild_fail(QcowRebuild *r, const char *what, uint64_t offset)
{
    g_set_error(r->error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                _("qcow2: cannot repair refcounts: %1$s at offset "
                  "0x%2$" G_GINT64_MODIFIER "x is invalid"),
                what, offset);
    return false;
}

static bool
rebuild_count(QcowRebuild *r, uint64_t offset, uint64_t bytes, const char *what)
{
    uint64_t first = offset >> r->s->cluster_bits;
    uint64_t last = (offset + bytes - 1) >> r->s->cluster_bits;

    if (bytes == 0)
        return true;
    if (offset > UINT64_MAX - bytes || last >= r->nb)
        return rebuild_fail(r, what, offset);
    for (uint64_t c = first; c <= last; c++) {
        if (r->counts[c] == UINT32_MAX)
            return rebuild_fail(r, what, offset);
        r->counts[c]++;
    }
    return true;
}

static bool
rebuild_read(QcowRebuild *r, uint64_t offset, uint64_t len, uint8_t *buf)
{
    int ret = vbk_block_pread(r->bs->file, offset, len, buf);

    if (ret < 0) {
        g_set_error(r->error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_IO, "%s",
                    g_strerror(-ret));
        return false;
    }
    return true;
}

static bool
rebuild_l2(QcowRebuild *r, uint64_t l2_off, uint8_t *l2)
{
    VbkQcow2State *s = r->s;
    uint64_t coff, csize;

    if ((l2_off & (s->cluster_size - 1)) ||
        !rebuild_count(r, l2_off, s->cluster_size, "L2 table") ||
        !rebuild_read(r, l2_off, s->cluster_size, l2))
        return rebuild_fail(r, "L2 table", l2_off);
    for (uint64_t i = 0; i < s->l2_entries; i++) {
        uint64_t e = qcow2_table_get(l2, i);
        uint64_t host = e & QCOW2_OFFSET_MASK;
        switch (vbk_qcow2_entry_type(s, e)) {
        case QCOW2_CL_NORMAL:
        case QCOW2_CL_ZERO_ALLOC:
            if (host & (s->cluster_size - 1))
                return rebuild_fail(r, "data cluster", host);
            if (!rebuild_count(r, host, s->cluster_size, "data cluster"))
                return false;
            break;
        case QCOW2_CL_COMPRESSED:
            vbk_qcow2_compressed_range(s, e, &coff, &csize);
            if (!rebuild_count(r, coff, csize, "compressed cluster"))
                return false;
            break;
        default:
            break;
        }
    }
    return true;
}

/* An L1 table and everything it maps. */
static bool
rebuild_l1(QcowRebuild *r, uint64_t l1_off, uint64_t l1_size)
{
    VbkQcow2State *s = r->s;
    g_autofree uint8_t *l1 = NULL;
    g_autofree uint8_t *l2 = g_malloc(s->cluster_size);

    if (l1_size == 0)
        return true;
    if (l1_size > QCOW2_MAX_L1_BYTES / 8 || (l1_off & (s->cluster_size - 1)))
        return rebuild_fail(r, "L1 table", l1_off);
    if (!rebuild_count(r, l1_off, l1_size * 8, "L1 table"))
        return false;
    l1 = g_try_malloc(l1_size * 8);
    if (!l1 || !rebuild_read(r, l1_off, l1_size * 8, l1))
        return rebuild_fail(r, "L1 table", l1_off);
    for (uint64_t i = 0; i < l1_size; i++) {
        uint64_t l2_off = qcow2_table_get(l1, i) & QCOW2_OFFSET_MASK;
        if (l2_off && !rebuild_l2(r, l2_off, l2))
            return false;
    }
    return true;
}

static bool
rebuild_snapshots(QcowRebuild *r)
{
    VbkQcow2State *s = r->s;
    uint64_t off = s->hdr.snapshots_offset;
    uint64_t pos = 0;
    uint8_t e[40];
    g_autofree uint8_t *table = NULL;
    uint64_t table_len = MIN(s->file_size - off, 64ull * 1024 * 1024);

    if (s->hdr.nb_snapshots == 0)
        return true;
    table = g_try_malloc(table_len);
    if (!table || !rebuild_read(r, off, table_len, table))
        return rebuild_fail(r, "snapshot table", off);
    for (uint32_t i = 0; i < s->hdr.nb_snapshots; i++) {
        if (pos + 40 > table_len)
            return rebuild_fail(r, "snapshot table", off);
        memcpy(e, table + pos, 40);
        pos += 40 + qcow2_be32(e + 36) + ((e[12] << 8) | e[13]) +
               ((e[14] << 8) | e[15]);
        pos = (pos + 7) & ~7ull;
        if (pos > table_len || !rebuild_l1(r, qcow2_be64(e), qcow2_be32(e + 8)))
            return rebuild_fail(r, "snapshot table", off);
    }
    return rebuild_count(r, off, pos, "snapshot table");
}

static bool
rebuild_bitmap_table(QcowRebuild *r, uint64_t off, uint32_t size)
{
    VbkQcow2State *s = r->s;
    g_autofree uint8_t *t = g_try_malloc((uint64_t) size * 8 + 1);

    if (!t || (off & (s->cluster_size - 1)) ||
        !rebuild_count(r, off, (uint64_t) size * 8, "bitmap table") ||
        !rebuild_read(r, off, (uint64_t) size * 8, t))
        return rebuild_fail(r, "bitmap table", off);
    for (uint32_t i = 0; i < size; i++) {
        uint64_t d = qcow2_table_get(t, i) & QCOW2_OFFSET_MASK;
        if (d && !rebuild_count(r, d, s->cluster_size, "bitmap data"))
            return false;
    }
    return true;
}

static bool
rebuild_bitmaps(QcowRebuild *r)
{
    VbkQcow2State *s = r->s;
    uint64_t off = s->hdr.bitmap_directory_offset;
    uint64_t len = s->hdr.bitmap_directory_size;
    g_autofree uint8_t *dir = NULL;
    uint64_t pos = 0;

    if (!s->hdr.has_bitmaps || !(s->hdr.autoclear & QCOW2_AUTOCLEAR_BITMAPS) ||
        len == 0)
        return true;
    if (len > 64ull * 1024 * 1024 || !(dir = g_try_malloc(len)) ||
        !rebuild_read(r, off, len, dir) ||
        !rebuild_count(r, off, len, "bitmap directory"))
        return rebuild_fail(r, "bitmap directory", off);
    for (uint32_t i = 0; i < s->hdr.nb_bitmaps; i++) {
        const uint8_t *e = dir + pos;
        if (pos + 24 > len)
            return rebuild_fail(r, "bitmap directory", off);
        pos += 24 + qcow2_be32(e + 20) + ((e[18] << 8) | e[19]);
        pos = (pos + 7) & ~7ull;
        if (pos > len ||
            !rebuild_bitmap_table(r, qcow2_be64(e), qcow2_be32(e + 8)))
            return false;
    }
    return true;
}

/* Lay out the new structures at cluster @p; see the file comment. */
static void
rebuild_layout(QcowRebuild *r,
               const bool *used,
               uint64_t nused,
               uint64_t p,
               uint64_t *nrb,
               uint64_t *nrt)
{
    VbkQcow2State *s = r->s;
    uint64_t per_cluster = s->cluster_size / 8;

    *nrb = nused;
    *nrt = 1;
    for (;;) {
        uint64_t last = (p + *nrb + *nrt - 1) >> s->rb_bits;
        uint64_t extra = 0, t;
        for (uint64_t idx = p >> s->rb_bits; idx <= last; idx++) {
            if (idx >= (r->nb + s->rb_entries - 1) >> s->rb_bits || !used[idx])
                extra++;
        }
        t = (last + 1 + per_cluster - 1) / per_cluster;
        if (nused + extra == *nrb && t == *nrt)
            return;
        *nrb = nused + extra;
        *nrt = t;
    }
}

static int
rebuild_write(
    QcowRebuild *r, uint64_t p, uint64_t nrb, uint64_t nrt, uint64_t *table)
{
    VbkQcow2State *s = r->s;
    g_autofree uint8_t *rb = g_malloc(s->cluster_size);
    g_autofree uint8_t *tbuf = g_malloc0(nrt * s->cluster_size);
    uint64_t total = p + nrb + nrt;
    uint64_t k = 0;
    int ret;

    for (uint64_t idx = 0; idx <= (total - 1) >> s->rb_bits; idx++) {
        uint64_t base = idx << s->rb_bits;
        bool any = false;
        memset(rb, 0, s->cluster_size);
        for (uint64_t i = 0; i < s->rb_entries && base + i < total; i++) {
            uint32_t c = base + i < p ? r->counts[base + i] : 1;
            if (c > s->refcount_max)
                return -ERANGE;
            if (c)
                any = true;
            vbk_qcow2_rb_set(s, rb, i, c);
        }
        if (!any)
            continue;
        table[idx] = (p + k) * s->cluster_size;
        ret = vbk_block_pwrite(r->bs->file, table[idx], s->cluster_size, rb, 0);
        if (ret < 0)
            return ret;
        k++;
    }
    g_assert(k == nrb);
    for (uint64_t i = 0; i < nrt * s->cluster_size / 8; i++)
        qcow2_table_set(tbuf, i, table[i]);
    ret = vbk_block_pwrite(r->bs->file, (p + nrb) * s->cluster_size,
                           nrt * s->cluster_size, tbuf, 0);
    if (ret >= 0)
        ret = vbk_block_flush(r->bs->file);
    return ret;
}

static bool
rebuild_install(QcowRebuild *r)
{
    VbkQcow2State *s = r->s;
    uint64_t nidx = (r->nb + s->rb_entries - 1) >> s->rb_bits;
    g_autofree bool *used = g_new0(bool, nidx + 1);
    g_autofree uint64_t *table = NULL;
    uint64_t nused = 0, nrb, nrt, p = r->nb;
    uint8_t hdr[12];
    int ret;

    for (uint64_t c = 0; c < r->nb; c++) {
        if (r->counts[c] && !used[c >> s->rb_bits]) {
            used[c >> s->rb_bits] = true;
            nused++;
        }
    }
    rebuild_layout(r, used, nused, p, &nrb, &nrt);
    if (nrt * s->cluster_size > QCOW2_MAX_REFTABLE_BYTES ||
        !(table = g_try_new0(uint64_t, nrt * s->cluster_size / 8))) {
        ret = -EFBIG;
        goto fail;
    }
    ret = rebuild_write(r, p, nrb, nrt, table);
    if (ret < 0)
        goto fail;
    qcow2_put_be64(hdr, (p + nrb) * s->cluster_size);
    qcow2_put_be32(hdr + 8, nrt);
    ret = vbk_qcow2_header_patch(r->bs, 48, hdr, 12);
    if (ret >= 0)
        ret = vbk_block_flush(r->bs->file);
    if (ret < 0)
        goto fail;
    g_free(s->reftable);
    s->reftable = g_steal_pointer(&table);
    s->reftable_entries = nrt * s->cluster_size / 8;
    s->hdr.refcount_table_offset = (p + nrb) * s->cluster_size;
    s->hdr.refcount_table_clusters = nrt;
    vbk_qcow2_note_file_end(s, (p + nrb + nrt) * s->cluster_size);
    vbk_qcow2_cache_clear(s->rb_cache);
    s->free_hint = 0;
    return true;

fail:
    g_set_error(r->error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_IO,
                _("qcow2: could not write the rebuilt refcounts: %s"),
                g_strerror(-ret));
    return false;
}

bool
vbk_qcow2_rebuild_refcounts(VbkBlockNode *bs, GError **error)
{
    VbkQcow2State *s = bs->opaque;
    g_autofree uint32_t *counts = NULL;
    QcowRebuild r = {bs, s, NULL, 0, error};

    r.nb = (s->file_size + s->cluster_size - 1) >> s->cluster_bits;
    counts = g_try_new0(uint32_t, r.nb + 1);
    if (!counts) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_FAILED, "%s",
                    g_strerror(ENOMEM));
        return false;
    }
    r.counts = counts;
    if (!rebuild_count(&r, 0, s->cluster_size, "header") ||
        !rebuild_l1(&r, s->hdr.l1_table_offset, s->l1_size) ||
        !rebuild_snapshots(&r) || !rebuild_bitmaps(&r))
        return false;
    return rebuild_install(&r);
}
