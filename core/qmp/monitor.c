/*
 * monitor.c: the QMP server — sockets, framing, dispatch, events.
 *
 * Each client is a non-blocking GSocket watched by a GSource on the
 * default main context.  Incoming bytes are cut into top-level JSON
 * values by a small bracket counter that knows about strings (QMP
 * messages may span lines or share one); each value is then parsed by
 * json-glib and executed.  Output (replies, events) is appended to the
 * client's buffer and written as the socket allows, each message ending
 * in "\r\n" as QEMU's.
 *
 * Events may be emitted from any thread.  They are serialized with
 * their timestamp at once and queued under event_lock; the queue is
 * drained on the main context, always before a reply is written, so
 * every client sees events and replies in the order they happened.
 */
#include <errno.h>
#include <unistd.h>
#include <sys/stat.h>
#include <gio/gio.h>
#include <gio/gunixsocketaddress.h>
#include <glib/gi18n-lib.h>

#include "core/job/job.h"
#include "monitor.h"
#include "qmp-json.h"
#include "qmp.h"

#define QMP_MAX_INPUT (64 * 1024 * 1024)

struct VbkQmpMonitor {
    char *path;
    GSocketService *service;
    GList *clients; /* QmpClient */
};

typedef struct {
    VbkQmpMonitor *mon;
    GSocketConnection *conn;
    GSocket *sock;
    GSource *in_src;
    GSource *out_src;
    GString *in;
    GString *out;
    gsize scan;   /* next byte of @in to look at */
    gssize start; /* start of the value being framed, or -1 */
    int depth;
    bool in_str;
    bool esc;
    bool command_mode;
    bool dead;
} QmpClient;

static GMutex event_lock;
static GQueue event_queue = G_QUEUE_INIT; /* serialized events */
static GList *monitors;                   /* under event_lock */
static bool event_drain_scheduled;

static VbkQmpQuitFunc quit_func;
static void *quit_data;

static void client_flush(QmpClient *c);

/* ---- output -------------------------------------------------------- */

static void
client_destroy(QmpClient *c)
{
    if (c->in_src) {
        g_source_destroy(c->in_src);
        g_source_unref(c->in_src);
    }
    if (c->out_src) {
        g_source_destroy(c->out_src);
        g_source_unref(c->out_src);
    }
    g_io_stream_close(G_IO_STREAM(c->conn), NULL, NULL);
    g_object_unref(c->conn);
    g_string_free(c->in, TRUE);
    g_string_free(c->out, TRUE);
    g_free(c);
}

static gboolean
client_out_cb(GSocket *sock, GIOCondition cond, gpointer data)
{
    QmpClient *c = data;

    g_source_unref(c->out_src);
    c->out_src = NULL;
    client_flush(c);
    return G_SOURCE_REMOVE;
}

static void
client_flush(QmpClient *c)
{
    while (c->out->len > 0 && !c->dead) {
        g_autoptr(GError) err = NULL;
        gssize n = g_socket_send(c->sock, c->out->str, c->out->len, NULL, &err);

        if (n < 0) {
            if (g_error_matches(err, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK)) {
                if (!c->out_src) {
                    c->out_src =
                        g_socket_create_source(c->sock, G_IO_OUT, NULL);
                    g_source_set_callback(
                        c->out_src,
                        (GSourceFunc) (void (*)(void)) client_out_cb, c, NULL);
                    g_source_attach(c->out_src, NULL);
                }
                return;
            }
            c->dead = true;
            return;
        }
        g_string_erase(c->out, 0, n);
    }
}

static void
client_send_text(QmpClient *c, const char *text)
{
    if (c->dead)
        return;
    g_string_append(c->out, text);
    g_string_append(c->out, "\r\n");
    client_flush(c);
}

static void
client_send(QmpClient *c, JsonNode *msg)
{
    g_autofree char *text = vbk_qmp_json_to_string(msg);

    client_send_text(c, text);
}

/* Deliver queued events; on the main context only. */
static void
event_drain(void)
{
    g_mutex_lock(&event_lock);
    while (!g_queue_is_empty(&event_queue)) {
        g_autofree char *text = g_queue_pop_head(&event_queue);
        GList *m, *l;

        for (m = monitors; m; m = m->next) {
            VbkQmpMonitor *mon = m->data;
            for (l = mon->clients; l; l = l->next) {
                QmpClient *c = l->data;
                if (c->command_mode)
                    client_send_text(c, text);
            }
        }
    }
    event_drain_scheduled = false;
    g_mutex_unlock(&event_lock);
}

static gboolean
event_drain_cb(gpointer data)
{
    event_drain();
    return G_SOURCE_REMOVE;
}

void
vbk_qmp_event_emit(const char *name, JsonObject *data)
{
    g_autoptr(JsonNode) msg = NULL;
    JsonObject *obj = json_object_new();
    JsonObject *ts = json_object_new();
    gint64 now = g_get_real_time();
    GMainContext *ctx = g_main_context_default();
    bool schedule;

    json_object_set_int_member(ts, "seconds", now / G_USEC_PER_SEC);
    json_object_set_int_member(ts, "microseconds", now % G_USEC_PER_SEC);
    json_object_set_string_member(obj, "event", name);
    if (data)
        json_object_set_object_member(obj, "data", data);
    json_object_set_object_member(obj, "timestamp", ts);
    msg = vbk_qmp_node_object(obj);

    g_mutex_lock(&event_lock);
    g_queue_push_tail(&event_queue, vbk_qmp_json_to_string(msg));
    g_mutex_unlock(&event_lock);

    /* the main-loop thread (or nobody running it): deliver now */
    if (g_main_context_acquire(ctx)) {
        event_drain();
        g_main_context_release(ctx);
        return;
    }
    g_mutex_lock(&event_lock);
    schedule = !event_drain_scheduled;
    event_drain_scheduled = true;
    g_mutex_unlock(&event_lock);
    if (schedule) {
        GSource *src = g_idle_source_new();

        g_source_set_callback(src, event_drain_cb, NULL, NULL);
        g_source_attach(src, ctx);
        g_source_unref(src);
    }
}

/* JOB_STATUS_CHANGE for every job transition (job lock held). */
static void
monitor_job_status_cb(VbkJob *job, VbkJobStatus status, void *data)
{
    JsonObject *obj = json_object_new();

    json_object_set_string_member(obj, "id", vbk_job_id(job));
    json_object_set_string_member(obj, "status",
                                  vbk_job_status_to_string(status));
    vbk_qmp_event_emit("JOB_STATUS_CHANGE", obj);
}

/* ---- replies ------------------------------------------------------- */

static void
client_reply(QmpClient *c, JsonNode *id, JsonNode *ret, const GError *err)
{
    g_autoptr(JsonNode) msg = NULL;
    JsonObject *obj = json_object_new();

    if (err) {
        JsonObject *e = json_object_new();
        json_object_set_string_member(e, "class", vbk_qmp_error_class(err));
        json_object_set_string_member(e, "desc", err->message);
        json_object_set_object_member(obj, "error", e);
    } else {
        json_object_set_member(obj, "return",
                               ret ? json_node_ref(ret)
                                   : vbk_qmp_node_empty_object());
    }
    if (id)
        json_object_set_member(obj, "id", json_node_copy(id));
    msg = vbk_qmp_node_object(obj);
    event_drain();
    client_send(c, msg);
}

static void
client_send_greeting(QmpClient *c)
{
    g_autoptr(JsonNode) msg = NULL;
    JsonObject *qemu = json_object_new();
    JsonObject *version = json_object_new();
    JsonObject *qmp = json_object_new();
    JsonObject *obj = json_object_new();
    JsonArray *caps = json_array_new();

    json_object_set_int_member(qemu, "major", 7);
    json_object_set_int_member(qemu, "minor", 2);
    json_object_set_int_member(qemu, "micro", 22);
    json_object_set_object_member(version, "qemu", qemu);
    json_object_set_string_member(version, "package",
                                  "vbackup " PACKAGE_VERSION);
    json_array_add_string_element(caps, "oob");
    json_object_set_object_member(qmp, "version", version);
    json_object_set_array_member(qmp, "capabilities", caps);
    json_object_set_object_member(obj, "QMP", qmp);
    msg = vbk_qmp_node_object(obj);
    client_send(c, msg);
}

/* ---- dispatch ------------------------------------------------------ */

/* The envelope checks of QEMU's qmp_dispatch(). */
static bool
client_check_envelope(JsonObject *req,
                      const char **name,
                      JsonObject **args,
                      GError **error)
{
    JsonObjectIter iter;
    const char *key;
    JsonNode *node;

    *name = NULL;
    *args = NULL;
    json_object_iter_init_ordered(&iter, req);
    while (json_object_iter_next_ordered(&iter, &key, &node)) {
        if (g_str_equal(key, "execute")) {
            if (!JSON_NODE_HOLDS_VALUE(node) ||
                json_node_get_value_type(node) != G_TYPE_STRING) {
                g_set_error(error, VBK_QMP_ERROR, VBK_QMP_ERROR_GENERIC,
                            _("QMP input member 'execute' must be a string"));
                return false;
            }
            *name = json_node_get_string(node);
        } else if (g_str_equal(key, "arguments")) {
            if (!JSON_NODE_HOLDS_OBJECT(node)) {
                g_set_error(
                    error, VBK_QMP_ERROR, VBK_QMP_ERROR_GENERIC,
                    _("QMP input member 'arguments' must be an object"));
                return false;
            }
            *args = json_node_get_object(node);
        } else if (!g_str_equal(key, "id")) {
            g_set_error(error, VBK_QMP_ERROR, VBK_QMP_ERROR_GENERIC,
                        _("QMP input member '%s' is unexpected"), key);
            return false;
        }
    }
    if (!*name) {
        g_set_error(error, VBK_QMP_ERROR, VBK_QMP_ERROR_GENERIC,
                    _("QMP input lacks member 'execute'"));
        return false;
    }
    return true;
}

static const VbkQmpArg capabilities_args[] = {
    {"enable", VBK_QMP_ARG_ANY, true},
    {NULL},
};

static bool
client_execute(QmpClient *c,
               const char *name,
               JsonObject *args,
               JsonNode **ret,
               GError **error)
{
    const VbkQmpCommand *cmd;

    if (g_str_equal(name, "qmp_capabilities")) {
        if (c->command_mode) {
            g_set_error(error, VBK_QMP_ERROR, VBK_QMP_ERROR_COMMAND_NOT_FOUND,
                        _("Capabilities negotiation is already complete, "
                          "command ignored"));
            return false;
        }
        if (!vbk_qmp_check_args(args, "", capabilities_args, false, error))
            return false;
        c->command_mode = true;
        return true;
    }
    if (!c->command_mode) {
        g_set_error(error, VBK_QMP_ERROR, VBK_QMP_ERROR_COMMAND_NOT_FOUND,
                    _("Expecting capabilities negotiation with "
                      "'qmp_capabilities'"));
        return false;
    }
    cmd = vbk_qmp_command_find(name);
    if (!cmd) {
        g_set_error(error, VBK_QMP_ERROR, VBK_QMP_ERROR_COMMAND_NOT_FOUND,
                    _("The command %s has not been found"), name);
        return false;
    }
    if (!vbk_qmp_check_args(args, "", cmd->args, cmd->loose, error))
        return false;
    return cmd->handler(args, ret, error);
}

static void
client_handle_value(QmpClient *c, const char *text, gsize len)
{
    g_autoptr(JsonParser) parser = json_parser_new();
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonNode) ret = NULL;
    JsonNode *root, *id = NULL;
    JsonObject *req, *args;
    const char *name;

    if (!json_parser_load_from_data(parser, text, len, &err)) {
        g_autoptr(GError) perr =
            g_error_new(VBK_QMP_ERROR, VBK_QMP_ERROR_GENERIC,
                        _("JSON parse error, %s"), err->message);
        client_reply(c, NULL, NULL, perr);
        return;
    }
    root = json_parser_get_root(parser);
    if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
        err = g_error_new(VBK_QMP_ERROR, VBK_QMP_ERROR_GENERIC,
                          _("QMP input must be a JSON object"));
        client_reply(c, NULL, NULL, err);
        return;
    }
    req = json_node_get_object(root);
    id = json_object_get_member(req, "id");
    if (!client_check_envelope(req, &name, &args, &err) ||
        !client_execute(c, name, args, &ret, &err)) {
        client_reply(c, id, NULL, err);
        return;
    }
    client_reply(c, id, ret, NULL);
}

static void
client_parse_error(QmpClient *c)
{
    g_autoptr(GError) err =
        g_error_new(VBK_QMP_ERROR, VBK_QMP_ERROR_GENERIC,
                    _("JSON parse error, %s"), _("expecting value"));
    client_reply(c, NULL, NULL, err);
}

/*
 * Cut @c->in into complete top-level JSON values and execute each.
 * Strings are skipped with their escapes so brackets inside them do
 * not count; a bare scalar ends at whitespace.
 */
static void
client_frame(QmpClient *c)
{
    gsize pos;

    for (pos = c->scan; pos < c->in->len && !c->dead; pos++) {
        char ch = c->in->str[pos];
        gssize end = -1;

        if (c->in_str) {
            if (c->esc)
                c->esc = false;
            else if (ch == '\\')
                c->esc = true;
            else if (ch == '"') {
                c->in_str = false;
                if (c->depth == 0)
                    end = pos + 1;
            }
        } else if (ch == '"') {
            if (c->start < 0)
                c->start = pos;
            c->in_str = true;
        } else if (ch == '{' || ch == '[') {
            if (c->start < 0)
                c->start = pos;
            c->depth++;
        } else if (ch == '}' || ch == ']') {
            if (c->depth == 0) {
                client_parse_error(c);
                c->start = -1;
            } else if (--c->depth == 0) {
                end = pos + 1;
            }
        } else if (g_ascii_isspace(ch)) {
            if (c->depth == 0 && c->start >= 0)
                end = pos;
        } else if (c->start < 0) {
            c->start = pos;
        }
        if (end >= 0) {
            client_handle_value(c, c->in->str + c->start, end - c->start);
            c->start = -1;
        }
    }
    /* drop what is consumed, keep the value in progress */
    if (c->start >= 0) {
        g_string_erase(c->in, 0, c->start);
        c->scan = pos - c->start;
        c->start = 0;
    } else {
        g_string_truncate(c->in, 0);
        c->scan = 0;
    }
}

static void
monitor_remove_client(QmpClient *c)
{
    g_mutex_lock(&event_lock);
    c->mon->clients = g_list_remove(c->mon->clients, c);
    g_mutex_unlock(&event_lock);
    client_destroy(c);
}

static gboolean
client_in_cb(GSocket *sock, GIOCondition cond, gpointer data)
{
    QmpClient *c = data;
    char buf[65536];
    g_autoptr(GError) err = NULL;
    gssize n;

    n = g_socket_receive(sock, buf, sizeof(buf), NULL, &err);
    if (n < 0 && g_error_matches(err, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
        return G_SOURCE_CONTINUE;
    if (n <= 0 || c->in->len + n > QMP_MAX_INPUT) {
        c->dead = true;
    } else {
        g_string_append_len(c->in, buf, n);
        client_frame(c);
    }
    if (c->dead) {
        g_source_unref(c->in_src);
        c->in_src = NULL;
        monitor_remove_client(c);
        return G_SOURCE_REMOVE;
    }
    return G_SOURCE_CONTINUE;
}

static gboolean
monitor_incoming_cb(GSocketService *service,
                    GSocketConnection *conn,
                    GObject *source,
                    gpointer data)
{
    VbkQmpMonitor *mon = data;
    QmpClient *c = g_new0(QmpClient, 1);

    c->mon = mon;
    c->conn = g_object_ref(conn);
    c->sock = g_socket_connection_get_socket(conn);
    c->in = g_string_new(NULL);
    c->out = g_string_new(NULL);
    c->start = -1;
    g_socket_set_blocking(c->sock, FALSE);
    c->in_src =
        g_socket_create_source(c->sock, G_IO_IN | G_IO_HUP | G_IO_ERR, NULL);
    g_source_set_callback(c->in_src,
                          (GSourceFunc) (void (*)(void)) client_in_cb, c, NULL);
    g_source_attach(c->in_src, NULL);

    g_mutex_lock(&event_lock);
    mon->clients = g_list_append(mon->clients, c);
    g_mutex_unlock(&event_lock);
    client_send_greeting(c);
    return TRUE;
}

/* ---- the monitor ---------------------------------------------------- */

VbkQmpMonitor *
vbk_qmp_monitor_new(const char *path, GError **error)
{
    g_autoptr(GSocketAddress) addr = NULL;
    VbkQmpMonitor *mon;
    struct stat st;

    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(path);
    mon = g_new0(VbkQmpMonitor, 1);
    mon->path = g_strdup(path);
    mon->service = g_socket_service_new();
    addr = g_unix_socket_address_new(path);
    if (!g_socket_listener_add_address(
            G_SOCKET_LISTENER(mon->service), addr, G_SOCKET_TYPE_STREAM,
            G_SOCKET_PROTOCOL_DEFAULT, NULL, NULL, error)) {
        g_prefix_error(error, _("Cannot listen on QMP socket '%s': "), path);
        g_object_unref(mon->service);
        g_free(mon->path);
        g_free(mon);
        return NULL;
    }
    chmod(path, 0600);
    g_signal_connect(mon->service, "incoming", G_CALLBACK(monitor_incoming_cb),
                     mon);
    g_socket_service_start(mon->service);

    g_mutex_lock(&event_lock);
    monitors = g_list_append(monitors, mon);
    g_mutex_unlock(&event_lock);
    vbk_job_set_status_handler(monitor_job_status_cb, NULL);
    return mon;
}

void
vbk_qmp_monitor_flush(VbkQmpMonitor *mon)
{
    GList *l;

    event_drain();
    for (l = mon->clients; l; l = l->next) {
        QmpClient *c = l->data;

        if (c->out->len && !c->dead) {
            /* a client that stopped reading must not hold up shutdown */
            g_socket_set_timeout(c->sock, 2);
            g_socket_set_blocking(c->sock, TRUE);
            client_flush(c);
            g_socket_set_blocking(c->sock, FALSE);
            g_socket_set_timeout(c->sock, 0);
        }
    }
}

void
vbk_qmp_monitor_free(VbkQmpMonitor *mon)
{
    if (!mon)
        return;
    vbk_qmp_monitor_flush(mon);
    g_mutex_lock(&event_lock);
    monitors = g_list_remove(monitors, mon);
    g_mutex_unlock(&event_lock);
    if (!monitors)
        vbk_job_set_status_handler(NULL, NULL);
    g_list_free_full(mon->clients, (GDestroyNotify) client_destroy);
    g_socket_service_stop(mon->service);
    g_socket_listener_close(G_SOCKET_LISTENER(mon->service));
    g_object_unref(mon->service);
    unlink(mon->path);
    g_free(mon->path);
    g_free(mon);
}

/* ---- quit ------------------------------------------------------------ */

void
vbk_qmp_set_quit_func(VbkQmpQuitFunc func, void *user_data)
{
    quit_func = func;
    quit_data = user_data;
}

static gboolean
quit_idle_cb(gpointer data)
{
    if (quit_func)
        quit_func(quit_data);
    return G_SOURCE_REMOVE;
}

void
vbk_qmp_request_quit(void)
{
    /* after the reply has gone out */
    g_idle_add(quit_idle_cb, NULL);
}
