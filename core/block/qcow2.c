/*
 * qcow2.c: the qcow2 format driver — open, close, flush, create, grow
 * (shrinking is qcow2-shrink.c), and what queries show about an image.
 *
 * Opening reads cluster 0 and hands it to vbk_qcow2_header_decode(),
 * which refuses anything malformed; then the L1 table and the refcount
 * table are loaded into memory.  A read-write open also:
 *  - refuses an image with the corrupt bit ("qcow2: Image is corrupt;
 *    cannot be opened read/write"),
 *  - rebuilds the refcounts of a dirty image (lazy refcounts after a
 *    crash) and clears the dirty bit,
 *  - clears autoclear bits it does not know.
 * vbackup never sets the dirty bit itself: cached metadata is written
 * back in a safe order (see qcow2.h), so refcounts on disk never miss a
 * reference (at worst they leak), with or without lazy_refcounts.
 *
 * Creating an image writes the smallest valid one — header in cluster 0,
 * refcount table in cluster 1, one refcount block in cluster 2 — opens
 * it internally and grows it to the requested size, which allocates the
 * L1 table through the ordinary allocator (cluster 3 for a small image,
 * the same layout as qemu-img).
 */
#include "qcow2.h"
#include "qcow2-bitmap.h"

#include <errno.h>
#include <glib/gi18n-lib.h>
#include <string.h>

static const char *const qcow2_options[] = {
    "l2-cache-size",
    "refcount-cache-size",
    NULL,
};

static bool
qcow2_set_io_error(GError **error, int ret, const char *what)
{
    /* TRANSLATORS: %1$s says what failed, %2$s is strerror() */
    g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_IO,
                _("qcow2: %1$s: %2$s"), what, g_strerror(-ret));
    return false;
}

static void
qcow2_state_init(VbkQcow2State *s)
{
    const VbkQcow2Header *h = &s->hdr;
    uint64_t n, n_l2, n_rb;

    s->cluster_bits = h->cluster_bits;
    s->cluster_size = 1ull << h->cluster_bits;
    s->l2_bits = h->cluster_bits - 3;
    s->l2_entries = 1ull << s->l2_bits;
    s->refcount_bits = 1u << h->refcount_order;
    s->rb_bits = h->cluster_bits + 3 - h->refcount_order;
    s->rb_entries = 1ull << s->rb_bits;
    s->refcount_max =
        h->refcount_order == 6 ? UINT64_MAX : (1ull << s->refcount_bits) - 1;
    s->csize_shift = 62 - (h->cluster_bits - 8);
    s->csize_mask = (1ull << (h->cluster_bits - 8)) - 1;
    s->coffset_mask = (1ull << s->csize_shift) - 1;
    /* by default at most ~8 MiB per cache, at least 4 tables; the
     * options (bytes, as QEMU's) may ask for as few as 2 L2 tables and
     * 4 refcount blocks */
    n = MAX(4, MIN(32, (8u << 20) >> h->cluster_bits));
    n_l2 = s->l2_cache_bytes >> s->cluster_bits;
    n_rb = s->rb_cache_bytes >> s->cluster_bits;
    n_l2 = s->l2_cache_bytes ? MAX(2, MIN(n_l2, 65536)) : n;
    n_rb = s->rb_cache_bytes ? MAX(4, MIN(n_rb, 65536)) : n;
    s->l2_cache =
        vbk_qcow2_cache_new(n_l2, s->cluster_size, VBK_EVENT_L2_UPDATE);
    s->rb_cache = vbk_qcow2_cache_new(n_rb, s->cluster_size,
                                      VBK_EVENT_REFBLOCK_UPDATE_PART);
}

static bool
qcow2_load_l1(VbkBlockNode *bs, GError **error)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t bytes = (uint64_t) s->hdr.l1_size * 8;
    g_autofree uint8_t *buf = NULL;
    int ret;

    s->l1_size = s->hdr.l1_size;
    s->l1 = g_try_new0(uint64_t, s->l1_size + 1);
    buf = g_try_malloc(bytes + 1);
    if (!s->l1 || !buf)
        return qcow2_set_io_error(error, -ENOMEM,
                                  _("Could not read the L1 table"));
    if (bytes && (ret = vbk_block_pread(bs->file, s->hdr.l1_table_offset, bytes,
                                        buf)) < 0)
        return qcow2_set_io_error(error, ret, _("Could not read the L1 table"));
    for (uint32_t i = 0; i < s->l1_size; i++)
        s->l1[i] = qcow2_table_get(buf, i);
    return true;
}

/* Read-write fix-ups: dirty bit, unknown autoclear bits. */
static bool
qcow2_open_rw_fixups(VbkBlockNode *bs, GError **error)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t known_autoclear = QCOW2_AUTOCLEAR_BITMAPS;
    int ret;

    if (s->hdr.incompatible & QCOW2_INCOMPAT_DIRTY) {
        if (!vbk_qcow2_rebuild_refcounts(bs, error))
            return false;
        s->hdr.incompatible &= ~QCOW2_INCOMPAT_DIRTY;
        ret = vbk_qcow2_header_write_u64(bs, 72, s->hdr.incompatible);
        if (ret >= 0)
            ret = vbk_block_flush(bs->file);
        if (ret < 0)
            return qcow2_set_io_error(error, ret,
                                      _("Could not clear the dirty bit"));
    }
    if (s->hdr.version >= 3 && (s->hdr.autoclear & ~known_autoclear)) {
        s->hdr.autoclear &= known_autoclear;
        ret = vbk_qcow2_header_write_u64(bs, 88, s->hdr.autoclear);
        if (ret < 0)
            return qcow2_set_io_error(error, ret,
                                      _("Could not update the header"));
    }
    return true;
}

/* Everything of open except attaching children. */
static bool
qcow2_open_image(VbkBlockNode *bs, GError **error)
{
    VbkQcow2State *s = bs->opaque;
    int64_t len = vbk_block_node_getlength(bs->file);
    g_autofree uint8_t *buf = NULL;
    size_t want, have;
    uint32_t cbits;
    int ret;

    if (len < 0)
        return qcow2_set_io_error(error, len,
                                  _("Could not read the image size"));
    s->file_size = len;
    want = MIN((uint64_t) len, 1u << QCOW2_MAX_CLUSTER_BITS);
    buf = g_malloc0(MAX(want, 512));
    if (want && (ret = vbk_block_pread(bs->file, 0, want, buf)) < 0)
        return qcow2_set_io_error(error, ret, _("Could not read the header"));
    /* cluster 0 past the end of a short file reads as zeroes, as in QEMU */
    cbits = qcow2_be32(buf + 20);
    have = MAX(want, 512);
    if (cbits >= QCOW2_MIN_CLUSTER_BITS && cbits <= QCOW2_MAX_CLUSTER_BITS &&
        (1u << cbits) > have) {
        buf = g_realloc(buf, 1u << cbits);
        memset(buf + have, 0, (1u << cbits) - have);
        have = 1u << cbits;
    }
    if (!vbk_qcow2_header_decode(buf, have, len, &s->hdr, error))
        return false;
    s->writable = !bs->read_only;
    if (s->writable && (s->hdr.incompatible & QCOW2_INCOMPAT_CORRUPT)) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("qcow2: Image is corrupt; cannot be opened read/write"));
        return false;
    }
    qcow2_state_init(s);
    if (!qcow2_load_l1(bs, error) || !vbk_qcow2_refcount_load(bs, error))
        return false;
    if (s->writable && !qcow2_open_rw_fixups(bs, error))
        return false;
    return true;
}

static void
qcow2_state_free(VbkQcow2State *s)
{
    vbk_qcow2_bitmaps_free(s);
    vbk_qcow2_cache_free(s->l2_cache);
    vbk_qcow2_cache_free(s->rb_cache);
    s->l2_cache = s->rb_cache = NULL;
    g_clear_pointer(&s->l1, g_free);
    g_clear_pointer(&s->reftable, g_free);
    vbk_qcow2_header_clear(&s->hdr);
}

static bool
qcow2_open(VbkBlockNode *bs, GVariant *opts, GError **error)
{
    VbkQcow2State *s = bs->opaque;

    g_mutex_init(&s->lock);
    g_rw_lock_init(&s->data_lock);
    g_cond_init(&s->alloc_cond);
    s->alloc_inflight = g_array_new(FALSE, FALSE, 2 * sizeof(uint64_t));
    if (vbk_opts_lookup_uint64(opts, "l2-cache-size", &s->l2_cache_bytes,
                               error) < 0 ||
        vbk_opts_lookup_uint64(opts, "refcount-cache-size", &s->rb_cache_bytes,
                               error) < 0 ||
        !vbk_block_open_file_child(bs, opts, true, error) ||
        !qcow2_open_image(bs, error))
        goto fail;
    g_free(bs->backing_filename);
    bs->backing_filename = g_strdup(s->hdr.backing_file);
    if (!vbk_block_open_backing(bs, opts, s->hdr.backing_file,
                                s->hdr.backing_fmt, error))
        goto fail;
    /* last: loading marks the bitmaps in_use on disk */
    if (!vbk_qcow2_bitmaps_load(bs, error))
        goto fail;
    return true;

fail:
    qcow2_state_free(s);
    g_mutex_clear(&s->lock);
    g_rw_lock_clear(&s->data_lock);
    g_cond_clear(&s->alloc_cond);
    g_clear_pointer(&s->alloc_inflight, g_array_unref);
    return false;
}

static void
qcow2_close(VbkBlockNode *bs)
{
    VbkQcow2State *s = bs->opaque;
    g_autoptr(GError) err = NULL;

    if (s->l2_cache && s->writable && bs->file) {
        if (!vbk_qcow2_bitmaps_store(bs, &err))
            g_printerr("%s\n", err->message);
        vbk_qcow2_meta_flush(bs);
    }
    qcow2_state_free(s);
    g_mutex_clear(&s->lock);
    g_rw_lock_clear(&s->data_lock);
    g_cond_clear(&s->alloc_cond);
    g_clear_pointer(&s->alloc_inflight, g_array_unref);
}

/*
 * blockdev-reopen.  Going read-only: the persistent bitmaps are stored
 * (clean on disk, no longer in_use) and become read-only, then the node
 * stops writing.  Going read-write (the file child already is): the
 * open-time fix-ups run, then the bitmaps are marked in_use on disk and
 * become writable again.
 */
static bool
qcow2_reopen(VbkBlockNode *bs, bool read_only, GError **error)
{
    VbkQcow2State *s = bs->opaque;
    bool ok;
    int ret;

    if (read_only) {
        if (!vbk_qcow2_bitmaps_store(bs, error))
            return false;
        vbk_qcow2_bitmaps_set_readonly(bs, true);
        /* the node itself: whatever the driver caches reaches the disk */
        ret = vbk_block_flush(bs);
        if (ret < 0)
            return qcow2_set_io_error(error, ret, _("Could not flush"));
        g_mutex_lock(&s->lock);
        s->writable = false;
        g_mutex_unlock(&s->lock);
        return true;
    }
    if (s->hdr.incompatible & QCOW2_INCOMPAT_CORRUPT) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("qcow2: Image is corrupt; cannot be opened read/write"));
        return false;
    }
    g_mutex_lock(&s->lock);
    s->writable = true;
    ok = qcow2_open_rw_fixups(bs, error);
    if (!ok)
        s->writable = false;
    g_mutex_unlock(&s->lock);
    if (ok && !vbk_qcow2_bitmaps_reopen_rw(bs, error)) {
        g_mutex_lock(&s->lock);
        s->writable = false;
        g_mutex_unlock(&s->lock);
        return false;
    }
    return ok;
}

/* Write the cached metadata back (the dispatch layer then flushes the
 * file child). */
static int
qcow2_flush(VbkBlockNode *bs)
{
    VbkQcow2State *s = bs->opaque;
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&s->lock);

    if (!s->writable)
        return 0;
    return vbk_qcow2_meta_writeback(bs);
}

/* Grow the virtual size to @size (caller holds the lock). */
static bool
qcow2_grow(VbkBlockNode *bs, uint64_t size, GError **error)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t per_l1 = s->cluster_size * s->l2_entries;
    uint64_t old = s->hdr.size;
    int64_t blen;
    int ret;

    if (!vbk_qcow2_grow_l1(bs, (size + per_l1 - 1) / per_l1, error))
        return false;
    ret = vbk_qcow2_header_write_u64(bs, 24, size);
    if (ret >= 0)
        ret = vbk_block_flush(bs->file);
    if (ret < 0)
        return qcow2_set_io_error(error, ret, _("Could not update the header"));
    s->hdr.size = size;
    /* the grown part must not show what the backing file has there
     * (as QEMU: only when the backing file reaches past the old end) */
    blen = bs->backing ? vbk_block_node_getlength(bs->backing) : 0;
    if (blen > 0 && (uint64_t) blen > old && size > old) {
        ret = vbk_qcow2_zeroes_locked(bs, old, size - old, VBK_REQ_MAY_UNMAP);
        if (ret < 0)
            return qcow2_set_io_error(error, ret,
                                      _("Could not zero the new area"));
    }
    return true;
}

static bool
qcow2_truncate(VbkBlockNode *bs, uint64_t size, GError **error)
{
    VbkQcow2State *s = bs->opaque;
    g_autoptr(GMutexLocker) locker = NULL;

    if (size & 511) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("The new size must be a multiple of 512"));
        return false;
    }
    /* the bitmap lock comes before the driver lock */
    if (!vbk_qcow2_bitmaps_truncate_check(bs, error))
        return false;
    locker = g_mutex_locker_new(&s->lock);
    if (s->hdr.nb_snapshots && s->hdr.version < 3) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_UNSUPPORTED,
                    _("Can't resize a v2 image which has snapshots"));
        return false;
    }
    if (size < s->hdr.size)
        return vbk_qcow2_shrink(bs, size, error);
    if (size == s->hdr.size)
        return true;
    return qcow2_grow(bs, size, error);
}

static int64_t
qcow2_getlength(VbkBlockNode *bs)
{
    VbkQcow2State *s = bs->opaque;

    return s->hdr.size;
}

static int64_t
qcow2_allocated_size(VbkBlockNode *bs)
{
    return vbk_block_node_allocated_size(bs->file);
}

static uint32_t
qcow2_cluster_size(VbkBlockNode *bs)
{
    VbkQcow2State *s = bs->opaque;

    return s->cluster_size;
}

static bool
qcow2_format_info(VbkBlockNode *bs, VbkFormatInfo *info)
{
    VbkQcow2State *s = bs->opaque;
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&s->lock);

    info->format = "qcow2";
    info->version = s->hdr.version;
    info->cluster_size = s->cluster_size;
    info->refcount_bits = s->refcount_bits;
    info->lazy_refcounts = s->hdr.compatible & QCOW2_COMPAT_LAZY_REFCOUNTS;
    info->corrupt = s->hdr.incompatible & QCOW2_INCOMPAT_CORRUPT;
    info->extended_l2 = s->hdr.incompatible & QCOW2_INCOMPAT_EXTL2;
    info->zstd = s->hdr.compression_type == QCOW2_COMPRESSION_ZSTD;
    info->backing_file = g_strdup(s->hdr.backing_file);
    info->backing_fmt = g_strdup(s->hdr.backing_fmt);
    vbk_qcow2_bitmaps_format_info(s, info);
    return true;
}

const VbkBlockDriver vbk_drv_qcow2 = {
    .format_name = "qcow2",
    .instance_size = sizeof(VbkQcow2State),
    .is_format = true,
    .supports_backing = true,
    .supports_compressed_writes = true,
    .options = qcow2_options,
    .open = qcow2_open,
    .close = qcow2_close,
    .flush = qcow2_flush,
    .pread = vbk_qcow2_co_pread,
    .pwrite = vbk_qcow2_co_pwrite,
    .pwrite_zeroes = vbk_qcow2_co_pwrite_zeroes,
    .pdiscard = vbk_qcow2_co_pdiscard,
    .block_status = vbk_qcow2_co_block_status,
    .getlength = qcow2_getlength,
    .allocated_size = qcow2_allocated_size,
    .truncate = qcow2_truncate,
    .reopen = qcow2_reopen,
    .format_info = qcow2_format_info,
    .cluster_size = qcow2_cluster_size,
    .can_store_new_bitmap = vbk_qcow2_can_store_new_bitmap,
    .remove_persistent_bitmap = vbk_qcow2_remove_persistent_bitmap,
};

/* ---- blockdev-create ------------------------------------------------ */

static bool
qcow2_create_check(const VbkQcow2CreateOptions *o,
                   uint32_t cs,
                   int version,
                   int refbits,
                   GError **error)
{
    const char *msg = NULL;

    if (cs < 512 || cs > (2u << 20) || (cs & (cs - 1)))
        msg = _("Cluster size must be a power of two between 512 and 2048k");
    else if (version != 2 && version != 3)
        msg = _("Invalid compatibility level");
    else if (refbits < 1 || refbits > 64 || (refbits & (refbits - 1)))
        msg = _(
            "Refcount width must be a power of two and may not exceed 64 bits");
    else if (version < 3 && refbits != 16)
        msg = _("Different refcount widths than 16 bits require compatibility "
                "level 1.1 or above (use compat=1.1 or greater)");
    else if (version < 3 && o->lazy_refcounts)
        msg = _("Lazy refcounts only supported with compatibility level 1.1 "
                "and above (use compat=1.1 or greater)");
    else if (version < 3 && o->zstd)
        msg = _("Compression type selection is only supported with "
                "compatibility level 1.1 and above");
    else if (o->backing_fmt && !o->backing_file)
        msg = _("Backing format cannot be used without backing file");
    else if (o->size & 511)
        msg = _("Image size must be a multiple of 512 bytes");
    if (msg) {
        g_set_error_literal(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                            msg);
        return false;
    }
    return true;
}

/* Header, refcount table and one refcount block (clusters 0-2). */
static bool
qcow2_create_write_initial(VbkBlockNode *file,
                           const VbkQcow2CreateOptions *o,
                           uint32_t cs,
                           int version,
                           int refbits,
                           GError **error)
{
    VbkQcow2Header h = {0};
    VbkQcow2State tmp = {0};
    g_autofree uint8_t *buf = g_malloc0(3 * (size_t) cs);
    int ret;

    h.version = version;
    h.cluster_bits = g_bit_nth_lsf(cs, -1);
    h.refcount_table_offset = cs;
    h.refcount_table_clusters = 1;
    h.refcount_order = g_bit_nth_lsf(refbits, -1);
    h.compatible = o->lazy_refcounts ? QCOW2_COMPAT_LAZY_REFCOUNTS : 0;
    h.incompatible = o->zstd ? QCOW2_INCOMPAT_COMPRESSION : 0;
    h.compression_type =
        o->zstd ? QCOW2_COMPRESSION_ZSTD : QCOW2_COMPRESSION_ZLIB;
    h.backing_file = (char *) o->backing_file;
    h.backing_fmt = (char *) o->backing_fmt;
    if (!vbk_qcow2_header_encode(&h, buf, cs, error))
        return false;
    qcow2_put_be64(buf + cs, 2ull * cs);
    tmp.refcount_bits = refbits;
    for (int i = 0; i < 3; i++)
        vbk_qcow2_rb_set(&tmp, buf + 2 * cs, i, 1);
    ret = vbk_block_pwrite(file, 0, 3ull * cs, buf, 0);
    if (ret >= 0)
        ret = vbk_block_flush(file);
    if (ret < 0)
        return qcow2_set_io_error(error, ret, _("Could not write the image"));
    return true;
}

bool
vbk_qcow2_create(VbkBlockNode *file,
                 const VbkQcow2CreateOptions *opts,
                 GError **error)
{
    uint32_t cs = opts->cluster_size ? opts->cluster_size : 65536;
    int version = opts->version ? opts->version : 3;
    int refbits = opts->refcount_bits ? opts->refcount_bits : 16;
    VbkQcow2State s = {0};
    VbkBlockNode bs = {0};
    bool ok;

    g_return_val_if_fail(error == NULL || *error == NULL, false);
    if (!qcow2_create_check(opts, cs, version, refbits, error))
        return false;
    /* start from an empty file; a failure only leaves stale bytes in
     * clusters nothing references */
    vbk_block_truncate(file, 0, NULL);
    if (!qcow2_create_write_initial(file, opts, cs, version, refbits, error))
        return false;
    bs.drv = &vbk_drv_qcow2;
    bs.opaque = &s;
    bs.file = file;
    g_mutex_init(&s.lock);
    g_rw_lock_init(&s.data_lock);
    ok = qcow2_open_image(&bs, error) &&
         (opts->size == 0 || qcow2_grow(&bs, opts->size, error));
    if (ok && vbk_qcow2_meta_flush(&bs) < 0)
        ok = qcow2_set_io_error(error, -EIO, _("Could not write the image"));
    qcow2_state_free(&s);
    g_mutex_clear(&s.lock);
    g_rw_lock_clear(&s.data_lock);
    return ok;
}
