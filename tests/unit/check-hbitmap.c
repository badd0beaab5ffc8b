/*
 * check-hbitmap.c: model-based test of VbkHBitmap.
 *
 * Every random operation is applied both to a VbkHBitmap and to a naive
 * shadow (one byte per granule); the results and the dirty count are
 * compared after every operation, and the whole content plus the internal
 * invariants (vbk_hbitmap_self_check) every few hundred operations and
 * after every resize.  The sizes include non-multiples of 64 and sizes on
 * both sides of the points where a level is added (4096, 262144 and
 * 16777216 granules).
 *
 * The seed is fixed; VBK_TEST_SEED=N changes it.  It is printed on stderr
 * and in every failure message.
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitmap/hbitmap.h"

static guint32 base_seed = 20261203;

typedef struct {
    VbkHBitmap *hb;
    guint8 *shadow;
    uint64_t size;
    uint64_t size0; /* initial size */
    uint64_t count;
    GRand *rng;
    guint32 seed;
    uint64_t op;
} Model;

typedef struct {
    uint64_t size;
    unsigned ops;
} SizeCase;

static const SizeCase size_cases[] = {
    {0, 5000},       {1, 100000},     {7, 100000},     {63, 300000},
    {64, 300000},    {65, 300000},    {129, 300000},   {1000, 300000},
    {4095, 300000},  {4096, 300000},  {4097, 300000},  {4161, 300000},
    {65536, 200000}, {200003, 50000}, {262143, 30000}, {262144, 30000},
    {262145, 30000}, {266241, 30000}, {1048579, 3000}, {16777217, 150},
};

/* ck_assert_msg() reports every success to the parent process (a
 * syscall); with millions of checks only failures may cost that much. */
#define CHECK(m, cond, ...)                                                    \
    do {                                                                       \
        if (!(cond))                                                           \
            ck_abort_msg("seed %u size %" G_GUINT64_FORMAT                     \
                         " op %" G_GUINT64_FORMAT ": %s: %s",                  \
                         (m)->seed, (m)->size, (m)->op, #cond,                 \
                         g_strdup_printf(__VA_ARGS__));                        \
    } while (0)

static uint64_t
rand_below(Model *m, uint64_t n)
{
    uint64_t r;

    if (n <= 1)
        return 0;
    r = ((uint64_t) g_rand_int(m->rng) << 32) | g_rand_int(m->rng);
    return r % n;
}

/* A length with a roughly log-uniform distribution up to @max. */
static uint64_t
rand_len(Model *m, uint64_t max)
{
    unsigned bits = 1;

    if (max <= 1)
        return 1;
    while (bits < 63 && (UINT64_C(1) << bits) < max)
        bits++;
    return 1 + rand_below(m, MIN(max, UINT64_C(1) << rand_below(m, bits + 1)));
}

static uint64_t
rand_pos(Model *m)
{
    /* sometimes a little past the end */
    return rand_below(m, m->size + 3);
}

static void
shadow_fill(guint8 *sh,
            uint64_t size,
            uint64_t start,
            uint64_t len,
            guint8 v,
            uint64_t *count)
{
    uint64_t i, end = start >= size ? start : start + MIN(len, size - start);

    for (i = start; i < end; i++) {
        if (sh[i] != v) {
            *count += v ? 1 : (uint64_t) -1;
            sh[i] = v;
        }
    }
}

static void
full_compare(Model *m)
{
    uint64_t i;

    CHECK(m, vbk_hbitmap_self_check(m->hb), "invariants broken");
    CHECK(m, vbk_hbitmap_size(m->hb) == m->size, "size");
    for (i = 0; i < m->size; i++) {
        if (vbk_hbitmap_test(m->hb, i) != (bool) m->shadow[i])
            CHECK(m, 0, "granule %" G_GUINT64_FORMAT " differs", i);
    }
}

static void
op_set_reset(Model *m, bool set)
{
    uint64_t start = rand_pos(m), len = rand_len(m, m->size + 1);

    if (set)
        vbk_hbitmap_set(m->hb, start, len);
    else
        vbk_hbitmap_reset(m->hb, start, len);
    shadow_fill(m->shadow, m->size, start, len, set, &m->count);
}

static void
op_queries(Model *m)
{
    uint64_t start = rand_pos(m), len = rand_len(m, m->size + 1);
    uint64_t end = start + len, i, cnt = 0, maxl = rand_len(m, m->size + 1);
    uint64_t lim = MIN(end, m->size), as = 0, al = 0;
    int64_t want_dirty = -1, want_clean = -1;
    bool found;

    for (i = start; i < lim; i++) {
        cnt += m->shadow[i];
        if (m->shadow[i] && want_dirty < 0)
            want_dirty = (int64_t) i;
        if (!m->shadow[i] && want_clean < 0)
            want_clean = (int64_t) i;
    }
    CHECK(m, vbk_hbitmap_count_range(m->hb, start, len) == cnt, "count_range");
    CHECK(m, vbk_hbitmap_next_dirty(m->hb, start, end) == want_dirty,
          "next_dirty(%" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT ")", start,
          end);
    CHECK(m, vbk_hbitmap_next_clean(m->hb, start, end) == want_clean,
          "next_clean");
    CHECK(m, vbk_hbitmap_is_clean(m->hb, start, len) == (want_dirty < 0),
          "is_clean");
    found = vbk_hbitmap_next_dirty_area(m->hb, start, end, maxl, &as, &al);
    CHECK(m, found == (want_dirty >= 0), "next_dirty_area found");
    if (found) {
        uint64_t e = (uint64_t) want_dirty;

        while (e < lim && m->shadow[e] && e - (uint64_t) want_dirty < maxl)
            e++;
        CHECK(m, as == (uint64_t) want_dirty && al == e - as,
              "dirty area %" G_GUINT64_FORMAT "+%" G_GUINT64_FORMAT, as, al);
    }
    i = rand_pos(m);
    CHECK(m, vbk_hbitmap_test(m->hb, i) == (i < m->size && m->shadow[i]),
          "test");
}

/* Expected serialization of [start, start + len) from the shadow. */
static guint8 *
shadow_serialize(Model *m, uint64_t start, uint64_t len, size_t *n)
{
    uint64_t end = MIN(start + len, m->size), g;
    guint8 *buf;

    *n = start >= end ? 0 : (size_t) ((end - start + 7) / 8);
    buf = g_malloc0(*n + 1);
    for (g = start; g < end; g++)
        buf[(g - start) / 8] |= (guint8) (m->shadow[g] << ((g - start) % 8));
    return buf;
}

static void
op_serialize(Model *m)
{
    uint64_t start = rand_pos(m) & ~UINT64_C(7), len = rand_len(m, m->size + 9);
    size_t n, got = vbk_hbitmap_serialization_size(m->hb, start, len);
    g_autofree guint8 *want = shadow_serialize(m, start, len, &n);
    g_autofree guint8 *buf = g_malloc0(n + 1);
    uint64_t g;

    CHECK(m, got == n, "serialization_size %zu, want %zu", got, n);
    vbk_hbitmap_serialize_part(m->hb, buf, start, len);
    CHECK(m, memcmp(buf, want, n) == 0, "serialized bytes differ");
    CHECK(m,
          vbk_hbitmap_buffer_is_zero(buf, n) ==
              vbk_hbitmap_is_clean(m->hb, start, len),
          "buffer_is_zero vs is_clean");

    /* overwrite the range with random bytes (sparse, dense or mixed) */
    for (size_t i = 0; i < n; i++) {
        switch (g_rand_int_range(m->rng, 0, 3)) {
        case 0:
            buf[i] = g_rand_int_range(m->rng, 0, 16) ? 0 : 0x10;
            break;
        case 1:
            buf[i] = g_rand_int_range(m->rng, 0, 16) ? 0xff : 0xef;
            break;
        default:
            buf[i] = (guint8) g_rand_int(m->rng);
            break;
        }
    }
    vbk_hbitmap_deserialize_part(m->hb, buf, start, len);
    for (g = start; g < MIN(start + len, m->size); g++) {
        guint8 v = (buf[(g - start) / 8] >> ((g - start) % 8)) & 1;

        shadow_fill(m->shadow, m->size, g, 1, v, &m->count);
    }
}

/* A random source bitmap of @size granules and its shadow. */
static VbkHBitmap *
random_source(Model *m, uint64_t size, guint8 **shadow)
{
    VbkHBitmap *src = vbk_hbitmap_new(size);
    uint64_t dummy = 0;
    unsigned i, n = g_rand_int_range(m->rng, 0, 6);

    *shadow = g_malloc0(size + 1);
    for (i = 0; i < n; i++) {
        uint64_t start = rand_below(m, size + 1), len = rand_len(m, size + 1);

        vbk_hbitmap_set(src, start, len);
        shadow_fill(*shadow, size, start, len, 1, &dummy);
    }
    return src;
}

static void
op_merge(Model *m)
{
    uint64_t ssize = m->size + rand_below(m, 130) - MIN(m->size, 65), g;
    g_autofree guint8 *sh = NULL;
    g_autoptr(VbkHBitmap) src = random_source(m, ssize, &sh);

    vbk_hbitmap_merge(m->hb, src);
    for (g = 0; g < MIN(ssize, m->size); g++) {
        if (sh[g])
            shadow_fill(m->shadow, m->size, g, 1, 1, &m->count);
    }
}

/*
 * Merge across granularities: the model's granules are 2^ds units, the
 * source's 2^ss units, both bitmaps cover the same @units (the last
 * granule of each may be partial).
 */
static void
op_merge_scaled(Model *m)
{
    unsigned ds = g_rand_int_range(m->rng, 0, 4);
    unsigned ss = g_rand_int_range(m->rng, 0, 4);
    uint64_t units, ssize, g;
    g_autofree guint8 *sh = NULL;
    g_autoptr(VbkHBitmap) src = NULL;

    if (m->size == 0)
        return;
    /* any unit count whose granules number m->size at shift ds */
    units = ((m->size - 1) << ds) + 1 + rand_below(m, UINT64_C(1) << ds);
    ssize = ((units - 1) >> ss) + 1;
    src = random_source(m, ssize, &sh);
    vbk_hbitmap_merge_scaled(m->hb, ds, src, ss);
    for (g = 0; g < ssize; g++) {
        uint64_t first, last;

        if (!sh[g])
            continue;
        first = (g << ss) >> ds;
        last = (MIN((g + 1) << ss, units) - 1) >> ds;
        shadow_fill(m->shadow, m->size, first, last - first + 1, 1, &m->count);
    }
}

static void
op_truncate(Model *m)
{
    /* around the initial size, so that sizes do not drift away */
    uint64_t nsize = m->size0 / 2 + rand_below(m, m->size0 + 130);
    uint64_t removed = 0;

    if (nsize < m->size)
        shadow_fill(m->shadow, m->size, nsize, m->size - nsize, 0, &removed);
    m->count += removed;
    m->shadow = g_realloc(m->shadow, nsize + 1);
    if (nsize > m->size)
        memset(m->shadow + m->size, 0, nsize - m->size);
    vbk_hbitmap_truncate(m->hb, nsize);
    m->size = nsize;
    full_compare(m);
}

static void
op_copy(Model *m)
{
    g_autoptr(VbkHBitmap) c = vbk_hbitmap_copy(m->hb);
    g_autofree char *a = vbk_hbitmap_sha256(m->hb);
    g_autofree char *b = vbk_hbitmap_sha256(c);

    CHECK(m, strcmp(a, b) == 0 && vbk_hbitmap_count(c) == m->count, "copy");
    if (g_rand_int_range(m->rng, 0, 4) == 0) {
        vbk_hbitmap_reset_all(m->hb);
        memset(m->shadow, 0, m->size);
        m->count = 0;
    }
}

static void
model_step(Model *m)
{
    unsigned r = g_rand_int_range(m->rng, 0, 1000);

    if (r < 250)
        op_set_reset(m, true);
    else if (r < 450)
        op_set_reset(m, false);
    else if (r < 800)
        op_queries(m);
    else if (r < 940)
        op_serialize(m);
    else if (r < 960)
        op_merge(m);
    else if (r < 980)
        op_merge_scaled(m);
    else if (r < 985)
        op_truncate(m);
    else
        op_copy(m);
}

START_TEST(test_model)
{
    const SizeCase *sc = &size_cases[_i];
    g_autoptr(GTimer) timer = g_timer_new();
    Model m = {0};
    unsigned n;

    m.seed = base_seed ^ ((guint32) _i * 2654435761u);
    m.rng = g_rand_new_with_seed(m.seed);
    m.size = m.size0 = sc->size;
    m.hb = vbk_hbitmap_new(m.size);
    m.shadow = g_malloc0(m.size + 1);
    for (n = 0; n < sc->ops; n++) {
        m.op = n;
        model_step(&m);
        CHECK(&m, vbk_hbitmap_count(m.hb) == m.count,
              "count %" G_GUINT64_FORMAT ", want %" G_GUINT64_FORMAT,
              vbk_hbitmap_count(m.hb), m.count);
        if (n % 512 == 511)
            full_compare(&m);
    }
    full_compare(&m);
    fprintf(stderr, "# size %" G_GUINT64_FORMAT ": %u operations, %.1f s\n",
            sc->size, sc->ops, g_timer_elapsed(timer, NULL));
    vbk_hbitmap_free(m.hb);
    g_free(m.shadow);
    g_rand_free(m.rng);
}
END_TEST

/* The worked example at the top of hbitmap.c. */
START_TEST(test_worked_example)
{
    g_autoptr(VbkHBitmap) hb = vbk_hbitmap_new(UINT64_C(1) << 20);
    uint64_t as, al;

    vbk_hbitmap_set(hb, 5, 1);
    vbk_hbitmap_set(hb, 700000, 1);
    ck_assert(vbk_hbitmap_self_check(hb));
    ck_assert_int_eq(vbk_hbitmap_next_dirty(hb, 6, UINT64_MAX), 700000);
    ck_assert_int_eq(vbk_hbitmap_next_dirty(hb, 0, 5), -1);
    ck_assert_int_eq(vbk_hbitmap_next_dirty(hb, 700001, UINT64_MAX), -1);
    ck_assert_int_eq(vbk_hbitmap_count(hb), 2);
    ck_assert(vbk_hbitmap_next_dirty_area(hb, 6, UINT64_MAX, 10, &as, &al));
    ck_assert_uint_eq(as, 700000);
    ck_assert_uint_eq(al, 1);
    /* a big range is set and reset word by word, count follows */
    vbk_hbitmap_set(hb, 1000, 500000);
    ck_assert_int_eq(vbk_hbitmap_count(hb), 500002);
    ck_assert_int_eq(vbk_hbitmap_next_clean(hb, 1000, UINT64_MAX), 501000);
    vbk_hbitmap_reset(hb, 0, UINT64_C(1) << 20);
    ck_assert_int_eq(vbk_hbitmap_count(hb), 0);
    ck_assert(vbk_hbitmap_self_check(hb));
}
END_TEST

/* qcow2's bit order: LSB first within a byte, bytes ascending. */
START_TEST(test_serial_order)
{
    g_autoptr(VbkHBitmap) hb = vbk_hbitmap_new(100);
    guint8 buf[13] = {0};
    const guint8 in[2] = {0x81, 0x02};

    vbk_hbitmap_set(hb, 0, 1);
    vbk_hbitmap_set(hb, 9, 1);
    vbk_hbitmap_set(hb, 99, 1);
    ck_assert_uint_eq(vbk_hbitmap_serialization_size(hb, 0, 100), 13);
    vbk_hbitmap_serialize_part(hb, buf, 0, 100);
    ck_assert_uint_eq(buf[0], 0x01);
    ck_assert_uint_eq(buf[1], 0x02);
    ck_assert_uint_eq(buf[12], 0x08);
    vbk_hbitmap_deserialize_part(hb, in, 16, 16);
    ck_assert(vbk_hbitmap_test(hb, 16) && vbk_hbitmap_test(hb, 23));
    ck_assert(vbk_hbitmap_test(hb, 25) && !vbk_hbitmap_test(hb, 24));
    ck_assert_int_eq(vbk_hbitmap_count(hb), 6);
}
END_TEST

/* QEMU's x-debug-block-dirty-bitmap-sha256 of a 64 MiB node with 64 KiB
 * granularity (1024 granules), values taken from qemu-storage-daemon 7.2:
 * empty, and after writes dirtying granules 0, 32, 33, 34 and 960. */
START_TEST(test_sha256)
{
    g_autoptr(VbkHBitmap) hb = vbk_hbitmap_new(1024);
    g_autofree char *empty = vbk_hbitmap_sha256(hb);
    g_autofree char *dirty = NULL;

    ck_assert_str_eq(empty, "38723a2e5e8a17aa7950dc008209944e"
                            "898f69a7bd10a23c839d341e935fd5ca");
    vbk_hbitmap_set(hb, 0, 1);
    vbk_hbitmap_set(hb, 32, 3);
    vbk_hbitmap_set(hb, 960, 1);
    dirty = vbk_hbitmap_sha256(hb);
    ck_assert_str_eq(dirty, "c4a1e9597c3cfefccbf4208eb3a98f41"
                            "66e99a7ffd2680b5baf43976b47c8f60");
}
END_TEST

static Suite *
hbitmap_suite(void)
{
    Suite *s = suite_create("hbitmap");
    TCase *tc = tcase_create("model");
    TCase *tf = tcase_create("fixed");

    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_model, 0, G_N_ELEMENTS(size_cases));
    tcase_add_test(tf, test_worked_example);
    tcase_add_test(tf, test_serial_order);
    tcase_add_test(tf, test_sha256);
    suite_add_tcase(s, tf);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    const char *env = g_getenv("VBK_TEST_SEED");

    if (env)
        base_seed = (guint32) strtoul(env, NULL, 0);
    fprintf(stderr, "# check-hbitmap: seed %u (set VBK_TEST_SEED to change)\n",
            base_seed);
    return vbk_test_run(hbitmap_suite());
}
