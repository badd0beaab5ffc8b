/*
 * check-block-copy.c: the block-copy engine — a copy equals its source
 * (random data, zero and unallocated extents, sub-cluster writes), sync
 * top's skipping of unallocated clusters, parallel workers, interrupt and
 * resume, rate limiting, read and write errors through blkdebug, and
 * copy-before-write ranges.  Copies are also checked with qemu-img
 * compare when it is installed.
 */
#include <errno.h>
#include <string.h>

#include "core/block/cbw.h"
#include "core/block/dirty.h"
#include "core/job/block-copy.h"
#include "testutil.h"

#define SIZE (4u << 20)
#define CL   65536u

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
path_of(const char *name)
{
    return g_build_filename(tmpdir, name, NULL);
}

/* A new qcow2 image; @backing may be NULL. */
static void
make_qcow2(const char *path, const char *backing)
{
    g_autoptr(GError) err = NULL;
    VbkQcow2CreateOptions o = {.size = SIZE,
                               .backing_file = backing,
                               .backing_fmt = backing ? "qcow2" : NULL};
    g_autofree char *text =
        g_strdup_printf("{'driver': <'file'>, 'filename': <'%s'>}", path);
    g_autoptr(VbkBlockNode) file = NULL;

    ck_assert(vbk_file_create(path, 0, &err));
    file = vbk_block_node_open(g_variant_parse(NULL, text, NULL, NULL, NULL),
                               &err);
    ck_assert_msg(file, "%s", err ? err->message : "");
    ck_assert_msg(vbk_qcow2_create(file, &o, &err), "%s",
                  err ? err->message : "");
    g_autofree char *name = g_strdup(vbk_block_node_name(file));
    g_clear_pointer(&file, vbk_block_node_unref);
    ck_assert(vbk_block_node_delete(name, NULL));
}

/* Open @path as @fmt node @name, optionally through blkdebug @rules
 * (qcow2 fires no read_aio/write_aio events; raw does). */
static VbkBlockNode *
open_fmt(const char *fmt, const char *path, const char *name, const char *rules)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *file =
        g_strdup_printf("{'driver': <'file'>, 'filename': <'%s'>}", path);
    g_autofree char *child =
        rules ? g_strdup_printf("{'driver': <'blkdebug'>, %s 'image': <%s>}",
                                rules, file)
              : g_strdup(file);
    g_autofree char *text =
        g_strdup_printf("{'driver': <'%s'>, 'node-name': <'%s'>, 'file': <%s>}",
                        fmt, name, child);
    VbkBlockNode *bs = vbk_block_node_open(
        g_variant_parse(NULL, text, NULL, NULL, NULL), &err);

    ck_assert_msg(bs, "open %s: %s", path, err ? err->message : "");
    return bs;
}

static VbkBlockNode *
open_node(const char *path, const char *name, const char *rules)
{
    return open_fmt("qcow2", path, name, rules);
}

static void
close_node(VbkBlockNode *bs)
{
    g_autofree char *name = g_strdup(vbk_block_node_name(bs));

    vbk_block_flush(bs);
    vbk_block_node_unref(bs);
    ck_assert(vbk_block_node_delete(name, NULL));
}

/*
 * Random content: per cluster, data (random, sometimes only 4 KiB of
 * it), zeroes, or nothing.  Deterministic for @seed.
 */
static void
fill(VbkBlockNode *bs, guint32 seed, int data_pct)
{
    GRand *r = g_rand_new_with_seed(seed);
    g_autofree guint8 *buf = g_malloc(CL);

    for (uint64_t off = 0; off < SIZE; off += CL) {
        int what = g_rand_int_range(r, 0, 100);

        for (guint i = 0; i < CL; i++)
            buf[i] = g_rand_int(r) & 0xff;
        if (what < data_pct)
            ck_assert_int_eq(vbk_block_pwrite(bs, off, CL, buf, 0), 0);
        else if (what < data_pct + 10)
            ck_assert_int_eq(vbk_block_pwrite(bs, off + 8192, 4096, buf, 0), 0);
        else if (what < data_pct + 25)
            ck_assert_int_eq(vbk_block_pwrite_zeroes(bs, off, CL, 0), 0);
    }
    g_rand_free(r);
}

static void
assert_same(VbkBlockNode *a, VbkBlockNode *b)
{
    g_autofree guint8 *x = g_malloc(SIZE);
    g_autofree guint8 *y = g_malloc(SIZE);

    ck_assert_int_eq(vbk_block_pread(a, 0, SIZE, x), 0);
    ck_assert_int_eq(vbk_block_pread(b, 0, SIZE, y), 0);
    for (uint64_t off = 0; off < SIZE; off += CL)
        ck_assert_msg(memcmp(x + off, y + off, CL) == 0,
                      "content differs in cluster at %#" G_GINT64_MODIFIER "x",
                      off);
}

/* qemu-img compare @a @b: identical (exit 0)? */
static void
assert_qemu_img_same(const char *a, const char *b)
{
    const char *argv[] = {"qemu-img", "compare", "-q", "-f", "qcow2",
                          "-F",       "qcow2",   a,    b,    NULL};
    g_autofree char *out = NULL, *err = NULL;

    if (!vbk_test_have_program("qemu-img"))
        return;
    ck_assert_msg(vbk_test_spawn(argv, &out, &err) == 0,
                  "qemu-img compare %s %s: %s%s", a, b, out, err);
}

static uint64_t progress_total;

static void
count_progress(uint64_t bytes, void *opaque)
{
    g_atomic_pointer_add((gssize *) &progress_total, (gssize) bytes);
}

/* Copy a fresh random image with @workers and @chunk; check it all. */
static void
copy_and_check(guint32 seed, int64_t workers, int64_t chunk)
{
    g_autofree char *sp = path_of("src.qcow2");
    g_autofree char *tp = path_of("tgt.qcow2");
    VbkBlockNode *src, *tgt;
    VbkBlockCopyOptions o = {workers, chunk};
    VbkBlockCopyError err = {0};
    g_autoptr(GError) gerr = NULL;
    VbkBlockCopy *bc;

    make_qcow2(sp, NULL);
    make_qcow2(tp, NULL);
    src = open_node(sp, "src", NULL);
    tgt = open_node(tp, "tgt", NULL);
    fill(src, seed, 40);

    bc = vbk_block_copy_new(src, tgt, &o, &gerr);
    ck_assert_msg(bc, "%s", gerr ? gerr->message : "");
    ck_assert_uint_eq(vbk_block_copy_cluster_size(bc), CL);
    ck_assert_uint_eq(vbk_block_copy_dirty_bytes(bc), SIZE);
    progress_total = 0;
    vbk_block_copy_set_progress_func(bc, count_progress, NULL);
    ck_assert_int_eq(vbk_block_copy_run(bc, &err), 0);
    ck_assert_uint_eq(vbk_block_copy_dirty_bytes(bc), 0);
    ck_assert_uint_eq(progress_total, SIZE);
    assert_same(src, tgt);
    vbk_block_copy_free(bc);
    close_node(src);
    close_node(tgt);
    assert_qemu_img_same(sp, tp);
}

START_TEST(test_copy_one_worker)
{
    copy_and_check(1, 1, 0);
}
END_TEST

START_TEST(test_copy_parallel_small_chunks)
{
    /* 8 workers, one cluster per chunk: many claims race */
    copy_and_check(2, 64, CL);
}
END_TEST

START_TEST(test_copy_bitmap_attached)
{
    g_autofree char *sp = path_of("src.qcow2");
    g_autofree char *tp = path_of("tgt.qcow2");
    VbkBlockNode *src, *tgt;
    VbkBlockCopy *bc;
    GPtrArray *list;

    make_qcow2(sp, NULL);
    make_qcow2(tp, NULL);
    src = open_node(sp, "src", NULL);
    tgt = open_node(tp, "tgt", NULL);
    bc = vbk_block_copy_new(src, tgt, NULL, NULL);
    list = vbk_block_dirty_bitmap_query(src);
    /* anonymous, disabled, full, as QEMU's copy bitmap */
    ck_assert_uint_eq(list->len, 1);
    ck_assert_ptr_null(((VbkDirtyBitmapInfo *) list->pdata[0])->name);
    ck_assert(!((VbkDirtyBitmapInfo *) list->pdata[0])->recording);
    ck_assert_uint_eq(((VbkDirtyBitmapInfo *) list->pdata[0])->count, SIZE);
    g_ptr_array_unref(list);
    vbk_block_copy_free(bc);
    list = vbk_block_dirty_bitmap_query(src);
    ck_assert_uint_eq(list->len, 0);
    g_ptr_array_unref(list);
    close_node(src);
    close_node(tgt);
}
END_TEST

/* sync=top: clusters the top layer does not allocate are not copied. */
START_TEST(test_top_skips_unallocated)
{
    g_autofree char *bp = path_of("base.qcow2");
    g_autofree char *sp = path_of("top.qcow2");
    g_autofree char *tp = path_of("tgt.qcow2");
    g_autofree guint8 *x = g_malloc(CL);
    g_autofree guint8 *y = g_malloc(CL);
    VbkBlockNode *base, *top, *tgt;
    VbkBlockCopyError err = {0};
    uint64_t off, n, allocated = 0;
    VbkBlockCopy *bc;

    make_qcow2(bp, NULL);
    base = open_node(bp, "base", NULL);
    fill(base, 3, 90);
    close_node(base);
    make_qcow2(sp, bp);
    make_qcow2(tp, NULL);
    top = open_node(sp, "top", NULL);
    tgt = open_node(tp, "tgt", NULL);
    /* the top layer allocates every fourth cluster, one a partial one */
    memset(x, 0x5a, CL);
    for (off = 0; off < SIZE; off += 4 * CL) {
        ck_assert_int_eq(vbk_block_pwrite(top, off, CL, x, 0), 0);
        allocated += CL;
    }
    ck_assert_int_eq(vbk_block_pwrite(top, 2 * CL + 512, 512, x, 0), 0);
    allocated += CL;

    bc = vbk_block_copy_new(top, tgt, NULL, NULL);
    for (off = 0; off < SIZE; off += n)
        ck_assert_int_ge(vbk_block_copy_reset_unallocated(bc, off, &n), 0);
    ck_assert_uint_eq(vbk_block_copy_dirty_bytes(bc), allocated);
    ck_assert_int_eq(vbk_block_copy_run(bc, &err), 0);
    for (off = 0; off < SIZE; off += CL) {
        uint32_t depth = 0;
        uint64_t pnum = 0;

        ck_assert_int_ge(
            vbk_block_block_status_above(top, off, CL, &pnum, &depth), 0);
        ck_assert_int_eq(vbk_block_pread(tgt, off, CL, y), 0);
        if (depth == 1 || (off == 2 * CL)) {
            ck_assert_int_eq(vbk_block_pread(top, off, CL, x), 0);
            ck_assert(memcmp(x, y, CL) == 0);
        } else {
            ck_assert(vbk_hbitmap_buffer_is_zero(y, CL));
        }
    }
    vbk_block_copy_free(bc);
    close_node(top);
    close_node(tgt);
}
END_TEST

typedef struct {
    VbkBlockCopy *bc;
    int ret;
} RunArgs;

static gpointer
run_thread(gpointer data)
{
    RunArgs *a = data;
    VbkBlockCopyError err;

    a->ret = vbk_block_copy_run(a->bc, &err);
    return NULL;
}

/* Rate limit, interrupt mid-way, resume at full speed. */
START_TEST(test_speed_interrupt_resume)
{
    g_autofree char *sp = path_of("src.qcow2");
    g_autofree char *tp = path_of("tgt.qcow2");
    VbkBlockCopyOptions o = {2, CL};
    VbkBlockNode *src, *tgt;
    RunArgs a = {0};
    VbkBlockCopyError err;
    GThread *t;
    uint64_t left;
    gint64 t0;

    make_qcow2(sp, NULL);
    make_qcow2(tp, NULL);
    src = open_node(sp, "src", NULL);
    tgt = open_node(tp, "tgt", NULL);
    fill(src, 4, 60);
    a.bc = vbk_block_copy_new(src, tgt, &o, NULL);
    /* 1 MiB/s: 4 MiB would take 4 s */
    vbk_block_copy_set_speed(a.bc, 1 << 20);
    t0 = g_get_monotonic_time();
    t = g_thread_new("run", run_thread, &a);
    g_usleep(600 * 1000);
    vbk_block_copy_interrupt(a.bc);
    g_thread_join(t);
    ck_assert_int_eq(a.ret, 1);
    left = vbk_block_copy_dirty_bytes(a.bc);
    /* about 0.6-0.8 MiB went in 0.6 s; allow slack for slow hosts */
    ck_assert_msg(left > SIZE / 2 && left < SIZE, "left %" G_GUINT64_FORMAT,
                  left);
    ck_assert_int_ge(g_get_monotonic_time() - t0, 500 * 1000);

    vbk_block_copy_resume(a.bc);
    vbk_block_copy_set_speed(a.bc, 0);
    ck_assert_int_eq(vbk_block_copy_run(a.bc, &err), 0);
    ck_assert_uint_eq(vbk_block_copy_dirty_bytes(a.bc), 0);
    assert_same(src, tgt);
    vbk_block_copy_free(a.bc);
    close_node(src);
    close_node(tgt);
}
END_TEST

static void
error_case(const char *src_rules,
           const char *tgt_rules,
           int expect_ret,
           bool expect_read)
{
    g_autofree char *sp = path_of("src.raw");
    g_autofree char *tp = path_of("tgt.raw");
    VbkBlockCopyOptions o = {1, 0};
    VbkBlockCopyError err = {0};
    VbkBlockNode *src, *tgt;
    VbkBlockCopy *bc;
    int ret;

    ck_assert(vbk_file_create(sp, SIZE, NULL));
    ck_assert(vbk_file_create(tp, SIZE, NULL));
    src = open_fmt("raw", sp, "src", NULL);
    fill(src, 5, 70);
    close_node(src);
    src = open_fmt("raw", sp, "src", src_rules);
    tgt = open_fmt("raw", tp, "tgt", tgt_rules);
    bc = vbk_block_copy_new(src, tgt, &o, NULL);
    ret = vbk_block_copy_run(bc, &err);
    ck_assert_int_eq(ret, expect_ret);
    ck_assert_int_eq(err.ret, expect_ret);
    ck_assert_int_eq(err.is_read, expect_read);
    /* the failed chunk is dirty again; a retry finishes (errors: once) */
    ck_assert_uint_gt(vbk_block_copy_dirty_bytes(bc), 0);
    ck_assert_int_eq(vbk_block_copy_run(bc, &err), 0);
    ck_assert_uint_eq(vbk_block_copy_dirty_bytes(bc), 0);
    assert_same(src, tgt);
    vbk_block_copy_free(bc);
    close_node(src);
    close_node(tgt);
}

START_TEST(test_read_error)
{
    error_case("'inject-error': <[{'event': <'read_aio'>, 'errno': <5>, "
               "'once': <true>}]>,",
               NULL, -EIO, true);
}
END_TEST

/*
 * A task spanning several block-status extents that fails on a later
 * extent keeps the earlier ones copied, as QEMU's block-copy, which
 * splits its tasks at each extent (iotest 257, full backup failing on
 * its second data read: 15 clusters done).  Source: data in clusters 0
 * and 15, nothing between; the second data read fails.
 */
START_TEST(test_read_error_keeps_earlier_extents)
{
    g_autofree char *sp = path_of("src.qcow2");
    g_autofree char *tp = path_of("tgt.qcow2");
    g_autofree guint8 *buf = g_malloc(CL);
    VbkBlockCopyOptions o = {1, 0};
    VbkBlockCopyError err = {0};
    VbkBlockNode *src, *tgt;
    VbkBlockCopy *bc;

    make_qcow2(sp, NULL);
    make_qcow2(tp, NULL);
    src = open_node(sp, "src", NULL);
    memset(buf, 0x5a, CL);
    ck_assert_int_eq(vbk_block_pwrite(src, 0, CL, buf, 0), 0);
    ck_assert_int_eq(vbk_block_pwrite(src, 15 * CL, CL, buf, 0), 0);
    close_node(src);
    src = open_node(sp, "src",
                    "'set-state': <[{'event': <'read_aio'>, 'state': <1>, "
                    "'new-state': <2>}]>, "
                    "'inject-error': <[{'event': <'read_aio'>, 'state': <2>, "
                    "'errno': <5>, 'once': <true>}]>,");
    tgt = open_node(tp, "tgt", NULL);
    bc = vbk_block_copy_new(src, tgt, &o, NULL);
    progress_total = 0;
    vbk_block_copy_set_progress_func(bc, count_progress, NULL);
    ck_assert_int_eq(vbk_block_copy_run(bc, &err), -EIO);
    ck_assert(err.is_read);
    ck_assert_uint_eq(progress_total, 15 * CL);
    ck_assert_uint_eq(vbk_block_copy_dirty_bytes(bc), SIZE - 15 * CL);
    /* the retry copies the rest */
    ck_assert_int_eq(vbk_block_copy_run(bc, &err), 0);
    ck_assert_uint_eq(progress_total, SIZE);
    assert_same(src, tgt);
    vbk_block_copy_free(bc);
    close_node(src);
    close_node(tgt);
}
END_TEST

START_TEST(test_write_error)
{
    error_case(NULL,
               "'inject-error': <[{'event': <'write_aio'>, "
               "'iotype': <'write'>, 'errno': <28>, 'once': <true>}]>,",
               -ENOSPC, false);
}
END_TEST

static uint64_t done_bytes;

static void
count_done(uint64_t offset, uint64_t bytes, void *opaque)
{
    done_bytes += bytes;
}

/* Copy-before-write ranges: cluster hull, once only, old data. */
START_TEST(test_cbw_range)
{
    g_autofree char *sp = path_of("src.qcow2");
    g_autofree char *tp = path_of("tgt.qcow2");
    g_autofree guint8 *old = g_malloc(2 * CL);
    g_autofree guint8 *got = g_malloc(2 * CL);
    VbkBlockNode *src, *tgt;
    VbkBlockCopy *bc;

    make_qcow2(sp, NULL);
    make_qcow2(tp, NULL);
    src = open_node(sp, "src", NULL);
    tgt = open_node(tp, "tgt", NULL);
    fill(src, 6, 100);
    bc = vbk_block_copy_new(src, tgt, NULL, NULL);
    ck_assert_int_eq(vbk_block_pread(src, 3 * CL, 2 * CL, old), 0);

    /* 100 bytes straddling clusters 3 and 4 copy both whole clusters */
    ck_assert_int_eq(
        vbk_block_copy_range(bc, 4 * CL - 50, 100, 0, count_done, NULL, NULL),
        0);
    ck_assert_uint_eq(done_bytes, 2 * CL);
    ck_assert_uint_eq(vbk_block_copy_dirty_bytes(bc), SIZE - 2 * CL);
    ck_assert_int_eq(vbk_block_pread(tgt, 3 * CL, 2 * CL, got), 0);
    ck_assert(memcmp(old, got, 2 * CL) == 0);
    /* again: nothing left to copy there */
    ck_assert_int_eq(
        vbk_block_copy_range(bc, 3 * CL, 2 * CL, 0, count_done, NULL, NULL), 0);
    ck_assert_uint_eq(done_bytes, 2 * CL);
    /* the end of the disk is clipped */
    ck_assert_int_eq(
        vbk_block_copy_range(bc, SIZE - 1, 1, 0, count_done, NULL, NULL), 0);
    ck_assert_uint_eq(done_bytes, 3 * CL);
    vbk_block_copy_free(bc);
    close_node(src);
    close_node(tgt);
}
END_TEST

/* ---- the copy-before-write filter node ------------------------------- */

/* raw images over blkdebug: "src" (filled), "tgt" (with @tgt_rules) */
static void
raw_pair(const char *tgt_rules)
{
    g_autofree char *sp = path_of("src.raw");
    g_autofree char *tp = path_of("tgt.raw");
    VbkBlockNode *src;

    ck_assert(vbk_file_create(sp, SIZE, NULL));
    ck_assert(vbk_file_create(tp, SIZE, NULL));
    src = open_fmt("raw", sp, "src", NULL);
    fill(src, 8, 100);
    vbk_block_node_unref(src);
    vbk_block_node_unref(open_fmt("raw", tp, "tgt", tgt_rules));
}

static VbkBlockNode *
open_cbw(const char *extra, GError **error)
{
    g_autofree char *text = g_strdup_printf(
        "{'driver': <'copy-before-write'>, 'node-name': <'cbw'>, "
        "'file': <'src'>, 'target': <'tgt'> %s}",
        extra);

    return vbk_block_node_open(g_variant_parse(NULL, text, NULL, NULL, NULL),
                               error);
}

START_TEST(test_cbw_filter_copies_old_data)
{
    g_autoptr(GError) err = NULL;
    g_autofree guint8 *old = g_malloc(CL);
    g_autofree guint8 *got = g_malloc(CL);
    VbkBlockNode *src, *tgt, *f;
    g_autoptr(GPtrArray) list = NULL;

    raw_pair(NULL);
    src = vbk_block_node_find("src");
    tgt = vbk_block_node_find("tgt");
    f = open_cbw("", &err);
    ck_assert_msg(f, "%s", err ? err->message : "");
    /* the filter shows its "access" (all) and "done" (none) bitmaps */
    list = vbk_block_dirty_bitmap_query(f);
    ck_assert_uint_eq(list->len, 2);
    ck_assert_uint_eq(((VbkDirtyBitmapInfo *) list->pdata[0])->count, SIZE);
    ck_assert_uint_eq(((VbkDirtyBitmapInfo *) list->pdata[1])->count, 0);
    g_clear_pointer(&list, g_ptr_array_unref);

    ck_assert_int_eq(vbk_block_pread(src, 5 * CL, CL, old), 0);
    /* a write to the source itself, and one through the filter */
    memset(got, 0xee, CL);
    ck_assert_int_eq(vbk_block_pwrite(src, 5 * CL + 100, 10, got, 0), 0);
    ck_assert_int_eq(vbk_block_pwrite_zeroes(f, 9 * CL, CL, 0), 0);
    ck_assert_int_eq(vbk_block_pread(tgt, 5 * CL, CL, got), 0);
    ck_assert(memcmp(old, got, CL) == 0);
    list = vbk_block_dirty_bitmap_query(f);
    ck_assert_uint_eq(((VbkDirtyBitmapInfo *) list->pdata[1])->count, 2 * CL);
    ck_assert_uint_eq(vbk_block_copy_dirty_bytes(vbk_cbw_block_copy(f)),
                      SIZE - 2 * CL);
    g_clear_pointer(&list, g_ptr_array_unref);
    /* once everything is copied (by the job), a guest write has nothing
     * to copy but is still marked done, as QEMU's done_bitmap */
    ck_assert_int_eq(vbk_block_copy_run(vbk_cbw_block_copy(f), NULL), 0);
    ck_assert_int_eq(vbk_block_pwrite(f, 12 * CL + 7, 3, got, 0), 0);
    list = vbk_block_dirty_bitmap_query(f);
    ck_assert_uint_eq(((VbkDirtyBitmapInfo *) list->pdata[1])->count, 3 * CL);
    /* after detaching, writes go straight through */
    vbk_cbw_detach(f);
    ck_assert_int_eq(vbk_block_pwrite(src, 0, 10, old, 0), 0);
    ck_assert_uint_eq(vbk_block_copy_dirty_bytes(vbk_cbw_block_copy(f)), 0);
    g_clear_pointer(&list, g_ptr_array_unref);
    list = vbk_block_dirty_bitmap_query(f);
    ck_assert_uint_eq(((VbkDirtyBitmapInfo *) list->pdata[1])->count, 3 * CL);
    vbk_block_node_unref(f);
    ck_assert(vbk_block_node_delete("cbw", NULL));
}
END_TEST

START_TEST(test_cbw_break_guest_write)
{
    g_autoptr(GError) err = NULL;
    guint8 buf[512] = {1};
    VbkBlockNode *f;

    raw_pair("'inject-error': <[{'event': <'write_aio'>, "
             "'errno': <5>, 'once': <true>}]>,");
    f = open_cbw(", 'on-cbw-error': <'break-guest-write'>", &err);
    ck_assert_msg(f, "%s", err ? err->message : "");
    ck_assert_int_eq(
        vbk_block_pwrite(vbk_block_node_find("src"), 0, 512, buf, 0), -EIO);
    ck_assert(!vbk_cbw_snapshot_broken(f));
    /* the cluster is still to copy: the next write copies it */
    ck_assert_int_eq(
        vbk_block_pwrite(vbk_block_node_find("src"), 0, 512, buf, 0), 0);
    vbk_block_node_unref(f);
}
END_TEST

START_TEST(test_cbw_break_snapshot)
{
    g_autoptr(GError) err = NULL;
    guint8 buf[512] = {1};
    VbkBlockNode *f;

    raw_pair("'inject-error': <[{'event': <'write_aio'>, "
             "'errno': <5>, 'once': <true>}]>,");
    f = open_cbw(", 'on-cbw-error': <'break-snapshot'>, "
                 "'cbw-timeout': <uint64 5>",
                 &err);
    ck_assert_msg(f, "%s", err ? err->message : "");
    ck_assert_int_eq(
        vbk_block_pwrite(vbk_block_node_find("src"), 0, 512, buf, 0), 0);
    ck_assert(vbk_cbw_snapshot_broken(f));
    vbk_block_node_unref(f);
}
END_TEST

START_TEST(test_cbw_options)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(GPtrArray) list = NULL;

    raw_pair(NULL);
    ck_assert_ptr_null(open_cbw(", 'on-cbw-error': <'sometimes'>", &err));
    ck_assert_str_eq(err->message, "Parameter 'on-cbw-error' does not "
                                   "accept value 'sometimes'");
    g_clear_error(&err);
    ck_assert_ptr_null(open_cbw(", 'bitmap': <{'node': <'src'>, "
                                "'name': <'nosuch'>}>",
                                &err));
    ck_assert_str_eq(err->message, "Dirty bitmap 'nosuch' not found");
    /* nothing stays attached to the source */
    list = vbk_block_dirty_bitmap_query(vbk_block_node_find("src"));
    ck_assert_uint_eq(list->len, 0);
}
END_TEST

static Suite *
block_copy_suite(void)
{
    Suite *s = suite_create("block-copy");
    TCase *tc = tcase_create("copy");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_copy_one_worker);
    tcase_add_test(tc, test_copy_parallel_small_chunks);
    tcase_add_test(tc, test_copy_bitmap_attached);
    tcase_add_test(tc, test_top_skips_unallocated);
    tcase_add_test(tc, test_speed_interrupt_resume);
    tcase_add_test(tc, test_read_error);
    tcase_add_test(tc, test_read_error_keeps_earlier_extents);
    tcase_add_test(tc, test_write_error);
    tcase_add_test(tc, test_cbw_range);
    suite_add_tcase(s, tc);

    tc = tcase_create("cbw-filter");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_cbw_filter_copies_old_data);
    tcase_add_test(tc, test_cbw_break_guest_write);
    tcase_add_test(tc, test_cbw_break_snapshot);
    tcase_add_test(tc, test_cbw_options);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return vbk_test_run(block_copy_suite());
}
