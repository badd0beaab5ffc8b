/*
 * check-cbw.c: the copy-before-write proof.
 *
 * A qcow2 image (made by qemu-img, filled by vbackup with random data,
 * zero clusters and holes) is copied with cp while nothing writes: that
 * copy is the image as it is when the backup starts.  Then a full backup
 * runs, rate limited so that it takes a while, while a writer thread
 * hammers the source with random writes and write-zeroes.  Afterwards
 * the real qemu-img must find the backup identical to the copy
 * (`qemu-img compare`) and clean (`qemu-img check`), and the source must
 * differ from the copy — the writes really happened under the job.
 * Once more with compress=true, where some clusters go compressed.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/job/backup-job.h"
#include "testutil.h"

#define SIZE (16u << 20)
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
    vbk_job_cancel_sync_all();
    vbk_block_graph_close_all();
    vbk_test_tmpdir_remove(tmpdir);
    g_clear_pointer(&tmpdir, g_free);
}

static int
run(const char *const *argv, char **out)
{
    g_autofree char *err = NULL;
    int rc = vbk_test_spawn(argv, out, &err);

    if (rc != 0 && rc != 1)
        fprintf(stderr, "%s: %s\n", argv[0], err ? err : "");
    return rc;
}

static void
qemu_img_create(const char *path)
{
    const char *argv[] = {"qemu-img", "create", "-q",  "-f",
                          "qcow2",    path,     "16M", NULL};

    ck_assert_int_eq(run(argv, NULL), 0);
}

static VbkBlockNode *
open_qcow2(const char *path, const char *name)
{
    g_autoptr(GError) err = NULL;
    VbkBlockNode *bs =
        vbk_block_node_open_image(path, "qcow2", false, name, &err);

    ck_assert_msg(bs, "%s", err ? err->message : "");
    vbk_block_node_unref(bs); /* the graph keeps it */
    return bs;
}

static void
close_node(const char *name)
{
    VbkBlockNode *bs = vbk_block_node_find(name);

    ck_assert_int_eq(vbk_block_flush(bs), 0);
    ck_assert(vbk_block_node_delete(name, NULL));
}

/* Random clusters, zero clusters and holes; with @compressible some
 * data clusters are half zeroes (compressed writes shrink them). */
static void
fill_random(VbkBlockNode *bs, guint32 seed, bool compressible)
{
    GRand *r = g_rand_new_with_seed(seed);
    g_autofree guint8 *buf = g_malloc(CL);

    for (uint64_t off = 0; off < SIZE; off += CL) {
        int what = g_rand_int_range(r, 0, 10);

        for (guint i = 0; i < CL; i += 4)
            *(guint32 *) (buf + i) = g_rand_int(r);
        if (compressible && what < 3)
            memset(buf + CL / 2, 0, CL / 2);
        if (what < 6)
            ck_assert_int_eq(vbk_block_pwrite(bs, off, CL, buf, 0), 0);
        else if (what < 8)
            ck_assert_int_eq(vbk_block_pwrite_zeroes(bs, off, CL, 0), 0);
    }
    g_rand_free(r);
}

typedef struct {
    VbkBlockNode *bs;
    VbkJob *job;
    gint stop;
    guint writes; /* while the job was running */
    guint failures;
} Writer;

static gpointer
writer_main(gpointer data)
{
    Writer *w = data;
    GRand *r = g_rand_new_with_seed(77);
    g_autofree guint8 *buf = g_malloc(3 * CL);

    while (!g_atomic_int_get(&w->stop)) {
        /* mostly small writes, some spanning clusters */
        uint64_t len = g_rand_int_range(r, 0, 4) == 0
                           ? g_rand_int_range(r, 1, 3 * CL)
                           : g_rand_int_range(r, 1, 8192);
        uint64_t off = g_rand_int_range(r, 0, SIZE - len);
        int ret;

        memset(buf, g_rand_int_range(r, 1, 256), len);
        if (g_rand_int_range(r, 0, 8) == 0)
            ret = vbk_block_pwrite_zeroes(w->bs, off, len, 0);
        else
            ret = vbk_block_pwrite(w->bs, off, len, buf, 0);
        if (ret < 0)
            w->failures++;
        else if (vbk_job_status(w->job) == VBK_JOB_STATUS_RUNNING)
            w->writes++;
        g_usleep(1000);
    }
    g_rand_free(r);
    return NULL;
}

static void
proof(int64_t workers, int64_t speed, bool compress)
{
    g_autofree char *src = g_build_filename(tmpdir, "src.qcow2", NULL);
    g_autofree char *snap = g_build_filename(tmpdir, "snap.qcow2", NULL);
    g_autofree char *tgt = g_build_filename(tmpdir, "tgt.qcow2", NULL);
    g_autoptr(GError) err = NULL;
    g_autofree char *out = NULL;
    Writer w = {0};
    VbkBackupOptions o;
    GThread *t;

    if (!vbk_test_have_program("qemu-img"))
        ck_abort_msg("qemu-img is required");
    qemu_img_create(src);
    qemu_img_create(tgt);
    fill_random(open_qcow2(src, "src"), 5, compress);
    close_node("src");
    {
        const char *cp[] = {"cp", src, snap, NULL};
        ck_assert_int_eq(run(cp, NULL), 0);
    }

    w.bs = open_qcow2(src, "src");
    open_qcow2(tgt, "tgt");
    vbk_backup_options_init(&o);
    o.job_id = "cbw";
    o.device = "src";
    o.target = "tgt";
    o.sync = VBK_BACKUP_SYNC_FULL;
    o.speed = speed;
    o.max_workers = workers;
    o.max_chunk = CL;
    o.compress = compress;
    w.job = vbk_backup_job_start(&o, &err);
    ck_assert_msg(w.job, "%s", err ? err->message : "");
    t = g_thread_new("writer", writer_main, &w);
    vbk_job_wait_settled("cbw");
    g_atomic_int_set(&w.stop, 1);
    g_thread_join(t);
    ck_assert_ptr_null(vbk_job_find("cbw", NULL));
    ck_assert_uint_eq(w.failures, 0);
    ck_assert_msg(w.writes >= 50, "only %u writes raced the job", w.writes);
    fprintf(stderr, "# %u guest writes during the backup\n", w.writes);
    close_node("src");
    close_node("tgt");

    {
        const char *cmp[] = {"qemu-img", "compare", "-f", "qcow2", "-F",
                             "qcow2",    snap,      tgt,  NULL};
        const char *moved[] = {"qemu-img", "compare", "-q", "-f", "qcow2",
                               "-F",       "qcow2",   snap, src,  NULL};
        const char *check[] = {"qemu-img", "check", tgt, NULL};

        ck_assert_msg(run(cmp, &out) == 0, "backup differs: %s", out);
        g_clear_pointer(&out, g_free);
        ck_assert_msg(run(moved, NULL) == 1, "the source did not change");
        ck_assert_msg(run(check, &out) == 0, "qemu-img check: %s", out);
        /* compress: the half-zero clusters went compressed */
        ck_assert_msg(!compress || !strstr(out, " 0.00% compressed"), "%s",
                      out);
    }
}

START_TEST(test_cbw_one_worker)
{
    /* 16 MiB at 8 MiB/s: about two seconds of racing */
    proof(1, 8 << 20, false);
}
END_TEST

START_TEST(test_cbw_four_workers)
{
    proof(4, 12 << 20, false);
}
END_TEST

/* compress=true: old data copied by the filter goes compressed too */
START_TEST(test_cbw_compressed)
{
    proof(4, 12 << 20, true);
}
END_TEST

static Suite *
cbw_suite(void)
{
    Suite *s = suite_create("cbw");
    TCase *tc = tcase_create("proof");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_cbw_one_worker);
    tcase_add_test(tc, test_cbw_four_workers);
    tcase_add_test(tc, test_cbw_compressed);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return vbk_test_run(cbw_suite());
}
