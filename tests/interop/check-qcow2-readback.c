/*
 * check-qcow2-readback.c: images QEMU wrote read back exactly through
 * vbackup.
 *
 * Every image here is made by the real qemu-img and qemu-io, and the real
 * peer is also the oracle: `qemu-img convert -O raw` of the image gives
 * the bytes vbackup must read, and `qemu-img map --output=json` gives the
 * allocation (which layer of a chain holds each byte, and whether it is
 * data or zeroes) that vbk_block_block_status_above() must report.
 *
 * Cases: a backing chain of three with mixed cluster sizes and a base
 * shorter than its overlays; v3 zero clusters (with and without unmap,
 * aligned and not); compressed clusters (deflate and zstd, small and big
 * clusters); lazy refcounts with the writer killed so the dirty bit stays
 * set; a v2 (compat=0.10) image; 2 MiB clusters.
 */
#include <errno.h>
#include <fcntl.h>
#include <json-glib/json-glib.h>
#include <string.h>
#include <unistd.h>

#include "interop-util.h"
#include "testutil.h"

#define KiB    (1024ull)
#define MiB    (1024ull * 1024)
#define SECTOR 512ull

typedef struct {
    char *dir;
} Fixture;

static Fixture fx;

static void
setup(void)
{
    fx.dir = vbk_test_tmpdir_new();
}

static void
teardown(void)
{
    vbk_test_tmpdir_remove(fx.dir);
    g_clear_pointer(&fx.dir, g_free);
}

static char *
path(const char *name)
{
    return g_build_filename(fx.dir, name, NULL);
}

/* Run a peer that must succeed. */
static void
peer(const char *const *argv)
{
    g_autofree char *out = NULL;
    g_autofree char *err = NULL;
    g_autofree char *cmd = g_strjoinv(" ", (char **) argv);
    int rc = itu_runv(argv, &out, &err);

    ck_assert_msg(rc == 0, "%s: exit %d\n%s%s", cmd, rc, out, err);
}

#define PEER(...)                                                              \
    do {                                                                       \
        const char *const argv_[] = {__VA_ARGS__, NULL};                       \
        peer(argv_);                                                           \
    } while (0)

/* qemu-io -f qcow2 -c CMD... IMG */
static void
qemu_io(const char *img, const char *const *cmds)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    size_t i;

    g_ptr_array_add(argv, (gpointer) "qemu-io");
    g_ptr_array_add(argv, (gpointer) "-f");
    g_ptr_array_add(argv, (gpointer) "qcow2");
    for (i = 0; cmds[i]; i++) {
        g_ptr_array_add(argv, (gpointer) "-c");
        g_ptr_array_add(argv, (gpointer) cmds[i]);
    }
    g_ptr_array_add(argv, (gpointer) img);
    g_ptr_array_add(argv, NULL);
    peer((const char *const *) argv->pdata);
}

#define QEMU_IO(img, ...)                                                      \
    do {                                                                       \
        const char *const cmds_[] = {__VA_ARGS__, NULL};                       \
        qemu_io(img, cmds_);                                                   \
    } while (0)

/* The oracle: qemu-img's own reading of @img as a raw file. */
static char *
oracle_raw(const char *img)
{
    g_autofree char *raw = g_strconcat(img, ".oracle.raw", NULL);

    PEER("qemu-img", "convert", "-f", "qcow2", "-O", "raw", img, raw);
    return g_steal_pointer(&raw);
}

/* Open @img read-only through vbackup and compare with the oracle. */
static VbkBlockNode *
assert_reads_like_qemu(const char *img, bool via_open_image)
{
    g_autofree char *raw = oracle_raw(img);
    g_autoptr(GError) err = NULL;
    VbkBlockNode *bs;

    if (via_open_image)
        bs = vbk_block_node_open_image(img, "qcow2", true, "rb0", &err);
    else
        bs = itu_open_qcow2(img, "rb0", true, false, &err);
    ck_assert_msg(bs, "open %s: %s", img, err ? err->message : "?");
    itu_assert_node_equals_file(bs, raw);
    return bs;
}

/*
 * Allocation per 512-byte sector: depth as vbackup counts it (1 = top,
 * 0 = nowhere) and, where allocated, whether it is data or zeroes.
 */
typedef struct {
    uint8_t depth;
    uint8_t data;
    uint8_t zero;
} SectorMap;

static SectorMap *
qemu_map(const char *img, uint64_t size)
{
    g_autofree char *out = NULL;
    g_autofree char *err = NULL;
    g_autoptr(JsonParser) parser = json_parser_new();
    g_autoptr(GError) jerr = NULL;
    SectorMap *map = g_new0(SectorMap, size / SECTOR);
    JsonArray *arr;
    guint i;
    int rc = itu_run(&out, &err, "qemu-img", "map", "--output=json", "-f",
                     "qcow2", img, NULL);

    ck_assert_msg(rc == 0, "qemu-img map: %s", err);
    ck_assert_msg(json_parser_load_from_data(parser, out, -1, &jerr), "%s",
                  jerr ? jerr->message : "");
    arr = json_node_get_array(json_parser_get_root(parser));
    for (i = 0; i < json_array_get_length(arr); i++) {
        JsonObject *e = json_array_get_object_element(arr, i);
        uint64_t start = json_object_get_int_member(e, "start");
        uint64_t len = json_object_get_int_member(e, "length");
        bool present = json_object_get_boolean_member(e, "present");
        uint64_t s;

        for (s = start / SECTOR; s < (start + len) / SECTOR; s++) {
            if (!present)
                continue;
            map[s].depth = json_object_get_int_member(e, "depth") + 1;
            map[s].data = json_object_get_boolean_member(e, "data");
            map[s].zero = json_object_get_boolean_member(e, "zero");
        }
    }
    return map;
}

static SectorMap *
vbk_map(VbkBlockNode *bs, uint64_t size)
{
    SectorMap *map = g_new0(SectorMap, size / SECTOR);
    uint64_t off = 0;

    while (off < size) {
        uint64_t pnum = 0, s;
        uint32_t depth = 0;
        int st =
            vbk_block_block_status_above(bs, off, size - off, &pnum, &depth);

        ck_assert_msg(st >= 0,
                      "block status above at %" G_GUINT64_FORMAT ": %s", off,
                      g_strerror(-st));
        ck_assert(pnum > 0 && pnum <= size - off);
        ck_assert_msg(off % SECTOR == 0 && pnum % SECTOR == 0,
                      "extent %" G_GUINT64_FORMAT "+%" G_GUINT64_FORMAT
                      " not sector aligned",
                      off, pnum);
        for (s = off / SECTOR; s < (off + pnum) / SECTOR; s++) {
            map[s].depth = depth;
            if (depth) {
                map[s].data = !!(st & VBK_BS_DATA);
                map[s].zero = !!(st & VBK_BS_ZERO);
            }
        }
        off += pnum;
    }
    return map;
}

/* vbackup's allocation map of the chain equals qemu-img map's. */
static void
assert_map_like_qemu(VbkBlockNode *bs, const char *img)
{
    int64_t size = vbk_block_node_getlength(bs);
    g_autofree SectorMap *q = NULL;
    g_autofree SectorMap *v = NULL;
    uint64_t s;

    ck_assert_int_gt(size, 0);
    q = qemu_map(img, size);
    v = vbk_map(bs, size);
    for (s = 0; s < (uint64_t) size / SECTOR; s++) {
        ck_assert_msg(q[s].depth == v[s].depth && q[s].data == v[s].data &&
                          q[s].zero == v[s].zero,
                      "%s sector %" G_GUINT64_FORMAT
                      " (byte %#" G_GINT64_MODIFIER
                      "x): qemu depth %d data %d zero %d, vbackup depth %d"
                      " data %d zero %d",
                      img, s, (guint64) (s * SECTOR), q[s].depth, q[s].data,
                      q[s].zero, v[s].depth, v[s].data, v[s].zero);
    }
}

START_TEST(test_backing_chain_of_three)
{
    g_autofree char *base = path("base.qcow2");
    g_autofree char *mid = path("mid.qcow2");
    g_autofree char *top = path("top.qcow2");
    VbkBlockNode *bs;

    /* base is shorter than its overlays: past 3 MiB the chain reads 0 */
    PEER("qemu-img", "create", "-q", "-f", "qcow2", base, "3M");
    QEMU_IO(base, "write -P 0x11 0 1M", "write -P 0x44 2M 512k");
    PEER("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096",
         "-b", base, "-F", "qcow2", mid, "4M");
    QEMU_IO(mid, "write -P 0x22 512k 1M", "write -z 2M 64k",
            "write -P 0x66 3M 8k", "write -P 0x67 2101248 1000");
    PEER("qemu-img", "create", "-q", "-f", "qcow2", "-b", mid, "-F", "qcow2",
         top, "4M");
    /* unaligned and sub-cluster writes: QEMU copies the rest from below */
    QEMU_IO(top, "write -P 0x33 1081344 100k", "write -P 0x55 3146240 4096",
            "write -z 2555904 128k");

    bs = assert_reads_like_qemu(top, false);
    ck_assert_ptr_nonnull(vbk_block_node_backing(bs));
    ck_assert_ptr_nonnull(vbk_block_node_backing(vbk_block_node_backing(bs)));
    ck_assert_ptr_null(vbk_block_node_backing(
        vbk_block_node_backing(vbk_block_node_backing(bs))));
    assert_map_like_qemu(bs, top);
    itu_close(bs);

    /* the middle of the chain read on its own, through open_image */
    bs = assert_reads_like_qemu(mid, true);
    assert_map_like_qemu(bs, mid);
    itu_close(bs);
}
END_TEST

START_TEST(test_zero_clusters)
{
    g_autofree char *img = path("zero.qcow2");
    VbkBlockNode *bs;

    PEER("qemu-img", "create", "-q", "-f", "qcow2", img, "4M");
    QEMU_IO(img, "write -P 0xaa 0 2M", "write -z 256k 128k",
            "write -z -u 1M 192k", "write -z 1049088 1000", "write -z 3M 64k");
    bs = assert_reads_like_qemu(img, false);
    assert_map_like_qemu(bs, img);
    itu_close(bs);
}
END_TEST

/* Raw data that compresses in parts: patterns, zeroes and noise. */
static char *
make_compressible_raw(const char *name, uint64_t size)
{
    g_autofree char *raw = path(name);
    g_autofree uint8_t *buf = g_malloc0(size);
    g_autoptr(GError) err = NULL;
    GRand *r = g_rand_new_with_seed(4242);
    uint64_t i;

    for (i = 0; i < size / 4; i++)
        buf[i] = (uint8_t) (i / 512);             /* runs: compress well */
    itu_fill_random(r, buf + size / 2, size / 8); /* noise: stays raw */
    for (i = size - size / 8; i < size; i++)
        buf[i] = "vbackup qcow2 "[i % 14];
    g_rand_free(r);
    ck_assert(g_file_set_contents(raw, (char *) buf, size, &err));
    return g_steal_pointer(&raw);
}

static const struct {
    const char *opts;
    uint64_t size;
} compressed_cases[] = {
    {"cluster_size=65536", 4 * MiB},
    {"cluster_size=65536,compression_type=zstd", 4 * MiB},
    {"cluster_size=4096", 2 * MiB},
    {"cluster_size=2097152,compression_type=zstd", 8 * MiB},
    {"cluster_size=512", 1 * MiB},
};

START_TEST(test_compressed)
{
    g_autofree char *raw =
        make_compressible_raw("src.raw", compressed_cases[_i].size);
    g_autofree char *img = path("comp.qcow2");
    g_autofree char *out = NULL;
    VbkBlockNode *bs;

    PEER("qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", "-o",
         compressed_cases[_i].opts, raw, img);
    /* make sure the peer really wrote compressed clusters */
    ck_assert_int_eq(
        itu_run(&out, NULL, "qemu-img", "check", "-f", "qcow2", img, NULL), 0);
    ck_assert_msg(!strstr(out, " 0.00% compressed"), "%s", out);
    bs = assert_reads_like_qemu(img, true);
    itu_close(bs);
    /* the oracle and the source agree too */
    itu_assert_qemu_img_compare(img, raw);
}
END_TEST

static uint64_t
incompatible_features(const char *img)
{
    uint8_t be[8];
    uint64_t v = 0;
    int fd = open(img, O_RDONLY | O_CLOEXEC);
    int i;

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pread(fd, be, 8, 72), 8);
    close(fd);
    for (i = 0; i < 8; i++)
        v = (v << 8) | be[i];
    return v;
}

/* A lazy-refcounts writer killed before close: the dirty bit stays set. */
static char *
make_dirty_image(void)
{
    g_autofree char *img = path("lazy.qcow2");
    const char *const argv[] = {
        "qemu-io",
        "-f",
        "qcow2",
        "-c",
        "write -P 0x77 0 256k",
        "-c",
        "write -P 0x78 1M 64k",
        "-c",
        "write -P 0x79 1234567 3000",
        "-c",
        "sigraise 9",
        img,
        NULL,
    };

    PEER("qemu-img", "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on",
         img, "4M");
    /* killed by SIGKILL: not an exit status */
    ck_assert_int_eq(itu_runv(argv, NULL, NULL), -1);
    ck_assert_msg(incompatible_features(img) & 1, "dirty bit not set");
    return g_steal_pointer(&img);
}

START_TEST(test_lazy_refcounts_dirty)
{
    g_autofree char *img = make_dirty_image();
    VbkBlockNode *bs = assert_reads_like_qemu(img, false);
    VbkFormatInfo info = {0};

    ck_assert(vbk_block_node_format_info(bs, &info));
    ck_assert(info.lazy_refcounts);
    vbk_format_info_clear(&info);
    itu_close(bs);
    /* a read-only open must not have touched the header */
    ck_assert(incompatible_features(img) & 1);
}
END_TEST

START_TEST(test_lazy_refcounts_dirty_rw)
{
    g_autofree char *img = make_dirty_image();
    g_autofree char *raw = oracle_raw(img);
    g_autoptr(GError) err = NULL;
    VbkBlockNode *bs;

    /* as QEMU: a read-write open of a dirty image rebuilds the refcounts */
    bs = itu_open_qcow2(img, "rb0", false, false, &err);
    ck_assert_msg(bs, "open %s: %s", img, err ? err->message : "?");
    itu_assert_node_equals_file(bs, raw);
    itu_close(bs);
    ck_assert_msg(!(incompatible_features(img) & 1), "dirty bit still set");
    itu_assert_qemu_img_check(img);
    itu_assert_qemu_img_compare(img, raw);
}
END_TEST

START_TEST(test_v2)
{
    g_autofree char *img = path("v2.qcow2");
    VbkBlockNode *bs;
    VbkFormatInfo info = {0};

    PEER("qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", img,
         "5M");
    QEMU_IO(img, "write -P 0x21 0 300k", "write -P 0x22 1048577 70000",
            "write -z 128k 64k", "discard 192k 64k", "write -P 0x23 4M 1M");
    bs = assert_reads_like_qemu(img, false);
    ck_assert(vbk_block_node_format_info(bs, &info));
    ck_assert_int_eq(info.version, 2);
    vbk_format_info_clear(&info);
    assert_map_like_qemu(bs, img);
    itu_close(bs);
}
END_TEST

START_TEST(test_2m_clusters)
{
    g_autofree char *img = path("big.qcow2");
    VbkBlockNode *bs;

    PEER("qemu-img", "create", "-q", "-f", "qcow2", "-o",
         "cluster_size=2097152", img, "16M");
    QEMU_IO(img, "write -P 0x31 0 100k", "write -P 0x32 3145729 3M",
            "write -z 8M 2M", "write -P 0x33 12M 512",
            "write -z 12587008 4096");
    bs = assert_reads_like_qemu(img, false);
    ck_assert_int_eq(vbk_block_node_cluster_size(bs), 2 * MiB);
    assert_map_like_qemu(bs, img);
    itu_close(bs);
}
END_TEST

static Suite *
readback_suite(void)
{
    Suite *s = suite_create("interop");
    TCase *tc = tcase_create("readback");

    tcase_set_timeout(tc, 300);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_backing_chain_of_three);
    tcase_add_test(tc, test_zero_clusters);
    tcase_add_loop_test(tc, test_compressed, 0, G_N_ELEMENTS(compressed_cases));
    tcase_add_test(tc, test_lazy_refcounts_dirty);
    tcase_add_test(tc, test_lazy_refcounts_dirty_rw);
    tcase_add_test(tc, test_v2);
    tcase_add_test(tc, test_2m_clusters);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return vbk_test_run(readback_suite());
}
