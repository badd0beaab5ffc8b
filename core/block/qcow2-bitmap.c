/*
 * qcow2-bitmap.c: persistent dirty bitmaps stored in a qcow2 image.
 *
 * On disk (docs/interop/qcow2.rst): the header extension 0x23852875
 * gives the number of bitmaps and the offset and size of the bitmap
 * directory; autoclear bit 0 says the extension is consistent.  Each
 * directory entry names a bitmap and points to its bitmap table, whose
 * entries point to data clusters (0 = all clean; offset 0 with bit 0 =
 * all dirty, accepted on read, never written).  Data bit n covers the
 * bytes [n*g, (n+1)*g), least significant bit first.
 *
 * Life cycle, as QEMU's block/qcow2-bitmap.c:
 *  - open: the extension and the directory are decoded and checked by one
 *    function each.  Bitmaps flagged in_use load as inconsistent (no
 *    data read).  The others are read and attached to the node (enabled
 *    iff flagged auto); on a read-write open their in_use flag is set in
 *    the directory at once and flushed, so a crash leaves them in_use and
 *    they reload as inconsistent — a bitmap can never silently lose bits.
 *    Read-only opens load read-only bitmaps and write nothing.
 *  - autoclear bit 0 clear (or a v2 image): some program without bitmap
 *    support wrote the image; the extension is ignored with QEMU's
 *    warning and a read-write open drops it (its clusters leak).
 *  - close: every persistent, consistent, writable bitmap is written to
 *    NEW clusters (a data cluster only where a bit is set), then the new
 *    directory, then the header (extension + autoclear bit) is switched,
 *    each step flushed; only then are the old clusters freed.  A crash at
 *    any point leaves either the old structure (bitmaps in_use) or the
 *    new one, plus leaked clusters at worst.  Inconsistent bitmaps stay
 *    on disk untouched; new bitmaps are appended at the directory's tail
 *    in the node's (newest first) order.
 *  - remove: the directory is rewritten at once without the bitmap.
 *
 * Locking: the node's bitmap lock is taken before VbkQcow2State.lock.
 */
#include "qcow2-bitmap.h"

#include <errno.h>
#include <glib/gi18n-lib.h>
#include <string.h>

#include "dirty.h"

typedef struct {
    uint64_t offset;
    uint64_t n; /* clusters */
} QcowRun;

/* ---- metadata updates -------------------------------------------- */

/*
 * Rewrite the extension area of cluster 0: every extension but the
 * bitmaps one is kept, the bitmaps extension is (re)added when @nb > 0,
 * and autoclear bit 0 follows it.  One write of the header region.
 */
static int
header_set_bitmaps(VbkBlockNode *bs, uint32_t nb, uint64_t dsize, uint64_t doff)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t limit = s->hdr.backing_file_offset ? s->hdr.backing_file_offset
                                                : s->cluster_size;
    uint64_t hl = s->hdr.header_length, off = hl, out = 0, old_end;
    g_autofree uint8_t *buf = g_malloc0(limit);
    g_autofree uint8_t *ext = g_malloc0(limit);
    uint64_t autoclear = s->hdr.autoclear;
    int ret = vbk_block_pread(bs->file, 0, limit, buf);

    if (ret < 0)
        return ret;
    while (off + 8 <= limit) {
        uint32_t type = qcow2_be32(buf + off);
        uint64_t len = VBK_ROUND_UP((uint64_t) qcow2_be32(buf + off + 4), 8);

        if (type == QCOW2_EXT_END || len > limit - off - 8)
            break;
        if (type != QCOW2_EXT_BITMAPS) {
            memcpy(ext + out, buf + off, 8 + len);
            out += 8 + len;
        }
        off += 8 + len;
    }
    old_end = MIN(off + 8, limit);
    if (nb) {
        if (out + 8 + 24 + 8 > limit - hl)
            return -ENOSPC;
        qcow2_put_be32(ext + out, QCOW2_EXT_BITMAPS);
        qcow2_put_be32(ext + out + 4, 24);
        qcow2_put_be32(ext + out + 8, nb);
        qcow2_put_be64(ext + out + 16, dsize);
        qcow2_put_be64(ext + out + 24, doff);
        out += 32;
        autoclear |= QCOW2_AUTOCLEAR_BITMAPS;
    } else {
        autoclear &= ~QCOW2_AUTOCLEAR_BITMAPS;
    }
    out += 8; /* end marker */
    memset(buf + hl, 0, MAX(old_end, hl + out) - hl);
    memcpy(buf + hl, ext, out);
    if (s->hdr.version >= 3)
        qcow2_put_be64(buf + 88, autoclear);
    ret = vbk_block_pwrite(bs->file, 0, MAX(old_end, hl + out), buf, 0);
    if (ret < 0)
        return ret;
    s->hdr.autoclear = autoclear;
    s->hdr.has_bitmaps = nb > 0;
    s->hdr.bitmaps_stale = false;
    s->hdr.nb_bitmaps = nb;
    s->hdr.bitmap_directory_size = nb ? dsize : 0;
    s->hdr.bitmap_directory_offset = nb ? doff : 0;
    return 0;
}

static int
alloc_write(VbkBlockNode *bs,
            const uint8_t *buf,
            uint64_t bytes,
            GArray *allocated,
            uint64_t *offset)
{
    VbkQcow2State *s = bs->opaque;
    QcowRun run = {0, VBK_DIV_ROUND_UP(bytes, s->cluster_size)};
    int64_t off = vbk_qcow2_alloc_clusters(bs, run.n);
    int ret;

    if (off < 0)
        return (int) off;
    run.offset = off;
    g_array_append_val(allocated, run);
    ret = vbk_block_pwrite(bs->file, off, run.n * s->cluster_size, buf, 0);
    if (ret < 0)
        return ret;
    vbk_qcow2_note_file_end(s, off + run.n * s->cluster_size);
    *offset = off;
    return 0;
}

static void
free_runs(VbkBlockNode *bs, GArray *runs)
{
    for (guint i = 0; i < runs->len; i++) {
        QcowRun *r = &g_array_index(runs, QcowRun, i);
        vbk_qcow2_free_clusters(bs, r->offset, r->n);
    }
    g_array_set_size(runs, 0);
}

/* Does @off name a data cluster we may read or free? */
static bool
table_entry_ok(VbkQcow2State *s, uint64_t entry)
{
    uint64_t off = entry & QCOW2_OFFSET_MASK;

    if (entry & QCOW2_BME_TABLE_RESERVED)
        return false;
    if (off == 0)
        return true;
    return !(entry & QCOW2_BME_TABLE_ALL_ONES) &&
           vbk_qcow2_data_offset_valid(s, off) &&
           off + s->cluster_size <= s->file_size;
}

/* The table of @e, host order entries; NULL on error (-errno in *ret). */
static uint64_t *
table_read(VbkBlockNode *bs, const VbkQcow2BitmapEntry *e, int *ret)
{
    uint64_t bytes = (uint64_t) e->table_size * 8;
    g_autofree uint8_t *raw = g_try_malloc(bytes);
    uint64_t *t = g_try_new(uint64_t, e->table_size);

    if (!raw || !t) {
        g_free(t);
        *ret = -ENOMEM;
        return NULL;
    }
    *ret = vbk_block_pread(bs->file, e->table_offset, bytes, raw);
    if (*ret < 0) {
        g_free(t);
        return NULL;
    }
    for (uint32_t i = 0; i < e->table_size; i++)
        t[i] = qcow2_table_get(raw, i);
    return t;
}

/* Queue the clusters of @e (table and valid data clusters) to @runs. */
static void
queue_entry_clusters(VbkBlockNode *bs,
                     const VbkQcow2BitmapEntry *e,
                     GArray *runs)
{
    VbkQcow2State *s = bs->opaque;
    int ret;
    g_autofree uint64_t *t = table_read(bs, e, &ret);
    QcowRun r;

    if (!t)
        return; /* leak rather than guess */
    for (uint32_t i = 0; i < e->table_size; i++) {
        uint64_t off = t[i] & QCOW2_OFFSET_MASK;
        if (off && table_entry_ok(s, t[i])) {
            r = (QcowRun){off, 1};
            g_array_append_val(runs, r);
        }
    }
    r = (QcowRun){
        e->table_offset,
        VBK_DIV_ROUND_UP((uint64_t) e->table_size * 8, s->cluster_size)};
    g_array_append_val(runs, r);
}

/*
 * Make @dir the image's directory: written to new clusters (none when
 * empty), flushed, header switched and flushed; then the old directory
 * and @old_runs are freed.  Takes @dir.  Caller holds both locks.
 */
static int
dir_commit(VbkBlockNode *bs,
           GPtrArray *dir,
           GArray *old_runs,
           GArray *allocated)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t dsize = 0, doff = 0;
    g_autofree uint8_t *buf = vbk_qcow2_bitmap_dir_encode(dir, &dsize);
    g_autofree uint8_t *padded = NULL;
    QcowRun old = {
        s->hdr.bitmap_directory_offset,
        VBK_DIV_ROUND_UP(s->hdr.bitmap_directory_size, s->cluster_size)};
    bool had = s->hdr.has_bitmaps;
    int ret;

    if (dir->len) {
        padded = g_malloc0(VBK_ROUND_UP(dsize, s->cluster_size));
        memcpy(padded, buf, dsize);
        ret = alloc_write(bs, padded, dsize, allocated, &doff);
        if (ret < 0)
            goto fail;
    }
    ret = vbk_qcow2_meta_flush(bs); /* with the new clusters' refcounts */
    if (ret >= 0)
        ret = header_set_bitmaps(bs, dir->len, dsize, doff);
    if (ret < 0)
        goto fail;
    /* the header may now point to them: never free them on error */
    g_array_set_size(allocated, 0);
    ret = vbk_block_flush(bs->file);
    if (ret < 0)
        goto fail;
    if (had && old.offset)
        g_array_append_val(old_runs, old);
    free_runs(bs, old_runs);
    g_clear_pointer(&s->bitmap_dir, g_ptr_array_unref);
    s->bitmap_dir = dir;
    return vbk_block_flush(bs->file);

fail:
    g_ptr_array_unref(dir);
    return ret;
}

/* ---- load ------------------------------------------------------------ */

static bool
load_fail(GError **error, const char *name, int ret)
{
    /* TRANSLATORS: %1$s is a bitmap name, %2$s strerror() */
    g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                _("Could not read bitmap '%1$s' from image: %2$s"), name,
                g_strerror(-ret));
    return false;
}

/* Read the data of @e into @bm. */
static bool
load_data(VbkBlockNode *bs,
          const VbkQcow2BitmapEntry *e,
          VbkDirtyBitmap *bm,
          GError **error)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t size = s->hdr.size;
    uint64_t per = (s->cluster_size * 8) << e->gran_bits;
    g_autofree uint8_t *cbuf = g_malloc(s->cluster_size);
    g_autofree uint64_t *t = NULL;
    int ret;

    for (uint64_t off = e->table_offset;
         off < e->table_offset + (uint64_t) e->table_size * 8;
         off += s->cluster_size) {
        if (!vbk_qcow2_data_offset_valid(s, off)) {
            g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                        _("Bitmap '%s' doesn't satisfy the constraints"),
                        e->name);
            return false;
        }
    }
    t = table_read(bs, e, &ret);
    for (uint32_t i = 0; t && i < e->table_size; i++) {
        if (!table_entry_ok(s, t[i]))
            ret = -EINVAL;
    }
    if (!t || ret < 0) {
        /* TRANSLATORS: %1$s is a bitmap name, %2$s strerror() */
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("Could not read bitmap_table table from image for bitmap "
                      "'%1$s': %2$s"),
                    e->name, g_strerror(-ret));
        return false;
    }
    for (uint32_t i = 0; i < e->table_size; i++) {
        uint64_t start = (uint64_t) i * per, len;
        uint64_t off = t[i] & QCOW2_OFFSET_MASK;

        if (start >= size)
            continue;
        len = MIN(per, size - start);
        if (off == 0 && (t[i] & QCOW2_BME_TABLE_ALL_ONES)) {
            vbk_dirty_bitmap_deserialize_ones(bm, start, len);
        } else if (off == 0) {
            vbk_dirty_bitmap_deserialize_zeroes(bm, start, len);
        } else {
            ret = vbk_block_pread(bs->file, off, s->cluster_size, cbuf);
            if (ret < 0)
                return load_fail(error, e->name, ret);
            vbk_dirty_bitmap_deserialize_part(bm, cbuf, start, len);
        }
    }
    return true;
}

/* Autoclear bit 0 clear: QEMU's warning; a RW open drops the extension. */
static bool
load_stale(VbkBlockNode *bs, GError **error)
{
    VbkQcow2State *s = bs->opaque;
    int ret;

    if (s->hdr.version < 3)
        g_printerr(
            _("warning: This qcow2 v2 image contains bitmaps, but they may "
              "have been modified by a program without persistent bitmap "
              "support; so now they must all be considered inconsistent\n"));
    else
        g_printerr(_("warning: a program lacking bitmap support modified this "
                     "file, so all bitmaps are now considered inconsistent\n"));
    g_printerr(_("Some clusters may be leaked, run 'qemu-img check -r' on the "
                 "image file to fix.\n"));
    if (!s->writable || s->hdr.version < 3)
        return true;
    g_mutex_lock(&s->lock);
    ret = header_set_bitmaps(bs, 0, 0, 0);
    if (ret >= 0)
        ret = vbk_block_flush(bs->file);
    g_mutex_unlock(&s->lock);
    if (ret < 0) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_IO,
                    _("Could not update the header: %s"), g_strerror(-ret));
        return false;
    }
    return true;
}

static GPtrArray *
load_dir(VbkBlockNode *bs, GError **error)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t size = s->hdr.bitmap_directory_size;
    g_autofree uint8_t *buf = g_try_malloc(MAX(size, 1));
    int ret;

    if (!buf) {
        g_set_error_literal(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_IO,
                            g_strerror(ENOMEM));
        return NULL;
    }
    ret = size ? vbk_block_pread(bs->file, s->hdr.bitmap_directory_offset, size,
                                 buf)
               : 0;
    if (ret < 0) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_IO,
                    _("Failed to read bitmap directory: %s"), g_strerror(-ret));
        return NULL;
    }
    return vbk_qcow2_bitmap_dir_decode(buf, size, s->hdr.nb_bitmaps,
                                       s->cluster_bits, s->hdr.size,
                                       s->file_size, error);
}

/* Mark every loaded bitmap in_use in the directory, in place (caller
 * holds VbkQcow2State.lock). */
static bool
mark_in_use_locked(VbkBlockNode *bs, GPtrArray *dir, GError **error)
{
    VbkQcow2State *s = bs->opaque;
    g_autofree uint8_t *buf = NULL;
    uint64_t size;
    int ret;

    for (guint i = 0; i < dir->len; i++)
        ((VbkQcow2BitmapEntry *) dir->pdata[i])->flags |= QCOW2_BME_FLAG_IN_USE;
    buf = vbk_qcow2_bitmap_dir_encode(dir, &size);
    ret = vbk_block_pwrite(bs->file, s->hdr.bitmap_directory_offset, size, buf,
                           0);
    if (ret >= 0)
        ret = vbk_block_flush(bs->file);
    if (ret < 0) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_IO,
                    _("Could not update bitmap directory: %s"),
                    g_strerror(-ret));
        return false;
    }
    return true;
}

static bool
load_mark_in_use(VbkBlockNode *bs, GPtrArray *dir, GError **error)
{
    VbkQcow2State *s = bs->opaque;
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&s->lock);

    return mark_in_use_locked(bs, dir, error);
}

bool
vbk_qcow2_bitmaps_load(VbkBlockNode *bs, GError **error)
{
    VbkQcow2State *s = bs->opaque;
    g_autoptr(GPtrArray) dir = NULL;
    g_autoptr(GPtrArray) bms = NULL;
    bool any_loaded = false;

    if (s->hdr.bitmaps_stale)
        return load_stale(bs, error);
    if (!s->hdr.has_bitmaps)
        return true;
    dir = load_dir(bs, error);
    if (!dir)
        return false;
    bms =
        g_ptr_array_new_with_free_func((GDestroyNotify) vbk_dirty_bitmap_unref);
    for (guint i = 0; i < dir->len; i++) {
        const VbkQcow2BitmapEntry *e = dir->pdata[i];
        VbkDirtyBitmap *bm = vbk_dirty_bitmap_new(e->name, 1ull << e->gran_bits,
                                                  s->hdr.size, error);
        if (!bm)
            return false;
        g_ptr_array_add(bms, bm);
        vbk_dirty_bitmap_set_persistent(bm, true);
        if (e->flags & QCOW2_BME_FLAG_IN_USE) {
            vbk_dirty_bitmap_set_inconsistent(bm);
            continue;
        }
        if (!load_data(bs, e, bm, error))
            return false;
        vbk_dirty_bitmap_set_enabled(bm, e->flags & QCOW2_BME_FLAG_AUTO);
        vbk_dirty_bitmap_set_readonly(bm, !s->writable);
        any_loaded = true;
    }
    if (s->writable && any_loaded && !load_mark_in_use(bs, dir, error))
        return false;
    vbk_block_dirty_lock(bs);
    for (guint i = 0; i < bms->len; i++)
        vbk_block_dirty_attach_locked(bs, bms->pdata[i]);
    s->bitmap_dir = g_steal_pointer(&dir);
    vbk_block_dirty_unlock(bs);
    return true;
}

void
vbk_qcow2_bitmaps_set_readonly(VbkBlockNode *bs, bool readonly)
{
    GPtrArray *bms;

    vbk_block_dirty_lock(bs);
    bms = vbk_block_dirty_bitmaps_locked(bs);
    for (guint i = 0; i < bms->len; i++) {
        if (vbk_dirty_bitmap_persistent(bms->pdata[i]))
            vbk_dirty_bitmap_set_readonly(bms->pdata[i], readonly);
    }
    vbk_block_dirty_unlock(bs);
}

bool
vbk_qcow2_bitmaps_reopen_rw(VbkBlockNode *bs, GError **error)
{
    VbkQcow2State *s = bs->opaque;
    bool ok = true;
    bool any = false;

    vbk_block_dirty_lock(bs);
    g_mutex_lock(&s->lock);
    for (guint i = 0; s->bitmap_dir && i < s->bitmap_dir->len; i++) {
        const VbkQcow2BitmapEntry *e = s->bitmap_dir->pdata[i];
        VbkDirtyBitmap *bm = vbk_block_dirty_find_locked(bs, e->name);

        any |= bm && !(e->flags & QCOW2_BME_FLAG_IN_USE);
    }
    if (any)
        ok = mark_in_use_locked(bs, s->bitmap_dir, error);
    g_mutex_unlock(&s->lock);
    for (guint i = 0; ok && i < bs->dirty_bitmaps->len; i++) {
        VbkDirtyBitmap *bm = bs->dirty_bitmaps->pdata[i];

        if (vbk_dirty_bitmap_persistent(bm))
            vbk_dirty_bitmap_set_readonly(bm, false);
    }
    vbk_block_dirty_unlock(bs);
    return ok;
}

void
vbk_qcow2_bitmaps_format_info(VbkQcow2State *s, VbkFormatInfo *info)
{
    for (guint i = 0; s->bitmap_dir && i < s->bitmap_dir->len; i++) {
        const VbkQcow2BitmapEntry *e = s->bitmap_dir->pdata[i];
        VbkFormatBitmap *b = vbk_format_info_add_bitmap(info, e->name);

        b->granularity = 1ull << e->gran_bits;
        b->in_use = e->flags & QCOW2_BME_FLAG_IN_USE;
        b->enabled = e->flags & QCOW2_BME_FLAG_AUTO;
    }
}

void
vbk_qcow2_bitmaps_free(VbkQcow2State *s)
{
    g_clear_pointer(&s->bitmap_dir, g_ptr_array_unref);
}

/* ---- store ----------------------------------------------------------- */

/* Write @bm's data and table to new clusters; fill @out. */
static int
store_one(VbkBlockNode *bs,
          VbkDirtyBitmap *bm,
          GArray *allocated,
          VbkQcow2BitmapEntry *out)
{
    VbkQcow2State *s = bs->opaque;
    uint64_t g = vbk_dirty_bitmap_granularity(bm);
    uint64_t size = vbk_dirty_bitmap_size(bm);
    uint32_t gb = g_bit_nth_lsf(g, -1);
    uint64_t per = (s->cluster_size * 8) << gb;
    uint64_t n = MAX(1, VBK_DIV_ROUND_UP(size, per));
    g_autofree uint8_t *table =
        g_try_malloc0(VBK_ROUND_UP(n * 8, s->cluster_size));
    g_autofree uint8_t *cbuf = g_malloc(s->cluster_size);
    uint64_t toff;
    int ret;

    if (!table || n > QCOW2_BME_MAX_TABLE_SIZE)
        return -ENOMEM;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t start = i * per, len, off;

        if (start >= size)
            break;
        len = MIN(per, size - start);
        if (vbk_dirty_bitmap_range_is_clean(bm, start, len))
            continue;
        memset(cbuf, 0, s->cluster_size);
        vbk_dirty_bitmap_serialize_part(bm, cbuf, start, len);
        ret = alloc_write(bs, cbuf, s->cluster_size, allocated, &off);
        if (ret < 0)
            return ret;
        qcow2_table_set(table, i, off);
    }
    ret = alloc_write(bs, table, n * 8, allocated, &toff);
    if (ret < 0)
        return ret;
    out->table_offset = toff;
    out->table_size = n;
    out->gran_bits = gb;
    out->flags = vbk_dirty_bitmap_enabled(bm) ? QCOW2_BME_FLAG_AUTO : 0;
    out->name = g_strdup(vbk_dirty_bitmap_name(bm));
    return 0;
}

static bool
storable(VbkDirtyBitmap *bm)
{
    return vbk_dirty_bitmap_name(bm) && vbk_dirty_bitmap_persistent(bm) &&
           !vbk_dirty_bitmap_inconsistent(bm) && !vbk_dirty_bitmap_readonly(bm);
}

static int
store_locked(VbkBlockNode *bs, GArray *allocated, GArray *old_runs)
{
    VbkQcow2State *s = bs->opaque;
    GPtrArray *bms = vbk_block_dirty_bitmaps_locked(bs);
    GPtrArray *old = s->bitmap_dir;
    g_autoptr(GPtrArray) dir =
        g_ptr_array_new_with_free_func(vbk_qcow2_bitmap_entry_free);
    guint written = 0;
    int ret;

    for (guint i = 0; old && i < old->len; i++) {
        VbkQcow2BitmapEntry *e = old->pdata[i], ne = {0};
        VbkDirtyBitmap *bm = vbk_block_dirty_find_locked(bs, e->name);

        if (!bm || !storable(bm)) {
            g_ptr_array_add(dir, vbk_qcow2_bitmap_entry_copy(e));
            continue;
        }
        if ((ret = store_one(bs, bm, allocated, &ne)) < 0)
            return ret;
        g_ptr_array_add(dir, g_memdup2(&ne, sizeof(ne)));
        queue_entry_clusters(bs, e, old_runs);
        written++;
    }
    for (guint i = 0; i < bms->len; i++) {
        VbkDirtyBitmap *bm = bms->pdata[i];
        VbkQcow2BitmapEntry ne = {0};
        bool known = false;

        for (guint j = 0; old && j < old->len && !known; j++)
            known = g_strcmp0(((VbkQcow2BitmapEntry *) old->pdata[j])->name,
                              vbk_dirty_bitmap_name(bm)) == 0;
        if (known || !storable(bm))
            continue;
        if ((ret = store_one(bs, bm, allocated, &ne)) < 0)
            return ret;
        g_ptr_array_add(dir, g_memdup2(&ne, sizeof(ne)));
        written++;
    }
    if (!written)
        return 0;
    ret = vbk_block_flush(bs->file);
    if (ret < 0)
        return ret;
    return dir_commit(bs, g_steal_pointer(&dir), old_runs, allocated);
}

bool
vbk_qcow2_bitmaps_store(VbkBlockNode *bs, GError **error)
{
    VbkQcow2State *s = bs->opaque;
    g_autoptr(GArray) allocated = g_array_new(FALSE, FALSE, sizeof(QcowRun));
    g_autoptr(GArray) old_runs = g_array_new(FALSE, FALSE, sizeof(QcowRun));
    int ret;

    if (!s->writable || !bs->dirty_bitmaps)
        return true;
    vbk_block_dirty_lock(bs);
    g_mutex_lock(&s->lock);
    ret = store_locked(bs, allocated, old_runs);
    if (ret < 0)
        free_runs(bs, allocated); /* the old structure is still in place */
    g_mutex_unlock(&s->lock);
    vbk_block_dirty_unlock(bs);
    if (ret < 0) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_IO,
                    _("Failed to store dirty bitmaps: %s"), g_strerror(-ret));
        return false;
    }
    return true;
}

/* ---- driver hooks ------------------------------------------------------ */

bool
vbk_qcow2_bitmaps_truncate_check(VbkBlockNode *bs, GError **error)
{
    VbkQcow2State *s = bs->opaque;
    bool ok = true;

    vbk_block_dirty_lock(bs);
    for (guint i = 0; ok && s->bitmap_dir && i < s->bitmap_dir->len; i++) {
        const VbkQcow2BitmapEntry *e = s->bitmap_dir->pdata[i];
        VbkDirtyBitmap *bm = vbk_block_dirty_find_locked(bs, e->name);

        if (!bm) {
            g_set_error_literal(error, VBK_BLOCK_ERROR,
                                VBK_BLOCK_ERROR_UNSUPPORTED,
                                _("Cannot resize qcow2 with persistent bitmaps "
                                  "that were not loaded into memory"));
            ok = false;
        } else {
            ok = vbk_dirty_bitmap_check(bm, VBK_DIRTY_BITMAP_DEFAULT, error);
        }
    }
    vbk_block_dirty_unlock(bs);
    return ok;
}

static const char *
can_store_why(VbkQcow2State *s, const char *name, uint64_t granularity)
{
    uint32_t gb = g_bit_nth_lsf(granularity, -1);
    uint64_t len = s->hdr.size;
    uint64_t bytes = VBK_DIV_ROUND_UP(VBK_DIV_ROUND_UP(len, granularity), 8);

    if (s->hdr.version < 3)
        return _("Cannot store dirty bitmaps in qcow2 v2 files");
    if (gb > QCOW2_BME_MAX_GRAN_BITS)
        return _("Granularity exceeds maximum (2147483648 bytes)");
    if (gb < QCOW2_BME_MIN_GRAN_BITS)
        return _("Granularity is under minimum (512 bytes)");
    if (bytes > QCOW2_BME_MAX_PHYS_SIZE ||
        bytes > (uint64_t) QCOW2_BME_MAX_TABLE_SIZE * s->cluster_size)
        return _("Too much space will be occupied by the bitmap. Use larger "
                 "granularity");
    if (strlen(name) > QCOW2_BME_MAX_NAME_SIZE)
        return _("Name length exceeds maximum (1023 characters)");
    if (!s->hdr.has_bitmaps)
        return NULL;
    if (s->hdr.nb_bitmaps >= QCOW2_MAX_BITMAPS)
        return _("Maximum number of persistent bitmaps is already reached");
    if (s->hdr.bitmap_directory_size +
            vbk_qcow2_bitmap_entry_size(strlen(name)) >
        QCOW2_MAX_BITMAP_DIR_SIZE)
        return _("Not enough space in the bitmap directory");
    return NULL;
}

bool
vbk_qcow2_can_store_new_bitmap(VbkBlockNode *bs,
                               const char *name,
                               uint64_t granularity,
                               GError **error)
{
    VbkQcow2State *s = bs->opaque;
    const char *why;

    g_mutex_lock(&s->lock);
    why = can_store_why(s, name, granularity);
    g_mutex_unlock(&s->lock);
    if (why) {
        /* TRANSLATORS: %1$s bitmap, %2$s node, %3$s the reason */
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("Can't make bitmap '%1$s' persistent in '%2$s': %3$s"),
                    name, bs->node_name, why);
        return false;
    }
    return true;
}

bool
vbk_qcow2_remove_persistent_bitmap(VbkBlockNode *bs,
                                   const char *name,
                                   GError **error)
{
    VbkQcow2State *s = bs->opaque;
    g_autoptr(GArray) allocated = g_array_new(FALSE, FALSE, sizeof(QcowRun));
    g_autoptr(GArray) old_runs = g_array_new(FALSE, FALSE, sizeof(QcowRun));
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&s->lock);
    GPtrArray *dir;
    int found = -1, ret;

    for (guint i = 0; s->bitmap_dir && i < s->bitmap_dir->len; i++) {
        if (g_str_equal(((VbkQcow2BitmapEntry *) s->bitmap_dir->pdata[i])->name,
                        name))
            found = i;
    }
    if (found < 0)
        return true; /* never stored */
    dir = g_ptr_array_new_with_free_func(vbk_qcow2_bitmap_entry_free);
    for (guint i = 0; i < s->bitmap_dir->len; i++) {
        if ((int) i != found)
            g_ptr_array_add(
                dir, vbk_qcow2_bitmap_entry_copy(s->bitmap_dir->pdata[i]));
    }
    queue_entry_clusters(bs, s->bitmap_dir->pdata[found], old_runs);
    ret = dir_commit(bs, dir, old_runs, allocated);
    if (ret < 0) {
        free_runs(bs, allocated);
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_IO,
                    _("Failed to remove bitmap '%1$s' from the image: %2$s"),
                    name, g_strerror(-ret));
        return false;
    }
    return true;
}
