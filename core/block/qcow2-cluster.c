/*
 * qcow2-cluster.c: guest offset -> host cluster mapping (L1/L2 tables).
 *
 * A guest offset splits into three parts.  With 64 KiB clusters (16
 * bits of in-cluster offset, 8192 entries = 13 bits per L2 table):
 *
 *     guest 0x12345678 = l1 index 0x12345678 >> 29 = 0
 *                        l2 index (0x12345678 >> 16) & 8191 = 0x1234
 *                        in-cluster 0x5678
 *
 * The L1 table lives in memory (host order) and is written through entry
 * by entry; L2 tables go through the write-back L2 cache.  Before an L2
 * table is changed it must be ours alone (COPIED set in its L1 entry): a
 * missing table is allocated zero-filled, a shared one (after an internal
 * snapshot) is copied to a new cluster first.  New tables are written,
 * with the refcount cache, and synced before the L1 entry that points to
 * them is written.  An L2 update that points at new host clusters makes
 * the L2 cache depend on the refcount cache (qcow2-cache.c).
 *
 * Compressed clusters are decoded here too: raw deflate (zlib window
 * -12, no header) or a zstd frame, as the header's compression type says.
 */
#include "qcow2.h"

#include <errno.h>
#include <glib/gi18n-lib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

VbkQcow2ClusterType
vbk_qcow2_entry_type(VbkQcow2State *s, uint64_t entry)
{
    if (entry & QCOW2_OFLAG_COMPRESSED)
        return QCOW2_CL_COMPRESSED;
    if ((entry & QCOW2_OFLAG_ZERO) && s->hdr.version >= 3)
        return (entry & QCOW2_OFFSET_MASK) ? QCOW2_CL_ZERO_ALLOC
                                           : QCOW2_CL_ZERO_PLAIN;
    if ((entry & QCOW2_OFFSET_MASK) == 0)
        return QCOW2_CL_UNALLOCATED;
    return QCOW2_CL_NORMAL;
}

/* Read the L2 table that maps @offset; *l2 NULL when it has none. */
static int
qcow2_l2_load(VbkBlockNode *bs, uint64_t offset, uint8_t **l2)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t l1_idx = offset >> (s->cluster_bits + s->l2_bits);
    uint64_t l2_off;

    *l2 = NULL;
    if (l1_idx >= s->l1_size)
        return 0;
    l2_off = s->l1[l1_idx] & QCOW2_OFFSET_MASK;
    if (l2_off == 0)
        return 0;
    if (!vbk_qcow2_meta_offset_valid(s, l2_off))
        return -EIO;
    return vbk_qcow2_cache_get(bs, s->l2_cache, l2_off, false, l2);
}

static bool
qcow2_entry_valid(VbkQcow2State *s, uint64_t entry)
{
    VbkQcow2ClusterType t = vbk_qcow2_entry_type(s, entry);
    uint64_t host = entry & QCOW2_OFFSET_MASK;

    /* a data cluster must be aligned and start inside the file */
    if (t == QCOW2_CL_NORMAL || t == QCOW2_CL_ZERO_ALLOC)
        return (host & (s->cluster_size - 1)) == 0 && host < s->file_size;
    return true;
}

/* Does @next continue the extent that @first starts, @i clusters on? */
static bool
qcow2_entry_continues(VbkQcow2State *s,
                      uint64_t first,
                      uint64_t next,
                      uint64_t i)
{
    VbkQcow2ClusterType t = vbk_qcow2_entry_type(s, first);

    if (vbk_qcow2_entry_type(s, next) != t)
        return false;
    switch (t) {
    case QCOW2_CL_UNALLOCATED:
    case QCOW2_CL_ZERO_PLAIN:
        return true;
    case QCOW2_CL_COMPRESSED:
        return false;
    default:
        return next == first + i * s->cluster_size;
    }
}

/*
 * The L2 entry of the cluster holding @offset, and in *pnum how many of
 * @bytes from @offset map the same way (same kind, contiguous host
 * clusters, inside one L2 table).
 */
int
vbk_qcow2_l2_lookup(VbkBlockNode *bs,
                    uint64_t offset,
                    uint64_t bytes,
                    uint64_t *entry,
                    uint64_t *pnum)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    uint64_t idx = (offset >> s->cluster_bits) & (s->l2_entries - 1);
    uint64_t in_cluster = offset & (cs - 1);
    uint64_t avail = (s->l2_entries - idx) * cs - in_cluster;
    uint64_t n = 1;
    uint8_t *l2;
    int ret;

    avail = MIN(avail, bytes);
    ret = qcow2_l2_load(bs, offset, &l2);
    if (ret < 0)
        return ret;
    if (!l2) {
        *entry = 0;
        *pnum = avail;
        return 0;
    }
    *entry = qcow2_table_get(l2, idx);
    if (!qcow2_entry_valid(s, *entry))
        return -EIO;
    while (n * cs - in_cluster < avail) {
        uint64_t next = qcow2_table_get(l2, idx + n);
        if (!qcow2_entry_continues(s, *entry, next, n))
            break;
        n++;
    }
    *pnum = MIN(avail, n * cs - in_cluster);
    return 0;
}

/* Write L1 entry @idx from memory to the image. */
static int
qcow2_l1_write(VbkBlockNode *bs, uint64_t idx)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t table_bytes = ((uint64_t) s->l1_size * 8 + s->cluster_size - 1) &
                           ~(s->cluster_size - 1);
    uint64_t start = (idx * 8) & ~511ull;
    uint64_t end = MIN(start + 512, table_bytes);
    uint8_t buf[512] = {0};

    for (uint64_t i = start / 8; i < end / 8 && i < s->l1_size; i++)
        qcow2_table_set(buf, i - start / 8, s->l1[i]);
    vbk_block_event(bs->file, VBK_EVENT_L1_UPDATE);
    return vbk_block_pwrite(bs->file, s->hdr.l1_table_offset + start,
                            end - start, buf, 0);
}

/* Give L1 entry @l1_idx a new L2 table at @new_off, copy of @content
 * (or zeroes), then release the old one. */
static int
qcow2_l2_install(VbkBlockNode *bs,
                 uint64_t l1_idx,
                 uint64_t new_off,
                 const uint8_t *content)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t old = s->l1[l1_idx] & QCOW2_OFFSET_MASK;
    uint64_t l1e;
    uint8_t *l2;
    int ret;

    ret = vbk_qcow2_cache_get(bs, s->l2_cache, new_off, true, &l2);
    if (ret < 0)
        return ret;
    if (content)
        memcpy(l2, content, s->cluster_size);
    vbk_block_event(bs->file, VBK_EVENT_L2_ALLOC_WRITE);
    ret = vbk_qcow2_meta_write(bs, new_off, l2, 0, s->cluster_size);
    /* the table and its cluster's refcount are durable before the L1
     * entry points to it */
    if (ret >= 0)
        ret = vbk_qcow2_cache_write(bs, s->rb_cache);
    if (ret >= 0)
        ret = vbk_block_flush(bs->file);
    if (ret < 0)
        goto fail;
    l1e = s->l1[l1_idx];
    s->l1[l1_idx] = new_off | QCOW2_OFLAG_COPIED;
    ret = qcow2_l1_write(bs, l1_idx);
    if (ret < 0) {
        s->l1[l1_idx] = l1e;
        goto fail;
    }
    if (old)
        return vbk_qcow2_free_clusters(bs, old, 1);
    return 0;

fail:
    vbk_qcow2_cache_drop(s->l2_cache, new_off);
    vbk_qcow2_free_clusters(bs, new_off, 1);
    return ret;
}

/*
 * Make the L2 table mapping @offset exist and be ours alone; returns it
 * in *l2 (valid until the next L2 cache access) at *l2_offset.
 */
int
vbk_qcow2_l2_prepare(VbkBlockNode *bs,
                     uint64_t offset,
                     uint8_t **l2,
                     uint64_t *l2_offset)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t l1_idx = offset >> (s->cluster_bits + s->l2_bits);
    uint64_t l1e, old;
    g_autofree uint8_t *copy = NULL;
    int64_t new_off;
    int ret;

    if (l1_idx >= s->l1_size)
        return -EIO;
    l1e = s->l1[l1_idx];
    old = l1e & QCOW2_OFFSET_MASK;
    if (old && !vbk_qcow2_meta_offset_valid(s, old))
        return -EIO;
    if (old && !(l1e & QCOW2_OFLAG_COPIED)) {
        uint8_t *shared;
        vbk_block_event(bs->file, VBK_EVENT_L2_ALLOC_COW_READ);
        ret = vbk_qcow2_cache_get(bs, s->l2_cache, old, false, &shared);
        if (ret < 0)
            return ret;
        copy = g_memdup2(shared, s->cluster_size);
    }
    if (!old || copy) {
        new_off = vbk_qcow2_alloc_clusters(bs, 1);
        if (new_off < 0)
            return new_off;
        ret = qcow2_l2_install(bs, l1_idx, new_off, copy);
        if (ret < 0)
            return ret;
    }
    *l2_offset = s->l1[l1_idx] & QCOW2_OFFSET_MASK;
    return vbk_qcow2_cache_get(bs, s->l2_cache, *l2_offset, false, l2);
}

/* Do @entries point to host clusters that entries [idx, idx+n) of @l2
 * do not (for compressed entries, conservatively: any change)? */
static bool
qcow2_l2_refs_new(const uint8_t *l2,
                  uint64_t idx,
                  uint64_t n,
                  const uint64_t *entries)
{
    for (uint64_t i = 0; i < n; i++) {
        uint64_t old = qcow2_table_get(l2, idx + i);
        uint64_t host = entries[i] & QCOW2_OFFSET_MASK;

        if (host && (host != (old & QCOW2_OFFSET_MASK) ||
                     ((entries[i] ^ old) & QCOW2_OFLAG_COMPRESSED)))
            return true;
        if ((entries[i] & QCOW2_OFLAG_COMPRESSED) && entries[i] != old)
            return true;
    }
    return false;
}

/* Set the L2 entries of @n clusters from @offset (one L2 table), in the
 * cache (written back later, see qcow2-cache.c). */
int
vbk_qcow2_l2_set(VbkBlockNode *bs,
                 uint64_t offset,
                 uint64_t n,
                 const uint64_t *entries)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t idx = (offset >> s->cluster_bits) & (s->l2_entries - 1);
    uint64_t l2_off;
    uint8_t *l2;
    int ret;

    g_assert(idx + n <= s->l2_entries);
    ret = vbk_qcow2_l2_prepare(bs, offset, &l2, &l2_off);
    if (ret < 0)
        return ret;
    if (qcow2_l2_refs_new(l2, idx, n, entries)) {
        /* the new clusters' refcounts reach the disk first (this never
         * evicts, so @l2 stays valid) */
        ret = vbk_qcow2_cache_depend(bs, s->l2_cache, s->rb_cache);
        if (ret < 0)
            return ret;
    }
    for (uint64_t i = 0; i < n; i++)
        qcow2_table_set(l2, idx + i, entries[i]);
    vbk_qcow2_cache_dirty(s->l2_cache, l2, idx * 8, n * 8);
    return 0;
}

/* Replace the L1 table by one of @min_size entries (grow only). */
bool
vbk_qcow2_grow_l1(VbkBlockNode *bs, uint64_t min_size, GError **error)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    uint64_t clusters = (min_size * 8 + cs - 1) / cs;
    uint64_t old_clusters = ((uint64_t) s->l1_size * 8 + cs - 1) / cs;
    uint64_t old_off = s->hdr.l1_table_offset;
    g_autofree uint8_t *buf = NULL;
    uint64_t *table;
    uint8_t hdr[12];
    int64_t off;
    int ret;

    if (min_size <= s->l1_size)
        return true;
    if (min_size > QCOW2_MAX_L1_BYTES / 8) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("Active L1 table too large"));
        return false;
    }
    vbk_block_event(bs->file, VBK_EVENT_L1_GROW_ALLOC_TABLE);
    off = vbk_qcow2_alloc_clusters(bs, clusters);
    ret = off < 0 ? (int) off : 0;
    if (ret == 0) {
        buf = g_malloc0(clusters * cs);
        for (uint32_t i = 0; i < s->l1_size; i++)
            qcow2_table_set(buf, i, s->l1[i]);
        vbk_block_event(bs->file, VBK_EVENT_L1_GROW_WRITE_TABLE);
        ret = vbk_block_pwrite(bs->file, off, clusters * cs, buf, 0);
    }
    if (ret == 0) /* with the new table's refcounts */
        ret = vbk_qcow2_meta_flush(bs);
    if (ret == 0) {
        vbk_qcow2_note_file_end(s, off + clusters * cs);
        qcow2_put_be32(hdr, min_size);
        qcow2_put_be64(hdr + 4, off);
        vbk_block_event(bs->file, VBK_EVENT_L1_GROW_ACTIVATE_TABLE);
        ret = vbk_qcow2_header_patch(bs, 36, hdr, 12);
    }
    if (ret < 0) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_IO,
                    _("Could not grow the L1 table: %s"), g_strerror(-ret));
        return false;
    }
    table = g_new0(uint64_t, min_size);
    memcpy(table, s->l1, (size_t) s->l1_size * 8);
    g_free(s->l1);
    s->l1 = table;
    s->l1_size = min_size;
    s->hdr.l1_size = min_size;
    s->hdr.l1_table_offset = off;
    if (old_clusters &&
        (ret = vbk_qcow2_free_clusters(bs, old_off, old_clusters)) < 0) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_IO,
                    _("Could not free the old L1 table: %s"), g_strerror(-ret));
        return false;
    }
    return true;
}

static int
qcow2_inflate(const uint8_t *in,
              uint64_t in_len,
              uint8_t *out,
              uint64_t out_len)
{
    z_stream z = {0};
    int ret;

    if (inflateInit2(&z, -12) != Z_OK)
        return -EIO;
    z.next_in = (Bytef *) in;
    z.avail_in = in_len;
    z.next_out = out;
    z.avail_out = out_len;
    ret = inflate(&z, Z_FINISH);
    inflateEnd(&z);
    if ((ret == Z_STREAM_END || ret == Z_BUF_ERROR) && z.avail_out == 0)
        return 0;
    return -EIO;
}

static int
qcow2_unzstd(const uint8_t *in, uint64_t in_len, uint8_t *out, uint64_t out_len)
{
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    ZSTD_inBuffer zin = {in, in_len, 0};
    ZSTD_outBuffer zout = {out, out_len, 0};
    int ret = 0;

    if (!dctx)
        return -ENOMEM;
    while (zout.pos < zout.size) {
        size_t prev_in = zin.pos, prev_out = zout.pos;
        size_t r = ZSTD_decompressStream(dctx, &zout, &zin);
        if (ZSTD_isError(r)) {
            ret = -EIO;
            break;
        }
        if (zin.pos == prev_in && zout.pos == prev_out) {
            ret = -EIO; /* input exhausted before the cluster was full */
            break;
        }
    }
    ZSTD_freeDCtx(dctx);
    return ret;
}

/* Decode the compressed cluster @entry into @out (one cluster). */
int
vbk_qcow2_read_compressed(VbkBlockNode *bs, uint64_t entry, uint8_t *out)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t coff, csize;
    g_autofree uint8_t *in = NULL;
    int ret;

    vbk_qcow2_compressed_range(s, entry, &coff, &csize);
    if (coff < s->cluster_size || coff >= s->file_size)
        return -EIO;
    csize = MIN(csize, s->file_size - coff);
    in = g_try_malloc(csize);
    if (!in)
        return -ENOMEM;
    vbk_block_event(bs->file, VBK_EVENT_READ_COMPRESSED);
    ret = vbk_block_pread(bs->file, coff, csize, in);
    if (ret < 0)
        return ret;
    if (s->hdr.compression_type == QCOW2_COMPRESSION_ZSTD)
        return qcow2_unzstd(in, csize, out, s->cluster_size);
    return qcow2_inflate(in, csize, out, s->cluster_size);
}
