/*
 * qmp.h: the QMP door — commands, argument checking, errors, events.
 *
 * A command is a row of a dispatch table: its name, the QAPI-style
 * description of its arguments (checked by vbk_qmp_check_args() before
 * the handler runs, with QEMU's messages) and a thin handler that turns
 * the JSON arguments into calls of core/block and core/job and the
 * result back into JSON.
 *
 * Handlers run on the monitor's main-loop thread.  Errors are GErrors;
 * the monitor maps them to QEMU's error classes with
 * vbk_qmp_error_class(): VBK_QMP_ERROR codes name a class directly,
 * every other domain is a GenericError (as QEMU reports nearly
 * everything).
 */
#pragma once

#include <json-glib/json-glib.h>
#include <stdbool.h>

#include "core/block/block.h"
#include "core/block/dirty.h"
#include "core/job/backup-job.h"

G_BEGIN_DECLS

#define VBK_QMP_ERROR (vbk_qmp_error_quark())
GQuark vbk_qmp_error_quark(void);

typedef enum {
    VBK_QMP_ERROR_GENERIC,           /* GenericError */
    VBK_QMP_ERROR_COMMAND_NOT_FOUND, /* CommandNotFound */
    VBK_QMP_ERROR_DEVICE_NOT_FOUND,  /* DeviceNotFound */
    VBK_QMP_ERROR_DEVICE_NOT_ACTIVE, /* DeviceNotActive */
} VbkQmpErrorCode;

/* "GenericError", "CommandNotFound", ... for @err. */
const char *vbk_qmp_error_class(const GError *err);

/* Argument types, as QAPI names them in its messages. */
typedef enum {
    VBK_QMP_ARG_STR,    /* string */
    VBK_QMP_ARG_INT,    /* integer (int64) */
    VBK_QMP_ARG_SIZE,   /* integer taken as uint64 */
    VBK_QMP_ARG_BOOL,   /* boolean */
    VBK_QMP_ARG_OBJECT, /* a JSON object, checked by the handler */
    VBK_QMP_ARG_REF,    /* BlockdevRef: a node-name or an object */
    VBK_QMP_ARG_ANY,    /* anything */
} VbkQmpArgType;

typedef struct {
    const char *name;
    VbkQmpArgType type;
    bool optional;
} VbkQmpArg;

/*
 * Check @args against @spec (terminated by a NULL name), in @spec order
 * and then for left-over members, with QAPI's messages:
 *   "Parameter 'x' is missing", "Parameter 'x' is unexpected",
 *   "Invalid parameter type for 'x', expected: integer",
 *   "Parameter 'x' expects uint64".
 * @prefix ("options." for nested members, or "") is put before names.
 * @args may be NULL (no arguments).  With @loose, members not in @spec
 * are left to the caller.
 */
bool vbk_qmp_check_args(JsonObject *args,
                        const char *prefix,
                        const VbkQmpArg *spec,
                        bool loose,
                        GError **error);

/* "Parameter '%s' does not accept value '%s'" */
void vbk_qmp_error_bad_value(GError **error,
                             const char *prefix,
                             const char *param,
                             const char *value);

/* Typed getters after checking; optional members give @def. */
const char *
vbk_qmp_arg_str(JsonObject *args, const char *name, const char *def);
gint64 vbk_qmp_arg_int(JsonObject *args, const char *name, gint64 def);
bool vbk_qmp_arg_bool(JsonObject *args, const char *name, bool def);

/*
 * A handler: on success sets *ret (a new node; NULL means {}) and
 * returns TRUE; on failure sets @error.
 */
typedef bool (*VbkQmpHandler)(JsonObject *args, JsonNode **ret, GError **error);

typedef struct {
    const char *name;
    VbkQmpHandler handler;
    const VbkQmpArg *args; /* NULL: no arguments accepted */
    bool loose;            /* members beyond @args are the handler's */
} VbkQmpCommand;

/* Argument specs of the dirty-bitmap commands, shared with the
 * transaction actions of the same name (commands-bitmap.c). */
extern const VbkQmpArg vbk_qmp_bitmap_args[];
extern const VbkQmpArg vbk_qmp_bitmap_add_args[];
extern const VbkQmpArg vbk_qmp_bitmap_merge_args[];

/* Look a command up in every table. NULL when unknown. */
const VbkQmpCommand *vbk_qmp_command_find(const char *name);

/* The tables (each ends with a row whose name is NULL). */
extern const VbkQmpCommand vbk_qmp_block_commands[];
extern const VbkQmpCommand vbk_qmp_job_commands[];
extern const VbkQmpCommand vbk_qmp_backup_commands[];
extern const VbkQmpCommand vbk_qmp_misc_commands[];
extern const VbkQmpCommand vbk_qmp_bitmap_commands[];
extern const VbkQmpCommand vbk_qmp_txn_commands[];

/*
 * Backups, shared by the commands and the transaction actions
 * (commands-backup.c): the members of BlockdevBackup / DriveBackup, the
 * conversion of @args (members named @prefix + name in messages; for
 * @drive also "format" and "mode"), and the routing of BLOCK_JOB_*
 * events to the monitor (idempotent).
 */
extern const VbkQmpArg vbk_qmp_blockdev_backup_args[];
extern const VbkQmpArg vbk_qmp_drive_backup_args[];
bool vbk_qmp_backup_options(JsonObject *args,
                            const char *prefix,
                            bool drive,
                            VbkBackupOptions *o,
                            const char **format,
                            VbkNewImageMode *mode,
                            GError **error);
void vbk_qmp_backup_events_init(void);

/* One element of a merge's "bitmaps": a name, or {node, name}. */
bool vbk_qmp_bitmap_ref(JsonNode *el, VbkBitmapRef *ref, GError **error);

/* "dirty-bitmaps" of a node for the queries; NULL when it has none. */
JsonArray *vbk_qmp_dirty_bitmaps_info(VbkBlockNode *bs);

/*
 * Convert blockdev-add style JSON to the a{sv} GVariant that
 * vbk_block_node_open() takes: objects -> a{sv}, strings -> s,
 * integers -> x, booleans -> b, doubles -> d, null -> mv (nothing),
 * arrays -> av.  Returns a floating reference.
 */
GVariant *vbk_qmp_json_to_variant(JsonNode *node);

/* Is @name a value of QEMU 7.2's BlockdevDriver enum? */
bool vbk_qmp_is_qemu_block_driver(const char *name);

/*
 * The node HMP's qemu-io and friends address by @name (a device name or
 * a node-name); "Cannot find device='' nor node-name='%s'" when none.
 */
VbkBlockNode *vbk_qmp_lookup_device(const char *name, GError **error);

/* ---- events ---------------------------------------------------------- */

/*
 * Emit event @name with @data (taken; NULL for none) to every client of
 * every monitor that has left capabilities negotiation.  The timestamp
 * is taken now.  Thread-safe: may be called from any thread; delivery
 * happens on the monitor's thread, in emission order.
 */
void vbk_qmp_event_emit(const char *name, JsonObject *data);

/* ---- the daemon's hooks ------------------------------------------------ */

/* What `quit` does after replying (vbackupd: a clean shutdown). */
typedef void (*VbkQmpQuitFunc)(void *user_data);
void vbk_qmp_set_quit_func(VbkQmpQuitFunc func, void *user_data);
void vbk_qmp_request_quit(void);

/* Where a successful HMP qemu-io's report goes (QEMU: the process's
 * stdout; vbackupd: its stdout too).  Without a sink it is dropped, so a
 * program embedding the monitor keeps its own stdout clean. */
typedef void (*VbkQmpOutputFunc)(const char *text, void *user_data);
void vbk_qmp_set_hmp_output_func(VbkQmpOutputFunc func, void *user_data);

G_END_DECLS
