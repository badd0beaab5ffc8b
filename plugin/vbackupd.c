/*
 * vbackupd.c: the vbackup daemon's main.
 *
 * Parses the command line, creates the state directory, opens the front
 * doors (for now the QMP monitor; the libvirt RPC door comes with the
 * libvirt driver) and runs the GLib main loop on the main thread.  Every
 * control command is dispatched from that loop; jobs run in threads of
 * their own.
 *
 * Shutdown (SIGTERM, SIGINT or QMP `quit`): stop the loop, cancel every
 * job and wait for it, close every block node (which flushes images and
 * stores persistent state), remove the sockets, exit 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <glib-unix.h>
#include <glib/gi18n-lib.h>

#include "core/block/block.h"
#include "core/job/job.h"
#include "core/qmp/monitor.h"
#include "core/qmp/qmp.h"

typedef struct {
    char *qmp_path;
    char *state_dir;
    bool foreground;
    bool verbose;
    bool version;
} DaemonOptions;

static GMainLoop *main_loop;

/* HMP qemu-io's report, on stdout as QEMU prints it */
static void
daemon_print(const char *text, void *data)
{
    (void) data;
    fputs(text, stdout);
    fflush(stdout);
}

static void
daemon_request_stop(void *data)
{
    g_main_loop_quit(main_loop);
}

static gboolean
daemon_signal_cb(gpointer data)
{
    if (main_loop)
        g_main_loop_quit(main_loop);
    return G_SOURCE_CONTINUE;
}

/* $XDG_RUNTIME_DIR/vbackup, or /var/lib/vbackup for root. */
static char *
daemon_default_state_dir(void)
{
    if (geteuid() == 0)
        return g_strdup("/var/lib/vbackup");
    return g_build_filename(g_get_user_runtime_dir(), "vbackup", NULL);
}

static bool
daemon_parse_options(int *argc, char ***argv, DaemonOptions *o, GError **error)
{
    gboolean fg = FALSE, verbose = FALSE, version = FALSE;
    const GOptionEntry entries[] = {
        {"qmp", 0, 0, G_OPTION_ARG_FILENAME, &o->qmp_path,
         N_("Serve QMP on the unix socket PATH"), N_("PATH")},
        {"state-dir", 0, 0, G_OPTION_ARG_FILENAME, &o->state_dir,
         N_("Keep state (checkpoints, images, sockets) in DIR"), N_("DIR")},
        {"foreground", 0, 0, G_OPTION_ARG_NONE, &fg,
         N_("Stay in the foreground"), NULL},
        {"verbose", 0, 0, G_OPTION_ARG_NONE, &verbose, N_("Log debug messages"),
         NULL},
        {"version", 0, 0, G_OPTION_ARG_NONE, &version,
         N_("Print the version and exit"), NULL},
        {NULL},
    };
    g_autoptr(GOptionContext) ctx =
        g_option_context_new(_("- the vbackup daemon"));

    g_option_context_add_main_entries(ctx, entries, GETTEXT_PACKAGE);
    if (!g_option_context_parse(ctx, argc, argv, error))
        return false;
    if (*argc > 1) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_FAILED,
                    _("Unexpected argument '%s'"), (*argv)[1]);
        return false;
    }
    o->foreground = fg;
    o->verbose = verbose;
    o->version = version;
    return true;
}

static bool
daemon_prepare_state_dir(DaemonOptions *o, GError **error)
{
    if (!o->state_dir)
        o->state_dir = daemon_default_state_dir();
    if (g_mkdir_with_parents(o->state_dir, 0700) < 0) {
        int err = errno;
        g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(err),
                    _("Cannot create state directory '%s': %s"), o->state_dir,
                    g_strerror(err));
        return false;
    }
    return true;
}

/*
 * Background mode: fork before GLib starts any thread; the parent waits
 * on a pipe until the child reports that its sockets are listening (or
 * failed), so that `vbackupd` returns only once it can be used, with an
 * honest exit status.  Returns the pipe's write end in the child.
 */
static int
daemon_fork(GError **error)
{
    int fds[2];
    pid_t pid;
    char status = 1;

    if (pipe(fds) < 0 || (pid = fork()) < 0) {
        int err = errno;
        g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(err),
                    _("Cannot run in the background: %s"), g_strerror(err));
        return -1;
    }
    if (pid > 0) {
        close(fds[1]);
        if (read(fds[0], &status, 1) != 1)
            status = 1;
        _exit(status);
    }
    close(fds[0]);
    setsid();
    return fds[1];
}

/* Tell the waiting parent how the start went; stdio goes to /dev/null. */
static void
daemon_ready(int fd, bool ok)
{
    char status = ok ? 0 : 1;
    int null;

    if (fd < 0)
        return;
    if (ok && (null = open("/dev/null", O_RDWR)) >= 0) {
        dup2(null, STDIN_FILENO);
        dup2(null, STDOUT_FILENO);
        dup2(null, STDERR_FILENO);
        if (null > STDERR_FILENO)
            close(null);
    }
    if (write(fd, &status, 1) != 1)
        g_debug("parent gone");
    close(fd);
}

static int
daemon_run(DaemonOptions *o)
{
    g_autoptr(GError) err = NULL;
    VbkQmpMonitor *mon = NULL;
    int ready_fd = -1;

    if (!daemon_prepare_state_dir(o, &err))
        goto fail;
    /* fork before GLib starts any helper thread */
    if (!o->foreground && (ready_fd = daemon_fork(&err)) < 0)
        goto fail;
    if (o->qmp_path) {
        mon = vbk_qmp_monitor_new(o->qmp_path, &err);
        if (!mon)
            goto fail;
    }
    daemon_ready(ready_fd, true);

    main_loop = g_main_loop_new(NULL, FALSE);
    g_unix_signal_add(SIGTERM, daemon_signal_cb, NULL);
    g_unix_signal_add(SIGINT, daemon_signal_cb, NULL);
    vbk_qmp_set_quit_func(daemon_request_stop, NULL);
    vbk_qmp_set_hmp_output_func(daemon_print, NULL);
    g_debug("vbackupd %s ready (state dir %s)", PACKAGE_VERSION, o->state_dir);

    g_main_loop_run(main_loop);

    g_debug("shutting down");
    vbk_job_cancel_sync_all();
    if (mon)
        vbk_qmp_monitor_flush(mon);
    vbk_block_graph_close_all();
    vbk_qmp_monitor_free(mon);
    g_main_loop_unref(main_loop);
    main_loop = NULL;
    return EXIT_SUCCESS;

fail:
    vbk_qmp_monitor_free(mon);
    g_printerr("vbackupd: %s\n", err->message);
    daemon_ready(ready_fd, false);
    return EXIT_FAILURE;
}

int
main(int argc, char **argv)
{
    g_autoptr(GError) err = NULL;
    DaemonOptions o = {0};
    int ret;

    setlocale(LC_ALL, "");
    bindtextdomain(GETTEXT_PACKAGE, LOCALEDIR);
    bind_textdomain_codeset(GETTEXT_PACKAGE, "UTF-8");
    textdomain(GETTEXT_PACKAGE);

    if (!daemon_parse_options(&argc, &argv, &o, &err)) {
        g_printerr("vbackupd: %s\n", err->message);
        g_printerr(_("Try 'vbackupd --help' for more information.\n"));
        return EXIT_FAILURE;
    }
    if (o.version) {
        printf("vbackupd %s\n", PACKAGE_VERSION);
        return EXIT_SUCCESS;
    }
    if (o.verbose)
        g_log_set_debug_enabled(TRUE);

    ret = daemon_run(&o);
    g_free(o.qmp_path);
    g_free(o.state_dir);
    return ret;
}
