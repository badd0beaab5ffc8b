/*
 * dirty-bitmap.c: dirty bitmaps over a byte range, with QEMU's flags,
 * checks and successor protocol.
 *
 * A VbkDirtyBitmap wraps a VbkHBitmap of ceil(size / granularity)
 * granules and converts bytes to granules: the byte range [off, off+len)
 * is the granules off >> k .. (off + len - 1) >> k, k = log2(granularity).
 * For a 64 MiB node at 64 KiB granularity, writing 4 KiB at 2 MiB + 8 KiB
 * dirties granule 32 and adds 65536 to the count.
 *
 * The successor protocol lets a backup job freeze a bitmap while new
 * writes keep being recorded:
 *
 *   before         bm "b" (enabled)                         node: [b]
 *   create_succ.   bm "b" (busy, disabled) -> anon (enabled) node: [anon, b]
 *   abdicate       "b" is now the former anon; old bm spent  node: [b]
 *   reclaim        bm "b" |= anon, enabled again, not busy   node: [b]
 *
 * (the node inserts at the head of its list, so query shows the
 * successor first, as QEMU does).
 */
#include "dirty-bitmap.h"

#include <glib/gi18n-lib.h>
#include <inttypes.h>
#include <string.h>
#include <vbackup/vbackup.h>

struct VbkDirtyBitmap {
    gatomicrefcount ref;
    char *name;         /* NULL: anonymous */
    uint64_t size;      /* bytes */
    unsigned gran_bits; /* granularity = 1 << gran_bits */
    VbkHBitmap *hb;
    VbkDirtyBitmap *successor; /* a reference */
    bool disabled;
    bool busy;
    bool readonly;
    bool persistent;
    bool inconsistent;
};

#define MIN_GRANULARITY  512
#define MAX_GRANULARITY  (UINT64_C(1) << 31)
#define DEFAULT_GRAN_MIN 4096
#define DEFAULT_GRAN_MAX 65536

static uint64_t
granules_for(uint64_t size, unsigned gran_bits)
{
    return (size >> gran_bits) +
           ((size & ((UINT64_C(1) << gran_bits) - 1)) != 0);
}

const char *
vbk_dirty_bitmap_inconsistent_hint(void)
{
    return _("Try block-dirty-bitmap-remove to delete this bitmap from disk");
}

VbkDirtyBitmap *
vbk_dirty_bitmap_new(const char *name,
                     uint64_t granularity,
                     uint64_t size,
                     GError **error)
{
    VbkDirtyBitmap *bm;

    g_return_val_if_fail(error == NULL || *error == NULL, NULL);
    if (granularity < MIN_GRANULARITY || granularity > MAX_GRANULARITY ||
        (granularity & (granularity - 1))) {
        g_set_error_literal(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                            _("Granularity must be power of 2 and at least "
                              "512"));
        return NULL;
    }
    if (name && strlen(name) > VBK_DIRTY_BITMAP_MAX_NAME_SIZE) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("Bitmap name too long: %s"), name);
        return NULL;
    }
    bm = g_new0(VbkDirtyBitmap, 1);
    g_atomic_ref_count_init(&bm->ref);
    bm->name = g_strdup(name);
    bm->size = size;
    bm->gran_bits = (unsigned) __builtin_ctzll(granularity);
    bm->hb = vbk_hbitmap_new(granules_for(size, bm->gran_bits));
    return bm;
}

VbkDirtyBitmap *
vbk_dirty_bitmap_ref(VbkDirtyBitmap *bm)
{
    g_atomic_ref_count_inc(&bm->ref);
    return bm;
}

void
vbk_dirty_bitmap_unref(VbkDirtyBitmap *bm)
{
    if (!bm || !g_atomic_ref_count_dec(&bm->ref))
        return;
    vbk_dirty_bitmap_unref(bm->successor);
    vbk_hbitmap_free(bm->hb);
    g_free(bm->name);
    g_free(bm);
}

uint64_t
vbk_dirty_bitmap_default_granularity(uint64_t cluster_size)
{
    if (cluster_size == 0)
        return DEFAULT_GRAN_MAX;
    return CLAMP(cluster_size, DEFAULT_GRAN_MIN, DEFAULT_GRAN_MAX);
}

const char *
vbk_dirty_bitmap_name(const VbkDirtyBitmap *bm)
{
    return bm->name;
}

uint64_t
vbk_dirty_bitmap_granularity(const VbkDirtyBitmap *bm)
{
    return UINT64_C(1) << bm->gran_bits;
}

uint64_t
vbk_dirty_bitmap_size(const VbkDirtyBitmap *bm)
{
    return bm->size;
}

bool
vbk_dirty_bitmap_enabled(const VbkDirtyBitmap *bm)
{
    return !bm->disabled;
}

bool
vbk_dirty_bitmap_recording(const VbkDirtyBitmap *bm)
{
    return !bm->disabled || (bm->successor && !bm->successor->disabled);
}

bool
vbk_dirty_bitmap_busy(const VbkDirtyBitmap *bm)
{
    return bm->busy;
}

bool
vbk_dirty_bitmap_readonly(const VbkDirtyBitmap *bm)
{
    return bm->readonly;
}

bool
vbk_dirty_bitmap_persistent(const VbkDirtyBitmap *bm)
{
    return bm->persistent;
}

bool
vbk_dirty_bitmap_inconsistent(const VbkDirtyBitmap *bm)
{
    return bm->inconsistent;
}

VbkDirtyBitmap *
vbk_dirty_bitmap_successor(const VbkDirtyBitmap *bm)
{
    return bm->successor;
}

void
vbk_dirty_bitmap_set_enabled(VbkDirtyBitmap *bm, bool enabled)
{
    bm->disabled = !enabled;
}

void
vbk_dirty_bitmap_set_busy(VbkDirtyBitmap *bm, bool busy)
{
    bm->busy = busy;
}

void
vbk_dirty_bitmap_set_readonly(VbkDirtyBitmap *bm, bool readonly)
{
    bm->readonly = readonly;
}

void
vbk_dirty_bitmap_set_persistent(VbkDirtyBitmap *bm, bool persistent)
{
    bm->persistent = persistent;
}

void
vbk_dirty_bitmap_set_inconsistent(VbkDirtyBitmap *bm)
{
    bm->inconsistent = true;
    bm->disabled = true;
}

gboolean
vbk_dirty_bitmap_check(const VbkDirtyBitmap *bm,
                       VbkDirtyBitmapCheckFlags flags,
                       GError **error)
{
    /* QEMU prints an anonymous bitmap's NULL name as "(null)" */
    const char *name = bm->name ? bm->name : "(null)";

    g_return_val_if_fail(error == NULL || *error == NULL, FALSE);
    if ((flags & VBK_DIRTY_BITMAP_BUSY) && bm->busy) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_IN_USE,
                    _("Bitmap '%s' is currently in use by another operation "
                      "and cannot be used"),
                    name);
        return FALSE;
    }
    if ((flags & VBK_DIRTY_BITMAP_RO) && bm->readonly) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_FAILED,
                    _("Bitmap '%s' is readonly and cannot be modified"), name);
        return FALSE;
    }
    if ((flags & VBK_DIRTY_BITMAP_INCONSISTENT) && bm->inconsistent) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_FAILED,
                    _("Bitmap '%s' is inconsistent and cannot be used"), name);
        return FALSE;
    }
    return TRUE;
}

/* Granules overlapping the bytes [offset, offset + bytes), clipped to the
 * bitmap; FALSE if none. */
static gboolean
byte_range(const VbkDirtyBitmap *bm,
           uint64_t offset,
           uint64_t bytes,
           uint64_t *first,
           uint64_t *count)
{
    uint64_t last;

    if (bytes == 0 || offset >= bm->size)
        return FALSE;
    bytes = MIN(bytes, bm->size - offset);
    *first = offset >> bm->gran_bits;
    last = (offset + bytes - 1) >> bm->gran_bits;
    *count = last - *first + 1;
    return TRUE;
}

void
vbk_dirty_bitmap_mark(VbkDirtyBitmap *bm, uint64_t offset, uint64_t bytes)
{
    uint64_t first, count;

    g_return_if_fail(!bm->readonly);
    if (byte_range(bm, offset, bytes, &first, &count))
        vbk_hbitmap_set(bm->hb, first, count);
}

void
vbk_dirty_bitmap_reset(VbkDirtyBitmap *bm, uint64_t offset, uint64_t bytes)
{
    uint64_t gmask = vbk_dirty_bitmap_granularity(bm) - 1;
    uint64_t first, count;

    g_return_if_fail(!bm->readonly);
    g_return_if_fail((offset & gmask) == 0);
    g_return_if_fail((bytes & gmask) == 0 || bytes >= bm->size - offset);
    if (byte_range(bm, offset, bytes, &first, &count))
        vbk_hbitmap_reset(bm->hb, first, count);
}

bool
vbk_dirty_bitmap_test(const VbkDirtyBitmap *bm, uint64_t offset)
{
    if (offset >= bm->size)
        return false;
    return vbk_hbitmap_test(bm->hb, offset >> bm->gran_bits);
}

uint64_t
vbk_dirty_bitmap_count(const VbkDirtyBitmap *bm)
{
    return vbk_hbitmap_count(bm->hb) << bm->gran_bits;
}

int64_t
vbk_dirty_bitmap_next_dirty(const VbkDirtyBitmap *bm,
                            uint64_t offset,
                            uint64_t bytes)
{
    uint64_t first, count;
    int64_t g;

    if (!byte_range(bm, offset, bytes, &first, &count))
        return -1;
    g = vbk_hbitmap_next_dirty(bm->hb, first, first + count);
    if (g < 0)
        return -1;
    return (int64_t) MAX((uint64_t) g << bm->gran_bits, offset);
}

int64_t
vbk_dirty_bitmap_next_clean(const VbkDirtyBitmap *bm,
                            uint64_t offset,
                            uint64_t bytes)
{
    uint64_t first, count;
    int64_t g;

    if (!byte_range(bm, offset, bytes, &first, &count))
        return -1;
    g = vbk_hbitmap_next_clean(bm->hb, first, first + count);
    if (g < 0)
        return -1;
    return (int64_t) MAX((uint64_t) g << bm->gran_bits, offset);
}

bool
vbk_dirty_bitmap_next_dirty_area(const VbkDirtyBitmap *bm,
                                 uint64_t start,
                                 uint64_t end,
                                 uint64_t max_bytes,
                                 uint64_t *area_start,
                                 uint64_t *area_bytes)
{
    int64_t dirty, clean;

    g_return_val_if_fail(max_bytes > 0, false);
    end = MIN(end, bm->size);
    if (start >= end)
        return false;
    dirty = vbk_dirty_bitmap_next_dirty(bm, start, end - start);
    if (dirty < 0)
        return false;
    start = (uint64_t) dirty;
    end = start + MIN(end - start, max_bytes);
    clean = vbk_dirty_bitmap_next_clean(bm, start, end - start);
    if (clean >= 0)
        end = (uint64_t) clean;
    *area_start = start;
    *area_bytes = end - start;
    return true;
}

void
vbk_dirty_bitmap_clear(VbkDirtyBitmap *bm, VbkHBitmap **backup)
{
    g_return_if_fail(!bm->readonly);
    if (backup) {
        *backup = bm->hb;
        bm->hb = vbk_hbitmap_new(vbk_hbitmap_size(*backup));
    } else {
        vbk_hbitmap_reset_all(bm->hb);
    }
}

void
vbk_dirty_bitmap_restore(VbkDirtyBitmap *bm, VbkHBitmap *backup)
{
    g_return_if_fail(vbk_hbitmap_size(backup) == vbk_hbitmap_size(bm->hb));
    vbk_hbitmap_free(bm->hb);
    bm->hb = backup;
}

gboolean
vbk_dirty_bitmap_merge(VbkDirtyBitmap *dest,
                       const VbkDirtyBitmap *src,
                       VbkHBitmap **backup,
                       GError **error)
{
    g_return_val_if_fail(error == NULL || *error == NULL, FALSE);
    if (!vbk_dirty_bitmap_check(dest, VBK_DIRTY_BITMAP_DEFAULT, error) ||
        !vbk_dirty_bitmap_check(src, VBK_DIRTY_BITMAP_ALLOW_RO, error))
        return FALSE;
    if (dest->size != src->size) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    _("Bitmaps are of different sizes (destination size is "
                      "%1$" PRId64 ", source size is %2$" PRId64
                      ") and can't be merged"),
                    (int64_t) dest->size, (int64_t) src->size);
        return FALSE;
    }
    if (backup)
        *backup = vbk_hbitmap_copy(dest->hb);
    vbk_hbitmap_merge_scaled(dest->hb, dest->gran_bits, src->hb,
                             src->gran_bits);
    return TRUE;
}

void
vbk_dirty_bitmap_mark_log(VbkDirtyBitmap *bm,
                          const VbkHBitmap *log,
                          unsigned log_bits)
{
    g_return_if_fail(!bm->readonly);
    vbk_hbitmap_merge_scaled(bm->hb, bm->gran_bits, log, log_bits);
}

void
vbk_dirty_bitmap_truncate(VbkDirtyBitmap *bm, uint64_t size)
{
    vbk_hbitmap_truncate(bm->hb, granules_for(size, bm->gran_bits));
    bm->size = size;
}

VbkDirtyBitmap *
vbk_dirty_bitmap_create_successor(VbkDirtyBitmap *bm, GError **error)
{
    VbkDirtyBitmap *child;

    g_return_val_if_fail(error == NULL || *error == NULL, NULL);
    if (!vbk_dirty_bitmap_check(bm, VBK_DIRTY_BITMAP_BUSY, error))
        return NULL;
    if (bm->successor) {
        g_set_error_literal(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_FAILED,
                            _("Cannot create a successor for a bitmap that "
                              "already has one"));
        return NULL;
    }
    child = vbk_dirty_bitmap_new(NULL, vbk_dirty_bitmap_granularity(bm),
                                 bm->size, error);
    if (!child)
        return NULL;
    child->disabled = bm->disabled;
    bm->disabled = true;
    bm->busy = true;
    bm->successor = child;
    return child;
}

VbkDirtyBitmap *
vbk_dirty_bitmap_abdicate(VbkDirtyBitmap *bm, GError **error)
{
    VbkDirtyBitmap *successor;

    g_return_val_if_fail(error == NULL || *error == NULL, NULL);
    if (!bm->successor) {
        g_set_error_literal(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_FAILED,
                            _("Cannot relinquish control if there's no "
                              "successor present"));
        return NULL;
    }
    successor = g_steal_pointer(&bm->successor);
    successor->name = g_steal_pointer(&bm->name);
    successor->persistent = bm->persistent;
    bm->persistent = false;
    bm->busy = false;
    return successor;
}

VbkDirtyBitmap *
vbk_dirty_bitmap_reclaim(VbkDirtyBitmap *bm, GError **error)
{
    VbkDirtyBitmap *successor;

    g_return_val_if_fail(error == NULL || *error == NULL, NULL);
    if (!bm->successor) {
        g_set_error_literal(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_FAILED,
                            _("Cannot reclaim a successor when none is "
                              "present"));
        return NULL;
    }
    successor = g_steal_pointer(&bm->successor);
    vbk_hbitmap_merge(bm->hb, successor->hb);
    bm->disabled = successor->disabled;
    bm->busy = false;
    return successor;
}

/* Granules of a serialization range; the offset must start a byte. */
static gboolean
serial_range(const VbkDirtyBitmap *bm,
             uint64_t offset,
             uint64_t bytes,
             uint64_t *first,
             uint64_t *count)
{
    g_return_val_if_fail((offset & ((UINT64_C(8) << bm->gran_bits) - 1)) == 0,
                         FALSE);
    return byte_range(bm, offset, bytes, first, count);
}

size_t
vbk_dirty_bitmap_serialization_size(const VbkDirtyBitmap *bm,
                                    uint64_t offset,
                                    uint64_t bytes)
{
    uint64_t first, count;

    if (!serial_range(bm, offset, bytes, &first, &count))
        return 0;
    return vbk_hbitmap_serialization_size(bm->hb, first, count);
}

void
vbk_dirty_bitmap_serialize_part(const VbkDirtyBitmap *bm,
                                uint8_t *buf,
                                uint64_t offset,
                                uint64_t bytes)
{
    uint64_t first, count;

    if (serial_range(bm, offset, bytes, &first, &count))
        vbk_hbitmap_serialize_part(bm->hb, buf, first, count);
}

void
vbk_dirty_bitmap_deserialize_part(VbkDirtyBitmap *bm,
                                  const uint8_t *buf,
                                  uint64_t offset,
                                  uint64_t bytes)
{
    uint64_t first, count;

    if (serial_range(bm, offset, bytes, &first, &count))
        vbk_hbitmap_deserialize_part(bm->hb, buf, first, count);
}

void
vbk_dirty_bitmap_deserialize_zeroes(VbkDirtyBitmap *bm,
                                    uint64_t offset,
                                    uint64_t bytes)
{
    uint64_t first, count;

    if (serial_range(bm, offset, bytes, &first, &count))
        vbk_hbitmap_reset(bm->hb, first, count);
}

void
vbk_dirty_bitmap_deserialize_ones(VbkDirtyBitmap *bm,
                                  uint64_t offset,
                                  uint64_t bytes)
{
    uint64_t first, count;

    if (serial_range(bm, offset, bytes, &first, &count))
        vbk_hbitmap_set(bm->hb, first, count);
}

bool
vbk_dirty_bitmap_range_is_clean(const VbkDirtyBitmap *bm,
                                uint64_t offset,
                                uint64_t bytes)
{
    uint64_t first, count;

    if (!byte_range(bm, offset, bytes, &first, &count))
        return true;
    return vbk_hbitmap_is_clean(bm->hb, first, count);
}

char *
vbk_dirty_bitmap_sha256(const VbkDirtyBitmap *bm)
{
    return vbk_hbitmap_sha256(bm->hb);
}
