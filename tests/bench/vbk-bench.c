/*
 * vbk-bench.c: `qemu-img bench` for vbackup's block layer.
 *
 * Sends COUNT requests of SIZE bytes to an image, reads or writes, the
 * way `qemu-img bench` does, so that the two can be compared request for
 * request on the same image in the same run:
 *
 *   request i goes to (OFFSET + i * STEP) mod image-size
 *
 * (the wrap rule of qemu-img bench, checked against qemu-img 7.2 with
 * `qemu-img map` after a wrapping write run).  With DEPTH > 1, DEPTH
 * threads take request numbers from a shared counter: vbackup does
 * blocking I/O from threads where QEMU keeps DEPTH asynchronous requests
 * in flight, so the set of requests is the same but their interleaving
 * is not.  The image is opened as blockdev-add would open it; cache
 * "none" sets cache.direct (O_DIRECT), "writeback" does not.  Only the
 * requests are timed — not open, the final flush or close — as qemu-img
 * bench times them, and the output lines have qemu-img bench's format.
 *
 *   vbk-bench [-c COUNT] [-d DEPTH] [-f qcow2|raw] [-o OFFSET] [-s SIZE]
 *             [-S STEP] [-t none|writeback] [-w] [--pattern=N] FILE
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/block.h"

typedef struct {
    VbkBlockNode *bs;
    uint64_t image_size;
    uint64_t offset;
    uint64_t step;
    uint64_t size;
    gint64 count;
    gint64 next; /* atomic: next request number */
    bool write;
    int pattern;
    gint failed; /* atomic: first -errno */
} Bench;

static uint64_t
parse_size(const char *what, const char *s)
{
    char *end = NULL;
    guint64 v = g_ascii_strtoull(s, &end, 0);

    switch (end && *end ? g_ascii_tolower(*end++) : 0) {
    case 0:
        break;
    case 'k':
        v <<= 10;
        break;
    case 'm':
        v <<= 20;
        break;
    case 'g':
        v <<= 30;
        break;
    default:
        g_printerr("vbk-bench: invalid %s '%s'\n", what, s);
        exit(1);
    }
    if (end && *end) {
        g_printerr("vbk-bench: invalid %s '%s'\n", what, s);
        exit(1);
    }
    return v;
}

static gpointer
bench_worker(gpointer data)
{
    Bench *b = data;
    void *buf = NULL;

    /* 4 KiB alignment satisfies O_DIRECT on every common device */
    if (posix_memalign(&buf, 4096, b->size) != 0)
        g_error("out of memory");
    memset(buf, b->pattern, b->size);
    for (;;) {
        gint64 i = __atomic_fetch_add(&b->next, 1, __ATOMIC_RELAXED);
        uint64_t off;
        int ret;

        if (i >= b->count || g_atomic_int_get(&b->failed))
            break;
        off = (b->offset + (uint64_t) i * b->step) % b->image_size;
        if (b->write)
            ret = vbk_block_pwrite(b->bs, off, b->size, buf, 0);
        else
            ret = vbk_block_pread(b->bs, off, b->size, buf);
        if (ret < 0) {
            g_atomic_int_compare_and_exchange(&b->failed, 0, ret);
            g_printerr("vbk-bench: request at %" G_GUINT64_FORMAT
                       " failed: %s\n",
                       off, g_strerror(-ret));
        }
    }
    free(buf);
    return NULL;
}

static VbkBlockNode *
bench_open(const char *file, const char *fmt, bool direct, GError **error)
{
    GVariant *opts;

    if (g_str_equal(fmt, "raw") || g_str_equal(fmt, "qcow2")) {
        opts = g_variant_new_parsed(
            "{'driver': <%s>, 'node-name': <'bench0'>,"
            " 'cache': <{'direct': <%b>, 'no-flush': <false>}>,"
            " 'file': <{'driver': <'file'>, 'filename': <%s>,"
            "           'cache': <{'direct': <%b>, 'no-flush': <false>}>}>}",
            fmt, direct, file, direct);
        return vbk_block_node_open(opts, error);
    }
    g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                "unsupported format '%s'", fmt);
    return NULL;
}

static int
bench_run(Bench *b, int depth)
{
    g_autoptr(GPtrArray) threads = g_ptr_array_new();
    gint64 t0, t1;
    int i;

    printf("Sending %" G_GINT64_FORMAT " %s requests, %" G_GUINT64_FORMAT
           " bytes each, %d in parallel (starting at offset %" G_GUINT64_FORMAT
           ", step size %" G_GUINT64_FORMAT ")\n",
           b->count, b->write ? "write" : "read", b->size, depth, b->offset,
           b->step);
    t0 = g_get_monotonic_time();
    for (i = 0; i < depth; i++)
        g_ptr_array_add(threads, g_thread_new("bench", bench_worker, b));
    for (i = 0; i < depth; i++)
        g_thread_join(threads->pdata[i]);
    t1 = g_get_monotonic_time();
    if (b->failed)
        return 1;
    printf("Run completed in %.3f seconds.\n", (t1 - t0) / 1e6);
    return 0;
}

int
main(int argc, char **argv)
{
    gint64 count = 75000;
    int depth = 1, pattern = 0;
    g_autofree char *fmt = NULL;
    g_autofree char *offset_s = NULL;
    g_autofree char *size_s = NULL;
    g_autofree char *step_s = NULL;
    g_autofree char *cache = NULL;
    gboolean write = FALSE;
    GOptionEntry entries[] = {
        {"count", 'c', 0, G_OPTION_ARG_INT64, &count, "requests", "N"},
        {"depth", 'd', 0, G_OPTION_ARG_INT, &depth, "threads", "N"},
        {"format", 'f', 0, G_OPTION_ARG_STRING, &fmt, "qcow2|raw", "FMT"},
        {"offset", 'o', 0, G_OPTION_ARG_STRING, &offset_s, "first", "OFF"},
        {"size", 's', 0, G_OPTION_ARG_STRING, &size_s, "request", "SIZE"},
        {"step", 'S', 0, G_OPTION_ARG_STRING, &step_s, "stride", "STEP"},
        {"cache", 't', 0, G_OPTION_ARG_STRING, &cache, "none|writeback",
         "MODE"},
        {"write", 'w', 0, G_OPTION_ARG_NONE, &write, "write", NULL},
        {"pattern", 0, 0, G_OPTION_ARG_INT, &pattern, "byte", "N"},
        {NULL},
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new("FILE");
    g_autoptr(GError) err = NULL;
    Bench b = {0};
    int rc;

    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!g_option_context_parse(ctx, &argc, &argv, &err) || argc != 2) {
        g_printerr("vbk-bench: %s\n", err ? err->message : "one FILE needed");
        return 1;
    }
    if (cache && !g_str_equal(cache, "none") &&
        !g_str_equal(cache, "writeback")) {
        g_printerr("vbk-bench: cache mode '%s' not supported\n", cache);
        return 1;
    }
    b.size = size_s ? parse_size("size", size_s) : 4096;
    b.step = step_s ? parse_size("step", step_s) : b.size;
    b.offset = offset_s ? parse_size("offset", offset_s) : 0;
    b.count = count;
    b.write = write;
    b.pattern = pattern;
    if (depth < 1 || b.size == 0 || b.size > VBK_BLOCK_MAX_REQUEST) {
        g_printerr("vbk-bench: invalid depth or size\n");
        return 1;
    }

    b.bs = bench_open(argv[1], fmt ? fmt : "qcow2",
                      cache && g_str_equal(cache, "none"), &err);
    if (!b.bs) {
        g_printerr("vbk-bench: %s\n", err->message);
        return 1;
    }
    b.image_size = vbk_block_node_getlength(b.bs);
    if ((int64_t) b.image_size < (int64_t) b.size) {
        g_printerr("vbk-bench: image smaller than one request\n");
        return 1;
    }
    rc = bench_run(&b, depth);
    if (vbk_block_flush(b.bs) < 0)
        rc = 1;
    vbk_block_node_unref(b.bs);
    vbk_block_graph_close_all();
    return rc;
}
