/*
 * check-block.c: the block graph core — naming, children, dispatch, and
 * the file, raw and null-co drivers.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "block/block.h"
#include "testutil.h"

static char *tmpdir;

static void
setup(void)
{
    tmpdir = vbk_test_tmpdir_new();
}

static void
teardown(void)
{
    vbk_block_graph_close_all();
    vbk_test_tmpdir_remove(tmpdir);
    g_clear_pointer(&tmpdir, g_free);
}

static char *
make_file(const char *name, uint64_t size)
{
    g_autoptr(GError) err = NULL;
    char *path = g_build_filename(tmpdir, name, NULL);

    ck_assert_msg(vbk_file_create(path, size, &err), "%s",
                  err ? err->message : "");
    return path;
}

static GVariant *
file_opts(const char *path, const char *node_name, bool direct, bool unmap)
{
    GVariantDict d;
    GVariantDict cache;

    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "driver", "s", "file");
    g_variant_dict_insert(&d, "filename", "s", path);
    if (node_name)
        g_variant_dict_insert(&d, "node-name", "s", node_name);
    g_variant_dict_init(&cache, NULL);
    g_variant_dict_insert(&cache, "direct", "b", direct);
    g_variant_dict_insert_value(&d, "cache", g_variant_dict_end(&cache));
    if (unmap)
        g_variant_dict_insert(&d, "discard", "s", "unmap");
    return g_variant_dict_end(&d);
}

static VbkBlockNode *
open_ok(GVariant *opts)
{
    g_autoptr(GError) err = NULL;
    VbkBlockNode *bs = vbk_block_node_open(opts, &err);

    ck_assert_msg(bs != NULL, "open failed: %s", err ? err->message : "");
    return bs;
}

static void
open_fails(GVariant *opts, const char *message)
{
    g_autoptr(GError) err = NULL;
    VbkBlockNode *bs = vbk_block_node_open(opts, &err);

    ck_assert_ptr_null(bs);
    ck_assert_ptr_nonnull(err);
    ck_assert_str_eq(err->message, message);
}

START_TEST(test_file_rw)
{
    g_autofree char *path = make_file("a.img", 1 << 20);
    g_autoptr(VbkBlockNode) bs = open_ok(file_opts(path, "f0", false, true));
    char buf[8192], out[8192];
    uint64_t pnum = 0;
    int ret;

    ck_assert_int_eq(vbk_block_node_getlength(bs), 1 << 20);
    memset(buf, 0xab, sizeof(buf));
    ck_assert_int_eq(vbk_block_pwrite(bs, 4096, sizeof(buf), buf, 0), 0);
    ck_assert_int_eq(vbk_block_pread(bs, 4096, sizeof(out), out), 0);
    ck_assert_mem_eq(buf, out, sizeof(buf));

    /* reads past EOF of a protocol node are zeroes */
    memset(out, 1, sizeof(out));
    ck_assert_int_eq(vbk_block_pread(bs, (1 << 20) - 512, 1024, out), 0);
    for (int i = 0; i < 1024; i++)
        ck_assert_int_eq(out[i], 0);

    /* block status: hole, data, hole */
    ret = vbk_block_block_status(bs, 0, 1 << 20, &pnum, NULL, NULL);
    ck_assert_int_ge(ret, 0);
    ck_assert(ret & VBK_BS_ZERO);
    ck_assert(ret & VBK_BS_ALLOCATED);
    ck_assert_uint_eq(pnum, 4096);
    ret = vbk_block_block_status(bs, 4096, 1 << 20, &pnum, NULL, NULL);
    ck_assert(ret & VBK_BS_DATA);
    ck_assert_uint_eq(pnum, 8192);

    /* discard=unmap punches a hole */
    ck_assert_int_eq(vbk_block_pdiscard(bs, 4096, 8192), 0);
    ret = vbk_block_block_status(bs, 4096, 8192, &pnum, NULL, NULL);
    ck_assert(ret & VBK_BS_ZERO);
    ck_assert_int_eq(vbk_block_pread(bs, 4096, 4096, out), 0);
    for (int i = 0; i < 4096; i++)
        ck_assert_int_eq(out[i], 0);

    /* write-zeroes */
    ck_assert_int_eq(vbk_block_pwrite(bs, 0, 4096, buf, 0), 0);
    ck_assert_int_eq(vbk_block_pwrite_zeroes(bs, 100, 200, 0), 0);
    ck_assert_int_eq(vbk_block_pread(bs, 0, 4096, out), 0);
    for (int i = 0; i < 4096; i++)
        ck_assert_int_eq((unsigned char) out[i],
                         (i >= 100 && i < 300) ? 0 : 0xab);
    ck_assert_int_eq(vbk_block_flush(bs), 0);
}
END_TEST

START_TEST(test_file_discard_ignored_by_default)
{
    g_autofree char *path = make_file("b.img", 65536);
    g_autoptr(VbkBlockNode) bs = open_ok(file_opts(path, NULL, false, false));
    char buf[4096], out[4096];

    memset(buf, 0x5a, sizeof(buf));
    ck_assert_int_eq(vbk_block_pwrite(bs, 0, sizeof(buf), buf, 0), 0);
    ck_assert_int_eq(vbk_block_pdiscard(bs, 0, sizeof(buf)), 0);
    ck_assert_int_eq(vbk_block_pread(bs, 0, sizeof(out), out), 0);
    ck_assert_mem_eq(buf, out, sizeof(buf));
    /* anonymous nodes get QEMU-style generated names */
    ck_assert(g_str_has_prefix(vbk_block_node_name(bs), "#block"));
}
END_TEST

/* O_DIRECT: unaligned requests through the bounce path equal a shadow. */
START_TEST(test_file_direct_unaligned)
{
    const uint64_t size = 256 * 1024;
    g_autofree char *path = make_file("d.img", size);
    g_autoptr(VbkBlockNode) bs = open_ok(file_opts(path, "d0", true, false));
    g_autofree unsigned char *shadow = g_malloc0(size);
    g_autofree unsigned char *buf = g_malloc(size);
    GRand *rand = g_rand_new_with_seed(42);

    ck_assert(vbk_block_node_cache_direct(bs));
    for (int i = 0; i < 500; i++) {
        uint64_t off = g_rand_int_range(rand, 0, size - 1);
        uint64_t len = g_rand_int_range(rand, 1, MIN(size - off, 20000) + 1);
        unsigned char pat = g_rand_int_range(rand, 1, 255);

        memset(buf, pat, len);
        ck_assert_int_eq(vbk_block_pwrite(bs, off, len, buf, 0), 0);
        memset(shadow + off, pat, len);
        off = g_rand_int_range(rand, 0, size - 1);
        len = g_rand_int_range(rand, 1, MIN(size - off, 20000) + 1);
        ck_assert_int_eq(vbk_block_pread(bs, off, len, buf + 1), 0);
        ck_assert_mem_eq(buf + 1, shadow + off, len);
    }
    g_rand_free(rand);
}
END_TEST

typedef struct {
    VbkBlockNode *bs;
    int index;
} RmwArg;

static gpointer
rmw_writer(gpointer data)
{
    RmwArg *a = data;
    unsigned char byte = (unsigned char) (a->index + 1);

    /* each thread owns every 4th byte of the first two 4 KiB blocks */
    for (uint64_t off = a->index; off < 8192; off += 4) {
        if (vbk_block_pwrite(a->bs, off, 1, &byte, 0) < 0)
            return GINT_TO_POINTER(1);
    }
    return NULL;
}

START_TEST(test_file_direct_concurrent_rmw)
{
    g_autofree char *path = make_file("r.img", 65536);
    g_autoptr(VbkBlockNode) bs = open_ok(file_opts(path, NULL, true, false));
    GThread *threads[4];
    RmwArg args[4];
    unsigned char out[8192];

    for (int i = 0; i < 4; i++) {
        args[i] = (RmwArg){bs, i};
        threads[i] = g_thread_new("rmw", rmw_writer, &args[i]);
    }
    for (int i = 0; i < 4; i++)
        ck_assert_ptr_null(g_thread_join(threads[i]));
    ck_assert_int_eq(vbk_block_pread(bs, 0, sizeof(out), out), 0);
    for (int i = 0; i < 8192; i++)
        ck_assert_int_eq(out[i], i % 4 + 1);
}
END_TEST

START_TEST(test_raw_over_file)
{
    g_autofree char *path = make_file("raw.img", 1 << 20);
    g_autoptr(GError) err = NULL;
    g_autoptr(VbkBlockNode) file = open_ok(file_opts(path, "proto", false,
                                                     false));
    g_autoptr(VbkBlockNode) raw = NULL;
    char buf[512] = {7}, out[512];

    raw = open_ok(g_variant_new_parsed("{'driver': <'raw'>, "
                                       "'node-name': <'fmt'>, "
                                       "'file': <'proto'>}"));
    ck_assert_ptr_eq(vbk_block_node_file(raw), file);
    ck_assert_str_eq(vbk_block_node_filename(raw), path);
    ck_assert_int_eq(vbk_block_pwrite(raw, 512, 512, buf, VBK_REQ_FUA), 0);
    ck_assert_int_eq(vbk_block_pread(file, 512, 512, out), 0);
    ck_assert_mem_eq(buf, out, 512);
    /* a format node cannot be accessed past its end */
    ck_assert_int_eq(vbk_block_pread(raw, (1 << 20) - 256, 512, out), -EIO);

    /* the file node is in use by the raw node */
    ck_assert(!vbk_block_node_delete("proto", &err));
    ck_assert_str_eq(err->message, "Block device proto is in use");
    g_clear_error(&err);
    g_clear_pointer(&raw, vbk_block_node_unref);
    ck_assert(vbk_block_node_delete("fmt", &err));
    ck_assert_ptr_null(vbk_block_node_find("fmt"));
    ck_assert(!vbk_block_node_delete("fmt", &err));
    ck_assert_str_eq(err->message,
                     "Failed to find node with node-name='fmt'");
}
END_TEST

START_TEST(test_open_errors)
{
    g_autofree char *path = make_file("e.img", 4096);
    g_autoptr(VbkBlockNode) bs = open_ok(file_opts(path, "dup", false, false));
    g_autofree char *missing = g_build_filename(tmpdir, "nope", NULL);
    g_autofree char *msg = NULL;

    open_fails(g_variant_new_parsed("{'filename': <'x'>}"),
               "Parameter 'driver' is missing");
    open_fails(g_variant_new_parsed("{'driver': <'vmdk9'>}"),
               "Parameter 'driver' does not accept value 'vmdk9'");
    open_fails(g_variant_new_parsed("{'driver': <'file'>, 'filename': <'x'>,"
                                    " 'bogus': <1>}"),
               "Parameter 'bogus' is unexpected");
    open_fails(g_variant_new_parsed("{'driver': <'file'>}"),
               "Parameter 'filename' is missing");
    open_fails(file_opts(path, "dup", false, false),
               "Duplicate nodes with node-name='dup'");
    open_fails(file_opts(path, "9bad", false, false),
               "Invalid node-name: '9bad'");
    open_fails(g_variant_new_parsed("{'driver': <'raw'>}"),
               "Parameter 'file' is missing");
    open_fails(g_variant_new_parsed("{'driver': <'raw'>, 'file': <'nosuch'>}"),
               "Cannot find device='nosuch' nor node-name='nosuch'");
    open_fails(g_variant_new_parsed("{'driver': <'null-co'>, 'size': <'x'>}"),
               "Invalid parameter type for 'size', expected: integer");
    msg = g_strdup_printf("Could not open '%s': No such file or directory",
                          missing);
    open_fails(file_opts(missing, NULL, false, false), msg);
    /* a failed open leaves no node behind */
    ck_assert_ptr_null(vbk_block_node_find("9bad"));
}
END_TEST

START_TEST(test_null_co)
{
    g_autoptr(VbkBlockNode) bs = NULL;
    g_autoptr(GError) err = NULL;
    char buf[4096];
    uint64_t pnum;

    bs = open_ok(g_variant_new_parsed("{'driver': <'null-co'>, "
                                      "'size': <int64 1048576>, "
                                      "'read-zeroes': <true>}"));
    ck_assert_int_eq(vbk_block_node_getlength(bs), 1048576);
    memset(buf, 1, sizeof(buf));
    ck_assert_int_eq(vbk_block_pread(bs, 0, sizeof(buf), buf), 0);
    ck_assert_int_eq(buf[100], 0);
    ck_assert_int_eq(vbk_block_pwrite(bs, 0, sizeof(buf), buf, 0), 0);
    ck_assert(vbk_block_block_status(bs, 0, 1 << 20, &pnum, NULL, NULL) &
              VBK_BS_ZERO);
    ck_assert_uint_eq(pnum, 1 << 20);
    ck_assert(!vbk_block_truncate(bs, 1 << 21, &err));
    ck_assert_str_eq(err->message,
                     "Image format driver does not support resize");
}
END_TEST

START_TEST(test_read_only_and_truncate)
{
    g_autofree char *path = make_file("ro.img", 8192);
    g_autoptr(GError) err = NULL;
    g_autoptr(VbkBlockNode) ro = NULL;
    g_autoptr(VbkBlockNode) rw = NULL;
    GVariantDict d;
    char buf[512] = {0};

    g_variant_dict_init(&d, file_opts(path, "ro", false, false));
    g_variant_dict_insert(&d, "read-only", "b", TRUE);
    ro = open_ok(g_variant_dict_end(&d));
    ck_assert(vbk_block_node_is_read_only(ro));
    ck_assert_int_eq(vbk_block_pwrite(ro, 0, 512, buf, 0), -EACCES);
    ck_assert(!vbk_block_truncate(ro, 65536, &err));
    ck_assert_str_eq(err->message, "Image is read-only");

    rw = open_ok(file_opts(path, "rw", false, false));
    ck_assert(vbk_block_truncate(rw, 65536, NULL));
    ck_assert_int_eq(vbk_block_node_getlength(rw), 65536);
}
END_TEST

static Suite *
block_suite(void)
{
    Suite *s = suite_create("block");
    TCase *tc = tcase_create("file");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_file_rw);
    tcase_add_test(tc, test_file_discard_ignored_by_default);
    tcase_add_test(tc, test_file_direct_unaligned);
    tcase_add_test(tc, test_file_direct_concurrent_rmw);
    suite_add_tcase(s, tc);

    tc = tcase_create("graph");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_raw_over_file);
    tcase_add_test(tc, test_open_errors);
    tcase_add_test(tc, test_null_co);
    tcase_add_test(tc, test_read_only_and_truncate);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return vbk_test_run(block_suite());
}
