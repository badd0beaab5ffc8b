/*
 * qcow2-compress-write.c: writing compressed clusters
 * (VBK_REQ_WRITE_COMPRESSED, qemu-io "write -c", backup compress=true).
 *
 * A compressed write covers whole guest clusters, the image's last
 * partial cluster included (its tail is compressed as zeroes); anything
 * else is -EINVAL.  Each cluster is compressed on its own with the
 * image's compression type: raw deflate (window 2^12, no zlib header)
 * or a zstd frame.  Data that does not shrink below one cluster is
 * written the ordinary way instead (in place if the cluster is ours).
 *
 * Compressed data is packed at byte granularity, as QEMU does:
 * free_byte_offset remembers where the last compressed cluster ended
 * inside its host cluster, and the next one starts there.  When it does
 * not fit in what is left, a fresh host cluster is taken; if that one
 * happens to follow the current one, the data runs on across the
 * boundary.  Every host cluster holds one reference per compressed
 * cluster that has bytes in it, e.g. three clusters compressed to 20 KiB
 * each over 64 KiB host clusters:
 *
 *     host cluster H: [A 0..20K][B 20K..40K][C 40K..60K]  refcount 3
 *
 * and a fourth one of 20 KiB runs from H+60K into H+1 (if free), which
 * makes H's refcount 4 and H+1's 1.  The L2 descriptor holds the byte
 * offset and the number of 512-byte sectors the data touches, minus one
 * (see vbk_qcow2_compressed_range()).
 *
 * A compressed cluster never overwrites: when the guest cluster already
 * has a host offset (data, preallocated zeroes or compressed data), the
 * write fails with -EIO, as QEMU 7.2 does (qemu-io: "write failed:
 * Input/output error"); unallocated and plain zero clusters take it.
 *
 * Order on disk as for every allocation of the driver: the L2 table
 * made ready, refcounts, then the compressed bytes, then the L2 entry.
 * blkdebug sees QEMU's events in QEMU's order: cluster_alloc_bytes,
 * l2_update_compressed (where QEMU sets the entry in its cached table),
 * write_compressed before the data, and l2_update before the L2 write
 * (where QEMU writes the cached table back).  A crash in between leaks
 * references, never corrupts; a failed write leaves the cluster as it
 * was (QEMU 7.2 leaves its entry pointing at the unwritten bytes, so
 * that the cluster reads as garbage and a retry fails with -EIO).
 */
#include "qcow2.h"

#include <errno.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

/* Deflate @len bytes into at most @cap bytes; the size or -ENOSPC. */
static int64_t
qcow2_deflate(const uint8_t *in, uint64_t len, uint8_t *out, uint64_t cap)
{
    z_stream z = {0};
    int64_t ret;

    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9,
                     Z_DEFAULT_STRATEGY) != Z_OK)
        return -ENOMEM;
    z.next_in = (Bytef *) in;
    z.avail_in = len;
    z.next_out = out;
    z.avail_out = cap;
    /* Z_STREAM_END only when everything fitted */
    ret = deflate(&z, Z_FINISH) == Z_STREAM_END ? (int64_t) (cap - z.avail_out)
                                                : -ENOSPC;
    deflateEnd(&z);
    return ret;
}

static int64_t
qcow2_zstd(const uint8_t *in, uint64_t len, uint8_t *out, uint64_t cap)
{
    size_t r = ZSTD_compress(out, cap, in, len, ZSTD_CLEVEL_DEFAULT);

    if (!ZSTD_isError(r))
        return (int64_t) r;
    return ZSTD_getErrorCode(r) == ZSTD_error_dstSize_tooSmall ? -ENOSPC
                                                               : -ENOMEM;
}

/*
 * Compress one cluster (@in, cluster_size bytes) into @out: its size,
 * -ENOSPC when it would not be smaller than a cluster, or -errno.
 */
static int64_t
qcow2_compress_cluster(VbkQcow2State *s, const uint8_t *in, uint8_t *out)
{
    uint64_t cap = s->cluster_size - 1;

    if (s->hdr.compression_type == QCOW2_COMPRESSION_ZSTD)
        return qcow2_zstd(in, s->cluster_size, out, cap);
    return qcow2_deflate(in, s->cluster_size, out, cap);
}

/*
 * Under the lock: room for @size bytes of compressed data, with its
 * references taken; returns the host byte offset or -errno.
 */
static int64_t
qcow2_alloc_bytes(VbkBlockNode *bs, uint64_t size)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    uint64_t off = s->free_byte_offset;
    uint64_t rc = 0;
    int64_t fresh;
    int ret = 0;

    vbk_block_event(bs->file, VBK_EVENT_CLUSTER_ALLOC_BYTES);
    if (off && (vbk_qcow2_get_refcount(bs, off / cs, &rc) < 0 || rc == 0 ||
                rc >= s->refcount_max))
        off = 0; /* that cluster cannot take one more user */
    if (off && size <= cs - (off & (cs - 1))) {
        ret = vbk_qcow2_ref_clusters(bs, off / cs, 1);
    } else {
        fresh = vbk_qcow2_alloc_clusters(bs, 1);
        if (fresh < 0)
            return fresh;
        if (off && (uint64_t) fresh == VBK_ROUND_UP(off, cs)) {
            /* runs on from the current cluster into the next */
            ret = vbk_qcow2_ref_clusters(bs, off / cs, 1);
            if (ret < 0)
                vbk_qcow2_free_clusters(bs, fresh, 1);
        } else {
            off = fresh;
        }
    }
    if (ret < 0)
        return ret;
    if (off + size > s->coffset_mask) {
        vbk_qcow2_free_clusters(bs, off & ~(cs - 1),
                                VBK_DIV_ROUND_UP((off & (cs - 1)) + size, cs));
        return -EFBIG;
    }
    s->free_byte_offset = ((off + size) & (cs - 1)) ? off + size : 0;
    return (int64_t) off;
}

/* The L2 descriptor of @len compressed bytes at host byte @off. */
static uint64_t
qcow2_compressed_entry(VbkQcow2State *s, uint64_t off, uint64_t len)
{
    uint64_t extra = (off + len - 1) / 512 - off / 512;

    return QCOW2_OFLAG_COMPRESSED | (extra << s->csize_shift) | off;
}

/*
 * Under the lock: store @len compressed bytes @data as the guest
 * cluster at @offset, which must have no host offset yet.
 */
static int
qcow2_store_compressed(VbkBlockNode *bs,
                       uint64_t offset,
                       const uint8_t *data,
                       uint64_t len)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t entry, n, l2_off;
    uint8_t *l2;
    int64_t host;
    int ret;

    vbk_qcow2_wait_alloc(s, offset, s->cluster_size);
    ret = vbk_qcow2_l2_lookup(bs, offset, s->cluster_size, &entry, &n);
    if (ret < 0)
        return ret;
    if (entry & QCOW2_OFFSET_MASK)
        return -EIO; /* QEMU 7.2 refuses to overwrite an allocation */
    /* as QEMU: the L2 table first, then the bytes */
    ret = vbk_qcow2_l2_prepare(bs, offset, &l2, &l2_off);
    if (ret < 0)
        return ret;
    host = qcow2_alloc_bytes(bs, len);
    if (host < 0)
        return (int) host;
    /* QEMU sets the entry in its cached table here */
    vbk_block_event(bs->file, VBK_EVENT_L2_UPDATE_COMPRESSED);
    vbk_block_event(bs->file, VBK_EVENT_WRITE_COMPRESSED);
    ret = vbk_block_pwrite(bs->file, host, len, data, 0);
    if (ret == 0) {
        vbk_qcow2_note_file_end(s, host + len);
        entry = qcow2_compressed_entry(s, host, len);
        ret = vbk_qcow2_l2_set(bs, offset, 1, &entry);
    }
    if (ret < 0) {
        /* drop the references taken; the packing starts afresh */
        entry = qcow2_compressed_entry(s, host, len);
        vbk_qcow2_free_entry(bs, entry);
        s->free_byte_offset = 0;
    }
    return ret;
}

/* Write one guest cluster (@n bytes, less only for the last one). */
static int
qcow2_write_one_compressed(VbkBlockNode *bs,
                           uint64_t offset,
                           uint64_t n,
                           const uint8_t *buf,
                           uint8_t *in,
                           uint8_t *out)
{
    VbkQcow2State *s = bs->opaque;
    int64_t len;
    int ret;

    memcpy(in, buf, n);
    memset(in + n, 0, s->cluster_size - n);
    len = qcow2_compress_cluster(s, in, out);
    if (len == -ENOSPC) /* does not shrink: an ordinary write */
        return vbk_qcow2_co_pwrite(bs, offset, n, buf, 0);
    if (len < 0)
        return (int) len;
    g_mutex_lock(&s->lock);
    ret = qcow2_store_compressed(bs, offset, out, (uint64_t) len);
    g_mutex_unlock(&s->lock);
    return ret;
}

int
vbk_qcow2_pwrite_compressed(VbkBlockNode *bs,
                            uint64_t offset,
                            uint64_t bytes,
                            const uint8_t *buf)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    g_autofree uint8_t *in = NULL;
    g_autofree uint8_t *out = NULL;
    int ret;

    if ((offset & (cs - 1)) ||
        ((bytes & (cs - 1)) && offset + bytes != s->hdr.size))
        return -EINVAL;
    in = g_try_malloc(cs);
    out = g_try_malloc(cs);
    if (!in || !out)
        return -ENOMEM;
    while (bytes > 0) {
        uint64_t n = MIN(bytes, cs);

        ret = qcow2_write_one_compressed(bs, offset, n, buf, in, out);
        if (ret < 0)
            return ret;
        offset += n;
        buf += n;
        bytes -= n;
    }
    return 0;
}
