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
 * threads take request numbers from a shared counter (bench-common.c).
 * The image is opened as blockdev-add would open it; cache
 * "none" sets cache.direct (O_DIRECT), "writeback" does not.  Only the
 * requests are timed — not open, the final flush or close — as qemu-img
 * bench times them, and the output lines have qemu-img bench's format.
 *
 *   vbk-bench [-c COUNT] [-d DEPTH] [-f qcow2|raw] [-o OFFSET] [-s SIZE]
 *             [-S STEP] [-t none|writeback] [-w] [--pattern=N] FILE
 */
#include <stdio.h>

#include "bench-common.h"

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
    VbkBench b = {.prog = "vbk-bench"};
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
    b.size = size_s ? vbk_bench_parse_size(b.prog, "size", size_s, 4096) : 4096;
    b.step =
        step_s ? vbk_bench_parse_size(b.prog, "step", step_s, b.size) : b.size;
    b.offset =
        offset_s ? vbk_bench_parse_size(b.prog, "offset", offset_s, 0) : 0;
    b.count = count;
    b.write = write;
    b.pattern = pattern;
    if (depth < 1 || b.size == 0 || b.size > VBK_BLOCK_MAX_REQUEST) {
        g_printerr("vbk-bench: invalid depth or size\n");
        return 1;
    }

    b.bs = vbk_bench_open(argv[1], fmt ? fmt : "qcow2", "bench0",
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
    rc = vbk_bench_run(&b, depth);
    if (vbk_block_flush(b.bs) < 0)
        rc = 1;
    vbk_block_node_unref(b.bs);
    vbk_block_graph_close_all();
    return rc;
}
