/*
 * commands-misc.c: the command lookup, and commands that are about the
 * monitor itself: quit, query-version, query-commands and the HMP
 * passthrough human-monitor-command (with its qemu-io and block_resize
 * commands).
 *
 * HMP output: QEMU's qemu-io prints to the QEMU process's stdout, so a
 * successful `qemu-io` returns "" to the QMP client (the iotests' golden
 * logs show {"return": ""}); the embedding program decides where it goes
 * (vbk_qmp_set_hmp_output_func; vbackupd: its stdout).  When
 * qemu-io fails (bad syntax, I/O error, pattern mismatch) vbackupd
 * returns qemu-io's text in the reply instead, so that clients can see
 * it; HMP's own errors ("Error: ...") are returned as QEMU does, with
 * the monitor's "\r\n" line ends.
 */
#include <string.h>
#include <glib/gi18n-lib.h>

#include "qemu-io.h"
#include "qmp-json.h"
#include "qmp.h"

static const VbkQmpCommand *const qmp_tables[] = {
    vbk_qmp_block_commands,
    vbk_qmp_job_commands,
    vbk_qmp_backup_commands,
    vbk_qmp_misc_commands,
    vbk_qmp_bitmap_commands,
    vbk_qmp_txn_commands,
};

const VbkQmpCommand *
vbk_qmp_command_find(const char *name)
{
    guint t;

    for (t = 0; t < G_N_ELEMENTS(qmp_tables); t++) {
        const VbkQmpCommand *cmd;

        for (cmd = qmp_tables[t]; cmd->name; cmd++) {
            if (g_str_equal(cmd->name, name))
                return cmd;
        }
    }
    return NULL;
}

static bool
qmp_quit(JsonObject *args, JsonNode **ret, GError **error)
{
    vbk_qmp_request_quit();
    return true;
}

static bool
qmp_query_version(JsonObject *args, JsonNode **ret, GError **error)
{
    JsonObject *v = json_object_new();
    JsonObject *qemu = json_object_new();

    json_object_set_int_member(qemu, "major", 7);
    json_object_set_int_member(qemu, "minor", 2);
    json_object_set_int_member(qemu, "micro", 22);
    json_object_set_object_member(v, "qemu", qemu);
    json_object_set_string_member(v, "package", "vbackup " PACKAGE_VERSION);
    *ret = vbk_qmp_node_object(v);
    return true;
}

static bool
qmp_query_commands(JsonObject *args, JsonNode **ret, GError **error)
{
    JsonArray *arr = json_array_new();
    JsonObject *o = json_object_new();
    guint t;

    json_object_set_string_member(o, "name", "qmp_capabilities");
    json_array_add_object_element(arr, o);
    for (t = 0; t < G_N_ELEMENTS(qmp_tables); t++) {
        const VbkQmpCommand *cmd;

        for (cmd = qmp_tables[t]; cmd->name; cmd++) {
            o = json_object_new();
            json_object_set_string_member(o, "name", cmd->name);
            json_array_add_object_element(arr, o);
        }
    }
    *ret = vbk_qmp_node_array(arr);
    return true;
}

/* The monitor's output convention: every "\n" goes out as "\r\n". */
static char *
hmp_crlf(const char *text)
{
    GString *s = g_string_new(NULL);

    for (; *text; text++) {
        if (*text == '\n')
            g_string_append_c(s, '\r');
        g_string_append_c(s, *text);
    }
    return g_string_free(s, FALSE);
}

static VbkQmpOutputFunc hmp_output_func;
static void *hmp_output_data;

void
vbk_qmp_set_hmp_output_func(VbkQmpOutputFunc func, void *user_data)
{
    hmp_output_func = func;
    hmp_output_data = user_data;
}

/*
 * HMP's argument reader: skip blanks, then a "quoted string" with
 * backslash escapes, or a bare word.  NULL at the end of the line or
 * on an unterminated quote.
 */
static char *
hmp_get_word(const char **pp)
{
    const char *p = *pp;
    GString *w;

    while (g_ascii_isspace(*p))
        p++;
    if (!*p)
        return NULL;
    w = g_string_new(NULL);
    if (*p == '"') {
        for (p++; *p && *p != '"'; p++) {
            if (*p == '\\' && p[1]) {
                p++;
                g_string_append_c(w, *p == 'n' ? '\n' : *p == 'r' ? '\r' : *p);
            } else {
                g_string_append_c(w, *p);
            }
        }
        if (*p != '"') {
            /* QEMU prints this on its stdout, not in the reply */
            if (hmp_output_func)
                hmp_output_func(_("unterminated string\n"), hmp_output_data);
            g_string_free(w, TRUE);
            return NULL;
        }
        p++;
    } else {
        while (*p && !g_ascii_isspace(*p))
            g_string_append_c(w, *p++);
    }
    *pp = p;
    return g_string_free(w, FALSE);
}

/* HMP's complaint about a command line it could not parse. */
static char *
hmp_usage(const char *cmd, const char *what, bool prefix)
{
    return g_strdup_printf(_("%s%s%s\nTry \"help %s\" for more information\n"),
                           prefix ? cmd : "", prefix ? ": " : "", what, cmd);
}

/* Nothing but blanks left on the line? */
static bool
hmp_at_end(const char *p)
{
    while (g_ascii_isspace(*p))
        p++;
    return *p == '\0';
}

/* qemu-io [-d] DEVICE "COMMAND" */
static char *
hmp_qemu_io(const char *rest)
{
    g_autofree char *device = hmp_get_word(&rest);
    g_autofree char *command = NULL;
    g_autoptr(GString) out = g_string_new(NULL);
    g_autoptr(GError) err = NULL;
    bool qdev = false;
    VbkBlockNode *bs;

    if (device && g_str_equal(device, "-d")) {
        qdev = true;
        g_free(device);
        device = hmp_get_word(&rest);
    }
    if (!device)
        return hmp_usage("qemu-io", _("block device name expected"), true);
    command = hmp_get_word(&rest);
    if (!command)
        return hmp_usage("qemu-io", _("string expected"), true);
    if (!hmp_at_end(rest))
        return hmp_usage("qemu-io",
                         _("extraneous characters at the end of line"), true);
    /* -d names a qdev device; vbackupd has no guest devices */
    if (qdev)
        return g_strdup_printf(_("Error: Device '%s' not found\n"), device);
    bs = vbk_qmp_lookup_device(device, &err);
    if (!bs)
        return g_strdup_printf(_("Error: %s\n"), err->message);
    if (!vbk_qemu_io_run(bs, command, out))
        return g_string_free(g_steal_pointer(&out), FALSE);
    if (hmp_output_func)
        hmp_output_func(out->str, hmp_output_data);
    return g_strdup("");
}

/*
 * HMP's size argument ("o"): a decimal number, an optional fraction, an
 * optional suffix B, K, M, G, T, P or E (either case; MiB without one).
 * Parsing stops where the number does, as QEMU's does: "1Q" is 1 MiB
 * followed by extraneous characters.  A fraction of bytes is refused.
 */
static bool
hmp_parse_size(const char **pp, guint64 *size)
{
    static const char units[] = "BKMGTPE";
    const char *p = *pp;
    const char *u;
    char *end = NULL;
    guint64 v;
    double frac = 0;
    guint shift = 20;

    while (g_ascii_isspace(*p))
        p++;
    if (!g_ascii_isdigit(*p))
        return false;
    v = g_ascii_strtoull(p, &end, 10);
    if (*end == '.') {
        const char *f = end;

        frac = g_ascii_strtod(f, &end);
        if (end == f + 1 && !g_ascii_isdigit(f[1]))
            end = (char *) f + 1;
    }
    u = *end ? strchr(units, g_ascii_toupper(*end)) : NULL;
    if (u) {
        shift = 10 * (guint) (u - units);
        end++;
    }
    if ((shift == 0 && frac > 0) || shift >= 64 ||
        v > (guint64) G_MAXINT64 >> shift)
        return false;
    *size = (v << shift) +
            (guint64) (frac * (double) (G_GUINT64_CONSTANT(1) << shift));
    if (*size > (guint64) G_MAXINT64)
        return false;
    *pp = end;
    return true;
}

/* block_resize DEVICE SIZE: QMP's block_resize with @device. */
static char *
hmp_block_resize(const char *rest)
{
    g_autofree char *device = hmp_get_word(&rest);
    g_autoptr(JsonObject) args = NULL;
    g_autoptr(GError) err = NULL;
    JsonNode *ret = NULL;
    guint64 size;

    if (!device)
        return hmp_usage("block_resize", _("block device name expected"), true);
    if (!hmp_parse_size(&rest, &size))
        return hmp_usage("block_resize", _("invalid size"), false);
    if (!hmp_at_end(rest))
        return hmp_usage("block_resize",
                         _("extraneous characters at the end of line"), true);
    args = json_object_new();
    json_object_set_string_member(args, "device", device);
    json_object_set_int_member(args, "size", (gint64) size);
    if (!vbk_qmp_command_find("block_resize")->handler(args, &ret, &err))
        return g_strdup_printf(_("Error: %s\n"), err->message);
    if (ret)
        json_node_unref(ret);
    return g_strdup("");
}

static bool
qmp_human_monitor_command(JsonObject *args, JsonNode **ret, GError **error)
{
    const char *line = vbk_qmp_arg_str(args, "command-line", "");
    g_autofree char *name = hmp_get_word(&line);
    g_autofree char *text = NULL;
    g_autofree char *crlf = NULL;

    if (!name)
        text = g_strdup("");
    else if (g_str_equal(name, "qemu-io"))
        text = hmp_qemu_io(line);
    else if (g_str_equal(name, "block_resize"))
        text = hmp_block_resize(line);
    else
        text = g_strdup_printf(_("unknown command: '%s'\n"), name);
    crlf = hmp_crlf(text);
    *ret = json_node_init_string(json_node_alloc(), crlf);
    return true;
}

static const VbkQmpArg human_monitor_command_args[] = {
    {"command-line", VBK_QMP_ARG_STR, false},
    {"cpu-index", VBK_QMP_ARG_INT, true},
    {NULL},
};

const VbkQmpCommand vbk_qmp_misc_commands[] = {
    {"quit", qmp_quit, NULL},
    {"query-version", qmp_query_version, NULL},
    {"query-commands", qmp_query_commands, NULL},
    {"human-monitor-command", qmp_human_monitor_command,
     human_monitor_command_args},
    {NULL},
};
