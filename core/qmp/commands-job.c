/*
 * commands-job.c: QMP commands on jobs.
 *
 * blockdev-create (a "create" job), query-jobs and the job verbs
 * job-cancel, job-pause, job-resume, job-finalize and job-dismiss.  The
 * create options are a union on "driver": each branch is checked like
 * QAPI does (members named "options.x"), then converted into a
 * VbkCreateJobOptions for core/job.
 */
#include <glib/gi18n-lib.h>

#include "core/job/create-job.h"
#include "qmp-json.h"
#include "qmp.h"

static const VbkQmpArg create_file_args[] = {
    {"driver", VBK_QMP_ARG_STR, false},
    {"filename", VBK_QMP_ARG_STR, false},
    {"size", VBK_QMP_ARG_SIZE, false},
    {NULL},
};

static const VbkQmpArg create_qcow2_args[] = {
    {"driver", VBK_QMP_ARG_STR, false},
    {"file", VBK_QMP_ARG_REF, false},
    {"size", VBK_QMP_ARG_SIZE, false},
    {"version", VBK_QMP_ARG_STR, true},
    {"backing-file", VBK_QMP_ARG_STR, true},
    {"backing-fmt", VBK_QMP_ARG_STR, true},
    {"cluster-size", VBK_QMP_ARG_SIZE, true},
    {"lazy-refcounts", VBK_QMP_ARG_BOOL, true},
    {"refcount-bits", VBK_QMP_ARG_INT, true},
    {"compression-type", VBK_QMP_ARG_STR, true},
    {NULL},
};

static const VbkQmpArg create_other_args[] = {
    {"driver", VBK_QMP_ARG_STR, false},
    {NULL},
};

static bool
qmp_create_qcow2_options(JsonObject *o,
                         VbkCreateJobOptions *opts,
                         GError **error)
{
    const char *version = vbk_qmp_arg_str(o, "version", NULL);
    const char *bfmt = vbk_qmp_arg_str(o, "backing-fmt", NULL);
    const char *ctype = vbk_qmp_arg_str(o, "compression-type", NULL);

    if (!JSON_NODE_HOLDS_VALUE(json_object_get_member(o, "file"))) {
        g_set_error(error, VBK_QMP_ERROR, VBK_QMP_ERROR_GENERIC,
                    _("blockdev-create of qcow2 needs 'file' as the "
                      "node-name of an existing node"));
        return false;
    }
    if (version && !g_str_equal(version, "v2") && !g_str_equal(version, "v3")) {
        vbk_qmp_error_bad_value(error, "", "version", version);
        return false;
    }
    if (bfmt && !vbk_qmp_is_qemu_block_driver(bfmt)) {
        vbk_qmp_error_bad_value(error, "", "backing-fmt", bfmt);
        return false;
    }
    if (ctype && !g_str_equal(ctype, "zlib") && !g_str_equal(ctype, "zstd")) {
        vbk_qmp_error_bad_value(error, "", "compression-type", ctype);
        return false;
    }
    opts->kind = VBK_CREATE_QCOW2;
    opts->file_node = g_strdup(vbk_qmp_arg_str(o, "file", NULL));
    opts->qcow2.version = version ? (version[1] - '0') : 0;
    opts->qcow2.cluster_size = vbk_qmp_arg_int(o, "cluster-size", 0);
    opts->qcow2.refcount_bits = vbk_qmp_arg_int(o, "refcount-bits", 0);
    opts->qcow2.lazy_refcounts = vbk_qmp_arg_bool(o, "lazy-refcounts", false);
    opts->qcow2.zstd = ctype && g_str_equal(ctype, "zstd");
    opts->backing_file = g_strdup(vbk_qmp_arg_str(o, "backing-file", NULL));
    opts->backing_fmt = g_strdup(bfmt);
    return true;
}

/* Turn blockdev-create's "options" into job options. */
static VbkCreateJobOptions *
qmp_create_options(JsonObject *o, GError **error)
{
    g_autoptr(VbkCreateJobOptions) opts = g_new0(VbkCreateJobOptions, 1);
    const char *driver;
    const VbkQmpArg *spec = create_other_args;

    if (!json_object_has_member(o, "driver")) {
        g_set_error(error, VBK_QMP_ERROR, VBK_QMP_ERROR_GENERIC,
                    _("Parameter '%s' is missing"), "options.driver");
        return NULL;
    }
    if (!vbk_qmp_check_args(o, "options.", create_other_args, true, error))
        return NULL;
    driver = vbk_qmp_arg_str(o, "driver", NULL);
    if (!vbk_qmp_is_qemu_block_driver(driver)) {
        vbk_qmp_error_bad_value(error, "options.", "driver", driver);
        return NULL;
    }
    if (g_str_equal(driver, "file"))
        spec = create_file_args;
    else if (g_str_equal(driver, "qcow2"))
        spec = create_qcow2_args;
    if (!vbk_qmp_check_args(o, "options.", spec, false, error))
        return NULL;

    opts->size = (uint64_t) vbk_qmp_arg_int(o, "size", 0);
    if (g_str_equal(driver, "file")) {
        opts->kind = VBK_CREATE_FILE;
        opts->filename = g_strdup(vbk_qmp_arg_str(o, "filename", NULL));
    } else if (g_str_equal(driver, "qcow2")) {
        if (!qmp_create_qcow2_options(o, opts, error))
            return NULL;
    } else {
        g_set_error(error, VBK_QMP_ERROR, VBK_QMP_ERROR_GENERIC,
                    _("Driver does not support blockdev-create"));
        return NULL;
    }
    return g_steal_pointer(&opts);
}

static bool
qmp_blockdev_create(JsonObject *args, JsonNode **ret, GError **error)
{
    JsonObject *o = json_object_get_object_member(args, "options");
    VbkCreateJobOptions *opts = qmp_create_options(o, error);

    if (!opts)
        return false;
    return vbk_create_job_start(vbk_qmp_arg_str(args, "job-id", NULL), opts,
                                error) != NULL;
}

static const VbkQmpArg blockdev_create_args[] = {
    {"job-id", VBK_QMP_ARG_STR, false},
    {"options", VBK_QMP_ARG_OBJECT, false},
    {NULL},
};

static bool
qmp_query_jobs(JsonObject *args, JsonNode **ret, GError **error)
{
    g_autoptr(GPtrArray) infos = vbk_job_query_all();
    JsonArray *arr = json_array_new();
    guint i;

    for (i = 0; i < infos->len; i++) {
        VbkJobInfo *info = infos->pdata[i];
        JsonObject *o = json_object_new();

        json_object_set_string_member(o, "id", info->id);
        json_object_set_string_member(o, "type", info->type);
        json_object_set_string_member(o, "status",
                                      vbk_job_status_to_string(info->status));
        json_object_set_int_member(o, "current-progress",
                                   info->current_progress);
        json_object_set_int_member(o, "total-progress", info->total_progress);
        if (info->error)
            json_object_set_string_member(o, "error", info->error);
        json_array_add_object_element(arr, o);
    }
    *ret = vbk_qmp_node_array(arr);
    return true;
}

static const VbkQmpArg job_id_args[] = {
    {"id", VBK_QMP_ARG_STR, false},
    {NULL},
};

#define QMP_JOB_VERB(fn, call)                                                 \
    static bool fn(JsonObject *args, JsonNode **ret, GError **error)           \
    {                                                                          \
        VbkJob *job = vbk_job_find(vbk_qmp_arg_str(args, "id", NULL), error);  \
        return job && call(job, error);                                        \
    }

QMP_JOB_VERB(qmp_job_cancel, vbk_job_cancel)
QMP_JOB_VERB(qmp_job_pause, vbk_job_user_pause)
QMP_JOB_VERB(qmp_job_resume, vbk_job_user_resume)
QMP_JOB_VERB(qmp_job_finalize, vbk_job_finalize)
QMP_JOB_VERB(qmp_job_dismiss, vbk_job_dismiss)

const VbkQmpCommand vbk_qmp_job_commands[] = {
    {"blockdev-create", qmp_blockdev_create, blockdev_create_args},
    {"query-jobs", qmp_query_jobs, NULL},
    {"job-cancel", qmp_job_cancel, job_id_args},
    {"job-pause", qmp_job_pause, job_id_args},
    {"job-resume", qmp_job_resume, job_id_args},
    {"job-finalize", qmp_job_finalize, job_id_args},
    {"job-dismiss", qmp_job_dismiss, job_id_args},
    {NULL},
};
