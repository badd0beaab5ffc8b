/*
 * monitor.h: a QMP server on a unix socket.
 *
 * Several clients at once; each gets QEMU's greeting, starts in
 * capabilities-negotiation mode and enters command mode with
 * qmp_capabilities.  Commands run on the thread that iterates the
 * monitor's GMainContext (the default context); events
 * (vbk_qmp_event_emit()) go to every client in command mode.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>

G_BEGIN_DECLS

typedef struct VbkQmpMonitor VbkQmpMonitor;

/*
 * Listen on the unix socket @path (a stale socket file is replaced) and
 * serve it from the default main context.  Also routes job status
 * changes to JOB_STATUS_CHANGE events.
 */
VbkQmpMonitor *vbk_qmp_monitor_new(const char *path, GError **error);

/* Close every client, stop listening and remove the socket file. */
void vbk_qmp_monitor_free(VbkQmpMonitor *mon);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VbkQmpMonitor, vbk_qmp_monitor_free)

/* Deliver queued events and pending replies now (before shutdown). */
void vbk_qmp_monitor_flush(VbkQmpMonitor *mon);

G_END_DECLS
