/*
 * check-qcow2-interop.c: images vbackup writes are valid qcow2 to QEMU
 * and libqcow.
 *
 * For each (cluster size, refcount width, version) of the matrix below,
 * vbackup creates an image and runs a seeded random workload on it —
 * writes of random bytes at random (also unaligned) offsets, write-zeroes
 * with and without MAY_UNMAP, discards, grows and flushes — while a raw
 * "shadow" file replays the same operations with plain pwrite, hole
 * punching and ftruncate.  Then the real peers judge the image:
 *
 *   qemu-img check      exit 0, "No errors were found on the image."
 *                       (exit 3 = leaked clusters fails the test too)
 *   qemu-img compare    the image equals the shadow
 *   qemu-img info       cluster size, refcount bits and compat as asked
 *   qcowinfo            opens it and reports the virtual size
 *   libqcow             the bytes it reads equal the shadow (see below)
 *   vbackup             re-opened read-only, every byte equals the shadow
 *
 * Discard model.  The nodes are opened with discard=unmap (QEMU ignores
 * discards entirely under the blockdev-add default discard=ignore).  A
 * discard then deallocates the clusters it covers completely; a cluster
 * it covers only partly is left untouched, as QEMU's block layer drops the
 * unaligned head and tail of a discard.  Without a backing file a
 * deallocated cluster reads as zeroes (v2: unallocated; v3: unallocated or
 * zero flag), so the shadow zeroes exactly the whole clusters inside the
 * range.  Discards are kept below the last cluster boundary of the image,
 * so the partial last cluster of an unaligned size (whose treatment QEMU
 * special-cases) is never involved.
 *
 * libqcow (20201213, the Debian 12 version) does not implement the v3
 * zero flag: a cluster whose L2 entry has bit 0 set is read from its host
 * offset, which is 0 (the header) for a plain zero cluster.  That is a
 * limitation of libqcow, verified by hand with qemu-io 'write -z'.  So for
 * v3 images libqcow's bytes are compared in the extents vbackup reports
 * as DATA and not ZERO, and for v2 (which has no zero flag) everywhere.
 *
 * The seed is printed on stderr; VBK_TEST_SEED=N replays a run, and
 * VBK_WORKLOAD_CASE=I runs only case I of the matrix.
 */
#include <errno.h>
#include <fcntl.h>
#include <json-glib/json-glib.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "interop-util.h"
#include "testutil.h"

#define KiB (1024ull)
#define MiB (1024ull * 1024)

typedef struct {
    uint32_t cluster_size;
    int refcount_bits;
    int version;
} WorkloadCase;

/*
 * Every cluster size at the default width 16, every width at 64 KiB and
 * at 512 B (the extremes of refblock coverage), v2 at three cluster
 * sizes, and a few mixed corners.
 */
/* clang-format off */
static const WorkloadCase workload_cases[] = {
    { 512, 16, 3 },     { 1 * KiB, 16, 3 },   { 2 * KiB, 16, 3 },
    { 4 * KiB, 16, 3 }, { 8 * KiB, 16, 3 },   { 16 * KiB, 16, 3 },
    { 32 * KiB, 16, 3 }, { 64 * KiB, 16, 3 }, { 128 * KiB, 16, 3 },
    { 256 * KiB, 16, 3 }, { 512 * KiB, 16, 3 }, { 1 * MiB, 16, 3 },
    { 2 * MiB, 16, 3 },
    { 64 * KiB, 1, 3 }, { 64 * KiB, 2, 3 },   { 64 * KiB, 4, 3 },
    { 64 * KiB, 8, 3 }, { 64 * KiB, 32, 3 },  { 64 * KiB, 64, 3 },
    { 512, 1, 3 },      { 512, 2, 3 },        { 512, 4, 3 },
    { 512, 8, 3 },      { 512, 32, 3 },       { 512, 64, 3 },
    { 512, 16, 2 },     { 64 * KiB, 16, 2 },  { 2 * MiB, 16, 2 },
    { 4 * KiB, 1, 3 },  { 2 * MiB, 64, 3 },   { 1 * MiB, 1, 3 },
};
/* clang-format on */

typedef struct {
    VbkBlockNode *bs;
    int shadow;
    uint64_t size;
    uint64_t max_size;
    uint32_t cs;
    GRand *rand;
    uint8_t *buf;
    size_t buf_len;
    unsigned counts[5]; /* write, zero, discard, grow, flush */
} Workload;

static guint32 base_seed;

static void
seed_init(void)
{
    const char *env = g_getenv("VBK_TEST_SEED");

    base_seed = env ? (guint32) g_ascii_strtoull(env, NULL, 0)
                    : (guint32) g_random_int();
    g_printerr("# check-qcow2-interop: seed %u (VBK_TEST_SEED=%u replays)\n",
               base_seed, base_seed);
}

static uint64_t
rand_below(GRand *r, uint64_t n)
{
    uint64_t v = ((uint64_t) g_rand_int(r) << 32) | g_rand_int(r);

    return n ? v % n : 0;
}

/*
 * A random range inside [0, limit): alignment mode 0 is byte granular,
 * 1 sector aligned, 2 cluster aligned start, 3 whole clusters.
 */
static void
pick_range(Workload *w, uint64_t limit, uint64_t *off, uint64_t *len)
{
    uint64_t max_len = MIN(MAX(4ull * w->cs, 128 * KiB), 4 * MiB);
    int mode = g_rand_int_range(w->rand, 0, 4);
    uint64_t align = mode == 0 ? 1 : mode == 1 ? 512 : w->cs;

    max_len = MIN(max_len, limit);
    *off = rand_below(w->rand, limit / align) * align;
    *len = 1 + rand_below(w->rand, MIN(max_len, limit - *off));
    if (mode == 3)
        *len = MAX(ITU_ROUND_DOWN(*len, w->cs), w->cs);
    else if (mode == 1)
        *len = MAX(ITU_ROUND_DOWN(*len, 512), 512);
    *len = MIN(*len, limit - *off);
}

static void
shadow_zero(Workload *w, uint64_t off, uint64_t len)
{
    g_autofree uint8_t *z = NULL;

    if (len == 0)
        return;
    if (fallocate(w->shadow, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off,
                  len) == 0)
        return;
    z = g_malloc0(len);
    ck_assert_int_eq(pwrite(w->shadow, z, len, off), (ssize_t) len);
}

static void
op_write(Workload *w)
{
    uint64_t off, len;
    int ret;

    pick_range(w, w->size, &off, &len);
    if (len > w->buf_len) {
        w->buf = g_realloc(w->buf, len);
        w->buf_len = len;
    }
    itu_fill_random(w->rand, w->buf, len);
    ret = vbk_block_pwrite(w->bs, off, len, w->buf,
                           g_rand_int_range(w->rand, 0, 8) ? 0 : VBK_REQ_FUA);
    ck_assert_msg(ret == 0,
                  "pwrite %" G_GUINT64_FORMAT "+%" G_GUINT64_FORMAT ": %s", off,
                  len, g_strerror(-ret));
    ck_assert_int_eq(pwrite(w->shadow, w->buf, len, off), (ssize_t) len);
    w->counts[0]++;
}

static void
op_write_zeroes(Workload *w)
{
    uint64_t off, len;
    VbkRequestFlags flags = g_rand_boolean(w->rand) ? VBK_REQ_MAY_UNMAP : 0;
    int ret;

    pick_range(w, w->size, &off, &len);
    ret = vbk_block_pwrite_zeroes(w->bs, off, len, flags);
    ck_assert_msg(ret == 0,
                  "pwrite_zeroes %" G_GUINT64_FORMAT "+%" G_GUINT64_FORMAT
                  " flags %d: %s",
                  off, len, flags, g_strerror(-ret));
    shadow_zero(w, off, len);
    w->counts[1]++;
}

static void
op_discard(Workload *w)
{
    uint64_t limit = ITU_ROUND_DOWN(w->size, w->cs);
    uint64_t off, len, zs, ze;
    int ret;

    if (limit == 0)
        return;
    pick_range(w, limit, &off, &len);
    ret = vbk_block_pdiscard(w->bs, off, len);
    ck_assert_msg(ret == 0,
                  "pdiscard %" G_GUINT64_FORMAT "+%" G_GUINT64_FORMAT ": %s",
                  off, len, g_strerror(-ret));
    zs = ITU_ROUND_UP(off, w->cs);
    ze = ITU_ROUND_DOWN(off + len, w->cs);
    if (ze > zs)
        shadow_zero(w, zs, ze - zs);
    w->counts[2]++;
}

static void
op_grow(Workload *w)
{
    g_autoptr(GError) err = NULL;
    uint64_t step = g_rand_boolean(w->rand)
                        ? w->cs * (1 + rand_below(w->rand, 8))
                        : 512 * (1 + rand_below(w->rand, 2048));
    uint64_t new_size = w->size + step;

    if (new_size > w->max_size)
        return;
    ck_assert_msg(vbk_block_truncate(w->bs, new_size, &err),
                  "grow to %" G_GUINT64_FORMAT ": %s", new_size,
                  err ? err->message : "?");
    ck_assert_int_eq(ftruncate(w->shadow, new_size), 0);
    w->size = new_size;
    ck_assert_int_eq(vbk_block_node_getlength(w->bs), (int64_t) new_size);
    w->counts[3]++;
}

static void
run_workload(Workload *w, unsigned n_ops)
{
    unsigned i;

    for (i = 0; i < n_ops; i++) {
        int r = g_rand_int_range(w->rand, 0, 100);

        if (r < 55) {
            op_write(w);
        } else if (r < 75) {
            op_write_zeroes(w);
        } else if (r < 90) {
            op_discard(w);
        } else if (r < 94) {
            op_grow(w);
        } else {
            ck_assert_int_eq(vbk_block_flush(w->bs), 0);
            w->counts[4]++;
        }
    }
    ck_assert_int_eq(vbk_block_flush(w->bs), 0);
}

static void
assert_qemu_img_info(const char *img, const WorkloadCase *c, uint64_t size)
{
    g_autofree char *out = NULL;
    g_autofree char *err = NULL;
    g_autoptr(JsonParser) parser = json_parser_new();
    g_autoptr(GError) jerr = NULL;
    JsonObject *o, *data;
    int rc = itu_run(&out, &err, "qemu-img", "info", "--output=json", "-f",
                     "qcow2", img, NULL);

    ck_assert_msg(rc == 0, "qemu-img info %s: %s", img, err);
    ck_assert_msg(json_parser_load_from_data(parser, out, -1, &jerr), "%s",
                  jerr ? jerr->message : "");
    o = json_node_get_object(json_parser_get_root(parser));
    data = json_object_get_object_member(
        json_object_get_object_member(o, "format-specific"), "data");
    ck_assert_int_eq(json_object_get_int_member(o, "virtual-size"), size);
    ck_assert_int_eq(json_object_get_int_member(o, "cluster-size"),
                     c->cluster_size);
    ck_assert_str_eq(json_object_get_string_member(data, "compat"),
                     c->version == 2 ? "0.10" : "1.1");
    if (c->version == 3) {
        ck_assert_int_eq(json_object_get_int_member(data, "refcount-bits"),
                         c->refcount_bits);
    }
}

static void
assert_qcowinfo(const char *img, int version, uint64_t size)
{
    g_autofree char *out = NULL;
    g_autofree char *err = NULL;
    g_autofree char *want_size =
        g_strdup_printf("(%" G_GUINT64_FORMAT " bytes)", size);
    g_autofree char *want_ver =
        g_strdup_printf("Format version\t\t: %d", version);
    int rc = itu_run(&out, &err, "qcowinfo", img, NULL);

    ck_assert_msg(rc == 0, "qcowinfo %s: exit %d\n%s%s", img, rc, out, err);
    ck_assert_msg(strstr(out, want_size), "qcowinfo size:\n%s", out);
    ck_assert_msg(strstr(out, want_ver), "qcowinfo version:\n%s", out);
}

static void
compare_libqcow_range(ItuLibqcow *q, int shadow, uint64_t off, uint64_t len)
{
    const size_t chunk = 1 * MiB;
    g_autofree uint8_t *a = g_malloc(chunk);
    g_autofree uint8_t *b = g_malloc(chunk);
    g_autoptr(GError) err = NULL;

    while (len > 0) {
        size_t n = MIN(chunk, len);
        int64_t got = itu_libqcow_pread(q, a, n, off, &err);

        ck_assert_msg(got == (int64_t) n,
                      "libqcow read %" G_GUINT64_FORMAT "+%zu: %s", off, n,
                      err ? err->message : "short");
        ck_assert_int_eq(pread(shadow, b, n, off), (ssize_t) n);
        ck_assert_msg(memcmp(a, b, n) == 0,
                      "libqcow differs from the shadow"
                      " in %" G_GUINT64_FORMAT "+%zu",
                      off, n);
        off += n;
        len -= n;
    }
}

/* libqcow's bytes against the shadow, where libqcow can be right. */
static void
assert_libqcow_reads(
    VbkBlockNode *bs, const char *img, int shadow, int version, uint64_t size)
{
    g_autoptr(GError) err = NULL;
    ItuLibqcow *q = itu_libqcow_open(img, &err);
    uint64_t off = 0, compared = 0;

    ck_assert_msg(q, "%s", err ? err->message : "libqcow open");
    ck_assert_int_eq(itu_libqcow_media_size(q), size);
    while (off < size) {
        uint64_t pnum = 0;
        int st = vbk_block_block_status(bs, off, size - off, &pnum, NULL, NULL);

        ck_assert_msg(st >= 0, "block status at %" G_GUINT64_FORMAT ": %s", off,
                      g_strerror(-st));
        ck_assert(pnum > 0 && pnum <= size - off);
        if (version == 2 || ((st & VBK_BS_DATA) && !(st & VBK_BS_ZERO))) {
            compare_libqcow_range(q, shadow, off, pnum);
            compared += pnum;
        }
        off += pnum;
    }
    itu_libqcow_close(q);
    g_printerr("#   libqcow compared %" G_GUINT64_FORMAT " bytes\n", compared);
}

static uint64_t
initial_size(uint32_t cs)
{
    if (cs <= 4 * KiB)
        return 8 * MiB;
    if (cs <= 256 * KiB)
        return 32 * MiB;
    return 64 * MiB;
}

START_TEST(test_workload)
{
    const WorkloadCase *c = &workload_cases[_i];
    g_autofree char *dir = vbk_test_tmpdir_new();
    g_autofree char *img = g_build_filename(dir, "img.qcow2", NULL);
    g_autofree char *raw = g_build_filename(dir, "shadow.raw", NULL);
    g_autoptr(GError) err = NULL;
    VbkQcow2CreateOptions copts = {
        .cluster_size = c->cluster_size,
        .version = c->version,
        .refcount_bits = c->refcount_bits,
    };
    Workload w = {.cs = c->cluster_size};
    guint32 seed = base_seed ^ (guint32) (_i * 0x9e3779b9u);

    g_printerr("# workload: cluster %u, refcount %d, v%d, seed %u\n",
               c->cluster_size, c->refcount_bits, c->version, seed);
    w.rand = g_rand_new_with_seed(seed);
    /* odd start sizes too: a multiple of 512 not of the cluster */
    w.size =
        initial_size(c->cluster_size) + (g_rand_boolean(w.rand) ? 0 : 512 * 7);
    w.max_size = w.size * 2;
    copts.size = w.size;
    itu_create_qcow2(img, &copts);
    w.shadow = open(raw, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ck_assert_int_ge(w.shadow, 0);
    ck_assert_int_eq(ftruncate(w.shadow, w.size), 0);

    w.bs = itu_open_qcow2(img, "interop0", false, false, &err);
    ck_assert_msg(w.bs, "open %s: %s", img, err ? err->message : "?");
    run_workload(&w, c->cluster_size >= 1 * MiB ? 200 : 400);
    g_printerr("#   ops: %u writes, %u write-zeroes, %u discards, %u grows,"
               " %u flushes; size %" G_GUINT64_FORMAT "\n",
               w.counts[0], w.counts[1], w.counts[2], w.counts[3], w.counts[4],
               w.size);
    itu_assert_node_equals_file(w.bs, raw);
    itu_close(w.bs);

    itu_assert_qemu_img_check(img);
    itu_assert_qemu_img_compare(img, raw);
    assert_qemu_img_info(img, c, w.size);
    assert_qcowinfo(img, c->version, w.size);

    w.bs = itu_open_qcow2(img, "interop0", true, false, &err);
    ck_assert_msg(w.bs, "reopen %s: %s", img, err ? err->message : "?");
    itu_assert_node_equals_file(w.bs, raw);
    assert_libqcow_reads(w.bs, img, w.shadow, c->version, w.size);
    itu_close(w.bs);

    close(w.shadow);
    g_rand_free(w.rand);
    g_free(w.buf);
    vbk_test_tmpdir_remove(dir);
}
END_TEST

START_TEST(test_peers_present)
{
    /* The interop suite needs its peers; missing ones are a setup error. */
    ck_assert_msg(vbk_test_have_program("qemu-img"), "qemu-img not on PATH");
    ck_assert_msg(vbk_test_have_program("qcowinfo"), "qcowinfo not on PATH");
    ck_assert_msg(itu_libqcow_available(), "libqcow.so.1 not loadable");
}
END_TEST

static Suite *
interop_suite(void)
{
    Suite *s = suite_create("interop");
    TCase *tc = tcase_create("workload");

    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_peers_present);
    if (g_getenv("VBK_WORKLOAD_CASE")) {
        /* replay one case: VBK_WORKLOAD_CASE=N VBK_TEST_SEED=S */
        int n = atoi(g_getenv("VBK_WORKLOAD_CASE"));

        if (n < 0 || n >= (int) G_N_ELEMENTS(workload_cases))
            g_error("VBK_WORKLOAD_CASE=%d: no such case", n);
        tcase_add_loop_test(tc, test_workload, n, n + 1);
    } else {
        tcase_add_loop_test(tc, test_workload, 0, G_N_ELEMENTS(workload_cases));
    }
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    seed_init();
    return vbk_test_run(interop_suite());
}
