/*
 * check-qcow2-compress.c: compressed cluster writes
 * (VBK_REQ_WRITE_COMPRESSED) judged by the real qemu-img and qemu-io.
 *
 * vbackup writes clusters of five kinds compressed — a repeating
 * pattern, random bytes (incompressible: written as plain data), zeroes,
 * half random, and low-entropy noise — one by one and two at a time,
 * over several cluster sizes (512 B .. 2 MiB), both compression types,
 * v2 and v3 images, refcount widths 16 and 1 (no sharing possible), with
 * a partial last cluster.  A shadow raw image records what the guest
 * should read.  Then qemu-img must find the image clean (check), equal
 * to the shadow (compare, and convert back to raw), and report exactly
 * the expected clusters as compressed (map: data without an offset;
 * check: compressed-clusters).  The rules QEMU 7.2 follows are checked
 * too: -EINVAL for unaligned requests, -EIO over an allocated cluster
 * when the data compresses, a plain write in place when it does not, a
 * zeroed cluster takes compressed data again; raw nodes -ENOTSUP.
 *
 * Packing: small compressed clusters share one host cluster, and ones
 * bigger than half a cluster run on into the next host cluster; the
 * image end offset shows it and check shows the refcounts are right.
 *
 * Both writers in one image: qemu-img convert -c and qemu-io write -c
 * clusters read back by vbackup, vbackup's clusters read back by QEMU,
 * with both adding clusters to the same image.  blkdebug: the events
 * write_compressed and l2_update_compressed fire, in QEMU's order (an
 * error injected on each fails exactly the compressed write), and a
 * failed write leaves the image clean.
 */
#include <errno.h>
#include <json-glib/json-glib.h>
#include <string.h>

#include "interop-util.h"
#include "testutil.h"

#define KiB (1024ull)
#define MiB (1024ull * 1024)

typedef enum {
    K_PATTERN,
    K_RANDOM,
    K_ZERO,
    K_HALF,
    K_NOISE,
    K_N,
} Kind;

typedef struct {
    uint32_t cluster_size;
    bool zstd;
    int version;
    int refcount_bits;
    uint64_t clusters; /* whole clusters */
    uint64_t tail;     /* bytes of a last partial cluster */
} Case;

static const Case cases[] = {
    {512, false, 3, 16, 40, 0},
    {512, true, 3, 16, 33, 0},
    {4 * KiB, true, 3, 1, 24, 1536},
    {64 * KiB, false, 3, 16, 13, 20 * KiB},
    {64 * KiB, true, 3, 16, 12, 0},
    {64 * KiB, false, 2, 16, 9, 4 * KiB},
    {2 * MiB, true, 3, 16, 4, 512 * KiB},
    {2 * MiB, false, 3, 16, 3, 0},
};

static char *dir;

static void
setup(void)
{
    dir = vbk_test_tmpdir_new();
}

static void
teardown(void)
{
    vbk_test_tmpdir_remove(dir);
    g_clear_pointer(&dir, g_free);
}

static char *
path(const char *name)
{
    return g_build_filename(dir, name, NULL);
}

static void
fill(Kind k, GRand *r, uint8_t *buf, size_t len)
{
    switch (k) {
    case K_PATTERN:
        for (size_t j = 0; j < len; j++)
            buf[j] = (uint8_t) (j / 64 + 1);
        break;
    case K_RANDOM:
        itu_fill_random(r, buf, len);
        break;
    case K_ZERO:
        memset(buf, 0, len);
        break;
    case K_HALF:
        itu_fill_random(r, buf, len / 2);
        memset(buf + len / 2, 0, len - len / 2);
        break;
    default: /* four symbols: about 2 bits of entropy a byte */
        for (size_t j = 0; j < len; j++)
            buf[j] = "acgt"[g_rand_int_range(r, 0, 4)];
        break;
    }
}

/* One image being written, with what it should read and hold. */
typedef struct {
    char *img;
    char *raw;
    VbkBlockNode *bs;
    uint64_t size;
    uint64_t cs;
    uint64_t n; /* clusters, the partial one included */
    uint8_t *shadow;
    bool *compressed; /* expected per cluster */
} Img;

static void
img_open(Img *m, const char *name, const char *node)
{
    g_autoptr(GError) err = NULL;

    m->bs = itu_open_qcow2(m->img, node, false, false, &err);
    ck_assert_msg(m->bs, "open %s: %s", name, err ? err->message : "?");
}

static void
img_new(Img *m, const char *name, const VbkQcow2CreateOptions *o)
{
    m->img = path(name);
    m->raw = g_strconcat(m->img, ".shadow", NULL);
    m->size = o->size;
    m->cs = o->cluster_size;
    m->n = (m->size + m->cs - 1) / m->cs;
    m->shadow = g_malloc0(m->size);
    m->compressed = g_new0(bool, m->n);
    itu_create_qcow2(m->img, o);
    img_open(m, name, "cw0");
}

static void
img_free(Img *m)
{
    if (m->bs)
        itu_close(m->bs);
    g_free(m->img);
    g_free(m->raw);
    g_free(m->shadow);
    g_free(m->compressed);
}

/* Compressed write of clusters [first, first+k) of kind @kind. */
static int
write_clusters(Img *m, uint64_t first, uint64_t k, Kind kind, GRand *r)
{
    uint64_t off = first * m->cs;
    uint64_t len = MIN(k * m->cs, m->size - off);
    g_autofree uint8_t *buf = g_malloc(len);
    int ret;

    for (uint64_t i = 0; i < k; i++)
        fill(kind, r, buf + i * m->cs, MIN(m->cs, len - i * m->cs));
    ret = vbk_block_pwrite(m->bs, off, len, buf, VBK_REQ_WRITE_COMPRESSED);
    if (ret == 0) {
        memcpy(m->shadow + off, buf, len);
        for (uint64_t i = first; i < first + k; i++)
            m->compressed[i] = kind != K_RANDOM;
    }
    return ret;
}

static uint64_t
json_uint(JsonObject *o, const char *member)
{
    return json_object_has_member(o, member)
               ? (uint64_t) json_object_get_int_member(o, member)
               : 0;
}

/* qemu-img check --output=json: the compressed clusters, the end. */
static void
qemu_check_counts(const char *img, uint64_t *compressed, uint64_t *end)
{
    const char *const argv[] = {"qemu-img", "check", "--output=json",
                                "-f",       "qcow2", img,
                                NULL};
    g_autoptr(JsonNode) root = itu_run_json(argv);
    JsonObject *o = json_node_get_object(root);

    ck_assert_uint_eq(json_uint(o, "check-errors"), 0);
    if (compressed)
        *compressed = json_uint(o, "compressed-clusters");
    if (end)
        *end = json_uint(o, "image-end-offset");
}

/* qemu-img map: a data cluster has a host offset exactly when it was
 * not expected to be compressed; the rest were never written. */
static void
assert_map(Img *m)
{
    const char *const argv[] = {"qemu-img", "map", "--output=json", "-f",
                                "qcow2",    m->img, NULL};
    g_autoptr(JsonNode) root = itu_run_json(argv);
    JsonArray *arr = json_node_get_array(root);

    for (guint i = 0; i < json_array_get_length(arr); i++) {
        JsonObject *e = json_array_get_object_element(arr, i);
        uint64_t start = json_uint(e, "start");
        uint64_t len = json_uint(e, "length");
        bool has_off = json_object_has_member(e, "offset");
        bool data = json_object_get_boolean_member(e, "data");

        for (uint64_t c = start / m->cs; c * m->cs < start + len; c++)
            ck_assert_msg(data ? has_off == !m->compressed[c]
                               : !m->compressed[c],
                          "%s: cluster %" G_GUINT64_FORMAT " %s compressed",
                          m->img, c, has_off ? "not" : "wrongly");
    }
}

/* Close, then let QEMU judge the image against the shadow. */
static void
img_judge(Img *m)
{
    g_autofree char *back = g_strconcat(m->img, ".back.raw", NULL);
    g_autofree char *sha_a = NULL;
    g_autofree char *sha_b = NULL;
    g_autoptr(GError) err = NULL;
    uint64_t want = 0, got = 0;

    itu_close(m->bs);
    m->bs = NULL;
    ck_assert(g_file_set_contents(m->raw, (char *) m->shadow, m->size, &err));
    itu_assert_qemu_img_check(m->img);
    itu_assert_qemu_img_compare(m->img, m->raw);
    assert_map(m);
    for (uint64_t c = 0; c < m->n; c++)
        want += m->compressed[c];
    qemu_check_counts(m->img, &got, NULL);
    ck_assert_uint_eq(got, want);
    ck_assert_int_eq(itu_run(NULL, NULL, "qemu-img", "convert", "-f", "qcow2",
                             "-O", "raw", m->img, back, NULL),
                     0);
    sha_a = itu_sha256_file(back);
    sha_b = itu_sha256_file(m->raw);
    ck_assert_str_eq(sha_a, sha_b);
    /* and vbackup reads back what it wrote */
    img_open(m, "reopen", "cw1");
    itu_assert_node_equals_file(m->bs, m->raw);
}

/* QEMU 7.2's rules for requests that cannot be compressed as asked. */
static void
check_refusals(Img *m, GRand *r)
{
    g_autofree uint8_t *buf = g_malloc(m->cs);
    uint64_t cs = m->cs;

    fill(K_PATTERN, r, buf, cs);
    ck_assert_int_eq(vbk_block_pwrite(m->bs, cs / 2, cs / 2, buf,
                                      VBK_REQ_WRITE_COMPRESSED),
                     -EINVAL);
    ck_assert_int_eq(
        vbk_block_pwrite(m->bs, 0, cs / 2, buf, VBK_REQ_WRITE_COMPRESSED),
        -EINVAL);
    /* cluster 0 holds compressed data: compressible data is refused */
    ck_assert_int_eq(
        vbk_block_pwrite(m->bs, 0, cs, buf, VBK_REQ_WRITE_COMPRESSED), -EIO);
    /* cluster 1 holds plain data: incompressible data goes in place */
    ck_assert_int_eq(write_clusters(m, 1, 1, K_RANDOM, r), 0);
    /* cluster 2 zeroed (zero flag, or deallocated on v2) takes some */
    ck_assert_int_eq(
        vbk_block_pwrite_zeroes(m->bs, 2 * cs, cs, VBK_REQ_MAY_UNMAP), 0);
    memset(m->shadow + 2 * cs, 0, cs);
    m->compressed[2] = false;
    ck_assert_int_eq(write_clusters(m, 2, 1, K_NOISE, r), 0);
}

START_TEST(test_write_cases)
{
    const Case *c = &cases[_i];
    VbkQcow2CreateOptions o = {
        .size = c->clusters * c->cluster_size + c->tail,
        .cluster_size = c->cluster_size,
        .version = c->version,
        .refcount_bits = c->refcount_bits,
        .zstd = c->zstd,
    };
    g_autoptr(GRand) r = g_rand_new_with_seed(1000 + _i);
    Img m = {0};
    uint64_t i = 0;

    img_new(&m, "w.qcow2", &o);
    while (i < m.n) {
        /* every third run is two clusters in one request */
        uint64_t k = (i % 3 == 2 && i + 2 < m.n) ? 2 : 1;
        Kind kind = (i + 1 == m.n) ? K_PATTERN : (Kind) (i % K_N);

        ck_assert_int_eq(write_clusters(&m, i, k, kind, r), 0);
        i += k;
    }
    check_refusals(&m, r);
    img_judge(&m);
    img_free(&m);
}
END_TEST

/* Small clusters share a host cluster; big ones run across two. */
START_TEST(test_packing)
{
    VbkQcow2CreateOptions o = {.size = 16 * 64 * KiB,
                               .cluster_size = 64 * KiB};
    g_autoptr(GRand) r = g_rand_new_with_seed(7);
    uint64_t end0 = 0, end = 0, n = 0;
    Img m = {0};

    img_new(&m, "p.qcow2", &o);
    itu_close(m.bs);
    qemu_check_counts(m.img, NULL, &end0);
    img_open(&m, "p.qcow2", "cw0");
    /* eight patterns of a few hundred bytes: one host cluster, plus the
     * L2 table */
    for (uint64_t i = 0; i < 8; i++)
        ck_assert_int_eq(write_clusters(&m, i, 1, K_PATTERN, r), 0);
    /* eight halves of ~33 KiB: without running on they would take eight
     * host clusters, packed they take five */
    for (uint64_t i = 8; i < 16; i++)
        ck_assert_int_eq(write_clusters(&m, i, 1, K_HALF, r), 0);
    img_judge(&m);
    qemu_check_counts(m.img, &n, &end);
    ck_assert_uint_eq(n, 16);
    ck_assert_msg(end <= end0 + 7 * 64 * KiB,
                  "image end %" G_GUINT64_FORMAT " from %" G_GUINT64_FORMAT,
                  end, end0);
    img_free(&m);
}
END_TEST

/* QEMU's compressed clusters and vbackup's in one image. */
START_TEST(test_both_writers)
{
    g_autofree char *src = path("src.raw");
    g_autofree uint8_t *buf = g_malloc(4 * MiB);
    g_autoptr(GRand) r = g_rand_new_with_seed(11);
    g_autoptr(GError) err = NULL;
    Img m = {0};

    /* 4 MiB: noise, a zero MiB (left unallocated by convert), pattern */
    fill(K_NOISE, r, buf, 2 * MiB);
    memset(buf + 2 * MiB, 0, MiB);
    fill(K_PATTERN, r, buf + 3 * MiB, MiB);
    ck_assert(g_file_set_contents(src, (char *) buf, 4 * MiB, &err));
    m.img = path("both.qcow2");
    m.raw = g_strconcat(m.img, ".shadow", NULL);
    m.size = 4 * MiB;
    m.cs = 64 * KiB;
    m.n = 64;
    m.shadow = g_steal_pointer(&buf);
    m.compressed = g_new0(bool, m.n);
    ck_assert_int_eq(itu_run(NULL, NULL, "qemu-img", "convert", "-c", "-O",
                             "qcow2", "-o", "compression_type=zstd", src,
                             m.img, NULL),
                     0);
    for (uint64_t c = 0; c < m.n; c++)
        m.compressed[c] = c < 32 || c >= 48;
    img_open(&m, "both.qcow2", "cw0");
    itu_assert_node_equals_file(m.bs, src); /* QEMU's, read by us */
    for (uint64_t c = 32; c < 40; c++)
        ck_assert_int_eq(write_clusters(&m, c, 1, (Kind) (c % K_N), r), 0);
    itu_close(m.bs);
    /* QEMU adds one after ours, in the same host cluster run */
    ck_assert_int_eq(itu_run(NULL, NULL, "qemu-io", "-f", "qcow2", "-c",
                             "write -c -P 0x5a 2560k 64k", m.img, NULL),
                     0);
    memset(m.shadow + 2560 * KiB, 0x5a, 64 * KiB);
    m.compressed[40] = true;
    img_open(&m, "both.qcow2", "cw0");
    ck_assert_int_eq(write_clusters(&m, 41, 2, K_HALF, r), 0);
    img_judge(&m);
    img_free(&m);
}
END_TEST

/* qcow2 -> blkdebug(@rules) -> file */
static VbkBlockNode *
open_debug(const char *img, const char *rules)
{
    g_autofree char *text = g_strdup_printf(
        "{'driver': <'qcow2'>, 'node-name': <'dq'>, 'file': <{"
        "'driver': <'blkdebug'>, 'node-name': <'dbg'>, %s"
        "'image': <{'driver': <'file'>, 'filename': <'%s'>}>}>}",
        rules, img);

    return itu_open_parsed(text);
}

/*
 * Each event fails exactly the compressed write that fires it, and
 * l2_update_compressed comes before write_compressed: a state set by
 * the first arms an error on the second in the same write, as in QEMU
 * 7.2 (qemu-io over the same rules: the first compressed write fails
 * with ENOSPC).  A failed write leaves the cluster free and the image
 * clean, so the retry succeeds.
 */
static const char *const event_rules[] = {
    "'inject-error': <[{'event': <'write_compressed'>, 'errno': <28>, "
    "'once': <true>, 'immediately': <true>}]>,",
    "'inject-error': <[{'event': <'l2_update_compressed'>, 'errno': <28>, "
    "'once': <true>, 'immediately': <true>}]>,",
    "'set-state': <[{'event': <'l2_update_compressed'>, 'state': <1>, "
    "'new_state': <2>}]>, "
    "'inject-error': <[{'event': <'write_compressed'>, 'state': <2>, "
    "'errno': <28>, 'once': <true>, 'immediately': <true>}]>,",
};

START_TEST(test_blkdebug_events)
{
    VbkQcow2CreateOptions o = {.size = 1 * MiB, .cluster_size = 64 * KiB};
    g_autoptr(GRand) r = g_rand_new_with_seed(3);
    Img m = {0};

    img_new(&m, "e.qcow2", &o);
    itu_close(m.bs);
    m.bs = open_debug(m.img, event_rules[_i]);
    /* neither a plain write nor an incompressible one fires it */
    ck_assert_int_eq(vbk_block_pwrite(m.bs, 0, m.cs, m.shadow, 0), 0);
    ck_assert_int_eq(write_clusters(&m, 1, 1, K_RANDOM, r), 0);
    ck_assert_int_eq(write_clusters(&m, 2, 1, K_PATTERN, r), -ENOSPC);
    ck_assert_int_eq(write_clusters(&m, 3, 1, K_NOISE, r), 0);
    ck_assert_int_eq(write_clusters(&m, 2, 1, K_PATTERN, r), 0);
    img_judge(&m);
    img_free(&m);
}
END_TEST

/* Only qcow2 takes compressed writes. */
START_TEST(test_not_supported)
{
    g_autofree char *raw = path("r.raw");
    g_autofree char *text = NULL;
    g_autoptr(GError) err = NULL;
    uint8_t buf[512] = {0};
    VbkBlockNode *bs;

    ck_assert(vbk_file_create(raw, 1 * MiB, &err));
    text = g_strdup_printf("{'driver': <'raw'>, 'node-name': <'r0'>, "
                           "'file': <{'driver': <'file'>, "
                           "'filename': <'%s'>}>}",
                           raw);
    bs = itu_open_parsed(text);
    ck_assert(!vbk_block_node_supports_compressed_writes(bs));
    ck_assert(!vbk_block_node_supports_compressed_writes(
        vbk_block_node_file(bs)));
    ck_assert_int_eq(
        vbk_block_pwrite(bs, 0, 512, buf, VBK_REQ_WRITE_COMPRESSED), -ENOTSUP);
    itu_close(bs);
}
END_TEST

static Suite *
compress_suite(void)
{
    Suite *s = suite_create("qcow2-compress");
    TCase *tc = tcase_create("compress");

    tcase_set_timeout(tc, 300);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_write_cases, 0, G_N_ELEMENTS(cases));
    tcase_add_test(tc, test_packing);
    tcase_add_test(tc, test_both_writers);
    tcase_add_loop_test(tc, test_blkdebug_events, 0,
                        G_N_ELEMENTS(event_rules));
    tcase_add_test(tc, test_not_supported);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return vbk_test_run(compress_suite());
}
