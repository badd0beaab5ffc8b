/*
 * bitmap-bench.c: the cost of recording dirty bitmaps on the write path.
 *
 * Opens a qcow2 image as blockdev-add would, adds N recording bitmaps to
 * its format node with block-dirty-bitmap-add's own function, then times
 * COUNT writes of SIZE bytes through the node, the requests `qemu-img
 * bench -w` would send:
 *
 *   request i goes to (OFFSET + i * STEP) mod image-size
 *
 * With STEP an odd multiple of SIZE and an image of 2^k requests, that is
 * a permutation of the image's request slots scattered over all of it —
 * the "random" pattern bitmap-bench.sh gives both vbackup and QEMU.
 *
 * vbackup's write path only marks the node's pending-write log; the
 * bitmaps catch up when someone looks at them.  So that the deferred work
 * is not hidden, the run ends with a query of every bitmap (the same call
 * query-block makes), timed separately, and the bench checks that each
 * bitmap counts exactly the granules the writes touched — the contents
 * QEMU's per-write marking would give.
 *
 *   bitmap-bench [-c COUNT] [-d DEPTH] [-n BITMAPS] [-g GRANULARITY]
 *                [-o OFFSET] [-s SIZE] [-S STEP] [-t none|writeback] FILE
 *
 * Output: qemu-img bench's "Run completed in X seconds." for the writes,
 * then "Bitmaps synced in Y seconds." for the final query, then "CPU
 * time Z seconds." (user + system, all threads) of writes and query: on
 * a loaded machine the CPU time shows the bitmaps' cost better than the
 * wall clock.
 */
#include <stdio.h>

#include "bench-common.h"
#include "block/dirty.h"

#define NODE_NAME "bench0"

static bool
add_bitmaps(int n, uint64_t granularity, GError **error)
{
    for (int i = 0; i < n; i++) {
        g_autofree char *name = g_strdup_printf("bitmap%d", i);

        if (!vbk_block_dirty_bitmap_add(NODE_NAME, name, granularity, false,
                                        false, error))
            return false;
    }
    return true;
}

/* The dirty bytes a bitmap of @gran must count after the run. */
static uint64_t
expected_dirty(const VbkBench *b, uint64_t gran)
{
    uint64_t n = (b->image_size + gran - 1) / gran, dirty = 0;
    g_autofree guint8 *seen = g_malloc0(n);

    for (gint64 i = 0; i < b->count; i++) {
        uint64_t off = vbk_bench_request_offset(b, i);
        uint64_t end = MIN(off + b->size, b->image_size);

        for (uint64_t g = off / gran; g <= (end - 1) / gran; g++) {
            if (!seen[g]) {
                seen[g] = 1;
                dirty += MIN(gran, b->image_size - g * gran);
            }
        }
    }
    return dirty;
}

/* Query every bitmap (timed) and check it saw every write. */
static int
sync_and_check(const VbkBench *b, int n_bitmaps)
{
    g_autoptr(GPtrArray) infos = NULL;
    gint64 t0 = g_get_monotonic_time();
    uint64_t want = 0, want_gran = 0;

    infos = vbk_block_dirty_bitmap_query(b->bs);
    printf("Bitmaps synced in %.3f seconds.\n",
           (g_get_monotonic_time() - t0) / 1e6);
    if ((int) infos->len != n_bitmaps) {
        g_printerr("bitmap-bench: %u bitmaps, %d expected\n", infos->len,
                   n_bitmaps);
        return 1;
    }
    for (guint i = 0; i < infos->len; i++) {
        VbkDirtyBitmapInfo *info = infos->pdata[i];

        if (info->granularity != want_gran) {
            want_gran = info->granularity;
            want = expected_dirty(b, want_gran);
        }
        if (info->count != want) {
            g_printerr("bitmap-bench: %s counts %" G_GUINT64_FORMAT
                       " dirty bytes, %" G_GUINT64_FORMAT " expected\n",
                       info->name, info->count, want);
            return 1;
        }
    }
    return 0;
}

int
main(int argc, char **argv)
{
    gint64 count = 65536;
    int depth = 1, n_bitmaps = 0;
    g_autofree char *offset_s = NULL, *size_s = NULL, *step_s = NULL;
    g_autofree char *cache = NULL, *gran_s = NULL;
    GOptionEntry entries[] = {
        {"count", 'c', 0, G_OPTION_ARG_INT64, &count, "requests", "N"},
        {"depth", 'd', 0, G_OPTION_ARG_INT, &depth, "threads", "N"},
        {"bitmaps", 'n', 0, G_OPTION_ARG_INT, &n_bitmaps, "bitmaps", "N"},
        {"granularity", 'g', 0, G_OPTION_ARG_STRING, &gran_s, "bitmap",
         "BYTES"},
        {"offset", 'o', 0, G_OPTION_ARG_STRING, &offset_s, "first", "OFF"},
        {"size", 's', 0, G_OPTION_ARG_STRING, &size_s, "request", "SIZE"},
        {"step", 'S', 0, G_OPTION_ARG_STRING, &step_s, "stride", "STEP"},
        {"cache", 't', 0, G_OPTION_ARG_STRING, &cache, "none|writeback",
         "MODE"},
        {NULL},
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new("FILE");
    g_autoptr(GError) err = NULL;
    VbkBench b = {.prog = "bitmap-bench", .write = true, .pattern = 0xa5};
    double cpu;
    int rc;

    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!g_option_context_parse(ctx, &argc, &argv, &err) || argc != 2) {
        g_printerr("bitmap-bench: %s\n",
                   err ? err->message : "one FILE needed");
        return 1;
    }
    if (cache && !g_str_equal(cache, "none") &&
        !g_str_equal(cache, "writeback")) {
        g_printerr("bitmap-bench: cache mode '%s' not supported\n", cache);
        return 1;
    }
    b.size = vbk_bench_parse_size(b.prog, "size", size_s, 4096);
    b.step = vbk_bench_parse_size(b.prog, "step", step_s, b.size);
    b.offset = vbk_bench_parse_size(b.prog, "offset", offset_s, 0);
    b.count = count;
    if (depth < 1 || n_bitmaps < 0 || b.size == 0 ||
        b.size > VBK_BLOCK_MAX_REQUEST) {
        g_printerr("bitmap-bench: invalid depth, bitmap count or size\n");
        return 1;
    }
    b.bs = vbk_bench_open(argv[1], "qcow2", NODE_NAME,
                          cache && g_str_equal(cache, "none"), &err);
    if (!b.bs ||
        !add_bitmaps(n_bitmaps,
                     vbk_bench_parse_size(b.prog, "granularity", gran_s, 0),
                     &err)) {
        g_printerr("bitmap-bench: %s\n", err->message);
        return 1;
    }
    b.image_size = vbk_block_node_getlength(b.bs);
    if (b.image_size < b.size) {
        g_printerr("bitmap-bench: image smaller than one request\n");
        return 1;
    }
    cpu = vbk_bench_cpu_seconds();
    rc = vbk_bench_run(&b, depth);
    if (rc == 0)
        rc = sync_and_check(&b, n_bitmaps);
    if (rc == 0)
        printf("CPU time %.3f seconds.\n", vbk_bench_cpu_seconds() - cpu);
    if (vbk_block_flush(b.bs) < 0)
        rc = 1;
    vbk_block_node_unref(b.bs);
    vbk_block_graph_close_all();
    return rc;
}
