/*
 * dirty-bitmap.h: a dirty bitmap, QEMU's BdrvDirtyBitmap in vbackup.
 *
 * A dirty bitmap records which parts of a node were written, at a
 * granularity of 2^k bytes (k >= 9).  It has a name (NULL for the
 * anonymous internal bitmaps), the size of its node in bytes and the
 * flags QMP reports: recording, busy, persistent, inconsistent (plus
 * readonly and disabled, which QMP shows through recording).
 *
 * Every offset and length here is in BYTES; a range touches each granule
 * it overlaps.  The count is dirty granules times the granularity, so a
 * partial last granule counts in full, as in QEMU.
 *
 * Objects are reference counted: the node's bitmap list holds a
 * reference, and a parent holds one on its successor.  Not thread-safe:
 * the owner (the node) serialises calls with its bitmap lock.  Marking
 * does not look at the disabled flag: the node marks only the bitmaps
 * that are enabled (vbk_dirty_bitmap_enabled()).
 *
 * The successor protocol (backup jobs):
 *   create_successor  the parent becomes busy and disabled; a new
 *                     anonymous successor of the same granularity takes
 *                     over recording (it is enabled iff the parent was);
 *                     the caller adds the successor to its node.
 *   abdicate          (job succeeded) the successor takes the parent's
 *                     name and persistence; the caller removes the spent
 *                     parent from its node and drops it.
 *   reclaim           (job failed) the parent absorbs the successor's
 *                     bits and enabled state and is no longer busy; the
 *                     caller removes the spent successor from its node.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "hbitmap.h"

G_BEGIN_DECLS

typedef struct VbkDirtyBitmap VbkDirtyBitmap;

/* What vbk_dirty_bitmap_check() refuses (QEMU's BDRV_BITMAP_*). */
typedef enum {
    VBK_DIRTY_BITMAP_BUSY = 1 << 0,
    VBK_DIRTY_BITMAP_RO = 1 << 1,
    VBK_DIRTY_BITMAP_INCONSISTENT = 1 << 2,
    VBK_DIRTY_BITMAP_DEFAULT = VBK_DIRTY_BITMAP_BUSY | VBK_DIRTY_BITMAP_RO |
                               VBK_DIRTY_BITMAP_INCONSISTENT,
    VBK_DIRTY_BITMAP_ALLOW_RO =
        VBK_DIRTY_BITMAP_BUSY | VBK_DIRTY_BITMAP_INCONSISTENT,
} VbkDirtyBitmapCheckFlags;

/* The longest bitmap name QEMU accepts. */
#define VBK_DIRTY_BITMAP_MAX_NAME_SIZE 1023

/* The hint QEMU appends (on its command line, not over QMP) after the
 * INCONSISTENT message of vbk_dirty_bitmap_check(). */
const char *vbk_dirty_bitmap_inconsistent_hint(void);

/*
 * A new enabled, clean bitmap of @size bytes.  @granularity must be a
 * power of two >= 512; @name may be NULL (anonymous).  (transfer full)
 */
VbkDirtyBitmap *vbk_dirty_bitmap_new(const char *name,
                                     uint64_t granularity,
                                     uint64_t size,
                                     GError **error);
VbkDirtyBitmap *vbk_dirty_bitmap_ref(VbkDirtyBitmap *bm);
void vbk_dirty_bitmap_unref(VbkDirtyBitmap *bm);

/* The granularity QEMU picks when none is given: the cluster size clamped
 * to [4 KiB, 64 KiB]; 64 KiB when @cluster_size is 0 (unknown). */
uint64_t vbk_dirty_bitmap_default_granularity(uint64_t cluster_size);

/* Accessors.  The name is borrowed (NULL if anonymous). */
const char *vbk_dirty_bitmap_name(const VbkDirtyBitmap *bm);
uint64_t vbk_dirty_bitmap_granularity(const VbkDirtyBitmap *bm);
uint64_t vbk_dirty_bitmap_size(const VbkDirtyBitmap *bm);
bool vbk_dirty_bitmap_enabled(const VbkDirtyBitmap *bm);
/* !disabled || (successor && !successor->disabled) */
bool vbk_dirty_bitmap_recording(const VbkDirtyBitmap *bm);
bool vbk_dirty_bitmap_busy(const VbkDirtyBitmap *bm);
bool vbk_dirty_bitmap_readonly(const VbkDirtyBitmap *bm);
bool vbk_dirty_bitmap_persistent(const VbkDirtyBitmap *bm);
bool vbk_dirty_bitmap_inconsistent(const VbkDirtyBitmap *bm);
/* (transfer none) NULL if there is none. */
VbkDirtyBitmap *vbk_dirty_bitmap_successor(const VbkDirtyBitmap *bm);

void vbk_dirty_bitmap_set_enabled(VbkDirtyBitmap *bm, bool enabled);
void vbk_dirty_bitmap_set_busy(VbkDirtyBitmap *bm, bool busy);
void vbk_dirty_bitmap_set_readonly(VbkDirtyBitmap *bm, bool readonly);
void vbk_dirty_bitmap_set_persistent(VbkDirtyBitmap *bm, bool persistent);
/* Marks the bitmap inconsistent, which also disables it. */
void vbk_dirty_bitmap_set_inconsistent(VbkDirtyBitmap *bm);

/*
 * Refuse (FALSE with @error set) a bitmap that is busy, read-only or
 * inconsistent, as selected by @flags, with QEMU's messages.
 */
gboolean vbk_dirty_bitmap_check(const VbkDirtyBitmap *bm,
                                VbkDirtyBitmapCheckFlags flags,
                                GError **error);

/* Byte-range operations. */
void vbk_dirty_bitmap_mark(VbkDirtyBitmap *bm, uint64_t offset, uint64_t bytes);
/* @offset must be granule-aligned, @bytes too unless the range reaches
 * the end of the bitmap. */
void
vbk_dirty_bitmap_reset(VbkDirtyBitmap *bm, uint64_t offset, uint64_t bytes);
bool vbk_dirty_bitmap_test(const VbkDirtyBitmap *bm, uint64_t offset);
/* Dirty bytes: dirty granules * granularity.  O(1). */
uint64_t vbk_dirty_bitmap_count(const VbkDirtyBitmap *bm);
/* First dirty (resp. clean) byte in [offset, offset + bytes), or -1; the
 * answer is the start of a granule or @offset itself. */
int64_t vbk_dirty_bitmap_next_dirty(const VbkDirtyBitmap *bm,
                                    uint64_t offset,
                                    uint64_t bytes);
int64_t vbk_dirty_bitmap_next_clean(const VbkDirtyBitmap *bm,
                                    uint64_t offset,
                                    uint64_t bytes);
/* The first dirty run in [start, end), at most @max_bytes (> 0) long,
 * clipped to the size of the bitmap. */
bool vbk_dirty_bitmap_next_dirty_area(const VbkDirtyBitmap *bm,
                                      uint64_t start,
                                      uint64_t end,
                                      uint64_t max_bytes,
                                      uint64_t *area_start,
                                      uint64_t *area_bytes);

/* Clear every bit.  With @backup, *backup receives the previous content
 * for vbk_dirty_bitmap_restore(). */
void vbk_dirty_bitmap_clear(VbkDirtyBitmap *bm, VbkHBitmap **backup);
/* Put back a backup from clear or merge (takes ownership of it). */
void vbk_dirty_bitmap_restore(VbkDirtyBitmap *bm, VbkHBitmap *backup);
/*
 * dest |= src.  @dest must pass the DEFAULT check, @src the ALLOW_RO
 * check, and both must have the same size in bytes; the granularities may
 * differ.  With @backup, *backup receives dest's previous content.
 */
gboolean vbk_dirty_bitmap_merge(VbkDirtyBitmap *dest,
                                const VbkDirtyBitmap *src,
                                VbkHBitmap **backup,
                                GError **error);
/*
 * dest |= @log, an hbitmap of the same byte size whose granules are
 * 2^log_bits bytes; no checks (a node's pending-write log being merged
 * into a recording bitmap, busy or not).  Word by word when the
 * granularities agree, so its cost is the log's non-zero words, not the
 * writes it holds.
 */
void vbk_dirty_bitmap_mark_log(VbkDirtyBitmap *bm,
                               const VbkHBitmap *log,
                               unsigned log_bits);
/* Follow a resize of the node: the new area is clean. */
void vbk_dirty_bitmap_truncate(VbkDirtyBitmap *bm, uint64_t size);

/* Successor protocol (see the top of this file). */
VbkDirtyBitmap *vbk_dirty_bitmap_create_successor(VbkDirtyBitmap *bm,
                                                  GError **error);
VbkDirtyBitmap *vbk_dirty_bitmap_abdicate(VbkDirtyBitmap *bm, GError **error);
VbkDirtyBitmap *vbk_dirty_bitmap_reclaim(VbkDirtyBitmap *bm, GError **error);

/*
 * qcow2 serialization of the bytes [offset, offset + bytes): @offset must
 * be a multiple of 8 granules (one serialized byte).  See hbitmap.h.
 */
size_t vbk_dirty_bitmap_serialization_size(const VbkDirtyBitmap *bm,
                                           uint64_t offset,
                                           uint64_t bytes);
void vbk_dirty_bitmap_serialize_part(const VbkDirtyBitmap *bm,
                                     uint8_t *buf,
                                     uint64_t offset,
                                     uint64_t bytes);
void vbk_dirty_bitmap_deserialize_part(VbkDirtyBitmap *bm,
                                       const uint8_t *buf,
                                       uint64_t offset,
                                       uint64_t bytes);
/* For qcow2 table entries without data: all clean / all dirty. */
void vbk_dirty_bitmap_deserialize_zeroes(VbkDirtyBitmap *bm,
                                         uint64_t offset,
                                         uint64_t bytes);
void vbk_dirty_bitmap_deserialize_ones(VbkDirtyBitmap *bm,
                                       uint64_t offset,
                                       uint64_t bytes);
/* Is [offset, offset + bytes) clean (nothing to store)? */
bool vbk_dirty_bitmap_range_is_clean(const VbkDirtyBitmap *bm,
                                     uint64_t offset,
                                     uint64_t bytes);

/* x-debug-block-dirty-bitmap-sha256.  (transfer full) */
char *vbk_dirty_bitmap_sha256(const VbkDirtyBitmap *bm);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(VbkDirtyBitmap, vbk_dirty_bitmap_unref)

G_END_DECLS
