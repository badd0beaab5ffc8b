/*
 * qcow2-refcount.c: reference counts, cluster allocation and freeing.
 *
 * Every host cluster has a refcount of refcount_bits (1..64) bits, kept
 * in two levels: the refcount table (contiguous, in memory here) points
 * to refcount blocks of one cluster each.  With 64 KiB clusters and
 * 16-bit refcounts a block holds 32768 entries, so refcount table entry
 * i covers host clusters [i * 32768, (i + 1) * 32768).  Entries narrower
 * than a byte are packed LSB first: with 2-bit refcounts, cluster 5 is
 * bits 2-3 of byte 1.  A missing block (table entry 0) or an index past
 * the table means refcount 0, i.e. free.
 *
 * Allocation scans from a hint (the lowest cluster that may be free) for
 * a run of free clusters.  Before the run is handed out, every refcount
 * block covering it must exist:
 *  - a missing block inside the table goes to the lowest free cluster f:
 *    if f is in the range of the new block, the block counts itself;
 *    otherwise f is counted by the (existing) block of its own range;
 *  - an index past the table grows the table: new blocks and the new
 *    table are laid out together at the first cluster not covered yet,
 *    the new blocks count themselves and the new table, the header is
 *    switched over and the old table freed.
 * Either way the scan restarts, so the run it finally returns is covered
 * by existing blocks and its refcounts are set to 1 before the caller
 * writes anything that points to it.
 */
#include "qcow2.h"

#include <errno.h>
#include <string.h>

uint64_t
vbk_qcow2_rb_get(VbkQcow2State *s, const uint8_t *rb, uint64_t i)
{
    uint32_t bits = s->refcount_bits;
    uint64_t v = 0;

    if (bits < 8) {
        uint64_t bit = i * bits;
        return (rb[bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
    }
    for (uint32_t b = 0; b < bits / 8; b++)
        v = (v << 8) | rb[i * (bits / 8) + b];
    return v;
}

void
vbk_qcow2_rb_set(VbkQcow2State *s, uint8_t *rb, uint64_t i, uint64_t v)
{
    uint32_t bits = s->refcount_bits;

    if (bits < 8) {
        uint64_t bit = i * bits;
        uint8_t mask = ((1u << bits) - 1) << (bit % 8);
        rb[bit / 8] = (rb[bit / 8] & ~mask) | ((v << (bit % 8)) & mask);
        return;
    }
    for (int b = bits / 8 - 1; b >= 0; b--) {
        rb[i * (bits / 8) + b] = v & 0xff;
        v >>= 8;
    }
}

/* Byte range of entry @i inside a refcount block. */
static void
qcow2_rb_entry_range(VbkQcow2State *s,
                     uint64_t i,
                     uint64_t *start,
                     uint64_t *len)
{
    *start = i * s->refcount_bits / 8;
    *len = s->refcount_bits < 8 ? 1 : s->refcount_bits / 8;
}

bool
vbk_qcow2_refcount_load(VbkBlockNode *bs, GError **error)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t bytes =
        (uint64_t) s->hdr.refcount_table_clusters * s->cluster_size;
    g_autofree uint8_t *buf = g_try_malloc(bytes);
    int ret;

    if (!buf) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_FAILED, "%s",
                    g_strerror(ENOMEM));
        return false;
    }
    vbk_block_event(bs->file, VBK_EVENT_REFTABLE_LOAD);
    ret = vbk_block_pread(bs->file, s->hdr.refcount_table_offset, bytes, buf);
    if (ret < 0) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_IO, "%s",
                    g_strerror(-ret));
        return false;
    }
    g_free(s->reftable);
    s->reftable_entries = bytes / 8;
    s->reftable = g_new(uint64_t, s->reftable_entries);
    for (uint64_t i = 0; i < s->reftable_entries; i++)
        s->reftable[i] = qcow2_table_get(buf, i);
    return true;
}

/* Offset of refcount block @idx, 0 when missing, -EIO when invalid. */
static int64_t
qcow2_refblock_offset(VbkQcow2State *s, uint64_t idx)
{
    uint64_t off;

    if (idx >= s->reftable_entries)
        return 0;
    off = s->reftable[idx] & ~511ull;
    if (off == 0)
        return 0;
    if (!vbk_qcow2_meta_offset_valid(s, off))
        return -EIO;
    return off;
}

int
vbk_qcow2_get_refcount(VbkBlockNode *bs, uint64_t cluster, uint64_t *refcount)
{
    VbkQcow2State *s = bs->opaque;
    int64_t off = qcow2_refblock_offset(s, cluster >> s->rb_bits);
    uint8_t *rb;
    int ret;

    if (off <= 0) {
        *refcount = 0;
        return off;
    }
    ret = vbk_qcow2_cache_get(bs, s->rb_cache, off, false, &rb);
    if (ret < 0)
        return ret;
    *refcount = vbk_qcow2_rb_get(s, rb, cluster & (s->rb_entries - 1));
    return 0;
}

/*
 * Set the refcount of @n clusters from @cluster to @value; their blocks
 * must exist.  The blocks are changed in the cache (written back later,
 * see qcow2-cache.c).
 */
static int
qcow2_set_refcounts(VbkBlockNode *bs,
                    uint64_t cluster,
                    uint64_t n,
                    uint64_t value)
{
    VbkQcow2State *s = bs->opaque;

    while (n > 0) {
        int64_t off = qcow2_refblock_offset(s, cluster >> s->rb_bits);
        uint64_t i = cluster & (s->rb_entries - 1);
        uint64_t k = MIN(n, s->rb_entries - i);
        uint64_t start, len, last_start, last_len;
        uint8_t *rb;
        int ret;

        if (off <= 0)
            return -EIO;
        ret = vbk_qcow2_cache_get(bs, s->rb_cache, off, false, &rb);
        if (ret < 0)
            return ret;
        for (uint64_t j = 0; j < k; j++)
            vbk_qcow2_rb_set(s, rb, i + j, value);
        qcow2_rb_entry_range(s, i, &start, &len);
        qcow2_rb_entry_range(s, i + k - 1, &last_start, &last_len);
        vbk_qcow2_cache_dirty(s->rb_cache, rb, start,
                              last_start + last_len - start);
        cluster += k;
        n -= k;
    }
    return 0;
}

static int
qcow2_set_refcount(VbkBlockNode *bs, uint64_t cluster, uint64_t value)
{
    return qcow2_set_refcounts(bs, cluster, 1, value);
}

/* Write reftable entries [first, first+n) from memory to the image. */
static int
qcow2_reftable_write(VbkBlockNode *bs, uint64_t first, uint64_t n)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t start = (first * 8) & ~511ull;
    uint64_t end =
        MIN((first + n) * 8 + 511, s->reftable_entries * 8) & ~511ull;
    g_autofree uint8_t *buf = NULL;

    if (end <= start)
        end = MIN(start + 512, s->reftable_entries * 8);
    buf = g_malloc(end - start);
    for (uint64_t i = 0; i < (end - start) / 8; i++)
        qcow2_table_set(buf, i, s->reftable[start / 8 + i]);
    return vbk_block_pwrite(bs->file, s->hdr.refcount_table_offset + start,
                            end - start, buf, 0);
}

/* The lowest free cluster from the hint. */
static int
qcow2_first_free(VbkBlockNode *bs, uint64_t *cluster)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t rc;
    int ret;

    for (uint64_t c = s->free_hint;; c++) {
        ret = vbk_qcow2_get_refcount(bs, c, &rc);
        if (ret < 0)
            return ret;
        if (rc == 0) {
            *cluster = c;
            return 0;
        }
    }
}

/*
 * Create the missing refcount block @idx in the lowest free cluster f.
 * When f lies in the range of @idx the block counts itself; otherwise f
 * is counted by the block of its own range (created first if missing,
 * or the table grown first if f is past it).  The caller restarts its
 * search afterwards.
 */
static int qcow2_reftable_grow(VbkBlockNode *bs, uint64_t need);

static int
qcow2_refblock_create(VbkBlockNode *bs, uint64_t idx)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t f, fidx, off;
    uint8_t *rb;
    int ret;

    ret = qcow2_first_free(bs, &f);
    if (ret < 0)
        return ret;
    fidx = f >> s->rb_bits;
    if (fidx >= s->reftable_entries)
        return qcow2_reftable_grow(bs, fidx + 1);
    if (s->reftable[fidx] == 0)
        idx = fidx; /* f's own range first: that block counts itself */
    off = f * s->cluster_size;
    if (!vbk_qcow2_data_offset_valid(s, off))
        return -EIO;
    vbk_block_event(bs->file, VBK_EVENT_REFBLOCK_ALLOC);

    if (idx != fidx && (ret = qcow2_set_refcount(bs, f, 1)) < 0)
        return ret;
    ret = vbk_qcow2_cache_get(bs, s->rb_cache, off, true, &rb);
    if (ret < 0)
        return ret;
    if (idx == fidx)
        vbk_qcow2_rb_set(s, rb, f & (s->rb_entries - 1), 1);
    vbk_block_event(bs->file, VBK_EVENT_REFBLOCK_ALLOC_WRITE);
    ret = vbk_qcow2_meta_write(bs, off, rb, 0, s->cluster_size);
    /* the block and the refcount of its cluster are durable before the
     * table points to it */
    if (ret >= 0)
        ret = vbk_qcow2_cache_write(bs, s->rb_cache);
    if (ret >= 0)
        ret = vbk_block_flush(bs->file);
    if (ret < 0) {
        vbk_qcow2_cache_drop(s->rb_cache, off);
        return ret;
    }
    s->reftable[idx] = off;
    vbk_block_event(bs->file, VBK_EVENT_REFBLOCK_ALLOC_HOOKUP);
    return qcow2_reftable_write(bs, idx, 1);
}

/*
 * Lay out @nrb new blocks plus a new table of @nrt clusters at cluster
 * @p so that everything covers itself; see the file comment.
 */
static void
qcow2_reftable_layout(VbkQcow2State *s,
                      uint64_t p,
                      uint64_t need,
                      uint64_t *nrb,
                      uint64_t *nrt,
                      uint64_t *entries)
{
    uint64_t per_cluster = s->cluster_size / 8;
    uint64_t first = p >> s->rb_bits;
    uint64_t last;

    *nrb = 1;
    for (;;) {
        uint64_t e = MAX(need, first + *nrb);
        uint64_t t = (e + per_cluster - 1) / per_cluster;
        last = (p + *nrb + t - 1) >> s->rb_bits;
        if (last - first + 1 <= *nrb && last < t * per_cluster) {
            *nrt = t;
            *entries = t * per_cluster;
            return;
        }
        *nrb = last - first + 1;
    }
}

static int
qcow2_reftable_switch(VbkBlockNode *bs,
                      uint64_t new_off,
                      uint64_t nrt,
                      uint64_t *table,
                      uint64_t entries)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t old_off = s->hdr.refcount_table_offset;
    uint64_t old_clusters = s->hdr.refcount_table_clusters;
    g_autofree uint8_t *buf = g_malloc0(nrt * s->cluster_size);
    uint8_t hdr[12];
    int ret;

    for (uint64_t i = 0; i < entries; i++)
        qcow2_table_set(buf, i, table[i]);
    vbk_block_event(bs->file, VBK_EVENT_REFBLOCK_ALLOC_WRITE_TABLE);
    ret = vbk_block_pwrite(bs->file, new_off, nrt * s->cluster_size, buf, 0);
    if (ret >= 0)
        ret = vbk_block_flush(bs->file);
    if (ret < 0)
        return ret;
    vbk_qcow2_note_file_end(s, new_off + nrt * s->cluster_size);
    qcow2_put_be64(hdr, new_off);
    qcow2_put_be32(hdr + 8, nrt);
    vbk_block_event(bs->file, VBK_EVENT_REFBLOCK_ALLOC_SWITCH_TABLE);
    ret = vbk_qcow2_header_patch(bs, 48, hdr, 12);
    if (ret >= 0)
        ret = vbk_block_flush(bs->file);
    if (ret < 0)
        return ret;
    g_free(s->reftable);
    s->reftable = table;
    s->reftable_entries = entries;
    s->hdr.refcount_table_offset = new_off;
    s->hdr.refcount_table_clusters = nrt;
    return vbk_qcow2_free_clusters(bs, old_off, old_clusters);
}

/* Grow the refcount table to at least @need entries. */
static int
qcow2_reftable_grow(VbkBlockNode *bs, uint64_t need)
{
    VbkQcow2State *s = bs->opaque;
    /* everything in use is covered, so the first uncovered cluster and
     * all after it are free (even when the file extends past them) */
    uint64_t p = s->reftable_entries << s->rb_bits;
    uint64_t nrb, nrt, entries, first = p >> s->rb_bits;
    g_autofree uint64_t *table = NULL;
    uint8_t *rb;
    int ret;

    vbk_block_event(bs->file, VBK_EVENT_REFTABLE_GROW);
    need = MAX(need, s->reftable_entries + s->reftable_entries / 2);
    qcow2_reftable_layout(s, p, need, &nrb, &nrt, &entries);
    if (nrt * s->cluster_size > QCOW2_MAX_REFTABLE_BYTES)
        return -EFBIG;
    table = g_try_new0(uint64_t, entries);
    if (!table)
        return -ENOMEM;
    memcpy(table, s->reftable, s->reftable_entries * 8);
    for (uint64_t k = 0; k < nrb; k++) {
        uint64_t idx = first + k;
        uint64_t off = (p + k) * s->cluster_size;
        ret = vbk_qcow2_cache_get(bs, s->rb_cache, off, true, &rb);
        if (ret < 0)
            return ret;
        for (uint64_t c = p; c < p + nrb + nrt; c++) {
            if ((c >> s->rb_bits) == idx)
                vbk_qcow2_rb_set(s, rb, c & (s->rb_entries - 1), 1);
        }
        vbk_block_event(bs->file, VBK_EVENT_REFBLOCK_ALLOC_WRITE_BLOCKS);
        ret = vbk_block_pwrite(bs->file, off, s->cluster_size, rb, 0);
        if (ret < 0)
            return ret;
        table[idx] = off;
    }
    vbk_qcow2_note_file_end(s, (p + nrb) * s->cluster_size);
    ret = qcow2_reftable_switch(bs, (p + nrb) * s->cluster_size, nrt, table,
                                entries);
    if (ret >= 0)
        table = NULL; /* now owned by s */
    return ret;
}

/* Find @n free clusters from the hint; 1 when blocks had to be made. */
static int
qcow2_find_free(VbkBlockNode *bs, uint64_t n, uint64_t *start)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t c = s->free_hint, run = c;
    bool all_used = true;
    uint64_t rc;
    int ret;

    while (c - run < n) {
        ret = vbk_qcow2_get_refcount(bs, c, &rc);
        if (ret < 0)
            return ret;
        if (rc) {
            run = c + 1;
            if (all_used)
                s->free_hint = c + 1;
        } else {
            all_used = false;
        }
        c++;
    }
    for (uint64_t idx = run >> s->rb_bits; idx <= (run + n - 1) >> s->rb_bits;
         idx++) {
        if (idx >= s->reftable_entries) {
            ret = qcow2_reftable_grow(bs, ((run + n - 1) >> s->rb_bits) + 1);
            return ret < 0 ? ret : 1;
        }
        if (s->reftable[idx] == 0) {
            ret = qcow2_refblock_create(bs, idx);
            return ret < 0 ? ret : 1;
        }
    }
    *start = run;
    return 0;
}

/* Allocate @n contiguous clusters; returns the host offset or -errno. */
int64_t
vbk_qcow2_alloc_clusters(VbkBlockNode *bs, uint64_t n)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t start = 0;
    int ret;

    do {
        ret = qcow2_find_free(bs, n, &start);
        if (ret < 0)
            return ret;
    } while (ret > 0);
    if ((start + n) * s->cluster_size > QCOW2_OFFSET_MASK)
        return -EFBIG;
    vbk_block_event(bs->file, VBK_EVENT_CLUSTER_ALLOC);

    ret = qcow2_set_refcounts(bs, start, n, 1);
    if (ret < 0)
        return ret;
    if (s->free_hint == start)
        s->free_hint = start + n;
    return (int64_t) (start * s->cluster_size);
}

static int
qcow2_free_clusters_locked(VbkBlockNode *bs, uint64_t offset, uint64_t n)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t first = offset >> s->cluster_bits;
    uint64_t rc;
    int ret;

    /* what pointed to the clusters is cleared on disk before the
     * decrements reach it */
    ret = vbk_qcow2_cache_depend(bs, s->rb_cache, s->l2_cache);
    if (ret < 0)
        return ret;
    for (uint64_t c = first; c < first + n; c++) {
        ret = vbk_qcow2_get_refcount(bs, c, &rc);
        if (ret < 0)
            return ret;
        if (rc == 0)
            return -EIO; /* would underflow: the image is inconsistent */
        ret = qcow2_set_refcount(bs, c, rc - 1);
        if (ret < 0)
            return ret;
        if (rc == 1) {
            vbk_qcow2_cache_drop(s->l2_cache, c * s->cluster_size);
            vbk_qcow2_cache_drop(s->rb_cache, c * s->cluster_size);
            s->free_hint = MIN(s->free_hint, c);
            if ((s->free_byte_offset >> s->cluster_bits) == c)
                s->free_byte_offset = 0; /* no more packing into it */
        }
    }
    return 0;
}

/*
 * Drop one reference of each of @n clusters at @offset.  Waits for the
 * data reads and writes running outside the lock (see qcow2-io.c): once
 * freed, a cluster may be handed out again.
 */
int
vbk_qcow2_free_clusters(VbkBlockNode *bs, uint64_t offset, uint64_t n)
{
    VbkQcow2State *s = bs->opaque;
    int ret;

    vbk_block_event(bs->file, VBK_EVENT_CLUSTER_FREE);
    g_rw_lock_writer_lock(&s->data_lock);
    ret = qcow2_free_clusters_locked(bs, offset, n);
    g_rw_lock_writer_unlock(&s->data_lock);
    return ret;
}

/*
 * Add one reference to each of @n clusters from index @cluster, which
 * are in use (so their refcount blocks exist); -ERANGE when one is at
 * the maximum.  For compressed clusters sharing a host cluster.
 */
int
vbk_qcow2_ref_clusters(VbkBlockNode *bs, uint64_t cluster, uint64_t n)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t rc;
    int ret;

    for (uint64_t c = cluster; c < cluster + n; c++) {
        ret = vbk_qcow2_get_refcount(bs, c, &rc);
        if (ret < 0)
            return ret;
        if (rc == 0)
            return -EIO;
        if (rc >= s->refcount_max)
            return -ERANGE;
        ret = qcow2_set_refcount(bs, c, rc + 1);
        if (ret < 0)
            return ret;
    }
    return 0;
}

void
vbk_qcow2_compressed_range(VbkQcow2State *s,
                           uint64_t entry,
                           uint64_t *coffset,
                           uint64_t *csize)
{
    uint64_t sectors = ((entry >> s->csize_shift) & s->csize_mask) + 1;

    *coffset = entry & s->coffset_mask;
    *csize = sectors * 512 - (*coffset & 511);
}

/* Release whatever host clusters the L2 @entry references. */
int
vbk_qcow2_free_entry(VbkBlockNode *bs, uint64_t entry)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t coff, csize, first, last;

    switch (vbk_qcow2_entry_type(s, entry)) {
    case QCOW2_CL_NORMAL:
    case QCOW2_CL_ZERO_ALLOC:
        return vbk_qcow2_free_clusters(bs, entry & QCOW2_OFFSET_MASK, 1);
    case QCOW2_CL_COMPRESSED:
        vbk_qcow2_compressed_range(s, entry, &coff, &csize);
        first = coff >> s->cluster_bits;
        last = (coff + csize - 1) >> s->cluster_bits;
        return vbk_qcow2_free_clusters(bs, first << s->cluster_bits,
                                       last - first + 1);
    default:
        return 0;
    }
}
