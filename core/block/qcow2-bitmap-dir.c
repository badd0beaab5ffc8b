/*
 * qcow2-bitmap-dir.c: the on-disk form of qcow2's persistent bitmaps —
 * the bitmaps header extension and the bitmap directory.
 *
 * Extension 0x23852875 (exactly 24 bytes): u32 nb_bitmaps, u32 reserved
 * (0), u64 directory size, u64 directory offset (cluster-aligned).
 * Directory entries, each 8-byte aligned: u64 table offset, u32 table
 * size (entries), u32 flags (bit 0 in_use, bit 1 auto), u8 type (1),
 * u8 granularity bits, u16 name size, u32 extra data size, then the
 * name (not NUL-terminated) and zero padding.
 *
 * Each structure is decoded by one function that checks every field
 * before anything uses it, with QEMU's messages and QEMU's limits (which
 * are stricter than the specification: granularity 2^9..2^31, names up
 * to 1023 bytes, no extra data, flag bit 2 refused).  Beyond QEMU, a
 * bitmap table must lie inside the file.
 */
#include "qcow2-bitmap.h"

#include <glib/gi18n-lib.h>
#include <string.h>

#define BME_HEADER_SIZE 24

void
vbk_qcow2_bitmap_entry_free(gpointer p)
{
    VbkQcow2BitmapEntry *e = p;

    g_free(e->name);
    g_free(e);
}

VbkQcow2BitmapEntry *
vbk_qcow2_bitmap_entry_copy(const VbkQcow2BitmapEntry *e)
{
    VbkQcow2BitmapEntry *c = g_new(VbkQcow2BitmapEntry, 1);

    *c = *e;
    c->name = g_strdup(e->name);
    return c;
}

uint64_t
vbk_qcow2_bitmap_entry_size(size_t name_len)
{
    return VBK_ROUND_UP(BME_HEADER_SIZE + (uint64_t) name_len, 8);
}

/* ---- decoding ----------------------------------------------------- */

bool
vbk_qcow2_bitmaps_ext_decode(const uint8_t *data,
                             uint32_t len,
                             VbkQcow2Header *h,
                             GError **error)
{
    const char *msg = NULL;
    uint32_t nb;
    uint64_t dsize;

    if (len != 24)
        msg = _("bitmaps_ext: Invalid extension length");
    if (!msg && (h->version < 3 || !(h->autoclear & QCOW2_AUTOCLEAR_BITMAPS))) {
        h->bitmaps_stale = true;
        return true;
    }
    if (!msg && qcow2_be32(data + 4) != 0)
        msg = _("bitmaps_ext: Reserved field is not zero");
    if (msg) {
        g_set_error_literal(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                            msg);
        return false;
    }
    nb = qcow2_be32(data);
    dsize = qcow2_be64(data + 8);
    if (nb > QCOW2_MAX_BITMAPS) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("bitmaps_ext: Image has %u bitmaps, exceeding the QEMU "
                      "supported maximum of %d"),
                    nb, QCOW2_MAX_BITMAPS);
        return false;
    }
    if (nb == 0) {
        g_set_error_literal(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                            _("found bitmaps extension with zero bitmaps"));
        return false;
    }
    if (qcow2_be64(data + 16) & ((1ull << h->cluster_bits) - 1)) {
        g_set_error_literal(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                            _("bitmaps_ext: invalid bitmap directory offset"));
        return false;
    }
    if (dsize > QCOW2_MAX_BITMAP_DIR_SIZE) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("bitmaps_ext: bitmap directory size (%" G_GUINT64_FORMAT
                      ") exceeds the maximum supported size (%d)"),
                    dsize, (int) QCOW2_MAX_BITMAP_DIR_SIZE);
        return false;
    }
    h->has_bitmaps = true;
    h->nb_bitmaps = nb;
    h->bitmap_directory_size = dsize;
    h->bitmap_directory_offset = qcow2_be64(data + 16);
    return true;
}

/* QEMU's check_dir_entry(), plus: the table lies inside the file. */
static bool
entry_ok(const VbkQcow2BitmapEntry *e,
         uint8_t type,
         uint32_t cluster_bits,
         uint64_t disk_size,
         uint64_t file_size)
{
    uint64_t cs = 1ull << cluster_bits;
    uint64_t phys = (uint64_t) e->table_size << cluster_bits;
    uint64_t tbytes = (uint64_t) e->table_size * 8;

    if (e->table_offset == 0 || (e->table_offset & (cs - 1)) ||
        e->table_size == 0 || e->table_size > QCOW2_BME_MAX_TABLE_SIZE ||
        phys > QCOW2_BME_MAX_PHYS_SIZE ||
        (e->flags & QCOW2_BME_RESERVED_FLAGS) || type != QCOW2_BME_TYPE_DIRTY ||
        e->gran_bits < QCOW2_BME_MIN_GRAN_BITS ||
        e->gran_bits > QCOW2_BME_MAX_GRAN_BITS)
        return false;
    if (e->table_offset > file_size || tbytes > file_size - e->table_offset)
        return false;
    /* a consistent bitmap must cover the disk */
    if (!(e->flags & QCOW2_BME_FLAG_IN_USE) &&
        disk_size > ((phys * 8) << e->gran_bits))
        return false;
    return true;
}

static GPtrArray *
dir_fail(GPtrArray *list, GError **error, const char *msg)
{
    g_ptr_array_unref(list);
    if (msg)
        g_set_error_literal(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                            msg);
    return NULL;
}

GPtrArray *
vbk_qcow2_bitmap_dir_decode(const uint8_t *buf,
                            uint64_t size,
                            uint32_t nb,
                            uint32_t cluster_bits,
                            uint64_t disk_size,
                            uint64_t file_size,
                            GError **error)
{
    GPtrArray *list =
        g_ptr_array_new_with_free_func(vbk_qcow2_bitmap_entry_free);
    uint64_t off = 0;

    while (off < size) {
        const uint8_t *p = buf + off;
        VbkQcow2BitmapEntry e;
        uint16_t name_size;
        uint8_t type;

        if (list->len >= nb)
            return dir_fail(
                list, error,
                _("More bitmaps found than specified in header extension"));
        if (size - off < BME_HEADER_SIZE)
            return dir_fail(list, error, _("Broken bitmap directory"));
        if (qcow2_be32(p + 20) != 0)
            return dir_fail(list, error,
                            _("Bitmap extra data is not supported"));
        name_size = ((uint16_t) p[18] << 8) | p[19];
        if (vbk_qcow2_bitmap_entry_size(name_size) > size - off)
            return dir_fail(list, error, _("Broken bitmap directory"));
        e.table_offset = qcow2_be64(p);
        e.table_size = qcow2_be32(p + 8);
        e.flags = qcow2_be32(p + 12);
        type = p[16];
        e.gran_bits = p[17];
        if (name_size == 0 || name_size > QCOW2_BME_MAX_NAME_SIZE ||
            memchr(p + BME_HEADER_SIZE, 0, name_size) ||
            !entry_ok(&e, type, cluster_bits, disk_size, file_size)) {
            g_ptr_array_unref(list);
            g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                        _("Bitmap '%.*s' doesn't satisfy the constraints"),
                        (int) name_size, (const char *) p + BME_HEADER_SIZE);
            return NULL;
        }
        e.name = g_strndup((const char *) p + BME_HEADER_SIZE, name_size);
        for (guint i = 0; i < list->len; i++) {
            if (g_str_equal(((VbkQcow2BitmapEntry *) list->pdata[i])->name,
                            e.name)) {
                g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                            _("Bitmap already exists: %s"), e.name);
                g_free(e.name);
                return dir_fail(list, error, NULL);
            }
        }
        g_ptr_array_add(list, vbk_qcow2_bitmap_entry_copy(&e));
        g_free(e.name);
        off += vbk_qcow2_bitmap_entry_size(name_size);
    }
    if (list->len < nb)
        return dir_fail(
            list, error,
            _("Less bitmaps found than specified in header extension"));
    return list;
}

uint8_t *
vbk_qcow2_bitmap_dir_encode(GPtrArray *dir, uint64_t *size)
{
    uint64_t total = 0, off = 0;
    uint8_t *buf;

    for (guint i = 0; i < dir->len; i++)
        total += vbk_qcow2_bitmap_entry_size(
            strlen(((VbkQcow2BitmapEntry *) dir->pdata[i])->name));
    buf = g_malloc0(MAX(total, 1));
    for (guint i = 0; i < dir->len; i++) {
        const VbkQcow2BitmapEntry *e = dir->pdata[i];
        size_t n = strlen(e->name);

        qcow2_put_be64(buf + off, e->table_offset);
        qcow2_put_be32(buf + off + 8, e->table_size);
        qcow2_put_be32(buf + off + 12, e->flags);
        buf[off + 16] = QCOW2_BME_TYPE_DIRTY;
        buf[off + 17] = e->gran_bits;
        buf[off + 18] = n >> 8;
        buf[off + 19] = n & 0xff;
        memcpy(buf + off + BME_HEADER_SIZE, e->name, n);
        off += vbk_qcow2_bitmap_entry_size(n);
    }
    *size = total;
    return buf;
}
