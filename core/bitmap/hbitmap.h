/*
 * hbitmap.h: a hierarchical bitmap of granules.
 *
 * VbkHBitmap knows nothing of bytes: it holds @size bits, one per granule,
 * numbered 0..size-1.  The dirty-bitmap object (dirty-bitmap.h) converts
 * byte offsets into granules.  See hbitmap.c for the layout and costs.
 *
 * Ranges are given as (start, count) or as [start, end) with @end
 * exclusive; ranges reaching past the end of the bitmap are clipped.
 * Searches return a granule number, or -1 when nothing was found.
 *
 * The serialized form is qcow2's bitmap data: granule n is bit (n % 8)
 * of byte (n / 8), least significant bit first, bytes ascending.
 *
 * Not thread-safe: the owner serialises every call.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

G_BEGIN_DECLS

typedef struct VbkHBitmap VbkHBitmap;

/* A clean bitmap of @size granules.  (transfer full) */
VbkHBitmap *vbk_hbitmap_new(uint64_t size);
void vbk_hbitmap_free(VbkHBitmap *hb);
/* An independent copy of @hb.  (transfer full) */
VbkHBitmap *vbk_hbitmap_copy(const VbkHBitmap *hb);

uint64_t vbk_hbitmap_size(const VbkHBitmap *hb);
/* Number of dirty granules, O(1). */
uint64_t vbk_hbitmap_count(const VbkHBitmap *hb);
/* Number of dirty granules in [start, start + count). */
uint64_t
vbk_hbitmap_count_range(const VbkHBitmap *hb, uint64_t start, uint64_t count);

bool vbk_hbitmap_test(const VbkHBitmap *hb, uint64_t pos);
void vbk_hbitmap_set(VbkHBitmap *hb, uint64_t start, uint64_t count);
void vbk_hbitmap_reset(VbkHBitmap *hb, uint64_t start, uint64_t count);
void vbk_hbitmap_reset_all(VbkHBitmap *hb);

/* First dirty (resp. clean) granule in [start, end), or -1. */
int64_t
vbk_hbitmap_next_dirty(const VbkHBitmap *hb, uint64_t start, uint64_t end);
int64_t
vbk_hbitmap_next_clean(const VbkHBitmap *hb, uint64_t start, uint64_t end);
/*
 * The first run of dirty granules in [start, end), at most @max_len long
 * (max_len > 0).  Returns false when [start, end) is clean; otherwise
 * sets *area_start and *area_len.
 */
bool vbk_hbitmap_next_dirty_area(const VbkHBitmap *hb,
                                 uint64_t start,
                                 uint64_t end,
                                 uint64_t max_len,
                                 uint64_t *area_start,
                                 uint64_t *area_len);
/* Is [start, start + count) free of dirty granules? */
bool vbk_hbitmap_is_clean(const VbkHBitmap *hb, uint64_t start, uint64_t count);

/*
 * dst |= src, both of the same granularity (granule n of @src is granule
 * n of @dst); granules past the end of @dst are ignored.
 */
void vbk_hbitmap_merge(VbkHBitmap *dst, const VbkHBitmap *src);
/*
 * dst |= src across granularities.  A granule of @dst covers
 * 2^dst_shift units (e.g. bytes), one of @src 2^src_shift units; a
 * granule of @dst becomes dirty when any unit it covers is covered by a
 * dirty granule of @src.
 */
void vbk_hbitmap_merge_scaled(VbkHBitmap *dst,
                              unsigned dst_shift,
                              const VbkHBitmap *src,
                              unsigned src_shift);

/* Grow (the new granules are clean) or shrink (the tail is dropped). */
void vbk_hbitmap_truncate(VbkHBitmap *hb, uint64_t size);

/*
 * Serialization of the granules [start, start + count): @start must be a
 * multiple of 8; the size is ceil(count / 8) bytes once clipped to the
 * bitmap; bits past the end of the bitmap serialize as 0 and are ignored
 * when deserializing.  Deserializing overwrites the range.
 */
size_t vbk_hbitmap_serialization_size(const VbkHBitmap *hb,
                                      uint64_t start,
                                      uint64_t count);
void vbk_hbitmap_serialize_part(const VbkHBitmap *hb,
                                uint8_t *buf,
                                uint64_t start,
                                uint64_t count);
void vbk_hbitmap_deserialize_part(VbkHBitmap *hb,
                                  const uint8_t *buf,
                                  uint64_t start,
                                  uint64_t count);
/* Is the serialized buffer all zero (a clean range qcow2 need not store)? */
bool vbk_hbitmap_buffer_is_zero(const uint8_t *buf, size_t len);

/*
 * SHA-256 (lower-case hex) of the bottom level as QEMU's
 * x-debug-block-dirty-bitmap-sha256 hashes it: the serialized bitmap padded
 * with zeroes to a whole number of 64-bit words (at least one).
 * (transfer full)
 */
char *vbk_hbitmap_sha256(const VbkHBitmap *hb);

/*
 * Verify every internal invariant (summary levels, count, clean tail);
 * for tests.  Returns false and logs a message on the first violation.
 */
bool vbk_hbitmap_self_check(const VbkHBitmap *hb);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(VbkHBitmap, vbk_hbitmap_free)

G_END_DECLS
