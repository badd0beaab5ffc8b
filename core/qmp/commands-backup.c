/*
 * commands-backup.c: QMP commands of backups and block jobs.
 *
 * blockdev-backup and drive-backup (QEMU 7.2's BackupCommon plus their
 * own members), query-block-jobs and the block-job-* verbs.  Handlers
 * only convert: enum strings are checked as QAPI does ("Parameter 'sync'
 * does not accept value 'x'"), x-perf is checked member by member, and
 * the rest is core/job's (backup-job.h).  The first backup command also
 * routes the block-job events (BLOCK_JOB_COMPLETED, _CANCELLED, _ERROR,
 * _PENDING) to the monitor's clients.
 */
#include <glib/gi18n-lib.h>

#include "core/job/backup-job.h"
#include "core/job/transaction.h"
#include "qmp-json.h"
#include "qmp.h"

static void
backup_event_cb(const VbkBlockJobEvent *ev, void *user_data)
{
    JsonObject *o = json_object_new();

    if (g_str_equal(ev->name, "BLOCK_JOB_ERROR")) {
        json_object_set_string_member(o, "device", ev->id);
        json_object_set_string_member(o, "operation", ev->operation);
        json_object_set_string_member(o, "action", ev->action);
    } else if (g_str_equal(ev->name, "BLOCK_JOB_PENDING")) {
        json_object_set_string_member(o, "type", ev->type);
        json_object_set_string_member(o, "id", ev->id);
    } else {
        json_object_set_string_member(o, "type", ev->type);
        json_object_set_string_member(o, "device", ev->id);
        json_object_set_int_member(o, "len", ev->len);
        json_object_set_int_member(o, "offset", ev->offset);
        json_object_set_int_member(o, "speed", ev->speed);
        if (ev->error)
            json_object_set_string_member(o, "error", ev->error);
    }
    vbk_qmp_event_emit(ev->name, o);
}

void
vbk_qmp_backup_events_init(void)
{
    static gsize once;

    if (g_once_init_enter(&once)) {
        vbk_backup_set_event_func(backup_event_cb, NULL);
        g_once_init_leave(&once, 1);
    }
}

/* QAPI names an enum member without its path ("Parameter 'sync' ...",
 * also inside a transaction's actions). */
static bool
enum_arg(JsonObject *args,
         const char *name,
         int (*parse)(const char *),
         int def,
         int *out,
         GError **error)
{
    const char *s = vbk_qmp_arg_str(args, name, NULL);

    if (!s) {
        *out = def;
        return true;
    }
    *out = parse(s);
    if (*out < 0) {
        vbk_qmp_error_bad_value(error, "", name, s);
        return false;
    }
    return true;
}

static const VbkQmpArg x_perf_args[] = {
    {"use-copy-range", VBK_QMP_ARG_BOOL, true},
    {"max-workers", VBK_QMP_ARG_INT, true},
    {"max-chunk", VBK_QMP_ARG_INT, true},
    {NULL},
};

/* BackupCommon -> VbkBackupOptions (strings stay owned by @args). */
static bool
backup_common(JsonObject *args,
              const char *prefix,
              VbkBackupOptions *o,
              GError **error)
{
    g_autofree char *perf_prefix = g_strconcat(prefix, "x-perf.", NULL);
    int sync, mode, se, te;

    vbk_backup_options_init(o);
    if (!enum_arg(args, "sync", vbk_backup_sync_from_string, 0, &sync, error) ||
        !enum_arg(args, "bitmap-mode", vbk_bitmap_sync_mode_from_string,
                  VBK_BITMAP_SYNC_UNSET, &mode, error) ||
        !enum_arg(args, "on-source-error", vbk_error_action_from_string,
                  VBK_ERROR_ACTION_REPORT, &se, error) ||
        !enum_arg(args, "on-target-error", vbk_error_action_from_string,
                  VBK_ERROR_ACTION_REPORT, &te, error))
        return false;
    o->job_id = vbk_qmp_arg_str(args, "job-id", NULL);
    o->device = vbk_qmp_arg_str(args, "device", NULL);
    o->target = vbk_qmp_arg_str(args, "target", NULL);
    o->sync = sync;
    o->bitmap_mode = mode;
    o->on_source_error = se;
    o->on_target_error = te;
    o->speed = vbk_qmp_arg_int(args, "speed", 0);
    o->bitmap = vbk_qmp_arg_str(args, "bitmap", NULL);
    o->compress = vbk_qmp_arg_bool(args, "compress", false);
    o->auto_finalize = vbk_qmp_arg_bool(args, "auto-finalize", true);
    o->auto_dismiss = vbk_qmp_arg_bool(args, "auto-dismiss", true);
    o->filter_node_name = vbk_qmp_arg_str(args, "filter-node-name", NULL);
    if (json_object_has_member(args, "x-perf")) {
        JsonObject *perf = json_object_get_object_member(args, "x-perf");

        if (!vbk_qmp_check_args(perf, perf_prefix, x_perf_args, false, error))
            return false;
        o->max_workers = vbk_qmp_arg_int(perf, "max-workers", 64);
        o->max_chunk = vbk_qmp_arg_int(perf, "max-chunk", 0);
    }
    return true;
}

#define BACKUP_COMMON_ARGS                                                     \
    {"job-id", VBK_QMP_ARG_STR, true}, {"device", VBK_QMP_ARG_STR, false},     \
        {"sync", VBK_QMP_ARG_STR, false}, {"speed", VBK_QMP_ARG_INT, true},    \
        {"bitmap", VBK_QMP_ARG_STR, true},                                     \
        {"bitmap-mode", VBK_QMP_ARG_STR, true},                                \
        {"compress", VBK_QMP_ARG_BOOL, true},                                  \
        {"on-source-error", VBK_QMP_ARG_STR, true},                            \
        {"on-target-error", VBK_QMP_ARG_STR, true},                            \
        {"auto-finalize", VBK_QMP_ARG_BOOL, true},                             \
        {"auto-dismiss", VBK_QMP_ARG_BOOL, true},                              \
        {"filter-node-name", VBK_QMP_ARG_STR, true},                           \
    {                                                                          \
        "x-perf", VBK_QMP_ARG_OBJECT, true                                     \
    }

const VbkQmpArg vbk_qmp_blockdev_backup_args[] = {
    BACKUP_COMMON_ARGS,
    {"target", VBK_QMP_ARG_STR, false},
    {NULL},
};

const VbkQmpArg vbk_qmp_drive_backup_args[] = {
    BACKUP_COMMON_ARGS,
    {"target", VBK_QMP_ARG_STR, false},
    {"format", VBK_QMP_ARG_STR, true},
    {"mode", VBK_QMP_ARG_STR, true},
    {NULL},
};

static int
mode_from_string(const char *s)
{
    if (g_str_equal(s, "existing"))
        return VBK_NEW_IMAGE_MODE_EXISTING;
    if (g_str_equal(s, "absolute-paths"))
        return VBK_NEW_IMAGE_MODE_ABSOLUTE_PATHS;
    return -1;
}

bool
vbk_qmp_backup_options(JsonObject *args,
                       const char *prefix,
                       bool drive,
                       VbkBackupOptions *o,
                       const char **format,
                       VbkNewImageMode *mode,
                       GError **error)
{
    int m = VBK_NEW_IMAGE_MODE_ABSOLUTE_PATHS;

    if (!backup_common(args, prefix, o, error))
        return false;
    if (drive && !enum_arg(args, "mode", mode_from_string,
                           VBK_NEW_IMAGE_MODE_ABSOLUTE_PATHS, &m, error))
        return false;
    if (format)
        *format = drive ? vbk_qmp_arg_str(args, "format", NULL) : NULL;
    if (mode)
        *mode = m;
    return true;
}

/* A lone backup command is a transaction of one action, as in QEMU
 * (blockdev_do_action): the same prepare, commit and job start. */
static bool
qmp_backup_action(JsonObject *args, VbkTxnActionType type, GError **error)
{
    VbkTxnAction a = {.type = type};

    vbk_qmp_backup_events_init();
    if (!vbk_qmp_backup_options(args, "", type == VBK_TXN_DRIVE_BACKUP,
                                &a.backup, &a.format, &a.mode, error))
        return false;
    return vbk_transaction_run(&a, 1, false, error);
}

static bool
qmp_blockdev_backup(JsonObject *args, JsonNode **ret, GError **error)
{
    return qmp_backup_action(args, VBK_TXN_BLOCKDEV_BACKUP, error);
}

static bool
qmp_drive_backup(JsonObject *args, JsonNode **ret, GError **error)
{
    return qmp_backup_action(args, VBK_TXN_DRIVE_BACKUP, error);
}

static bool
qmp_query_block_jobs(JsonObject *args, JsonNode **ret, GError **error)
{
    g_autoptr(GPtrArray) infos = vbk_block_job_query_all();
    JsonArray *arr = json_array_new();

    for (guint i = 0; i < infos->len; i++) {
        VbkBlockJobInfo *info = infos->pdata[i];
        JsonObject *o = json_object_new();

        json_object_set_string_member(o, "type", info->type);
        json_object_set_string_member(o, "device", info->device);
        json_object_set_int_member(o, "len", info->len);
        json_object_set_int_member(o, "offset", info->offset);
        json_object_set_boolean_member(o, "busy", info->busy);
        json_object_set_boolean_member(o, "paused", info->paused);
        json_object_set_int_member(o, "speed", info->speed);
        json_object_set_string_member(o, "io-status", info->io_status);
        json_object_set_boolean_member(o, "ready", info->ready);
        json_object_set_string_member(o, "status",
                                      vbk_job_status_to_string(info->status));
        json_object_set_boolean_member(o, "auto-finalize", info->auto_finalize);
        json_object_set_boolean_member(o, "auto-dismiss", info->auto_dismiss);
        if (info->error)
            json_object_set_string_member(o, "error", info->error);
        json_array_add_object_element(arr, o);
    }
    *ret = vbk_qmp_node_array(arr);
    return true;
}

/* The block job named by @key; QEMU's class for an unknown one is
 * DeviceNotActive. */
static VbkJob *
find_job(JsonObject *args, const char *key, GError **error)
{
    g_autoptr(GError) err = NULL;
    VbkJob *job = vbk_block_job_find(vbk_qmp_arg_str(args, key, NULL), &err);

    if (!job)
        g_set_error_literal(error, VBK_QMP_ERROR,
                            VBK_QMP_ERROR_DEVICE_NOT_ACTIVE, err->message);
    return job;
}

static bool
qmp_block_job_set_speed(JsonObject *args, JsonNode **ret, GError **error)
{
    VbkJob *job = find_job(args, "device", error);

    return job && vbk_block_job_set_speed(
                      job, vbk_qmp_arg_int(args, "speed", 0), error);
}

static bool
qmp_block_job_cancel(JsonObject *args, JsonNode **ret, GError **error)
{
    VbkJob *job = find_job(args, "device", error);

    return job && vbk_block_job_cancel(
                      job, vbk_qmp_arg_bool(args, "force", false), error);
}

static bool
qmp_block_job_complete(JsonObject *args, JsonNode **ret, GError **error)
{
    VbkJob *job = find_job(args, "device", error);

    if (!job)
        return false;
    /* only mirror jobs complete; QEMU refuses through the verb table */
    if (!vbk_job_verb_table[VBK_JOB_VERB_COMPLETE][vbk_job_status(job)]) {
        g_set_error(error, VBK_JOB_ERROR, VBK_JOB_ERROR_STATE,
                    _("Job '%s' in state '%s' cannot accept command verb "
                      "'%s'"),
                    vbk_job_id(job),
                    vbk_job_status_to_string(vbk_job_status(job)),
                    vbk_job_verb_to_string(VBK_JOB_VERB_COMPLETE));
        return false;
    }
    g_set_error(error, VBK_JOB_ERROR, VBK_JOB_ERROR_FAILED,
                _("The active block job '%s' cannot be completed"),
                vbk_job_id(job));
    return false;
}

#define QMP_BLOCK_JOB_VERB(fn, key, call)                                      \
    static bool fn(JsonObject *args, JsonNode **ret, GError **error)           \
    {                                                                          \
        VbkJob *job = find_job(args, key, error);                              \
        return job && call(job, error);                                        \
    }

QMP_BLOCK_JOB_VERB(qmp_block_job_pause, "device", vbk_job_user_pause)
QMP_BLOCK_JOB_VERB(qmp_block_job_resume, "device", vbk_job_user_resume)
QMP_BLOCK_JOB_VERB(qmp_block_job_finalize, "id", vbk_job_finalize)
QMP_BLOCK_JOB_VERB(qmp_block_job_dismiss, "id", vbk_job_dismiss)

static const VbkQmpArg device_args[] = {
    {"device", VBK_QMP_ARG_STR, false},
    {NULL},
};

static const VbkQmpArg id_args[] = {
    {"id", VBK_QMP_ARG_STR, false},
    {NULL},
};

static const VbkQmpArg set_speed_args[] = {
    {"device", VBK_QMP_ARG_STR, false},
    {"speed", VBK_QMP_ARG_INT, false},
    {NULL},
};

static const VbkQmpArg cancel_args[] = {
    {"device", VBK_QMP_ARG_STR, false},
    {"force", VBK_QMP_ARG_BOOL, true},
    {NULL},
};

const VbkQmpCommand vbk_qmp_backup_commands[] = {
    {"blockdev-backup", qmp_blockdev_backup, vbk_qmp_blockdev_backup_args},
    {"drive-backup", qmp_drive_backup, vbk_qmp_drive_backup_args},
    {"query-block-jobs", qmp_query_block_jobs, NULL},
    {"block-job-set-speed", qmp_block_job_set_speed, set_speed_args},
    {"block-job-cancel", qmp_block_job_cancel, cancel_args},
    {"block-job-pause", qmp_block_job_pause, device_args},
    {"block-job-resume", qmp_block_job_resume, device_args},
    {"block-job-complete", qmp_block_job_complete, device_args},
    {"block-job-finalize", qmp_block_job_finalize, id_args},
    {"block-job-dismiss", qmp_block_job_dismiss, id_args},
    {NULL},
};
