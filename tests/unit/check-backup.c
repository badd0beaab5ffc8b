/*
 * check-backup.c: the backup job — argument checks in QEMU's order and
 * words (a refused backup leaves its bitmap untouched), the bitmap-mode
 * outcome table of ref-qemu-block.md §3 through the successor protocol,
 * error actions (report, ignore, stop + resume) with their events, and
 * the copy-before-write filter node's lifetime.
 *
 * Sources are raw images over blkdebug, which fires read_aio on every
 * data read, so that "the n-th read fails" is easy to say.
 */
#include <errno.h>
#include <string.h>

#include "core/block/dirty.h"
#include "core/job/backup-job.h"
#include "testutil.h"

#define SIZE (1u << 20)
#define CL   65536u

static char *tmpdir;
static GMutex ev_lock;
static GPtrArray *events;

static void
on_event(const VbkBlockJobEvent *ev, void *data)
{
    g_mutex_lock(&ev_lock);
    if (g_str_equal(ev->name, "BLOCK_JOB_ERROR"))
        g_ptr_array_add(events, g_strdup_printf("%s %s %s", ev->name,
                                                ev->operation, ev->action));
    else if (g_str_equal(ev->name, "BLOCK_JOB_PENDING"))
        g_ptr_array_add(events, g_strdup_printf("%s %s", ev->name, ev->id));
    else
        g_ptr_array_add(events,
                        g_strdup_printf("%s %s len=%" G_GUINT64_FORMAT
                                        " offset=%" G_GUINT64_FORMAT "%s%s",
                                        ev->name, ev->id, ev->len, ev->offset,
                                        ev->error ? " error=" : "",
                                        ev->error ? ev->error : ""));
    g_mutex_unlock(&ev_lock);
}

static char *
events_joined(void)
{
    g_autoptr(GString) s = g_string_new(NULL);

    g_mutex_lock(&ev_lock);
    for (guint i = 0; i < events->len; i++)
        g_string_append_printf(s, "%s%s", i ? "; " : "",
                               (char *) events->pdata[i]);
    g_mutex_unlock(&ev_lock);
    return g_strdup(s->str);
}

static void
setup(void)
{
    tmpdir = vbk_test_tmpdir_new();
    events = g_ptr_array_new_with_free_func(g_free);
    vbk_backup_set_event_func(on_event, NULL);
}

static void
teardown(void)
{
    vbk_job_cancel_sync_all();
    vbk_block_graph_close_all();
    vbk_test_tmpdir_remove(tmpdir);
    g_clear_pointer(&tmpdir, g_free);
    g_clear_pointer(&events, g_ptr_array_unref);
}

/* raw node @name on a new file of @size, through blkdebug @rules. */
static VbkBlockNode *
raw_node(const char *name, uint64_t size, const char *rules)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *path = g_build_filename(tmpdir, name, NULL);
    g_autofree char *text = g_strdup_printf(
        "{'driver': <'raw'>, 'node-name': <'%s'>, 'file': <{"
        "'driver': <'blkdebug'>, %s 'image': <{'driver': <'file'>, "
        "'filename': <'%s'>}>}>}",
        name, rules ? rules : "", path);
    VbkBlockNode *bs;

    ck_assert(vbk_file_create(path, size, NULL));
    bs = vbk_block_node_open(g_variant_parse(NULL, text, NULL, NULL, NULL),
                             &err);
    ck_assert_msg(bs, "%s", err ? err->message : "");
    /* the graph keeps it; tests use the borrowed pointer */
    vbk_block_node_unref(bs);
    return bs;
}

static void
write_pattern(VbkBlockNode *bs, uint64_t off, uint64_t len, int c)
{
    g_autofree guint8 *buf = g_malloc(len);

    memset(buf, c, len);
    ck_assert_int_eq(vbk_block_pwrite(bs, off, len, buf, 0), 0);
}

static void
add_bitmap(const char *node, const char *name)
{
    g_autoptr(GError) err = NULL;

    ck_assert_msg(
        vbk_block_dirty_bitmap_add(node, name, CL, false, false, &err), "%s",
        err ? err->message : "");
}

/* count, busy, recording of bitmap @name on @node */
static uint64_t
bitmap_count(const char *node, const char *name, bool *busy, bool *rec)
{
    g_autoptr(GPtrArray) list =
        vbk_block_dirty_bitmap_query(vbk_block_node_find(node));

    for (guint i = 0; i < list->len; i++) {
        VbkDirtyBitmapInfo *info = list->pdata[i];

        if (info->name && g_str_equal(info->name, name)) {
            if (busy)
                *busy = info->busy;
            if (rec)
                *rec = info->recording;
            return info->count;
        }
    }
    ck_abort_msg("no bitmap %s", name);
    return 0;
}

static guint
bitmap_list_len(const char *node)
{
    g_autoptr(GPtrArray) list =
        vbk_block_dirty_bitmap_query(vbk_block_node_find(node));

    return list->len;
}

/* ---- validation ------------------------------------------------------ */

typedef struct {
    VbkBackupSync sync;
    const char *bitmap;
    VbkBitmapSyncMode mode;
    const char *target;
    bool compress;
    int64_t max_workers;
    int64_t max_chunk;
    const char *msg;
} RefuseCase;

static const RefuseCase refuse_cases[] = {
    {VBK_BACKUP_SYNC_BITMAP, NULL, 0, "tgt", false, 64, 0,
     "must provide a valid bitmap name for 'bitmap' sync mode"},
    {VBK_BACKUP_SYNC_INCREMENTAL, NULL, VBK_BITMAP_SYNC_ALWAYS, "tgt", false,
     64, 0, "must provide a valid bitmap name for 'incremental' sync mode"},
    /* the mode check comes before the bitmap lookup */
    {VBK_BACKUP_SYNC_INCREMENTAL, "bitmap404", VBK_BITMAP_SYNC_ALWAYS, "tgt",
     false, 64, 0,
     "Bitmap sync mode must be 'on-success' when using sync mode "
     "'incremental'"},
    {VBK_BACKUP_SYNC_FULL, "bitmap404", VBK_BITMAP_SYNC_ON_SUCCESS, "tgt",
     false, 64, 0, "Bitmap 'bitmap404' could not be found"},
    {VBK_BACKUP_SYNC_FULL, "bitmap0", 0, "tgt", false, 64, 0,
     "Bitmap sync mode must be given when providing a bitmap"},
    {VBK_BACKUP_SYNC_NONE, "bitmap0", VBK_BITMAP_SYNC_ON_SUCCESS, "tgt", false,
     64, 0,
     "sync mode 'none' does not produce meaningful bitmap "
     "outputs"},
    {VBK_BACKUP_SYNC_TOP, "bitmap0", VBK_BITMAP_SYNC_NEVER, "tgt", false, 64, 0,
     "Bitmap sync mode 'never' has no meaningful effect when combined "
     "with sync mode 'top'"},
    {VBK_BACKUP_SYNC_FULL, NULL, VBK_BITMAP_SYNC_ALWAYS, "tgt", false, 64, 0,
     "Cannot specify bitmap sync mode without a bitmap"},
    {VBK_BACKUP_SYNC_FULL, NULL, 0, "src", false, 64, 0,
     "Source and target cannot be the same"},
    {VBK_BACKUP_SYNC_FULL, NULL, 0, "tgt", true, 64, 0,
     "Compression is not supported for this drive "},
    {VBK_BACKUP_SYNC_FULL, NULL, 0, "tgt", false, 0, 0,
     "max-workers must be between 1 and 2147483647"},
    {VBK_BACKUP_SYNC_FULL, NULL, 0, "tgt", false, 64, -1,
     "max-chunk must be zero (which means no limit) or positive"},
    {VBK_BACKUP_SYNC_BITMAP, "bitmap0", VBK_BITMAP_SYNC_ALWAYS, "small", false,
     64, 0, "Source and target image have different sizes"},
    {VBK_BACKUP_SYNC_BITMAP, "bitmap0", VBK_BITMAP_SYNC_ALWAYS, "tgt", false,
     64, 4096,
     "Required max-chunk (4096) is less than backup cluster size (65536)"},
    {VBK_BACKUP_SYNC_FULL, NULL, 0, "nosuch", false, 64, 0,
     "Cannot find device='nosuch' nor node-name='nosuch'"},
};

START_TEST(test_refused)
{
    const RefuseCase *c = &refuse_cases[_i];
    g_autoptr(GError) err = NULL;
    VbkBackupOptions o;
    bool busy = true, rec = false;

    raw_node("src", SIZE, NULL);
    raw_node("tgt", SIZE, NULL);
    raw_node("small", SIZE / 2, NULL);
    add_bitmap("src", "bitmap0");
    write_pattern(vbk_block_node_find("src"), 0, CL, 1);

    vbk_backup_options_init(&o);
    o.job_id = "j";
    o.device = "src";
    o.target = c->target;
    o.sync = c->sync;
    o.bitmap = c->bitmap;
    o.bitmap_mode = c->mode;
    o.compress = c->compress;
    o.max_workers = c->max_workers;
    o.max_chunk = c->max_chunk;
    o.filter_node_name = "backup-top";
    ck_assert_ptr_null(vbk_backup_job_start(&o, &err));
    ck_assert_msg(err && g_str_equal(err->message, c->msg), "case %d: '%s'", _i,
                  err ? err->message : "(no error)");
    /* nothing left behind: bitmap as it was, no filter, no job */
    ck_assert_uint_eq(bitmap_count("src", "bitmap0", &busy, &rec), CL);
    ck_assert(!busy && rec);
    ck_assert_uint_eq(bitmap_list_len("src"), 1);
    ck_assert_ptr_null(vbk_block_node_find("backup-top"));
    ck_assert_ptr_null(vbk_job_find("j", NULL));
}
END_TEST

/* ---- running backups --------------------------------------------------- */

static VbkJob *
start(VbkBackupSync sync,
      const char *bitmap,
      VbkBitmapSyncMode mode,
      int64_t speed,
      bool auto_finalize)
{
    g_autoptr(GError) err = NULL;
    VbkBackupOptions o;
    VbkJob *job;

    vbk_backup_options_init(&o);
    o.job_id = "j";
    o.device = "src";
    o.target = "tgt";
    o.sync = sync;
    o.bitmap = bitmap;
    o.bitmap_mode = mode;
    o.speed = speed;
    o.auto_finalize = auto_finalize;
    o.max_workers = 1;
    o.max_chunk = CL;
    o.filter_node_name = "backup-top";
    job = vbk_backup_job_start(&o, &err);
    ck_assert_msg(job, "%s", err ? err->message : "");
    return job;
}

/* The source with bitmap0 dirty in granules 0, 2, 5 (3 * 64 KiB). */
static void
three_granules(const char *rules)
{
    VbkBlockNode *src = raw_node("src", SIZE, rules);

    raw_node("tgt", SIZE, NULL);
    add_bitmap("src", "bitmap0");
    write_pattern(src, 0, CL, 1);
    write_pattern(src, 2 * CL, CL, 2);
    write_pattern(src, 5 * CL, CL, 5);
    ck_assert_uint_eq(bitmap_count("src", "bitmap0", NULL, NULL), 3 * CL);
}

/* Fail on the second data read after the rules are set. */
#define SECOND_READ_FAILS                                                      \
    "'set-state': <[{'event': <'read_aio'>, 'state': <1>, "                    \
    "'new-state': <2>}]>, 'inject-error': <[{'event': <'read_aio'>, "          \
    "'state': <2>, 'errno': <5>, 'once': <true>}]>,"

static void
assert_events(const char *expect)
{
    g_autofree char *got = events_joined();

    ck_assert_msg(g_str_equal(got, expect), "events: %s", got);
}

START_TEST(test_on_success_success)
{
    VbkJob *job;
    bool busy = false, rec = false;

    three_granules(NULL);
    job = start(VBK_BACKUP_SYNC_INCREMENTAL, "bitmap0", 0, 0, false);
    vbk_job_wait_settled("j");
    ck_assert_int_eq(vbk_job_status(job), VBK_JOB_STATUS_PENDING);
    /* frozen parent, recording successor, copy bitmap (all copied) */
    ck_assert_uint_eq(bitmap_count("src", "bitmap0", &busy, &rec), 3 * CL);
    ck_assert(busy && rec);
    ck_assert_uint_eq(bitmap_list_len("src"), 3);
    ck_assert_ptr_nonnull(vbk_block_node_find("backup-top"));
    write_pattern(vbk_block_node_find("src"), 7 * CL, 2 * CL, 7);
    ck_assert(vbk_job_finalize(job, NULL));
    vbk_job_wait_settled("j");
    /* the bitmap holds the writes made during the job only */
    ck_assert_uint_eq(bitmap_count("src", "bitmap0", &busy, &rec), 2 * CL);
    ck_assert(!busy && rec);
    ck_assert_uint_eq(bitmap_list_len("src"), 1);
    ck_assert_ptr_null(vbk_block_node_find("backup-top"));
    assert_events("BLOCK_JOB_PENDING j; "
                  "BLOCK_JOB_COMPLETED j len=196608 offset=196608");
}
END_TEST

static void
failure_case(VbkBitmapSyncMode mode, uint64_t expect)
{
    bool busy = true;

    three_granules(SECOND_READ_FAILS);
    start(VBK_BACKUP_SYNC_BITMAP, "bitmap0", mode, 0, true);
    vbk_job_wait_settled("j");
    ck_assert_uint_eq(bitmap_count("src", "bitmap0", &busy, NULL), expect);
    ck_assert(!busy);
    ck_assert_uint_eq(bitmap_list_len("src"), 1);
    assert_events("BLOCK_JOB_ERROR read report; BLOCK_JOB_COMPLETED j "
                  "len=196608 offset=65536 error=Input/output error");
}

START_TEST(test_on_success_failure)
{
    /* unchanged */
    failure_case(VBK_BITMAP_SYNC_ON_SUCCESS, 3 * CL);
}
END_TEST

START_TEST(test_always_failure)
{
    /* new (nothing) | not copied (granules 2 and 5) */
    failure_case(VBK_BITMAP_SYNC_ALWAYS, 2 * CL);
}
END_TEST

START_TEST(test_never_failure)
{
    failure_case(VBK_BITMAP_SYNC_NEVER, 3 * CL);
}
END_TEST

static void
success_case(VbkBackupSync sync, VbkBitmapSyncMode mode, uint64_t expect)
{
    VbkJob *job;

    three_granules(NULL);
    job = start(sync, "bitmap0", mode, 0, false);
    vbk_job_wait_settled("j");
    write_pattern(vbk_block_node_find("src"), 9 * CL, CL, 9);
    ck_assert(vbk_job_finalize(job, NULL));
    vbk_job_wait_settled("j");
    ck_assert_uint_eq(bitmap_count("src", "bitmap0", NULL, NULL), expect);
}

START_TEST(test_always_success)
{
    success_case(VBK_BACKUP_SYNC_BITMAP, VBK_BITMAP_SYNC_ALWAYS, CL);
}
END_TEST

START_TEST(test_never_success)
{
    success_case(VBK_BACKUP_SYNC_BITMAP, VBK_BITMAP_SYNC_NEVER, 4 * CL);
}
END_TEST

START_TEST(test_full_on_success_resets)
{
    /* a full backup that resets the bitmap (differential anchor) */
    success_case(VBK_BACKUP_SYNC_FULL, VBK_BITMAP_SYNC_ON_SUCCESS, CL);
}
END_TEST

/* Cancel mid-way (the speed limit holds the copy after its first chunk). */
static void
cancel_case(VbkBackupSync sync, VbkBitmapSyncMode mode, uint64_t expect)
{
    VbkJob *job;

    three_granules(NULL);
    job = start(sync, "bitmap0", mode, 1, true);
    g_usleep(150 * 1000);
    write_pattern(vbk_block_node_find("src"), 9 * CL, CL, 9);
    ck_assert(vbk_job_cancel(job, NULL));
    vbk_job_wait_settled("j");
    ck_assert_uint_eq(bitmap_count("src", "bitmap0", NULL, NULL), expect);
    ck_assert_uint_eq(bitmap_list_len("src"), 1);
    ck_assert_ptr_null(vbk_block_node_find("backup-top"));
}

START_TEST(test_on_success_cancel)
{
    /* old | new */
    cancel_case(VBK_BACKUP_SYNC_FULL, VBK_BITMAP_SYNC_ON_SUCCESS, 4 * CL);
    assert_events("BLOCK_JOB_CANCELLED j len=1048576 offset=131072");
}
END_TEST

START_TEST(test_always_cancel)
{
    /* new (granule 9) | not copied (granules 2, 5: the first one was) */
    cancel_case(VBK_BACKUP_SYNC_BITMAP, VBK_BITMAP_SYNC_ALWAYS, 3 * CL);
}
END_TEST

static void
action_case(VbkErrorAction action, const char *expect_events)
{
    g_autoptr(GError) err = NULL;
    g_autofree guint8 *a = g_malloc(SIZE);
    g_autofree guint8 *b = g_malloc(SIZE);
    VbkBackupOptions o;
    VbkJob *job;

    three_granules("'inject-error': <[{'event': <'read_aio'>, "
                   "'errno': <5>, 'once': <true>}]>,");
    vbk_backup_options_init(&o);
    o.job_id = "j";
    o.device = "src";
    o.target = "tgt";
    o.on_source_error = action;
    o.auto_dismiss = false;
    job = vbk_backup_job_start(&o, &err);
    ck_assert_msg(job, "%s", err ? err->message : "");
    if (action == VBK_ERROR_ACTION_STOP) {
        g_autoptr(GPtrArray) infos = NULL;

        while (vbk_job_status(job) != VBK_JOB_STATUS_PAUSED)
            g_usleep(10 * 1000);
        infos = vbk_block_job_query_all();
        ck_assert_uint_eq(infos->len, 1);
        ck_assert(((VbkBlockJobInfo *) infos->pdata[0])->paused);
        ck_assert_str_eq(((VbkBlockJobInfo *) infos->pdata[0])->io_status,
                         "failed");
        ck_assert(vbk_job_user_resume(job, NULL));
    }
    vbk_job_wait_settled("j");
    ck_assert_int_eq(vbk_job_status(job), VBK_JOB_STATUS_CONCLUDED);
    ck_assert_ptr_null(vbk_job_dup_error(job));
    ck_assert(vbk_job_dismiss(job, NULL));
    ck_assert_int_eq(vbk_block_pread(vbk_block_node_find("src"), 0, SIZE, a),
                     0);
    ck_assert_int_eq(vbk_block_pread(vbk_block_node_find("tgt"), 0, SIZE, b),
                     0);
    ck_assert(memcmp(a, b, SIZE) == 0);
    assert_events(expect_events);
}

START_TEST(test_action_ignore)
{
    action_case(VBK_ERROR_ACTION_IGNORE,
                "BLOCK_JOB_ERROR read ignore; "
                "BLOCK_JOB_COMPLETED j len=1048576 offset=1048576");
}
END_TEST

START_TEST(test_action_stop)
{
    action_case(VBK_ERROR_ACTION_STOP,
                "BLOCK_JOB_ERROR read stop; "
                "BLOCK_JOB_COMPLETED j len=1048576 offset=1048576");
}
END_TEST

START_TEST(test_enospc_reports_eio)
{
    VbkBackupOptions o;
    VbkJob *job;

    three_granules("'inject-error': <[{'event': <'read_aio'>, "
                   "'errno': <5>, 'once': <true>}]>,");
    vbk_backup_options_init(&o);
    o.job_id = "j";
    o.device = "src";
    o.target = "tgt";
    o.on_source_error = VBK_ERROR_ACTION_ENOSPC;
    o.auto_dismiss = false;
    job = vbk_backup_job_start(&o, NULL);
    vbk_job_wait_settled("j");
    ck_assert_int_eq(vbk_job_status(job), VBK_JOB_STATUS_CONCLUDED);
    assert_events("BLOCK_JOB_ERROR read report; BLOCK_JOB_COMPLETED j "
                  "len=1048576 offset=0 error=Input/output error");
}
END_TEST

/* sync=none: only what the guest overwrites is copied, until cancel. */
START_TEST(test_sync_none)
{
    g_autofree guint8 *old = g_malloc(CL);
    g_autofree guint8 *got = g_malloc(CL);
    VbkBlockNode *src, *tgt;
    VbkJob *job;

    three_granules(NULL);
    src = vbk_block_node_find("src");
    tgt = vbk_block_node_find("tgt");
    job = start(VBK_BACKUP_SYNC_NONE, NULL, 0, 0, true);
    g_usleep(100 * 1000);
    ck_assert_int_eq(vbk_job_status(job), VBK_JOB_STATUS_RUNNING);
    ck_assert_int_eq(vbk_block_pread(src, 2 * CL, CL, old), 0);
    write_pattern(src, 2 * CL, 4096, 0x77);
    ck_assert_int_eq(vbk_block_pread(tgt, 2 * CL, CL, got), 0);
    ck_assert(memcmp(old, got, CL) == 0);
    /* granule 0 was not overwritten: not copied */
    ck_assert_int_eq(vbk_block_pread(tgt, 0, CL, got), 0);
    ck_assert(vbk_hbitmap_buffer_is_zero(got, CL));
    ck_assert(vbk_job_cancel(job, NULL));
    vbk_job_wait_settled("j");
    assert_events("BLOCK_JOB_CANCELLED j len=65536 offset=65536");
}
END_TEST

/* A transaction's abort: the job was created, never started. */
START_TEST(test_cancel_created)
{
    g_autoptr(GError) err = NULL;
    VbkBackupOptions o;
    VbkJob *job;
    bool busy = true, rec = false;

    three_granules(NULL);
    vbk_backup_options_init(&o);
    o.job_id = "j";
    o.device = "src";
    o.target = "tgt";
    o.sync = VBK_BACKUP_SYNC_INCREMENTAL;
    o.bitmap = "bitmap0";
    o.filter_node_name = "backup-top";
    job = vbk_backup_job_create(&o, &err);
    ck_assert_msg(job, "%s", err ? err->message : "");
    ck_assert_int_eq(vbk_job_status(job), VBK_JOB_STATUS_CREATED);
    ck_assert_ptr_nonnull(vbk_block_node_find("backup-top"));
    ck_assert_uint_eq(bitmap_count("src", "bitmap0", &busy, NULL), 3 * CL);
    ck_assert(busy);
    /* guest writes already go through the filter */
    write_pattern(vbk_block_node_find("src"), 2 * CL, 512, 0x42);
    ck_assert(vbk_job_cancel(job, NULL));
    vbk_job_wait_settled("j");
    ck_assert_ptr_null(vbk_job_find("j", NULL));
    ck_assert_ptr_null(vbk_block_node_find("backup-top"));
    ck_assert_uint_eq(bitmap_count("src", "bitmap0", &busy, &rec), 3 * CL);
    ck_assert(!busy && rec);
    ck_assert_uint_eq(bitmap_list_len("src"), 1);
    /* QEMU emits BLOCK_JOB_CANCELLED only for jobs that were started */
    g_autofree char *got = events_joined();
    ck_assert_str_eq(got, "");
}
END_TEST

static Suite *
backup_suite(void)
{
    Suite *s = suite_create("backup");
    TCase *tc = tcase_create("refused");
    TCase *run = tcase_create("run");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_refused, 0, G_N_ELEMENTS(refuse_cases));
    suite_add_tcase(s, tc);

    tcase_add_checked_fixture(run, setup, teardown);
    tcase_set_timeout(run, 60);
    tcase_add_test(run, test_on_success_success);
    tcase_add_test(run, test_on_success_failure);
    tcase_add_test(run, test_always_failure);
    tcase_add_test(run, test_never_failure);
    tcase_add_test(run, test_always_success);
    tcase_add_test(run, test_never_success);
    tcase_add_test(run, test_full_on_success_resets);
    tcase_add_test(run, test_on_success_cancel);
    tcase_add_test(run, test_always_cancel);
    tcase_add_test(run, test_action_ignore);
    tcase_add_test(run, test_action_stop);
    tcase_add_test(run, test_enospc_reports_eio);
    tcase_add_test(run, test_sync_none);
    tcase_add_test(run, test_cancel_created);
    suite_add_tcase(s, run);
    return s;
}

int
main(void)
{
    return vbk_test_run(backup_suite());
}
