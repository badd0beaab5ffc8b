/*
 * hbitmap.c: a hierarchical bitmap of granules.
 *
 * The real bits live in level 0, an array of 64-bit words; bit b of word
 * w is granule 64*w + b.  Every level above summarises the one below it:
 * bit j of level k+1 is set exactly when word j of level k is non-zero.
 * Levels are added until a level fits in a single word, which is the top.
 *
 * Worked example.  A bitmap of 2^20 granules (64 GiB of disk at 64 KiB
 * granularity) has
 *
 *     level 0: 16384 words   one bit per granule
 *     level 1:   256 words   one bit per level-0 word (64 granules)
 *     level 2:     4 words   one bit per level-1 word (4096 granules)
 *     level 3:     1 word    one bit per level-2 word (262144 granules)
 *
 * Say only granules 5 and 700000 are dirty.  Level 0 has word 0 = 1<<5
 * and word 10937 = 1<<32 (700000 = 64*10937 + 32).  Level 1 has bit 0 of
 * word 0 and bit 10937 % 64 = 57 of word 10937 / 64 = 170.  Level 2 has
 * bits 0 and 170 % 64 = 42 of words 0 and 170 / 64 = 2.  The top word has
 * bits 0 and 2.
 *
 * Looking for the next dirty granule from 6: word 0 of level 0 has
 * nothing at or above bit 6, so climb and ask level 1 from bit 1 (the
 * next level-0 word); word 0 of level 1 has nothing above bit 0, so ask
 * level 2 from bit 1; nothing there above bit 0 either, so ask the top
 * from bit 1, which answers 2.  Descend through the lowest set bit of each
 * word found: level-2 word 2 gives bit 42, so level-1 word 2*64+42 = 170;
 * its lowest bit 57 names level-0 word 170*64+57 = 10937, whose lowest
 * bit 32 is granule 700000.  Seven word reads skipped 699994 clean
 * granules.
 *
 * Costs: test is O(1); set/reset of m granules touch m/64 words on level
 * 0, m/4096 on level 1 and so on; next_dirty costs O(levels); the count
 * of dirty granules is kept up to date by set/reset, so reading it is
 * O(1).  Finding the next clean granule scans level 0 a word at a time
 * (the summaries only record "non-zero", not "full"); callers bound that
 * scan with @end or @max_len.
 *
 * Bits past @size in the last level-0 word are always 0, so a serialized
 * bitmap has a clean tail, as qcow2 requires.
 */
#include "hbitmap.h"

#include <string.h>

#define BITS_PER_WORD 64
#define WORD_SHIFT    6
#define HB_MAX_LEVELS 12 /* 2^64 granules need 11 levels */
#define ALL_ONES      UINT64_MAX

struct VbkHBitmap {
    uint64_t size;    /* granules */
    uint64_t count;   /* dirty granules */
    unsigned nlevels; /* level nlevels-1 is a single word */
    uint64_t nwords[HB_MAX_LEVELS];
    uint64_t *levels[HB_MAX_LEVELS];
};

static inline uint64_t
words_for_bits(uint64_t bits)
{
    return (bits + BITS_PER_WORD - 1) >> WORD_SHIFT;
}

/* Mask of the bits of word @w that fall in the bit range [first, last]. */
static inline uint64_t
range_mask(uint64_t w, uint64_t first, uint64_t last)
{
    uint64_t mask = ALL_ONES;

    if (w == first >> WORD_SHIFT)
        mask &= ALL_ONES << (first & 63);
    if (w == last >> WORD_SHIFT)
        mask &= ALL_ONES >> (63 - (last & 63));
    return mask;
}

/* Allocate the upper levels for the current level-0 array and fill them
 * from it.  O(words). */
static void
hbitmap_build_upper(VbkHBitmap *hb)
{
    unsigned k;

    for (k = 1; k < HB_MAX_LEVELS; k++) {
        g_free(hb->levels[k]);
        hb->levels[k] = NULL;
        hb->nwords[k] = 0;
    }
    k = 0;
    while (hb->nwords[k] > 1) {
        uint64_t w;

        g_assert(k + 1 < HB_MAX_LEVELS);
        hb->nwords[k + 1] = words_for_bits(hb->nwords[k]);
        hb->levels[k + 1] = g_new0(uint64_t, hb->nwords[k + 1]);
        for (w = 0; w < hb->nwords[k]; w++) {
            if (hb->levels[k][w])
                hb->levels[k + 1][w >> WORD_SHIFT] |= 1ULL << (w & 63);
        }
        k++;
    }
    hb->nlevels = k + 1;
}

VbkHBitmap *
vbk_hbitmap_new(uint64_t size)
{
    VbkHBitmap *hb = g_new0(VbkHBitmap, 1);

    hb->size = size;
    hb->nwords[0] = MAX(words_for_bits(size), 1);
    hb->levels[0] = g_new0(uint64_t, hb->nwords[0]);
    hbitmap_build_upper(hb);
    return hb;
}

void
vbk_hbitmap_free(VbkHBitmap *hb)
{
    unsigned k;

    if (!hb)
        return;
    for (k = 0; k < HB_MAX_LEVELS; k++)
        g_free(hb->levels[k]);
    g_free(hb);
}

VbkHBitmap *
vbk_hbitmap_copy(const VbkHBitmap *hb)
{
    VbkHBitmap *copy = g_new0(VbkHBitmap, 1);
    unsigned k;

    *copy = *hb;
    for (k = 0; k < hb->nlevels; k++)
        copy->levels[k] =
            g_memdup2(hb->levels[k], hb->nwords[k] * sizeof(uint64_t));
    return copy;
}

uint64_t
vbk_hbitmap_size(const VbkHBitmap *hb)
{
    return hb->size;
}

uint64_t
vbk_hbitmap_count(const VbkHBitmap *hb)
{
    return hb->count;
}

bool
vbk_hbitmap_test(const VbkHBitmap *hb, uint64_t pos)
{
    if (pos >= hb->size)
        return false;
    return (hb->levels[0][pos >> WORD_SHIFT] >> (pos & 63)) & 1;
}

/*
 * Set the bits [first, last] of level @k, then the summary bits of the
 * words touched.  *added (if given) grows by the number of bits that were
 * clear.  Every touched word ends non-zero, so the words first/64 ..
 * last/64 are exactly the summary range.
 */
static void
level_set_range(
    VbkHBitmap *hb, unsigned k, uint64_t first, uint64_t last, uint64_t *added)
{
    for (;;) {
        uint64_t *lv = hb->levels[k];
        uint64_t fw = first >> WORD_SHIFT, lw = last >> WORD_SHIFT, w;
        bool changed = false;

        for (w = fw; w <= lw; w++) {
            uint64_t mask = range_mask(w, first, last);
            uint64_t fresh = mask & ~lv[w];

            if (added)
                *added += __builtin_popcountll(fresh);
            changed |= fresh != 0;
            lv[w] |= mask;
        }
        /* no bit new on this level: every word it touched was non-zero
         * already, so the summary bits above are set (the common case
         * of a write to a granule already dirty stops here) */
        if (!changed || ++k >= hb->nlevels)
            return;
        first = fw;
        last = lw;
        added = NULL;
    }
}

/*
 * Clear the bits [first, last] of level @k.  Interior words become zero;
 * the two edge words may keep bits outside the range.  The summary bits
 * to clear above are those of the words that are now zero, a contiguous
 * run because the interior is all zero.
 */
static void
level_reset_range(VbkHBitmap *hb,
                  unsigned k,
                  uint64_t first,
                  uint64_t last,
                  uint64_t *removed)
{
    for (;;) {
        uint64_t *lv = hb->levels[k];
        uint64_t fw = first >> WORD_SHIFT, lw = last >> WORD_SHIFT, w;
        bool first_zero, last_zero;

        for (w = fw; w <= lw; w++) {
            uint64_t mask = range_mask(w, first, last);

            if (removed)
                *removed += __builtin_popcountll(mask & lv[w]);
            lv[w] &= ~mask;
        }
        if (++k >= hb->nlevels)
            return;
        first_zero = lv[fw] == 0;
        last_zero = lv[lw] == 0;
        if (fw == lw) {
            if (!first_zero)
                return;
        } else {
            if (!first_zero)
                fw++;
            if (!last_zero)
                lw--;
            if (fw > lw)
                return;
        }
        first = fw;
        last = lw;
        removed = NULL;
    }
}

/* Replace level-0 word @w with @val, keeping count and summaries right. */
static void
hbitmap_store_word(VbkHBitmap *hb, uint64_t w, uint64_t val)
{
    uint64_t old = hb->levels[0][w];
    unsigned k;

    if (old == val)
        return;
    hb->levels[0][w] = val;
    hb->count += __builtin_popcountll(val);
    hb->count -= __builtin_popcountll(old);
    if ((old == 0) == (val == 0))
        return;
    for (k = 1; k < hb->nlevels; k++) {
        uint64_t *word = &hb->levels[k][w >> WORD_SHIFT];
        uint64_t bit = 1ULL << (w & 63);
        bool was_zero = *word == 0;

        if (val) {
            *word |= bit;
            if (!was_zero)
                return;
        } else {
            *word &= ~bit;
            if (*word)
                return;
        }
        w >>= WORD_SHIFT;
    }
}

/* Clip [start, start + count) to the bitmap; false if it is empty. */
static bool
clip_range(const VbkHBitmap *hb, uint64_t start, uint64_t count, uint64_t *last)
{
    if (count == 0 || start >= hb->size)
        return false;
    if (count > hb->size - start)
        count = hb->size - start;
    *last = start + count - 1;
    return true;
}

void
vbk_hbitmap_set(VbkHBitmap *hb, uint64_t start, uint64_t count)
{
    uint64_t last;

    if (!clip_range(hb, start, count, &last))
        return;
    level_set_range(hb, 0, start, last, &hb->count);
}

void
vbk_hbitmap_reset(VbkHBitmap *hb, uint64_t start, uint64_t count)
{
    uint64_t last, removed = 0;

    if (!clip_range(hb, start, count, &last))
        return;
    level_reset_range(hb, 0, start, last, &removed);
    hb->count -= removed;
}

void
vbk_hbitmap_reset_all(VbkHBitmap *hb)
{
    unsigned k;

    for (k = 0; k < hb->nlevels; k++)
        memset(hb->levels[k], 0, hb->nwords[k] * sizeof(uint64_t));
    hb->count = 0;
}

/*
 * First set bit at or after @pos on level @k, or -1.  Climbs while the
 * current word has nothing left, asking the level above for the next
 * non-zero word, then descends through the lowest set bits.
 */
static int64_t
level_find_next(const VbkHBitmap *hb, unsigned k, uint64_t pos)
{
    unsigned top = k;
    uint64_t p = pos;

    for (;;) {
        uint64_t w = p >> WORD_SHIFT, cur;

        if (w >= hb->nwords[top])
            return -1;
        cur = hb->levels[top][w] & (ALL_ONES << (p & 63));
        if (cur) {
            p = (w << WORD_SHIFT) + __builtin_ctzll(cur);
            break;
        }
        if (top + 1 >= hb->nlevels)
            return -1;
        p = w + 1;
        top++;
    }
    while (top > k) {
        top--;
        p = (p << WORD_SHIFT) + __builtin_ctzll(hb->levels[top][p]);
    }
    return (int64_t) p;
}

int64_t
vbk_hbitmap_next_dirty(const VbkHBitmap *hb, uint64_t start, uint64_t end)
{
    int64_t r;

    end = MIN(end, hb->size);
    if (start >= end)
        return -1;
    r = level_find_next(hb, 0, start);
    if (r < 0 || (uint64_t) r >= end)
        return -1;
    return r;
}

int64_t
vbk_hbitmap_next_clean(const VbkHBitmap *hb, uint64_t start, uint64_t end)
{
    uint64_t w, cur, r;

    end = MIN(end, hb->size);
    if (start >= end)
        return -1;
    w = start >> WORD_SHIFT;
    cur = ~hb->levels[0][w] & (ALL_ONES << (start & 63));
    while (!cur) {
        w++;
        if ((w << WORD_SHIFT) >= end)
            return -1;
        cur = ~hb->levels[0][w];
    }
    /* the clean tail bits past @size make the answer >= end if no real
     * granule is clean */
    r = (w << WORD_SHIFT) + __builtin_ctzll(cur);
    return r < end ? (int64_t) r : -1;
}

bool
vbk_hbitmap_next_dirty_area(const VbkHBitmap *hb,
                            uint64_t start,
                            uint64_t end,
                            uint64_t max_len,
                            uint64_t *area_start,
                            uint64_t *area_len)
{
    int64_t first, clean;
    uint64_t limit;

    g_return_val_if_fail(max_len > 0, false);
    end = MIN(end, hb->size);
    first = vbk_hbitmap_next_dirty(hb, start, end);
    if (first < 0)
        return false;
    limit = (uint64_t) first + MIN(max_len, end - (uint64_t) first);
    clean = vbk_hbitmap_next_clean(hb, (uint64_t) first, limit);
    *area_start = (uint64_t) first;
    *area_len = (clean < 0 ? limit : (uint64_t) clean) - (uint64_t) first;
    return true;
}

bool
vbk_hbitmap_is_clean(const VbkHBitmap *hb, uint64_t start, uint64_t count)
{
    uint64_t last;

    if (!clip_range(hb, start, count, &last))
        return true;
    return vbk_hbitmap_next_dirty(hb, start, last + 1) < 0;
}

/* Next non-zero level-0 word at or after @w, or -1. */
static int64_t
next_nonzero_word(const VbkHBitmap *hb, uint64_t w)
{
    if (hb->nlevels == 1)
        return w < hb->nwords[0] && hb->levels[0][w] ? (int64_t) w : -1;
    return level_find_next(hb, 1, w);
}

uint64_t
vbk_hbitmap_count_range(const VbkHBitmap *hb, uint64_t start, uint64_t count)
{
    uint64_t last, lw, total = 0;
    int64_t w;

    if (!clip_range(hb, start, count, &last))
        return 0;
    lw = last >> WORD_SHIFT;
    for (w = next_nonzero_word(hb, start >> WORD_SHIFT);
         w >= 0 && (uint64_t) w <= lw;
         w = next_nonzero_word(hb, (uint64_t) w + 1)) {
        uint64_t mask = range_mask((uint64_t) w, start, last);

        total += __builtin_popcountll(hb->levels[0][w] & mask);
    }
    return total;
}

void
vbk_hbitmap_merge(VbkHBitmap *dst, const VbkHBitmap *src)
{
    uint64_t limit = MIN(dst->size, src->size);
    uint64_t nw = words_for_bits(limit);
    int64_t w;

    for (w = next_nonzero_word(src, 0); w >= 0 && (uint64_t) w < nw;
         w = next_nonzero_word(src, (uint64_t) w + 1)) {
        uint64_t val = src->levels[0][w];

        if ((uint64_t) w == nw - 1 && (limit & 63))
            val &= ALL_ONES >> (64 - (limit & 63));
        hbitmap_store_word(dst, (uint64_t) w, dst->levels[0][w] | val);
    }
}

void
vbk_hbitmap_merge_scaled(VbkHBitmap *dst,
                         unsigned dst_shift,
                         const VbkHBitmap *src,
                         unsigned src_shift)
{
    uint64_t pos = 0, start, len;

    if (dst_shift == src_shift) {
        vbk_hbitmap_merge(dst, src);
        return;
    }
    while (vbk_hbitmap_next_dirty_area(src, pos, src->size, UINT64_MAX, &start,
                                       &len)) {
        uint64_t end = start + len;

        pos = end;
        if (src_shift > dst_shift) {
            /* each source granule covers 2^d destination granules */
            unsigned d = src_shift - dst_shift;
            uint64_t lim = (dst->size >> d) + 1; /* no overflow below */

            if (start >= lim)
                break;
            vbk_hbitmap_set(dst, start << d, (MIN(end, lim) - start) << d);
        } else {
            /* a destination granule covers 2^d source granules */
            unsigned d = dst_shift - src_shift;
            uint64_t first = start >> d;
            uint64_t after = ((end - 1) >> d) + 1;

            vbk_hbitmap_set(dst, first, after - first);
        }
    }
}

void
vbk_hbitmap_truncate(VbkHBitmap *hb, uint64_t size)
{
    uint64_t nw = MAX(words_for_bits(size), 1);

    if (size < hb->size)
        vbk_hbitmap_reset(hb, size, hb->size - size);
    if (nw != hb->nwords[0]) {
        hb->levels[0] = g_renew(uint64_t, hb->levels[0], nw);
        if (nw > hb->nwords[0])
            memset(hb->levels[0] + hb->nwords[0], 0,
                   (nw - hb->nwords[0]) * sizeof(uint64_t));
        hb->nwords[0] = nw;
        hbitmap_build_upper(hb);
    }
    hb->size = size;
}

size_t
vbk_hbitmap_serialization_size(const VbkHBitmap *hb,
                               uint64_t start,
                               uint64_t count)
{
    uint64_t last;

    if (!clip_range(hb, start, count, &last))
        return 0;
    return (size_t) ((last - start) / 8 + 1);
}

void
vbk_hbitmap_serialize_part(const VbkHBitmap *hb,
                           uint8_t *buf,
                           uint64_t start,
                           uint64_t count)
{
    uint64_t last, g;

    g_return_if_fail(start % 8 == 0);
    if (!clip_range(hb, start, count, &last))
        return;
    for (g = start; g <= last;) {
        uint64_t word = hb->levels[0][g >> WORD_SHIFT];

        if ((g & 63) == 0 && last - g >= 63) {
            uint64_t le = GUINT64_TO_LE(word);

            memcpy(buf, &le, sizeof(le));
            buf += 8;
            g += 64;
        } else {
            uint8_t byte = (uint8_t) (word >> (g & 63));

            if (last - g < 7)
                byte &= (uint8_t) ((1u << (last - g + 1)) - 1);
            *buf++ = byte;
            g += 8;
        }
    }
}

void
vbk_hbitmap_deserialize_part(VbkHBitmap *hb,
                             const uint8_t *buf,
                             uint64_t start,
                             uint64_t count)
{
    uint64_t last, w, lw;

    g_return_if_fail(start % 8 == 0);
    if (!clip_range(hb, start, count, &last))
        return;
    lw = last >> WORD_SHIFT;
    for (w = start >> WORD_SHIFT; w <= lw; w++) {
        uint64_t mask = range_mask(w, start, last);
        uint64_t base = w << WORD_SHIFT, val = 0;
        unsigned b;

        for (b = 0; b < 8; b++) {
            uint64_t g = base + 8 * b;

            if (g >= start && g <= last)
                val |= (uint64_t) buf[(g - start) >> 3] << (8 * b);
        }
        hbitmap_store_word(hb, w, (hb->levels[0][w] & ~mask) | (val & mask));
    }
}

bool
vbk_hbitmap_buffer_is_zero(const uint8_t *buf, size_t len)
{
    size_t i = 0;

    for (; i + 8 <= len; i += 8) {
        uint64_t v;

        memcpy(&v, buf + i, sizeof(v));
        if (v)
            return false;
    }
    for (; i < len; i++) {
        if (buf[i])
            return false;
    }
    return true;
}

char *
vbk_hbitmap_sha256(const VbkHBitmap *hb)
{
    size_t len = hb->nwords[0] * sizeof(uint64_t);
    g_autofree uint8_t *buf = g_malloc0(len);

    vbk_hbitmap_serialize_part(hb, buf, 0, hb->size);
    return g_compute_checksum_for_data(G_CHECKSUM_SHA256, buf, len);
}

static bool
level_check(const VbkHBitmap *hb, unsigned k)
{
    uint64_t w;

    for (w = 0; w < hb->nwords[k]; w++) {
        bool nonzero = hb->levels[k][w] != 0;
        bool summary = (hb->levels[k + 1][w >> WORD_SHIFT] >> (w & 63)) & 1;

        if (nonzero != summary) {
            g_warning("hbitmap: level %u word %" G_GUINT64_FORMAT
                      " disagrees with its summary bit",
                      k, w);
            return false;
        }
    }
    for (w = hb->nwords[k]; w < hb->nwords[k + 1] * 64; w++) {
        if ((hb->levels[k + 1][w >> WORD_SHIFT] >> (w & 63)) & 1) {
            g_warning("hbitmap: level %u has a bit past its end", k + 1);
            return false;
        }
    }
    return true;
}

bool
vbk_hbitmap_self_check(const VbkHBitmap *hb)
{
    uint64_t w, total = 0;
    unsigned k;

    if (hb->nwords[0] != MAX(words_for_bits(hb->size), 1) ||
        hb->nwords[hb->nlevels - 1] != 1) {
        g_warning("hbitmap: bad level sizes");
        return false;
    }
    for (w = 0; w < hb->nwords[0]; w++)
        total += __builtin_popcountll(hb->levels[0][w]);
    if (total != hb->count) {
        g_warning("hbitmap: count %" G_GUINT64_FORMAT " but %" G_GUINT64_FORMAT
                  " bits set",
                  hb->count, total);
        return false;
    }
    if ((hb->size & 63) &&
        hb->levels[0][hb->nwords[0] - 1] >> (hb->size & 63)) {
        g_warning("hbitmap: bits set past the end");
        return false;
    }
    if (hb->size == 0 && hb->levels[0][0]) {
        g_warning("hbitmap: bits set in an empty bitmap");
        return false;
    }
    for (k = 0; k + 1 < hb->nlevels; k++) {
        if (!level_check(hb, k))
            return false;
    }
    return true;
}
