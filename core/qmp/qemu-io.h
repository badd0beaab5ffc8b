/*
 * qemu-io.h: the subset of qemu-io's commands the iotests send through
 * `human-monitor-command "qemu-io DEVICE \"...\""`.
 *
 *   read  [-q] [-P pattern] off len
 *   write [-q] [-f] [-P pattern | -z [-u]] off len
 *   discard [-q] off len
 *   flush
 *
 * Numbers take qemu-io's forms: decimal, 0x hex, and a k/M/G/T/P/E
 * suffix (fractions allowed with a suffix: "1.5k").  Output and error
 * lines are qemu-io 7.2's words.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/block/block.h"

G_BEGIN_DECLS

/*
 * Run one qemu-io command line on @bs, appending qemu-io's output to
 * @out.  Returns FALSE when the command failed in any way (bad syntax,
 * an I/O error, a pattern mismatch); @out then says why.
 */
bool vbk_qemu_io_run(VbkBlockNode *bs, const char *cmdline, GString *out);

/*
 * qemu-io's number parser (cvtnum).  Returns the value, or -EINVAL for
 * a malformed number and -ERANGE for one above INT64_MAX.
 */
int64_t vbk_qemu_io_cvtnum(const char *s);

G_END_DECLS
