/*
 * check-dirty.c: dirty bitmaps attached to nodes — QMP-level operations
 * with QEMU's messages, marking by writes (failed ones too), and a
 * model-based test proving that the pending-write log gives exactly the
 * bitmaps direct marking of every bitmap on every write gives.
 */
#include <errno.h>
#include <string.h>

#include "block/block-int.h"
#include "block/dirty.h"
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

static VbkBlockNode *
open_null(const char *name, uint64_t size)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *text = g_strdup_printf(
        "{'driver': <'null-co'>, 'node-name': <'%s'>, 'size': <uint64 %"
        G_GUINT64_FORMAT ">, 'read-zeroes': <true>}", name, size);
    VbkBlockNode *bs =
        vbk_block_node_open(g_variant_parse(NULL, text, NULL, NULL, NULL),
                            &err);

    ck_assert_msg(bs != NULL, "%s", err ? err->message : "");
    return bs;
}

static void
expect_error(bool ok, GError *err, const char *message)
{
    ck_assert(!ok);
    ck_assert_ptr_nonnull(err);
    ck_assert_str_eq(err->message, message);
}

START_TEST(test_add_errors)
{
    g_autoptr(VbkBlockNode) bs = open_null("n0", 1 << 20);
    g_autofree char *longname = g_strnfill(1024, 'x');
    g_autofree char *msg = NULL;
    GError *err = NULL;
    bool ok;

    ok = vbk_block_dirty_bitmap_add("nosuch", "b", 0, false, false,
                                            &err);
    expect_error(ok,
                 err, "Cannot find device='nosuch' nor node-name='nosuch'");
    g_clear_error(&err);
    ok = vbk_block_dirty_bitmap_add("n0", "", 0, false, false, &err);
    expect_error(ok,
                 err, "Bitmap name cannot be empty");
    g_clear_error(&err);
    ok = vbk_block_dirty_bitmap_add("n0", "b", 1000, false, false,
                                            &err);
    expect_error(ok,
                 err, "Granularity must be power of 2 and at least 512");
    g_clear_error(&err);
    ok = vbk_block_dirty_bitmap_add("n0", "b", 256, false, false,
                                            &err);
    expect_error(ok,
                 err, "Granularity must be power of 2 and at least 512");
    g_clear_error(&err);
    ck_assert(vbk_block_dirty_bitmap_add("n0", "b", 0, false, false, &err));
    ok = vbk_block_dirty_bitmap_add("n0", "b", 0, false, false, &err);
    expect_error(ok,
                 err, "Bitmap already exists: b");
    g_clear_error(&err);
    msg = g_strdup_printf("Bitmap name too long: %s", longname);
    ok = vbk_block_dirty_bitmap_add("n0", longname, 0, false, false,
                                            &err);
    expect_error(ok,
                 err, msg);
    g_clear_error(&err);
    ok = vbk_block_dirty_bitmap_add("n0", "p", 0, true, false, &err);
    expect_error(ok,
                 err,
                 "Can't store persistent bitmaps to n0: Operation not "
                 "supported");
    g_clear_error(&err);
    ok = vbk_block_dirty_bitmap_remove("n1", "b", &err);
    expect_error(ok, err,
                 "Node 'n1' not found");
    g_clear_error(&err);
    ok = vbk_block_dirty_bitmap_clear("n0", "zz", NULL, &err);
    expect_error(ok, err,
                 "Dirty bitmap 'zz' not found");
    g_clear_error(&err);
    ck_assert(vbk_block_dirty_bitmap_remove("n0", "b", &err));
    ok = vbk_block_dirty_bitmap_enable("n0", "b", &err);
    expect_error(ok, err,
                 "Dirty bitmap 'b' not found");
    g_clear_error(&err);
}
END_TEST

static VbkDirtyBitmapInfo *
info_of(GPtrArray *list, guint i)
{
    ck_assert_uint_gt(list->len, i);
    return list->pdata[i];
}

START_TEST(test_marking_and_query)
{
    g_autoptr(VbkBlockNode) bs = open_null("n0", 64 << 20);
    g_autoptr(GPtrArray) q = NULL;
    char buf[4096] = {0};

    ck_assert(vbk_block_dirty_bitmap_add("n0", "a", 65536, false, false,
                                         NULL));
    ck_assert(vbk_block_dirty_bitmap_add("n0", "b", 4096, false, false,
                                         NULL));
    ck_assert(vbk_block_dirty_bitmap_add("n0", "off", 512, false, true, NULL));
    /* [70 KiB, 75 KiB) */
    ck_assert_int_eq(vbk_block_pwrite(bs, 70 * 1024, 4096, buf, 0), 0);
    ck_assert_int_eq(vbk_block_pwrite_zeroes(bs, 71 * 1024, 4096, 0), 0);
    q = vbk_block_dirty_bitmap_query(bs);
    ck_assert_uint_eq(q->len, 3);
    /* newest first */
    ck_assert_str_eq(info_of(q, 0)->name, "off");
    ck_assert(!info_of(q, 0)->recording);
    ck_assert_uint_eq(info_of(q, 0)->count, 0);
    ck_assert_str_eq(info_of(q, 1)->name, "b");
    ck_assert_uint_eq(info_of(q, 1)->count, 8192);
    ck_assert_str_eq(info_of(q, 2)->name, "a");
    ck_assert_uint_eq(info_of(q, 2)->count, 65536);
    ck_assert(info_of(q, 2)->recording);
    g_clear_pointer(&q, g_ptr_array_unref);

    /* enabling later records only later writes */
    ck_assert(vbk_block_dirty_bitmap_enable("n0", "off", NULL));
    ck_assert_int_eq(vbk_block_pwrite(bs, 1 << 20, 1, buf, 0), 0);
    q = vbk_block_dirty_bitmap_query(bs);
    ck_assert_uint_eq(info_of(q, 0)->count, 512);
    ck_assert_uint_eq(info_of(q, 1)->count, 12288);
    ck_assert_uint_eq(info_of(q, 2)->count, 131072);
    g_clear_pointer(&q, g_ptr_array_unref);

    /* clear with backup and restore */
    {
        VbkHBitmap *backup = NULL;
        ck_assert(vbk_block_dirty_bitmap_clear("n0", "a", &backup, NULL));
        q = vbk_block_dirty_bitmap_query(bs);
        ck_assert_uint_eq(info_of(q, 2)->count, 0);
        g_clear_pointer(&q, g_ptr_array_unref);
        vbk_block_dirty_bitmap_restore("n0", "a", backup);
        q = vbk_block_dirty_bitmap_query(bs);
        ck_assert_uint_eq(info_of(q, 2)->count, 131072);
        g_clear_pointer(&q, g_ptr_array_unref);
    }

    /* with discard=ignore a discard does nothing and marks nothing */
    ck_assert_int_eq(vbk_block_pdiscard(bs, 0, 512), 0);
    q = vbk_block_dirty_bitmap_query(bs);
    ck_assert_uint_eq(info_of(q, 0)->count, 512);
}
END_TEST

START_TEST(test_failed_write_marks)
{
    g_autofree char *path = g_build_filename(tmpdir, "img", NULL);
    g_autofree char *text = NULL;
    g_autoptr(VbkBlockNode) bs = NULL;
    g_autoptr(GPtrArray) q = NULL;
    g_autoptr(GError) err = NULL;
    char buf[512] = {0};

    ck_assert(vbk_file_create(path, 1 << 20, NULL));
    text = g_strdup_printf(
        "{'driver': <'raw'>, 'node-name': <'top'>, 'file': <{"
        "'driver': <'blkdebug'>, 'inject-error': <[{'event': "
        "<'write_aio'>, 'errno': <5>}]>, 'image': <{'driver': <'file'>, "
        "'filename': <'%s'>}>}>}", path);
    bs = vbk_block_node_open(g_variant_parse(NULL, text, NULL, NULL, NULL),
                             &err);
    ck_assert_msg(bs != NULL, "%s", err ? err->message : "");
    ck_assert(vbk_block_dirty_bitmap_add("top", "b", 65536, false, false,
                                         NULL));
    ck_assert_int_eq(vbk_block_pwrite(bs, 131072, 512, buf, 0), -EIO);
    q = vbk_block_dirty_bitmap_query(bs);
    ck_assert_uint_eq(info_of(q, 0)->count, 65536);
}
END_TEST

START_TEST(test_merge)
{
    g_autoptr(VbkBlockNode) a = open_null("na", 8 << 20);
    g_autoptr(VbkBlockNode) b = open_null("nb", 8 << 20);
    g_autoptr(VbkBlockNode) c = open_null("nc", 4 << 20);
    g_autoptr(GPtrArray) q = NULL;
    VbkBitmapRef srcs[2] = {{NULL, "s1"}, {"nb", "s2"}};
    VbkBitmapRef bad[1] = {{"nc", "s3"}};
    char buf[512] = {0};
    GError *err = NULL;

    ck_assert(vbk_block_dirty_bitmap_add("na", "t", 65536, false, true, NULL));
    ck_assert(vbk_block_dirty_bitmap_add("na", "s1", 4096, false, false,
                                         NULL));
    ck_assert(vbk_block_dirty_bitmap_add("nb", "s2", 512, false, false, NULL));
    ck_assert(vbk_block_dirty_bitmap_add("nc", "s3", 512, false, false, NULL));
    ck_assert_int_eq(vbk_block_pwrite(a, 0, 512, buf, 0), 0);
    ck_assert_int_eq(vbk_block_pwrite(b, 1 << 20, 512, buf, 0), 0);
    ck_assert(vbk_block_dirty_bitmap_merge("na", "t", srcs, 2, NULL, &err));
    q = vbk_block_dirty_bitmap_query(a);
    ck_assert_str_eq(info_of(q, 1)->name, "t");
    ck_assert_uint_eq(info_of(q, 1)->count, 131072);
    g_clear_pointer(&q, g_ptr_array_unref);
    /* different sizes: refused, target unchanged */
    ck_assert(!vbk_block_dirty_bitmap_merge("na", "t", bad, 1, NULL, &err));
    ck_assert(strstr(err->message, "different sizes") != NULL);
    g_clear_error(&err);
    q = vbk_block_dirty_bitmap_query(a);
    ck_assert_uint_eq(info_of(q, 1)->count, 131072);
}
END_TEST

/*
 * Model: the same operations applied to shadow bitmaps that are marked
 * directly on every write must give the same sha256 as the node's.
 */
typedef struct {
    char name[8];
    VbkDirtyBitmap *shadow;
} ModelBitmap;

START_TEST(test_model_pending_log)
{
    const uint64_t size = 16 << 20;
    g_autoptr(VbkBlockNode) bs = open_null("m0", size);
    GRand *rand = g_rand_new_with_seed(0xd1e7);
    ModelBitmap bms[6] = {{"b0"}, {"b1"}, {"b2"}, {"b3"}, {"b4"}, {"b5"}};
    static const uint64_t grans[] = {512, 4096, 65536, 1 << 20};
    char buf[1] = {0};

    for (int step = 0; step < 20000; step++) {
        int op = g_rand_int_range(rand, 0, 100);
        ModelBitmap *m = &bms[g_rand_int_range(rand, 0, 6)];

        if (op < 70) {
            uint64_t off = g_rand_int_range(rand, 0, size - 1);
            uint64_t len = g_rand_int_range(rand, 1, 300000);
            len = MIN(len, size - off);
            if (op < 60) {
                ck_assert_int_eq(vbk_block_pwrite_zeroes(bs, off, len, 0), 0);
            } else {
                len = 1;
                ck_assert_int_eq(vbk_block_pwrite(bs, off, len, buf, 0), 0);
            }
            for (int i = 0; i < 6; i++) {
                if (bms[i].shadow && vbk_dirty_bitmap_enabled(bms[i].shadow))
                    vbk_dirty_bitmap_mark(bms[i].shadow, off, len);
            }
        } else if (op < 78) {
            if (!m->shadow) {
                uint64_t g = grans[g_rand_int_range(rand, 0, 4)];
                bool dis = g_rand_boolean(rand);
                ck_assert(vbk_block_dirty_bitmap_add("m0", m->name, g, false,
                                                     dis, NULL));
                m->shadow = vbk_dirty_bitmap_new(m->name, g, size, NULL);
                vbk_dirty_bitmap_set_enabled(m->shadow, !dis);
            } else {
                ck_assert(vbk_block_dirty_bitmap_remove("m0", m->name, NULL));
                g_clear_pointer(&m->shadow, vbk_dirty_bitmap_unref);
            }
        } else if (op < 86 && m->shadow) {
            bool en = g_rand_boolean(rand);
            ck_assert(en ? vbk_block_dirty_bitmap_enable("m0", m->name, NULL)
                         : vbk_block_dirty_bitmap_disable("m0", m->name, NULL));
            vbk_dirty_bitmap_set_enabled(m->shadow, en);
        } else if (op < 90 && m->shadow) {
            ck_assert(vbk_block_dirty_bitmap_clear("m0", m->name, NULL, NULL));
            vbk_dirty_bitmap_clear(m->shadow, NULL);
        } else if (op < 94 && m->shadow) {
            ModelBitmap *src = &bms[g_rand_int_range(rand, 0, 6)];
            VbkBitmapRef ref = {NULL, src->name};
            if (src->shadow && src != m) {
                ck_assert(vbk_block_dirty_bitmap_merge("m0", m->name, &ref, 1,
                                                       NULL, NULL));
                ck_assert(vbk_dirty_bitmap_merge(m->shadow, src->shadow, NULL,
                                                 NULL));
            }
        } else if (m->shadow) {
            g_autofree char *got =
                vbk_block_dirty_bitmap_sha256("m0", m->name, NULL);
            g_autofree char *want = vbk_dirty_bitmap_sha256(m->shadow);
            ck_assert_msg(g_str_equal(got, want), "step %d bitmap %s", step,
                          m->name);
        }
    }
    for (int i = 0; i < 6; i++) {
        if (bms[i].shadow) {
            g_autofree char *got =
                vbk_block_dirty_bitmap_sha256("m0", bms[i].name, NULL);
            g_autofree char *want = vbk_dirty_bitmap_sha256(bms[i].shadow);
            ck_assert_str_eq(got, want);
            vbk_dirty_bitmap_unref(bms[i].shadow);
        }
    }
    g_rand_free(rand);
}
END_TEST

static Suite *
dirty_suite(void)
{
    Suite *s = suite_create("dirty");
    TCase *tc = tcase_create("node-bitmaps");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_add_errors);
    tcase_add_test(tc, test_marking_and_query);
    tcase_add_test(tc, test_failed_write_marks);
    tcase_add_test(tc, test_merge);
    tcase_add_test(tc, test_model_pending_log);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return vbk_test_run(dirty_suite());
}
