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
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "block/block.h"
#include "block/dirty.h"

#define NODE_NAME "bench0"

typedef struct {
    VbkBlockNode *bs;
    uint64_t image_size;
    uint64_t offset;
    uint64_t step;
    uint64_t size;
    gint64 count;
    gint64 next; /* atomic: next request number */
    gint failed; /* atomic: first -errno */
} Bench;

static uint64_t
parse_size(const char *what, const char *s, uint64_t def)
{
    char *end = NULL;
    guint64 v;
    int shift = 0;

    if (!s)
        return def;
    v = g_ascii_strtoull(s, &end, 0);
    if (*end) {
        const char *u = strchr("kmgt", g_ascii_tolower(*end));

        if (!u || end[1]) {
            g_printerr("bitmap-bench: invalid %s '%s'\n", what, s);
            exit(1);
        }
        shift = 10 * (int) (u - "kmgt" + 1);
    }
    return v << shift;
}

static uint64_t
request_offset(const Bench *b, gint64 i)
{
    return (b->offset + (uint64_t) i * b->step) % b->image_size;
}

static gpointer
bench_worker(gpointer data)
{
    Bench *b = data;
    void *buf = NULL;

    /* 4 KiB alignment satisfies O_DIRECT */
    if (posix_memalign(&buf, 4096, b->size) != 0)
        g_error("out of memory");
    memset(buf, 0xa5, b->size);
    for (;;) {
        gint64 i = __atomic_fetch_add(&b->next, 1, __ATOMIC_RELAXED);
        uint64_t off;
        int ret;

        if (i >= b->count || g_atomic_int_get(&b->failed))
            break;
        off = request_offset(b, i);
        ret = vbk_block_pwrite(b->bs, off, b->size, buf, 0);
        if (ret < 0) {
            g_atomic_int_compare_and_exchange(&b->failed, 0, ret);
            g_printerr("bitmap-bench: write at %" G_GUINT64_FORMAT
                       " failed: %s\n",
                       off, g_strerror(-ret));
        }
    }
    free(buf);
    return NULL;
}

static VbkBlockNode *
bench_open(const char *file, bool direct, GError **error)
{
    GVariant *opts = g_variant_new_parsed(
        "{'driver': <'qcow2'>, 'node-name': <%s>,"
        " 'cache': <{'direct': <%b>, 'no-flush': <false>}>,"
        " 'file': <{'driver': <'file'>, 'filename': <%s>,"
        "           'cache': <{'direct': <%b>, 'no-flush': <false>}>}>}",
        NODE_NAME, direct, file, direct);

    return vbk_block_node_open(opts, error);
}

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
expected_dirty(const Bench *b, uint64_t gran)
{
    uint64_t n = (b->image_size + gran - 1) / gran, dirty = 0;
    g_autofree guint8 *seen = g_malloc0(n);

    for (gint64 i = 0; i < b->count; i++) {
        uint64_t off = request_offset(b, i);
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
sync_and_check(const Bench *b, int n_bitmaps)
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

static double
cpu_seconds(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int
bench_run(Bench *b, int depth)
{
    g_autoptr(GPtrArray) threads = g_ptr_array_new();
    gint64 t0, t1;

    printf("Sending %" G_GINT64_FORMAT " write requests, %" G_GUINT64_FORMAT
           " bytes each, %d in parallel (starting at offset %" G_GUINT64_FORMAT
           ", step size %" G_GUINT64_FORMAT ")\n",
           b->count, b->size, depth, b->offset, b->step);
    t0 = g_get_monotonic_time();
    for (int i = 0; i < depth; i++)
        g_ptr_array_add(threads, g_thread_new("bench", bench_worker, b));
    for (int i = 0; i < depth; i++)
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
    Bench b = {0};
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
    b.size = parse_size("size", size_s, 4096);
    b.step = parse_size("step", step_s, b.size);
    b.offset = parse_size("offset", offset_s, 0);
    b.count = count;
    if (depth < 1 || n_bitmaps < 0 || b.size == 0 ||
        b.size > VBK_BLOCK_MAX_REQUEST) {
        g_printerr("bitmap-bench: invalid depth, bitmap count or size\n");
        return 1;
    }
    b.bs = bench_open(argv[1], cache && g_str_equal(cache, "none"), &err);
    if (!b.bs ||
        !add_bitmaps(n_bitmaps, parse_size("granularity", gran_s, 0), &err)) {
        g_printerr("bitmap-bench: %s\n", err->message);
        return 1;
    }
    b.image_size = vbk_block_node_getlength(b.bs);
    if (b.image_size < b.size) {
        g_printerr("bitmap-bench: image smaller than one request\n");
        return 1;
    }
    cpu = cpu_seconds();
    rc = bench_run(&b, depth);
    if (rc == 0)
        rc = sync_and_check(&b, n_bitmaps);
    if (rc == 0)
        printf("CPU time %.3f seconds.\n", cpu_seconds() - cpu);
    if (vbk_block_flush(b.bs) < 0)
        rc = 1;
    vbk_block_node_unref(b.bs);
    vbk_block_graph_close_all();
    return rc;
}
