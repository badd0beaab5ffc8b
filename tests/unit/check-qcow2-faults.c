/*
 * check-qcow2-faults.c: I/O errors and bad input in the qcow2 driver.
 *
 * - an EIO injected (blkdebug) after each metadata event of the driver:
 *   exactly one request fails and the image may leak, never be corrupt;
 * - bad headers refused with QEMU's messages, bad L2 entries failing
 *   requests without writing, block status, creation errors.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "block/block.h"
#include "interop-util.h"
#include "testutil.h"

/* events that the fault workload does not reach */
static bool
fault_event_optional(const char *event)
{
    return g_str_equal(event, "l2_alloc_cow_read"); /* no shared L2 */
}

/* ---- I/O errors in the middle of metadata updates ------------------ */

static const char *const fault_events[] = {
    "l1_update",
    "l2_update",
    "l2_alloc_write",
    "l2_alloc_cow_read",
    "refblock_update_part",
    "refblock_alloc",
    "refblock_alloc_write",
    "refblock_alloc_hookup",
    "reftable_grow",
    "refblock_alloc_write_blocks",
    "refblock_alloc_write_table",
    "refblock_alloc_switch_table",
    "cluster_alloc",
    "cluster_free",
    "cow_read",
    "cow_write",
    "write_aio",
    "l1_grow_alloc_table",
    "l1_grow_write_table",
    "l1_grow_activate_table",
};

/* qcow2 -> blkdebug (one EIO after @event) -> file */
static VbkBlockNode *
open_faulty(const char *path, const char *event)
{
    g_autofree char *text = g_strdup_printf(
        "{'driver': <'qcow2'>, 'discard': <'unmap'>, 'file': <{"
        "'driver': <'blkdebug'>, 'inject-error': <[{'event': <'%s'>, "
        "'errno': <5>, 'once': <true>, 'immediately': <false>}]>, "
        "'image': <{'driver': <'file'>, 'filename': <'%s'>}>}>}",
        event, path);
    g_autoptr(GError) err = NULL;
    GVariant *opts = g_variant_parse(NULL, text, NULL, NULL, &err);
    VbkBlockNode *bs;

    ck_assert_msg(opts != NULL, "%s", err ? err->message : "");
    bs = vbk_block_node_open(opts, &err);
    ck_assert_msg(bs != NULL, "%s", err ? err->message : "");
    return bs;
}

/* After a failed metadata write the image may leak, never be corrupt. */
START_TEST(test_fault_injection)
{
    g_autofree char *path = itu_path("f.qcow2");
    g_autofree char *out = NULL;
    VbkQcow2CreateOptions o = {
        .size = 4 << 20, .cluster_size = 512, .refcount_bits = 64};
    g_autofree uint8_t *b = g_malloc(128 * 1024);
    g_autoptr(GError) err = NULL;
    VbkBlockNode *bs;
    int failures = 0, rc;

    memset(b, 0x3c, 128 * 1024);
    itu_create_qcow2(path, &o);
    /* the dispatch layer lets only protocol nodes grow, not blkdebug:
     * give the file room up front */
    ck_assert_int_eq(truncate(path, 16 << 20), 0);
    bs = open_faulty(path, fault_events[_i]);
    for (int i = 0; i < 24; i++) {
        uint64_t off = (uint64_t) i * 110000 + 100;
        failures += vbk_block_pwrite(bs, off, 100000 + i, b, 0) < 0;
        failures += vbk_block_pwrite_zeroes(bs, off + 4096, 2048, 0) < 0;
        failures += vbk_block_pdiscard(bs, off, 4096) < 0;
        if (i == 12)
            failures += !vbk_block_truncate(bs, 8 << 20, &err);
        g_clear_error(&err);
    }
    itu_close(bs);
    rc = itu_run(&out, NULL, "qemu-img", "check", "-f", "qcow2", path, NULL);
    ck_assert_msg(rc == 0 || rc == 3, "event %s: rc %d (%d failures)\n%s",
                  fault_events[_i], rc, failures, out);
    /* the event fired and exactly one request failed */
    ck_assert_msg(failures == 1 ||
                      (failures == 0 && fault_event_optional(fault_events[_i])),
                  "event %s: %d failures", fault_events[_i], failures);
    ck_assert_msg(!strstr(out, "ERROR"), "%s", out);
}
END_TEST

/* ---- bad images ---------------------------------------------------- */

static void
open_fails(const char *path, bool read_only, const char *message)
{
    g_autoptr(GError) err = NULL;
    VbkBlockNode *bs =
        vbk_block_node_open_image(path, "qcow2", read_only, NULL, &err);

    ck_assert_ptr_null(bs);
    ck_assert_ptr_nonnull(err);
    ck_assert_msg(strstr(err->message, message), "got '%s', want '%s'",
                  err->message, message);
}

/* One header field patched in a fresh qemu-img image, and QEMU's
 * message for it. */
typedef struct {
    long off;
    uint8_t bytes[8];
    size_t len;
    bool read_only;
    const char *message;
} BadHeader;

static const BadHeader bad_headers[] = {
    {72,
     {0, 0, 0, 0, 0x10, 0, 0, 0},
     8,
     true,
     "Unsupported qcow2 feature(s): Unknown incompatible feature: 10000000"},
    {72,
     {0, 0, 0, 0, 0, 0, 0, 2},
     8,
     false,
     "qcow2: Image is corrupt; cannot be opened read/write"},
    {20, {0, 0, 0, 8}, 4, true, "Unsupported cluster size: 2^8"},
    {4, {0, 0, 0, 4}, 4, true, "Unsupported qcow2 version 4"},
    {96, {0, 0, 0, 7}, 4, true, "Reference count entry width too large"},
    {40,
     {0, 0, 0, 1, 0, 0, 0, 0},
     8,
     true,
     "L1 table offset invalid or outside the image file"},
    {40, {0, 0, 0, 0, 0, 1, 0, 0}, 8, true, "overlaps"},
    {36, {0x10, 0, 0, 0}, 4, true, "Active L1 table too large"},
};

START_TEST(test_bad_headers)
{
    g_autofree char *path = itu_path("bad.qcow2");
    VbkBlockNode *bs;

    for (size_t i = 0; i < G_N_ELEMENTS(bad_headers); i++) {
        const BadHeader *h = &bad_headers[i];

        itu_qemu_img_create(path, "compat=1.1", NULL, "1M");
        itu_patch(path, h->off, h->bytes, h->len);
        open_fails(path, h->read_only, h->message);
    }
    /* the corrupt bit still lets the image open read-only */
    itu_qemu_img_create(path, "compat=1.1", NULL, "1M");
    itu_patch(path, 72, bad_headers[1].bytes, 8);
    bs = itu_open_image(path, true);
    itu_close(bs);

    itu_qemu_img_create(path, "extended_l2=on", NULL, "1M");
    open_fails(path, true, "Unsupported qcow2 feature(s): extended L2 entries");

    ck_assert(g_file_set_contents(path, "QFI", 3, NULL));
    open_fails(path, true, "Image is not in qcow2 format");

    /* a backing name offset past the end of a short file (found by
     * fuzz-qcow2): the extension walk stays inside cluster 0 */
    itu_qemu_img_create(path, "compat=1.1", NULL, "1M");
    {
        static const uint8_t boff[] = {0, 0, 0, 0, 0, 0, 8, 0};
        static const uint8_t ext[] = {0, 0x23, 0, 0, 0, 0, 0, 0x10};
        itu_patch(path, 8, boff, 8);
        itu_patch(path, 0x70, ext, 8); /* unknown extension, 16 bytes */
        ck_assert_int_eq(truncate(path, 580), 0);
    }
    open_fails(path, true, "L1 table offset invalid or outside the image file");
}
END_TEST

/* An L2 entry pointing past the end of the file fails the request and
 * nothing is written. */
START_TEST(test_bad_l2_entry)
{
    g_autofree char *path = itu_path("badl2.qcow2");
    g_autofree char *before = NULL;
    g_autofree char *after = NULL;
    gsize n1, n2;
    uint8_t entry[8] = {0x80, 0, 0, 0, 0x10, 0, 0, 0}; /* 64 GiB, COPIED */
    uint8_t l2_bad_align[8] = {0x80, 0, 0, 0, 0, 0, 0x02, 0};
    uint8_t buf[512];
    VbkBlockNode *bs;

    itu_qemu_img_create(path, "compat=1.1", NULL, "1M");
    itu_qemu_io(path, "write -P 0x1 0 64k");
    /* L1 at 0x30000, the first L2 table at 0x40000 */
    itu_patch(path, 0x40000, entry, 8);
    ck_assert(g_file_get_contents(path, &before, &n1, NULL));
    bs = itu_open_image(path, false);
    ck_assert_int_lt(vbk_block_pread(bs, 0, 512, buf), 0);
    memset(buf, 0x55, sizeof(buf));
    ck_assert_int_eq(vbk_block_pwrite(bs, 0, 512, buf, 0), -EIO);
    itu_close(bs);
    ck_assert(g_file_get_contents(path, &after, &n2, NULL));
    ck_assert_uint_eq(n1, n2);
    ck_assert(memcmp(before, after, n1) == 0);

    itu_patch(path, 0x40000, l2_bad_align, 8);
    bs = itu_open_image(path, true);
    ck_assert_int_eq(vbk_block_pread(bs, 0, 512, buf), -EIO);
    itu_close(bs);
}
END_TEST

START_TEST(test_block_status)
{
    g_autofree char *path = itu_path("bs.qcow2");
    VbkQcow2CreateOptions o = {.size = 4 << 20};
    VbkBlockNode *bs;
    uint64_t pnum, map;
    VbkBlockNode *file;
    uint8_t *b = g_malloc(256 * 1024);
    int ret;

    memset(b, 0xee, 256 * 1024);
    itu_create_qcow2(path, &o);
    bs = itu_open_image(path, false);
    ck_assert_int_eq(vbk_block_pwrite(bs, 0, 256 * 1024, b, 0), 0);
    ck_assert_int_eq(
        vbk_block_pwrite_zeroes(bs, 256 * 1024, 128 * 1024, VBK_REQ_MAY_UNMAP),
        0);
    ret = vbk_block_block_status(bs, 0, 4 << 20, &pnum, &map, &file);
    ck_assert_int_eq(ret & ~VBK_BS_EOF,
                     VBK_BS_DATA | VBK_BS_ALLOCATED | VBK_BS_OFFSET_VALID);
    ck_assert_uint_eq(pnum, 256 * 1024);
    ck_assert_ptr_eq(file, vbk_block_node_file(bs));
    ck_assert_uint_eq(map % 65536, 0);
    ret = vbk_block_block_status(bs, 256 * 1024, 4 << 20, &pnum, NULL, NULL);
    ck_assert_int_eq(ret, VBK_BS_ZERO | VBK_BS_ALLOCATED);
    ck_assert_uint_eq(pnum, 128 * 1024);
    ret = vbk_block_block_status(bs, 384 * 1024, 4 << 20, &pnum, NULL, NULL);
    ck_assert_int_eq(ret & ~VBK_BS_EOF, 0);
    ck_assert_uint_eq(pnum, (4 << 20) - 384 * 1024);
    itu_close(bs);
    g_free(b);
}
END_TEST

START_TEST(test_create_errors)
{
    g_autofree char *path = itu_path("e.qcow2");
    g_autoptr(GError) err = NULL;
    VbkQcow2CreateOptions bad_cs = {.size = 1 << 20, .cluster_size = 1000};
    VbkQcow2CreateOptions bad_v2 = {
        .size = 1 << 20, .version = 2, .refcount_bits = 8};
    VbkQcow2CreateOptions bad_rb = {.size = 1 << 20, .refcount_bits = 128};
    VbkBlockNode *file;
    VbkBlockNode *bs;

    ck_assert(vbk_file_create(path, 0, &err));
    file = itu_open_file(path, "e-file", &err);
    ck_assert_msg(file != NULL, "%s", err ? err->message : "");
    ck_assert(!vbk_qcow2_create(file, &bad_cs, &err));
    ck_assert_str_eq(
        err->message,
        "Cluster size must be a power of two between 512 and 2048k");
    g_clear_error(&err);
    ck_assert(!vbk_qcow2_create(file, &bad_v2, &err));
    ck_assert(strstr(err->message, "compatibility level 1.1"));
    g_clear_error(&err);
    ck_assert(!vbk_qcow2_create(file, &bad_rb, &err));
    g_clear_error(&err);
    itu_close(file);

    /* sizes must be multiples of 512 (shrinking itself works: see
     * check-qcow2-shrink.py, side by side with qemu-storage-daemon) */
    {
        VbkQcow2CreateOptions o = {.size = 1 << 20};
        itu_create_qcow2(path, &o);
    }
    bs = itu_open_image(path, false);
    ck_assert(!vbk_block_truncate(bs, (2 << 20) + 1, &err));
    ck_assert_str_eq(err->message, "The new size must be a multiple of 512");
    g_clear_error(&err);
    ck_assert(!vbk_block_truncate(bs, 512 * 1024 - 1, &err));
    ck_assert_str_eq(err->message, "The new size must be a multiple of 512");
    ck_assert_int_eq(vbk_block_node_getlength(bs), 1 << 20);
    itu_close(bs);
}
END_TEST

static Suite *
qcow2_faults_suite(void)
{
    Suite *s = suite_create("qcow2-faults");
    TCase *tc;

    tc = tcase_create("faults");
    tcase_add_checked_fixture(tc, itu_setup, itu_teardown);
    tcase_add_loop_test(tc, test_fault_injection, 0,
                        G_N_ELEMENTS(fault_events));
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_checked_fixture(tc, itu_setup, itu_teardown);
    tcase_add_test(tc, test_bad_headers);
    tcase_add_test(tc, test_bad_l2_entry);
    tcase_add_test(tc, test_block_status);
    tcase_add_test(tc, test_create_errors);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return vbk_test_run(qcow2_faults_suite());
}
