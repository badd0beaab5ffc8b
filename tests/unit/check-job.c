/*
 * check-job.c: the job state machine against QEMU's tables.
 *
 * The transition table and the verb table are checked cell by cell
 * against the reference (ref-qemu-block.md §4, written out below as
 * letters), then real jobs run through their lifecycles and the
 * sequence of status events is compared with QEMU's: success, failure,
 * cancel, manual finalize, failing prepare, pause/resume, auto-dismiss.
 */
#include <errno.h>
#include <string.h>

#include "core/job/job.h"
#include "testutil.h"

/* U C R P Y S W D X E N, as the reference names the columns. */
static const char status_letters[] = "UCRPYSWDXEN";

static int
letter_status(char c)
{
    const char *p = strchr(status_letters, c);

    ck_assert_ptr_nonnull(p);
    return (int) (p - status_letters);
}

/* From -> To, straight from the reference's table. */
static const char *const ref_stt[] = {
    "U:C",  "C:RXN", "R:PYWX", "P:R", "Y:SWX", "S:Y",
    "W:DX", "D:XE",  "X:XE",   "E:N", "N:",
};

/* Verb -> allowed states. */
static const struct {
    VbkJobVerb verb;
    const char *name;
    const char *states;
} ref_verbs[] = {
    {VBK_JOB_VERB_CANCEL, "cancel", "CRPYSWD"},
    {VBK_JOB_VERB_PAUSE, "pause", "CRPYS"},
    {VBK_JOB_VERB_RESUME, "resume", "CRPYS"},
    {VBK_JOB_VERB_SET_SPEED, "set-speed", "CRPYS"},
    {VBK_JOB_VERB_COMPLETE, "complete", "YS"},
    {VBK_JOB_VERB_FINALIZE, "finalize", "D"},
    {VBK_JOB_VERB_DISMISS, "dismiss", "E"},
};

START_TEST(test_transition_table)
{
    bool expect[VBK_JOB_STATUS_LAST][VBK_JOB_STATUS_LAST] = {{0}};
    int from, to;
    guint i;

    for (i = 0; i < G_N_ELEMENTS(ref_stt); i++) {
        const char *p = ref_stt[i] + 2;
        from = letter_status(ref_stt[i][0]);
        for (; *p; p++)
            expect[from][letter_status(*p)] = true;
    }
    for (from = 0; from < VBK_JOB_STATUS_LAST; from++) {
        for (to = 0; to < VBK_JOB_STATUS_LAST; to++) {
            ck_assert_msg(vbk_job_stt[from][to] == expect[from][to],
                          "STT[%s][%s] is %d", vbk_job_status_to_string(from),
                          vbk_job_status_to_string(to), vbk_job_stt[from][to]);
        }
    }
}
END_TEST

START_TEST(test_verb_table)
{
    guint i;
    int s;

    ck_assert_int_eq(G_N_ELEMENTS(ref_verbs), VBK_JOB_VERB_LAST);
    for (i = 0; i < G_N_ELEMENTS(ref_verbs); i++) {
        VbkJobVerb v = ref_verbs[i].verb;

        ck_assert_str_eq(vbk_job_verb_to_string(v), ref_verbs[i].name);
        for (s = 0; s < VBK_JOB_STATUS_LAST; s++) {
            bool want = strchr(ref_verbs[i].states, status_letters[s]) != NULL;
            ck_assert_msg(vbk_job_verb_table[v][s] == want, "verb %s in %s: %d",
                          ref_verbs[i].name, vbk_job_status_to_string(s),
                          vbk_job_verb_table[v][s]);
        }
    }
}
END_TEST

START_TEST(test_status_names)
{
    static const char *const names[] = {
        "undefined", "created", "running",  "paused",    "ready", "standby",
        "waiting",   "pending", "aborting", "concluded", "null",
    };
    int s;

    for (s = 0; s < VBK_JOB_STATUS_LAST; s++)
        ck_assert_str_eq(vbk_job_status_to_string(s), names[s]);
}
END_TEST

/* ---- lifecycles ----------------------------------------------------- */

typedef struct {
    bool fail; /* run() fails with EIO's text */
    gint gate; /* run() waits until this is set (if hold) */
    bool hold;
    bool fail_prepare;
    bool wait_cancel; /* run() loops on pause points until cancelled */
    GString *calls;   /* which callbacks ran, in order */
    gint started;
} TestJob;

static GString *events;

static void
record_status(VbkJob *job, VbkJobStatus status, void *data)
{
    if (events->len)
        g_string_append_c(events, ' ');
    g_string_append(events, vbk_job_status_to_string(status));
}

static bool
tj_run(VbkJob *job, void *opaque, GError **error)
{
    TestJob *tj = opaque;

    vbk_job_progress_set_total(job, 4);
    g_atomic_int_set(&tj->started, 1);
    while (tj->hold && !g_atomic_int_get(&tj->gate) &&
           !vbk_job_is_cancelled(job))
        g_usleep(1000);
    while (tj->wait_cancel && !vbk_job_is_cancelled(job)) {
        vbk_job_pause_point(job);
        g_usleep(1000);
    }
    vbk_job_progress_update(job, 4);
    if (tj->fail) {
        g_set_error_literal(error, VBK_JOB_ERROR, VBK_JOB_ERROR_FAILED,
                            "Input/output error");
        return false;
    }
    return true;
}

static bool
tj_prepare(VbkJob *job, void *opaque, GError **error)
{
    TestJob *tj = opaque;

    g_string_append(tj->calls, "prepare ");
    if (tj->fail_prepare) {
        g_set_error_literal(error, VBK_JOB_ERROR, VBK_JOB_ERROR_FAILED,
                            "prepare failed");
        return false;
    }
    return true;
}

static void
tj_commit(VbkJob *job, void *opaque)
{
    g_string_append(((TestJob *) opaque)->calls, "commit ");
}

static void
tj_abort(VbkJob *job, void *opaque)
{
    g_string_append(((TestJob *) opaque)->calls, "abort ");
}

static void
tj_clean(VbkJob *job, void *opaque)
{
    g_string_append(((TestJob *) opaque)->calls, "clean");
}

/* The callbacks log into a string the test keeps; free is a no-op. */
static void
tj_free(void *opaque)
{
}

static const VbkJobDriver tj_driver = {
    .type = "test",
    .run = tj_run,
    .prepare = tj_prepare,
    .commit = tj_commit,
    .abort = tj_abort,
    .clean = tj_clean,
    .free = tj_free,
};

static void
setup(void)
{
    events = g_string_new(NULL);
    vbk_job_set_status_handler(record_status, NULL);
}

static void
teardown(void)
{
    vbk_job_set_status_handler(NULL, NULL);
    g_string_free(events, TRUE);
}

static VbkJobInfo *
find_info(GPtrArray *infos, const char *id)
{
    guint i;

    for (i = 0; i < infos->len; i++) {
        VbkJobInfo *info = infos->pdata[i];
        if (g_str_equal(info->id, id))
            return info;
    }
    return NULL;
}

static VbkJob *
start_job(const char *id, TestJob *tj, VbkJobFlags flags)
{
    VbkJob *job;

    tj->calls = g_string_new(NULL);
    job = vbk_job_create(id, &tj_driver, tj, flags, NULL);
    ck_assert_ptr_nonnull(job);
    vbk_job_start(job);
    return job;
}

START_TEST(test_success_manual_dismiss)
{
    TestJob tj = {0};
    g_autoptr(GPtrArray) infos = NULL;
    g_autoptr(GError) err = NULL;
    VbkJob *job = start_job("j0", &tj, VBK_JOB_MANUAL_DISMISS);
    VbkJobInfo *info;

    vbk_job_wait_settled("j0");
    ck_assert_str_eq(events->str, "created running waiting pending concluded");
    ck_assert_str_eq(tj.calls->str, "prepare commit clean");
    infos = vbk_job_query_all();
    info = find_info(infos, "j0");
    ck_assert_ptr_nonnull(info);
    ck_assert_str_eq(info->type, "test");
    ck_assert_int_eq(info->status, VBK_JOB_STATUS_CONCLUDED);
    ck_assert_int_eq(info->current_progress, 4);
    ck_assert_int_eq(info->total_progress, 4);
    ck_assert_ptr_null(info->error);

    ck_assert(!vbk_job_cancel(job, &err));
    ck_assert_str_eq(err->message, "Job 'j0' in state 'concluded' cannot "
                                   "accept command verb 'cancel'");
    ck_assert(vbk_job_dismiss(job, NULL));
    ck_assert_str_eq(events->str,
                     "created running waiting pending concluded null");
    ck_assert_ptr_null(vbk_job_find("j0", NULL));
    g_string_free(tj.calls, TRUE);
}
END_TEST

START_TEST(test_failure)
{
    TestJob tj = {.fail = true};
    g_autoptr(GPtrArray) infos = NULL;
    VbkJobInfo *info;

    start_job("bad", &tj, VBK_JOB_MANUAL_DISMISS);
    vbk_job_wait_settled("bad");
    ck_assert_str_eq(events->str, "created running aborting concluded");
    ck_assert_str_eq(tj.calls->str, "abort clean");
    infos = vbk_job_query_all();
    info = find_info(infos, "bad");
    ck_assert_str_eq(info->error, "Input/output error");
    g_string_free(tj.calls, TRUE);
}
END_TEST

START_TEST(test_auto_dismiss)
{
    TestJob tj = {0};

    start_job("auto", &tj, VBK_JOB_DEFAULT);
    vbk_job_wait_settled("auto");
    ck_assert_str_eq(events->str,
                     "created running waiting pending concluded null");
    ck_assert_ptr_null(vbk_job_find("auto", NULL));
    g_string_free(tj.calls, TRUE);
}
END_TEST

START_TEST(test_manual_finalize)
{
    TestJob tj = {0};
    g_autoptr(GError) err = NULL;
    VbkJob *job =
        start_job("fin", &tj, VBK_JOB_MANUAL_FINALIZE | VBK_JOB_MANUAL_DISMISS);

    vbk_job_wait_settled("fin");
    ck_assert_str_eq(events->str, "created running waiting pending");
    ck_assert_str_eq(tj.calls->str, "");
    ck_assert(!vbk_job_dismiss(job, &err));
    ck_assert_str_eq(err->message, "Job 'fin' in state 'pending' cannot "
                                   "accept command verb 'dismiss'");
    ck_assert(vbk_job_finalize(job, NULL));
    ck_assert_str_eq(events->str, "created running waiting pending concluded");
    ck_assert_str_eq(tj.calls->str, "prepare commit clean");
    ck_assert(vbk_job_dismiss(job, NULL));
    g_string_free(tj.calls, TRUE);
}
END_TEST

START_TEST(test_cancel_pending)
{
    TestJob tj = {0};
    g_autoptr(GPtrArray) infos = NULL;
    VbkJob *job =
        start_job("cp", &tj, VBK_JOB_MANUAL_FINALIZE | VBK_JOB_MANUAL_DISMISS);

    vbk_job_wait_settled("cp");
    ck_assert(vbk_job_cancel(job, NULL));
    ck_assert_str_eq(events->str,
                     "created running waiting pending aborting concluded");
    ck_assert_str_eq(tj.calls->str, "abort clean");
    infos = vbk_job_query_all();
    ck_assert_str_eq(find_info(infos, "cp")->error, g_strerror(ECANCELED));
    g_string_free(tj.calls, TRUE);
}
END_TEST

START_TEST(test_prepare_fails)
{
    TestJob tj = {.fail_prepare = true};
    g_autoptr(GPtrArray) infos = NULL;

    start_job("pf", &tj, VBK_JOB_MANUAL_DISMISS);
    vbk_job_wait_settled("pf");
    ck_assert_str_eq(events->str,
                     "created running waiting pending aborting concluded");
    ck_assert_str_eq(tj.calls->str, "prepare abort clean");
    infos = vbk_job_query_all();
    ck_assert_str_eq(find_info(infos, "pf")->error, "prepare failed");
    g_string_free(tj.calls, TRUE);
}
END_TEST

/* Wait (iterating nothing: the job thread moves alone) for a status. */
static void
wait_status(VbkJob *job, VbkJobStatus status)
{
    int i;

    for (i = 0; i < 5000 && vbk_job_status(job) != status; i++)
        g_usleep(1000);
    ck_assert_str_eq(vbk_job_status_to_string(vbk_job_status(job)),
                     vbk_job_status_to_string(status));
}

START_TEST(test_pause_resume_cancel)
{
    TestJob tj = {.wait_cancel = true};
    g_autoptr(GError) err = NULL;
    g_autoptr(GError) err2 = NULL;
    g_autoptr(GError) err3 = NULL;
    VbkJob *job = start_job("pr", &tj, VBK_JOB_MANUAL_DISMISS);

    while (!g_atomic_int_get(&tj.started))
        g_usleep(1000);
    ck_assert(!vbk_job_user_resume(job, &err));
    ck_assert_str_eq(err->message, "Can't resume a job that was not paused");
    ck_assert(vbk_job_user_pause(job, NULL));
    ck_assert(!vbk_job_user_pause(job, &err2));
    ck_assert_str_eq(err2->message, "Job is already paused");
    wait_status(job, VBK_JOB_STATUS_PAUSED);
    ck_assert(vbk_job_user_resume(job, NULL));
    wait_status(job, VBK_JOB_STATUS_RUNNING);
    ck_assert(!vbk_job_finalize(job, &err3));
    ck_assert_str_eq(err3->message, "Job 'pr' in state 'running' cannot "
                                    "accept command verb 'finalize'");
    ck_assert(vbk_job_cancel(job, NULL));
    vbk_job_wait_settled("pr");
    ck_assert_str_eq(events->str, "created running paused running aborting "
                                  "concluded");
    g_string_free(tj.calls, TRUE);
}
END_TEST

START_TEST(test_cancel_created)
{
    TestJob tj = {0};
    VbkJob *job;

    tj.calls = g_string_new(NULL);
    job = vbk_job_create("c0", &tj_driver, &tj, VBK_JOB_DEFAULT, NULL);
    ck_assert(vbk_job_cancel(job, NULL));
    ck_assert_str_eq(events->str, "created aborting concluded null");
    ck_assert_str_eq(tj.calls->str, "abort clean");
    ck_assert_ptr_null(vbk_job_find("c0", NULL));
    g_string_free(tj.calls, TRUE);
}
END_TEST

/* A job started with an internal pause pending (QEMU: created inside a
 * drained section) shows running, paused, then running once resumed, and
 * a user pause is still separate from it. */
START_TEST(test_start_paused)
{
    TestJob tj = {0};
    g_autoptr(GError) err = NULL;
    VbkJob *job;

    tj.calls = g_string_new(NULL);
    job = vbk_job_create("sp", &tj_driver, &tj, VBK_JOB_DEFAULT, NULL);
    ck_assert(!vbk_job_started(job));
    vbk_job_pause(job);
    vbk_job_start(job);
    ck_assert(vbk_job_started(job));
    ck_assert_str_eq(events->str, "created running paused");
    g_usleep(20000);
    ck_assert(!g_atomic_int_get(&tj.started));
    ck_assert(!vbk_job_user_resume(job, &err));
    ck_assert_str_eq(err->message, "Can't resume a job that was not paused");
    vbk_job_resume(job);
    vbk_job_wait_settled("sp");
    ck_assert(g_atomic_int_get(&tj.started));
    ck_assert_str_eq(events->str, "created running paused running waiting "
                                  "pending concluded null");
    g_string_free(tj.calls, TRUE);
}
END_TEST

/* Cancelling a job that starts paused: it runs only to abort. */
START_TEST(test_start_paused_cancel)
{
    TestJob tj = {.wait_cancel = true};
    VbkJob *job;

    tj.calls = g_string_new(NULL);
    job = vbk_job_create("spc", &tj_driver, &tj, VBK_JOB_DEFAULT, NULL);
    vbk_job_pause(job);
    vbk_job_start(job);
    ck_assert(vbk_job_cancel(job, NULL));
    vbk_job_wait_settled("spc");
    ck_assert_str_eq(events->str, "created running paused running aborting "
                                  "concluded null");
    ck_assert_str_eq(tj.calls->str, "abort clean");
    g_string_free(tj.calls, TRUE);
}
END_TEST

START_TEST(test_ids)
{
    TestJob tj = {0};
    g_autoptr(GError) e1 = NULL;
    g_autoptr(GError) e2 = NULL;
    g_autoptr(GError) e3 = NULL;

    tj.calls = g_string_new(NULL);
    ck_assert_ptr_null(vbk_job_create("1x", &tj_driver, &tj, 0, &e1));
    ck_assert_str_eq(e1->message, "Invalid job ID '1x'");
    ck_assert_ptr_nonnull(vbk_job_create("a-b.c_1", &tj_driver, &tj, 0, NULL));
    ck_assert_ptr_null(vbk_job_create("a-b.c_1", &tj_driver, &tj, 0, &e2));
    ck_assert_str_eq(e2->message, "Job ID 'a-b.c_1' already in use");
    ck_assert_ptr_null(vbk_job_find("nope", &e3));
    ck_assert_str_eq(e3->message, "Job not found");
    vbk_job_cancel_sync_all();
    ck_assert_ptr_null(vbk_job_find("a-b.c_1", NULL));
    g_string_free(tj.calls, TRUE);
}
END_TEST

START_TEST(test_cancel_sync_all)
{
    TestJob a = {.wait_cancel = true};
    TestJob b = {0};

    start_job("ja", &a, VBK_JOB_MANUAL_DISMISS);
    start_job("jb", &b, VBK_JOB_MANUAL_DISMISS);
    vbk_job_wait_settled("jb");
    vbk_job_cancel_sync_all();
    ck_assert_ptr_null(vbk_job_find("ja", NULL));
    ck_assert_ptr_null(vbk_job_find("jb", NULL));
    ck_assert_str_eq(a.calls->str, "abort clean");
    ck_assert_str_eq(b.calls->str, "prepare commit clean");
    g_string_free(a.calls, TRUE);
    g_string_free(b.calls, TRUE);
}
END_TEST

/* ---- completion groups ---------------------------------------------- */

static void
record_id_status(VbkJob *job, VbkJobStatus status, void *data)
{
    if (events->len)
        g_string_append_c(events, ' ');
    g_string_append_printf(events, "%s:%s", vbk_job_id(job),
                           vbk_job_status_to_string(status));
}

static VbkJob *
create_in(VbkJobTxn *txn, const char *id, TestJob *tj, VbkJobFlags flags)
{
    VbkJob *job;

    tj->calls = g_string_new(NULL);
    job = vbk_job_create(id, &tj_driver, tj, flags, NULL);
    ck_assert_ptr_nonnull(job);
    vbk_job_txn_add(txn, job);
    return job;
}

/* Iterate the default context until @job reaches @status. */
static void
iterate_until(VbkJob *job, VbkJobStatus status)
{
    int i;

    for (i = 0; i < 5000 && vbk_job_status(job) != status; i++) {
        while (g_main_context_iteration(NULL, FALSE))
            ;
        g_usleep(1000);
    }
    ck_assert_str_eq(vbk_job_status_to_string(vbk_job_status(job)),
                     vbk_job_status_to_string(status));
}

START_TEST(test_txn_success)
{
    g_autoptr(VbkJobTxn) txn = vbk_job_txn_new();
    TestJob a = {.hold = true};
    TestJob b = {0};
    VbkJob *ja, *jb;

    vbk_job_set_status_handler(record_id_status, NULL);
    ja = create_in(txn, "ga", &a, VBK_JOB_MANUAL_DISMISS);
    jb = create_in(txn, "gb", &b, VBK_JOB_MANUAL_DISMISS);
    vbk_job_start(ja);
    vbk_job_start(jb);
    /* gb is done but waits for its group */
    iterate_until(jb, VBK_JOB_STATUS_WAITING);
    ck_assert_str_eq(b.calls->str, "");
    g_atomic_int_set(&a.gate, 1);
    vbk_job_wait_settled("ga");
    vbk_job_wait_settled("gb");
    /* both PENDING together, finalized newest first */
    ck_assert_str_eq(events->str,
                     "ga:created gb:created ga:running gb:running "
                     "gb:waiting ga:waiting gb:pending ga:pending "
                     "gb:concluded ga:concluded");
    ck_assert_str_eq(a.calls->str, "prepare commit clean");
    ck_assert_str_eq(b.calls->str, "prepare commit clean");
    vbk_job_cancel_sync_all();
    g_string_free(a.calls, TRUE);
    g_string_free(b.calls, TRUE);
}
END_TEST

START_TEST(test_txn_failure)
{
    g_autoptr(VbkJobTxn) txn = vbk_job_txn_new();
    g_autoptr(GPtrArray) infos = NULL;
    TestJob a = {.wait_cancel = true};
    TestJob b = {.fail = true};
    VbkJob *ja, *jb;

    vbk_job_set_status_handler(record_id_status, NULL);
    ja = create_in(txn, "fa", &a, VBK_JOB_MANUAL_DISMISS);
    jb = create_in(txn, "fb", &b, VBK_JOB_MANUAL_DISMISS);
    vbk_job_start(ja);
    vbk_job_start(jb);
    vbk_job_wait_settled("fb");
    vbk_job_wait_settled("fa");
    /* fb's failure cancels fa; both abort, newest first */
    ck_assert_str_eq(events->str,
                     "fa:created fb:created fa:running fb:running "
                     "fb:aborting fa:aborting fb:concluded fa:concluded");
    ck_assert_str_eq(a.calls->str, "abort clean");
    ck_assert_str_eq(b.calls->str, "abort clean");
    infos = vbk_job_query_all();
    ck_assert_str_eq(find_info(infos, "fb")->error, "Input/output error");
    ck_assert_str_eq(find_info(infos, "fa")->error, g_strerror(ECANCELED));
    vbk_job_cancel_sync_all();
    (void) ja;
    g_string_free(a.calls, TRUE);
    g_string_free(b.calls, TRUE);
}
END_TEST

/* A job that already ran to its end (WAITING for its group) is cancelled
 * too when a sibling fails, as QEMU's job_txn_abort does. */
START_TEST(test_txn_failure_after_done)
{
    g_autoptr(VbkJobTxn) txn = vbk_job_txn_new();
    g_autoptr(GPtrArray) infos = NULL;
    TestJob a = {0};
    TestJob b = {.fail = true, .hold = true};
    VbkJob *ja, *jb;

    vbk_job_set_status_handler(record_id_status, NULL);
    ja = create_in(txn, "da", &a, VBK_JOB_MANUAL_DISMISS);
    jb = create_in(txn, "db", &b, VBK_JOB_MANUAL_DISMISS);
    vbk_job_start(ja);
    vbk_job_start(jb);
    iterate_until(ja, VBK_JOB_STATUS_WAITING);
    g_atomic_int_set(&b.gate, 1);
    vbk_job_wait_settled("db");
    vbk_job_wait_settled("da");
    ck_assert(vbk_job_is_cancelled(ja));
    ck_assert(!vbk_job_is_cancelled(jb));
    ck_assert_str_eq(a.calls->str, "abort clean");
    infos = vbk_job_query_all();
    ck_assert_str_eq(find_info(infos, "db")->error, "Input/output error");
    ck_assert_str_eq(find_info(infos, "da")->error, g_strerror(ECANCELED));
    vbk_job_cancel_sync_all();
    g_string_free(a.calls, TRUE);
    g_string_free(b.calls, TRUE);
}
END_TEST

static Suite *
job_suite(void)
{
    Suite *s = suite_create("job");
    TCase *tables = tcase_create("tables");
    TCase *life = tcase_create("lifecycle");

    tcase_add_test(tables, test_transition_table);
    tcase_add_test(tables, test_verb_table);
    tcase_add_test(tables, test_status_names);
    suite_add_tcase(s, tables);

    tcase_add_checked_fixture(life, setup, teardown);
    tcase_add_test(life, test_success_manual_dismiss);
    tcase_add_test(life, test_failure);
    tcase_add_test(life, test_auto_dismiss);
    tcase_add_test(life, test_manual_finalize);
    tcase_add_test(life, test_cancel_pending);
    tcase_add_test(life, test_prepare_fails);
    tcase_add_test(life, test_pause_resume_cancel);
    tcase_add_test(life, test_cancel_created);
    tcase_add_test(life, test_start_paused);
    tcase_add_test(life, test_start_paused_cancel);
    tcase_add_test(life, test_ids);
    tcase_add_test(life, test_cancel_sync_all);
    tcase_add_test(life, test_txn_success);
    tcase_add_test(life, test_txn_failure);
    tcase_add_test(life, test_txn_failure_after_done);
    suite_add_tcase(s, life);
    return s;
}

int
main(void)
{
    return vbk_test_run(job_suite());
}
