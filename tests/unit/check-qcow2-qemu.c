/*
 * check-qcow2-qemu.c: images written by QEMU, read and written by vbackup.
 *
 * qemu-img and qemu-io make images with every header variant (v2/v3,
 * cluster sizes, zstd, narrow refcounts, preallocation, lazy refcounts
 * left dirty by a killed writer, internal snapshots sharing clusters,
 * backing chains of three); vbackup reads them, writes over them, and
 * qemu-img check / qemu-io read -P must agree with what it did.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "block/block.h"
#include "interop-util.h"
#include "testutil.h"

/* ---- images written by QEMU ---------------------------------------- */

START_TEST(test_read_qemu_written)
{
    static const char *const variants[] = {
        "compat=1.1",      "compat=0.10",           "cluster_size=512",
        "cluster_size=2M", "compression_type=zstd", "refcount_bits=1",
    };
    g_autofree char *path = itu_path("q.qcow2");
    VbkBlockNode *bs;
    uint64_t pnum;

    itu_qemu_img_create(path, variants[_i], NULL, "8M");
    itu_qemu_io(path, "write -P 0xab 0 64k");
    itu_qemu_io(path, "write -P 0xcd 2M 4k");
    itu_qemu_io(path, "write -c -P 0x5a 4M 2M");
    itu_qemu_io(path, "write -z 8k 4k");
    bs = itu_open_image(path, true);
    itu_assert_read_pattern(bs, 0, 8192, 0xab);
    itu_assert_read_pattern(bs, 8192, 4096, 0);
    itu_assert_read_pattern(bs, 12288, 65536 - 12288, 0xab);
    itu_assert_read_pattern(bs, 64 * 1024, 2048 * 1024 - 64 * 1024, 0);
    itu_assert_read_pattern(bs, 2 << 20, 4096, 0xcd);
    itu_assert_read_pattern(bs, 4 << 20, 2 << 20, 0x5a);
    ck_assert_int_eq(
        vbk_block_block_status(bs, 4 << 20, 2 << 20, &pnum, NULL, NULL),
        VBK_BS_DATA | VBK_BS_ALLOCATED);
    itu_close(bs);

    /* we write on top of QEMU's clusters, QEMU reads ours */
    bs = itu_open_image(path, false);
    ck_assert_int_eq(vbk_block_pwrite_zeroes(bs, 4 << 20, 4096, 0), 0);
    {
        g_autofree uint8_t *b = g_malloc(5000);
        memset(b, 0x77, 5000);
        ck_assert_int_eq(
            vbk_block_pwrite(bs, (4 << 20) + 65536 + 100, 5000, b, 0), 0);
    }
    itu_close(bs);
    itu_assert_qemu_img_check(path);
    itu_qemu_io_check(path, "read -P 0 4M 4k");
    itu_qemu_io_check(path, "read -P 0x5a 4100k 60k");
    itu_qemu_io_check(path, "read -P 0x77 4259940 5000");
    itu_qemu_io_check(path, "read -P 0x5a 4265040 1929264");
    itu_qemu_io_check(path, "read -P 0xab 12k 52k");
}
END_TEST

/* A raw file of random-ish data converted to a compressed qcow2. */
START_TEST(test_compressed_convert)
{
    static const char *const types[] = {"compression_type=zlib",
                                        "compression_type=zstd"};
    g_autofree char *raw = itu_path("src.raw");
    g_autofree char *path = itu_path("c.qcow2");
    g_autofree uint8_t *data = g_malloc(1 << 20);
    GRand *r = g_rand_new_with_seed(42);
    VbkBlockNode *bs;

    for (int i = 0; i < 1 << 20; i++)
        data[i] = (i & 0x3000) ? (uint8_t) g_rand_int_range(r, 0, 4)
                               : (uint8_t) (i >> 10);
    g_rand_free(r);
    ck_assert(g_file_set_contents(raw, (char *) data, 1 << 20, NULL));
    ck_assert_int_eq(itu_run(NULL, NULL, "qemu-img", "convert", "-c", "-f",
                             "raw", "-O", "qcow2", "-o", types[_i], raw, path,
                             NULL),
                     0);
    bs = itu_open_image(path, true);
    itu_assert_read(bs, data, 0, 1 << 20);
    itu_assert_read(bs, data + 70000, 70000, 3333);
    itu_close(bs);
}
END_TEST

START_TEST(test_backing_chain)
{
    g_autofree char *base = itu_path("base.qcow2");
    g_autofree char *mid = itu_path("mid.qcow2");
    g_autofree char *top = itu_path("top.qcow2");
    VbkBlockNode *bs;
    uint64_t pnum;
    uint32_t depth;
    int ret;

    itu_qemu_img_create(base, "cluster_size=65536", NULL, "1M");
    itu_qemu_io(base, "write -P 0x11 0 1M");
    itu_qemu_img_create(mid, "cluster_size=4096", "base.qcow2", NULL);
    itu_qemu_io(mid, "write -P 0x22 64k 64k");
    itu_qemu_img_create(top, "cluster_size=65536", "mid.qcow2", NULL);
    itu_qemu_io(top, "write -P 0x33 128k 64k");
    itu_qemu_io(top, "write -z 192k 64k");

    bs = itu_open_image(top, false);
    ck_assert_str_eq(vbk_block_node_driver_name(vbk_block_node_backing(bs)),
                     "qcow2");
    itu_assert_read_pattern(bs, 0, 65536, 0x11);
    itu_assert_read_pattern(bs, 65536, 65536, 0x22);
    itu_assert_read_pattern(bs, 131072, 65536, 0x33);
    itu_assert_read_pattern(bs, 196608, 65536, 0);
    ret = vbk_block_block_status_above(bs, 0, 1 << 20, &pnum, &depth);
    ck_assert_int_ge(ret, 0);
    ck_assert_uint_eq(depth, 3);
    ck_assert_uint_eq(pnum, 65536);
    ret = vbk_block_block_status_above(bs, 65536, 1 << 20, &pnum, &depth);
    ck_assert_uint_eq(depth, 2);
    ret = vbk_block_block_status_above(bs, 131072, 65536, &pnum, &depth);
    ck_assert_uint_eq(depth, 1);
    ck_assert(ret & VBK_BS_DATA);
    ret = vbk_block_block_status_above(bs, 196608, 65536, &pnum, &depth);
    ck_assert_uint_eq(depth, 1);
    ck_assert(ret & VBK_BS_ZERO);

    /* partial write: the rest of the cluster is copied up from below */
    {
        uint8_t b[100];
        memset(b, 0x44, sizeof(b));
        ck_assert_int_eq(vbk_block_pwrite(bs, 300000, 100, b, 0), 0);
        ck_assert_int_eq(vbk_block_pwrite(bs, 70000, 100, b, 0), 0);
    }
    /* discard and zero over backing data must read zero */
    ck_assert_int_eq(vbk_block_pdiscard(bs, 512 * 1024, 128 * 1024), 0);
    ck_assert_int_eq(vbk_block_pwrite_zeroes(bs, 0, 1000, 0), 0);
    itu_assert_read_pattern(bs, 512 * 1024, 128 * 1024, 0);
    itu_close(bs);
    itu_assert_qemu_img_check(top);
    itu_qemu_io_check(top, "read -P 0x11 262144 37856");
    itu_qemu_io_check(top, "read -P 0x44 300000 100");
    itu_qemu_io_check(top, "read -P 0x11 300100 27580");
    itu_qemu_io_check(top, "read -P 0x22 65536 4464");
    itu_qemu_io_check(top, "read -P 0x44 70000 100");
    itu_qemu_io_check(top, "read -P 0x22 70100 60972");
    itu_qemu_io_check(top, "read -P 0 512k 128k");
    itu_qemu_io_check(top, "read -P 0 0 1000");
    itu_qemu_io_check(top, "read -P 0x11 1000 64536");
}
END_TEST

/* vbackup creates an overlay with backing file and format. */
START_TEST(test_create_backing)
{
    g_autofree char *base = itu_path("b.qcow2");
    g_autofree char *top = itu_path("t.qcow2");
    g_autofree char *info = NULL;
    VbkQcow2CreateOptions o = {.size = 2 << 20,
                               .backing_file = "b.qcow2",
                               .backing_fmt = "qcow2",
                               .lazy_refcounts = true};
    VbkBlockNode *bs;
    VbkFormatInfo fi;
    uint8_t b[512];

    itu_qemu_img_create(base, "cluster_size=65536", NULL, "1M");
    itu_qemu_io(base, "write -P 0x66 0 1M");
    itu_create_qcow2(top, &o);
    itu_assert_qemu_img_check(top);
    ck_assert_int_eq(
        itu_run(&info, NULL, "qemu-img", "info", "--output=json", top, NULL),
        0);
    ck_assert_msg(strstr(info, "\"backing-filename\": \"b.qcow2\""), "%s",
                  info);
    ck_assert_msg(strstr(info, "\"backing-filename-format\": \"qcow2\""), "%s",
                  info);
    ck_assert_msg(strstr(info, "\"lazy-refcounts\": true"), "%s", info);
    bs = itu_open_image(top, false);
    ck_assert(vbk_block_node_format_info(bs, &fi));
    ck_assert_str_eq(fi.backing_file, "b.qcow2");
    ck_assert(fi.lazy_refcounts);
    ck_assert_int_eq(fi.version, 3);
    vbk_format_info_clear(&fi);
    memset(b, 0x99, sizeof(b));
    ck_assert_int_eq(vbk_block_pwrite(bs, 4096, 512, b, 0), 0);
    itu_assert_read_pattern(bs, 0, 4096, 0x66);
    itu_assert_read_pattern(bs, 1 << 20, 1 << 20, 0);
    itu_close(bs);
    itu_assert_qemu_img_check(top);
    itu_qemu_io_check(top, "read -P 0x66 0 4k");
    itu_qemu_io_check(top, "read -P 0x99 4k 512");
    itu_qemu_io_check(top, "read -P 0x66 4608 1043968");
}
END_TEST

/* Images vbackup creates with the other header options. */
START_TEST(test_create_options)
{
    g_autofree char *path = itu_path("o.qcow2");
    g_autofree char *info = NULL;
    VbkQcow2CreateOptions o = {.size = 3 << 20,
                               .zstd = true,
                               .cluster_size = 8192,
                               .refcount_bits = 4};
    VbkBlockNode *bs;
    VbkFormatInfo fi;

    itu_create_qcow2(path, &o);
    itu_assert_qemu_img_check(path);
    ck_assert_int_eq(
        itu_run(&info, NULL, "qemu-img", "info", "--output=json", path, NULL),
        0);
    ck_assert_msg(strstr(info, "\"compression-type\": \"zstd\""), "%s", info);
    ck_assert_msg(strstr(info, "\"refcount-bits\": 4"), "%s", info);
    bs = itu_open_image(path, false);
    ck_assert(vbk_block_node_format_info(bs, &fi));
    ck_assert(fi.zstd);
    ck_assert_int_eq(fi.refcount_bits, 4);
    ck_assert_uint_eq(fi.cluster_size, 8192);
    vbk_format_info_clear(&fi);
    ck_assert_int_eq(vbk_block_node_getlength(bs), 3 << 20);
    itu_close(bs);
    /* QEMU writes zstd-compressed clusters into it; we read them */
    itu_qemu_io(path, "write -c -P 0x61 0 64k");
    bs = itu_open_image(path, true);
    itu_assert_read_pattern(bs, 0, 65536, 0x61);
    itu_close(bs);
}
END_TEST

/* Preallocated images: every cluster already mapped (zero-flagged with
 * a host cluster for metadata preallocation on v3). */
START_TEST(test_preallocated)
{
    static const char *const modes[] = {
        "preallocation=metadata",
        "preallocation=falloc",
        "preallocation=metadata,compat=0.10",
    };
    g_autofree char *path = itu_path("p.qcow2");
    VbkBlockNode *bs;
    uint64_t pnum;
    uint8_t b[3000];

    itu_qemu_img_create(path, modes[_i], NULL, "2M");
    bs = itu_open_image(path, false);
    itu_assert_read_pattern(bs, 0, 2 << 20, 0);
    ck_assert_int_ge(vbk_block_block_status(bs, 0, 2 << 20, &pnum, NULL, NULL),
                     0);
    memset(b, 0x71, sizeof(b));
    ck_assert_int_eq(vbk_block_pwrite(bs, 65536 + 7, sizeof(b), b, 0), 0);
    ck_assert_int_eq(vbk_block_pwrite_zeroes(bs, 65536, 512, 0), 0);
    ck_assert_int_eq(vbk_block_pwrite_zeroes(bs, 1 << 20, 1 << 19, 0), 0);
    ck_assert_int_eq(vbk_block_pdiscard(bs, 3 << 19, 1 << 19), 0);
    itu_close(bs);
    itu_assert_qemu_img_check(path);
    itu_qemu_io_check(path, "read -P 0 64k 512");
    itu_qemu_io_check(path, "read -P 0x71 66048 2495");
    itu_qemu_io_check(path, "read -P 0 1M 1M");
}
END_TEST

/* A writer with lazy refcounts killed: the dirty bit is left set. */
START_TEST(test_lazy_refcounts_dirty)
{
    g_autofree char *path = itu_path("l.qcow2");
    g_autofree char *data = NULL;
    VbkBlockNode *bs;
    gsize len;

    itu_qemu_img_create(path, "lazy_refcounts=on", NULL, "4M");
    itu_run(NULL, NULL, "qemu-io", "-f", "qcow2", "-c", "write -P 0x42 0 1M",
            "-c", "write -P 0x43 2M 64k", "-c", "sigraise 9", path, NULL);
    ck_assert(g_file_get_contents(path, &data, &len, NULL));
    ck_assert_msg(data[79] & 1, "the dirty bit should be set");
    g_clear_pointer(&data, g_free);

    bs = itu_open_image(path, false);
    itu_assert_read_pattern(bs, 0, 1 << 20, 0x42);
    itu_assert_read_pattern(bs, 2 << 20, 65536, 0x43);
    {
        uint8_t b[4096];
        memset(b, 0x44, sizeof(b));
        ck_assert_int_eq(vbk_block_pwrite(bs, 3 << 20, sizeof(b), b, 0), 0);
    }
    itu_close(bs);
    ck_assert(g_file_get_contents(path, &data, &len, NULL));
    ck_assert_msg(!(data[79] & 1), "the dirty bit should be clear");
    itu_assert_qemu_img_check(path);
    itu_qemu_io_check(path, "read -P 0x42 0 1M");
    itu_qemu_io_check(path, "read -P 0x44 3M 4k");
}
END_TEST

static const char *const variants_snapshot[] = {
    "compat=1.1",
    "compat=0.10",
    "cluster_size=4096,refcount_bits=2",
};

/* An internal snapshot shares L2 tables and data clusters (refcount 2):
 * writes copy them, and the snapshot keeps its data. */
START_TEST(test_internal_snapshot)
{
    g_autofree char *path = itu_path("s.qcow2");
    VbkBlockNode *bs;
    uint8_t b[4096];

    itu_qemu_img_create(path, variants_snapshot[_i], NULL, "4M");
    itu_qemu_io(path, "write -P 0x10 0 1M");
    ck_assert_int_eq(
        itu_run(NULL, NULL, "qemu-img", "snapshot", "-c", "snap1", path, NULL),
        0);
    bs = itu_open_image(path, false);
    memset(b, 0x20, sizeof(b));
    ck_assert_int_eq(vbk_block_pwrite(bs, 65536 + 100, sizeof(b), b, 0), 0);
    ck_assert_int_eq(vbk_block_pwrite_zeroes(bs, 512 * 1024, 65536, 0), 0);
    ck_assert_int_eq(vbk_block_pdiscard(bs, 768 * 1024, 65536), 0);
    ck_assert_int_eq(vbk_block_pwrite(bs, 2 << 20, sizeof(b), b, 0), 0);
    itu_assert_read_pattern(bs, 0, 65636, 0x10);
    itu_assert_read_pattern(bs, 65636, 4096, 0x20);
    itu_close(bs);
    itu_assert_qemu_img_check(path);
    itu_qemu_io_check(path, "read -P 0x20 65636 4096");
    itu_qemu_io_check(path, "read -P 0 512k 64k");
    itu_qemu_io_check(path, "read -P 0 768k 64k");
    itu_qemu_io_check(path, "read -P 0x10 832k 192k");
    ck_assert_int_eq(
        itu_run(NULL, NULL, "qemu-img", "snapshot", "-a", "snap1", path, NULL),
        0);
    itu_assert_qemu_img_check(path);
    itu_qemu_io_check(path, "read -P 0x10 0 1M");
    itu_qemu_io_check(path, "read -P 0 1M 3M");
}
END_TEST

static Suite *
qcow2_qemu_suite(void)
{
    Suite *s = suite_create("qcow2-qemu");
    TCase *tc;

    tc = tcase_create("interop");
    tcase_add_checked_fixture(tc, itu_setup, itu_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_read_qemu_written, 0, 6);
    tcase_add_loop_test(tc, test_compressed_convert, 0, 2);
    tcase_add_test(tc, test_backing_chain);
    tcase_add_test(tc, test_create_backing);
    tcase_add_test(tc, test_create_options);
    tcase_add_loop_test(tc, test_preallocated, 0, 3);
    tcase_add_test(tc, test_lazy_refcounts_dirty);
    tcase_add_loop_test(tc, test_internal_snapshot, 0, 3);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return vbk_test_run(qcow2_qemu_suite());
}
