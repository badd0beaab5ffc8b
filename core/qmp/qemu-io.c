/*
 * qemu-io.c: qemu-io's read/write/discard/flush on a block node.
 *
 * A command line is split at blanks (qemu-io has no quoting), options
 * are taken getopt-style ("-P0x49" and "-P 0x49" both work), numbers go
 * through vbk_qemu_io_cvtnum(), and the request goes through the same
 * block-layer entry points every other front door uses.  The text each
 * command prints (the "wrote N/N bytes at offset X" line, the statistics
 * line, and every error) follows qemu-io 7.2 so that scripts and golden
 * logs written for QEMU read the same.
 */
#include <errno.h>
#include <string.h>
#include <glib/gi18n-lib.h>

#include "qemu-io.h"

/* The multiplier of a k/M/G/T/P/E (or B) suffix; 0 when not one. */
static uint64_t
qio_suffix(char c)
{
    static const char units[] = "BKMGTPE";
    const char *u = c ? strchr(units, g_ascii_toupper(c)) : NULL;

    return u ? G_GUINT64_CONSTANT(1) << (10 * (u - units)) : 0;
}

/*
 * Digits (decimal, or hex after "0x"), an optional decimal fraction,
 * an optional one-letter suffix; nothing else (no sign, no exponent).
 * Hex takes a suffix too (qemu-io 7.2 only warns that it is
 * deprecated); a fraction needs one and is truncated to whole bytes.
 */
int64_t
vbk_qemu_io_cvtnum(const char *s)
{
    const char *p = s;
    char *end = NULL;
    guint64 ival, part, mult = 1;
    double frac = 0, scale = 0.1;
    bool hex, has_frac = false;

    while (g_ascii_isspace(*p))
        p++;
    if (!g_ascii_isdigit(*p))
        return -EINVAL;
    hex = p[0] == '0' && (p[1] == 'x' || p[1] == 'X');
    errno = 0;
    ival = g_ascii_strtoull(hex ? p + 2 : p, &end, hex ? 16 : 10);
    if (end == (hex ? p + 2 : p))
        return -EINVAL;
    if (errno == ERANGE)
        return -ERANGE;
    if (!hex && *end == '.') {
        has_frac = true;
        for (end++; g_ascii_isdigit(*end); end++, scale /= 10)
            frac += (*end - '0') * scale;
    }
    if (*end) {
        mult = qio_suffix(*end);
        if (!mult || end[1])
            return -EINVAL;
    } else if (has_frac) {
        return -EINVAL;
    }
    if (ival > G_MAXINT64 / mult)
        return -ERANGE;
    ival *= mult;
    part = (guint64) (frac * (double) mult);
    if (part > G_MAXINT64 - ival)
        return -ERANGE;
    return (int64_t) (ival + part);
}

static void
qio_cvtnum_error(GString *out, int64_t rc, const char *arg)
{
    if (rc == -ERANGE)
        g_string_append_printf(
            out, _("Parsing error: argument too large -- %s\n"), arg);
    else
        g_string_append_printf(out,
                               _("Parsing error: non-numeric argument, or "
                                 "extraneous/unrecognized suffix -- %s\n"),
                               arg);
}

/* "64 KiB", "1.500 KiB", "3 bytes", as qemu-io's cvtstr(). */
static void
qio_human_size(GString *out, double value)
{
    static const char *const sfx[] = {" bytes", " KiB", " MiB", " GiB",
                                      " TiB",   " PiB", " EiB"};
    char num[64];
    char *dot;
    int i = 0;

    while (i < 6 && value >= 1024.0) {
        value /= 1024.0;
        i++;
    }
    g_snprintf(num, sizeof(num), "%.3f", value);
    dot = strstr(num, ".000");
    if (dot)
        *dot = '\0';
    g_string_append_printf(out, "%s%s", num, sfx[i]);
}

/* The statistics line: "64 KiB, 1 ops; 00.00 sec (... ops/sec)". */
static void
qio_report(
    GString *out, const char *verb, int64_t count, int64_t offset, gint64 usecs)
{
    double secs = usecs / 1e6;
    double rate = secs > 0 ? count / secs : 0;
    double ops = secs > 0 ? 1 / secs : 0;

    g_string_append_printf(out,
                           "%s %" G_GINT64_FORMAT "/%" G_GINT64_FORMAT
                           " bytes at offset %" G_GINT64_FORMAT "\n",
                           verb, count, count, offset);
    qio_human_size(out, (double) count);
    g_string_append_printf(out, ", 1 ops; %05.2f sec (", secs);
    qio_human_size(out, rate);
    g_string_append_printf(out, "/sec and %.4f ops/sec)\n", ops);
}

typedef struct {
    const char *name;
    const char *alias;
    const char *flags; /* getopt letters; ':' after one taking a value */
    const char *usage;
    int nargs; /* positional arguments */
} QioCommand;

typedef struct {
    bool opt[128];
    const char *optarg[128];
    char **args;
    int nargs;
} QioArgs;

static const QioCommand qio_commands[] = {
    {"read", "r", "bCl:pP:qs:v",
     "read [-abCqv] [-P pattern [-s off] [-l len]] off len -- reads a "
     "number of bytes at a specified offset",
     2},
    {"write", "w", "bcCfnpP:quzs:",
     "write [-bcCfnquz] [-P pattern | -s source_file] off len -- writes a "
     "number of bytes at a specified offset",
     2},
    {"discard", "d", "Cq",
     "discard [-Cq] off len -- discards a number of bytes at a specified "
     "offset",
     2},
    {"flush", "f", "", "flush -- flush all in-core file state to disk", 0},
};

/* getopt over argv[1..]; FALSE (with usage printed) on a bad option. */
static bool
qio_getopt(
    const QioCommand *cmd, char **argv, int argc, QioArgs *a, GString *out)
{
    int i = 1;

    for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
        const char *p;

        for (p = argv[i] + 1; *p; p++) {
            const char *f = strchr(cmd->flags, *p);

            if (!f || *p == ':' || (unsigned char) *p >= 128) {
                /* getopt's complaint, then qemu-io's usage line */
                g_string_append_printf(out, _("%s: invalid option -- '%c'\n"),
                                       cmd->name, *p);
                g_string_append_printf(out, "%s\n", cmd->usage);
                return false;
            }
            a->opt[(int) *p] = true;
            if (f[1] == ':') {
                if (p[1]) {
                    a->optarg[(int) *p] = p + 1;
                } else if (i + 1 < argc) {
                    a->optarg[(int) *p] = argv[++i];
                } else {
                    g_string_append_printf(
                        out, _("%s: option requires an argument -- '%c'\n"),
                        cmd->name, *p);
                    g_string_append_printf(out, "%s\n", cmd->usage);
                    return false;
                }
                break;
            }
        }
    }
    a->args = argv + i;
    a->nargs = argc - i;
    if (a->nargs != cmd->nargs) {
        g_string_append_printf(out, "%s\n", cmd->usage);
        return false;
    }
    return true;
}

static bool
qio_parse_pattern(const char *arg, int *pattern, GString *out)
{
    char *end = NULL;
    long v = strtol(arg, &end, 0);

    if (end == arg || *end || v < 0 || v > 255) {
        g_string_append_printf(out, _("%s is not a valid pattern byte\n"), arg);
        return false;
    }
    *pattern = (int) v;
    return true;
}

/*
 * qemu-io works through a BlockBackend, which refuses requests beyond
 * the end of the device with EIO before the node sees them.
 */
static int
qio_check_request(VbkBlockNode *bs, int64_t off, int64_t len)
{
    int64_t size = vbk_block_node_getlength(bs);

    if (size < 0)
        return (int) size;
    if (off > size || len > size - off)
        return -EIO;
    return 0;
}

/* Parse "off len"; FALSE with qemu-io's message. */
static bool
qio_parse_range(QioArgs *a, int64_t *off, int64_t *len, GString *out)
{
    *off = vbk_qemu_io_cvtnum(a->args[0]);
    if (*off < 0) {
        qio_cvtnum_error(out, *off, a->args[0]);
        return false;
    }
    *len = vbk_qemu_io_cvtnum(a->args[1]);
    if (*len < 0) {
        qio_cvtnum_error(out, *len, a->args[1]);
        return false;
    }
    if (*len > VBK_BLOCK_MAX_REQUEST) {
        g_string_append_printf(out, _("length cannot exceed %u, given %s\n"),
                               VBK_BLOCK_MAX_REQUEST, a->args[1]);
        return false;
    }
    return true;
}

static bool
qio_read(VbkBlockNode *bs, QioArgs *a, GString *out)
{
    g_autofree guint8 *buf = NULL;
    int64_t off, len, i;
    int pattern = -1, ret;
    gint64 t0;
    bool ok = true;

    if (a->opt['P'] && !qio_parse_pattern(a->optarg['P'], &pattern, out))
        return false;
    if (!qio_parse_range(a, &off, &len, out))
        return false;
    /* qemu-io fills its read buffers with 0xab first */
    buf = g_malloc(len ? len : 1);
    memset(buf, 0xab, len);
    t0 = g_get_monotonic_time();
    ret = qio_check_request(bs, off, len);
    if (ret == 0)
        ret = vbk_block_pread(bs, off, len, buf);
    if (ret < 0) {
        g_string_append_printf(out, _("read failed: %s\n"), g_strerror(-ret));
        return false;
    }
    if (pattern >= 0) {
        for (i = 0; i < len && buf[i] == pattern; i++)
            ;
        if (i < len) {
            g_string_append_printf(out,
                                   _("Pattern verification failed at offset "
                                     "%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT
                                     " bytes\n"),
                                   off, len);
            ok = false;
        }
    }
    if (!a->opt['q'])
        qio_report(out, "read", len, off, g_get_monotonic_time() - t0);
    return ok;
}

/* write's option conflicts, in qemu-io 7.2's order and words; -c
 * (compressed) needs whole clusters, which the driver checks. */
static bool
qio_write_check_flags(QioArgs *a, GString *out)
{
    const char *msg = NULL;

    if (a->opt['b'] && a->opt['z'])
        msg = _("-b and -z cannot be specified at the same time\n");
    else if (a->opt['f'] && (a->opt['b'] || a->opt['c']))
        msg = _("-f and -b or -c cannot be specified at the same time\n");
    else if (a->opt['n'] && !a->opt['z'])
        msg = _("-n requires -z to be specified\n");
    else if (a->opt['u'] && !a->opt['z'])
        msg = _("-u requires -z to be specified\n");
    else if (a->opt['z'] + a->opt['P'] + a->opt['s'] > 1)
        msg = _("Only one of -z, -P, and -s can be specified at the same "
                "time\n");
    if (msg)
        g_string_append(out, msg);
    return msg == NULL;
}

static bool
qio_write(VbkBlockNode *bs, QioArgs *a, GString *out)
{
    g_autofree guint8 *buf = NULL;
    VbkRequestFlags flags = 0;
    int64_t off, len;
    int pattern = 0xcd, ret;
    gint64 t0;

    if (!qio_write_check_flags(a, out))
        return false;
    if (a->opt['P'] && !qio_parse_pattern(a->optarg['P'], &pattern, out))
        return false;
    if (!qio_parse_range(a, &off, &len, out))
        return false;
    if (a->opt['f'])
        flags |= VBK_REQ_FUA;
    if (a->opt['u'])
        flags |= VBK_REQ_MAY_UNMAP;
    if (a->opt['n'])
        flags |= VBK_REQ_NO_FALLBACK;
    if (a->opt['c'])
        flags |= VBK_REQ_WRITE_COMPRESSED;
    t0 = g_get_monotonic_time();
    ret = qio_check_request(bs, off, len);
    if (ret < 0) {
        /* refused before any I/O */
    } else if (a->opt['z']) {
        ret = vbk_block_pwrite_zeroes(bs, off, len,
                                      flags & ~VBK_REQ_WRITE_COMPRESSED);
    } else {
        buf = g_malloc(len ? len : 1);
        memset(buf, pattern, len);
        ret = vbk_block_pwrite(bs, off, len, buf, flags);
    }
    if (ret < 0) {
        g_string_append_printf(out, _("write failed: %s\n"), g_strerror(-ret));
        return false;
    }
    if (!a->opt['q'])
        qio_report(out, "wrote", len, off, g_get_monotonic_time() - t0);
    return true;
}

static bool
qio_discard(VbkBlockNode *bs, QioArgs *a, GString *out)
{
    int64_t off, len;
    gint64 t0;
    int ret;

    if (!qio_parse_range(a, &off, &len, out))
        return false;
    t0 = g_get_monotonic_time();
    ret = qio_check_request(bs, off, len);
    if (ret == 0)
        ret = vbk_block_pdiscard(bs, off, len);
    if (ret < 0) {
        g_string_append_printf(out, _("discard failed: %s\n"),
                               g_strerror(-ret));
        return false;
    }
    if (!a->opt['q'])
        qio_report(out, "discard", len, off, g_get_monotonic_time() - t0);
    return true;
}

static bool
qio_flush(VbkBlockNode *bs, GString *out)
{
    int ret = vbk_block_flush(bs);

    if (ret < 0) {
        g_string_append_printf(out, _("flush failed: %s\n"), g_strerror(-ret));
        return false;
    }
    return true;
}

static bool
qio_needs_write(const QioCommand *cmd)
{
    return g_str_equal(cmd->name, "write") || g_str_equal(cmd->name, "discard");
}

bool
vbk_qemu_io_run(VbkBlockNode *bs, const char *cmdline, GString *out)
{
    g_auto(GStrv) argv = g_strsplit_set(cmdline, " \t\n", -1);
    g_autofree char **words = NULL;
    const QioCommand *cmd = NULL;
    QioArgs a = {0};
    int argc = 0, i;

    /* drop empty fields from repeated blanks */
    words = g_new0(char *, g_strv_length(argv) + 1);
    for (i = 0; argv[i]; i++) {
        if (argv[i][0])
            words[argc++] = argv[i];
    }
    if (argc == 0)
        return true;
    for (i = 0; i < (int) G_N_ELEMENTS(qio_commands); i++) {
        if (g_str_equal(words[0], qio_commands[i].name) ||
            g_str_equal(words[0], qio_commands[i].alias))
            cmd = &qio_commands[i];
    }
    if (!cmd) {
        g_string_append_printf(out, _("command \"%s\" not found\n"), words[0]);
        return false;
    }
    if (argc - 1 < cmd->nargs) {
        g_string_append_printf(out,
                               _("bad argument count %d to %s, expected at "
                                 "least %d arguments\n"),
                               argc - 1, cmd->name, cmd->nargs);
        return false;
    }
    /* qemu-io asks for the write permission before it parses options */
    if (qio_needs_write(cmd) && vbk_block_node_is_read_only(bs)) {
        g_string_append(out, _("Block node is read-only\n"));
        return false;
    }
    if (!qio_getopt(cmd, words, argc, &a, out))
        return false;
    if (g_str_equal(cmd->name, "read"))
        return qio_read(bs, &a, out);
    if (g_str_equal(cmd->name, "write"))
        return qio_write(bs, &a, out);
    if (g_str_equal(cmd->name, "discard"))
        return qio_discard(bs, &a, out);
    return qio_flush(bs, out);
}
