/*
 * bench-common.c: the request loop the benchmark drivers share.
 *
 * Requests are numbered; each of DEPTH threads takes the next number
 * from a shared counter and sends request i to (OFFSET + i * STEP) mod
 * image-size, the pattern of `qemu-img bench`.  vbackup does blocking
 * I/O from threads where QEMU keeps DEPTH asynchronous requests in
 * flight: the set of requests is the same, their interleaving is not.
 * Only the requests are timed, as qemu-img bench times them.
 */
#include "bench-common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

uint64_t
vbk_bench_parse_size(const char *prog,
                     const char *what,
                     const char *s,
                     uint64_t def)
{
    static const char units[] = "kmgt";
    const char *u = NULL;
    char *end = NULL;
    guint64 v;

    if (!s)
        return def;
    v = g_ascii_strtoull(s, &end, 0);
    if (end == s ||
        (*end && (!(u = strchr(units, g_ascii_tolower(*end))) || end[1]))) {
        g_printerr("%s: invalid %s '%s'\n", prog, what, s);
        exit(1);
    }
    return u ? v << (10 * (u - units + 1)) : v;
}

uint64_t
vbk_bench_request_offset(const VbkBench *b, gint64 i)
{
    return (b->offset + (uint64_t) i * b->step) % b->image_size;
}

VbkBlockNode *
vbk_bench_open(const char *file,
               const char *fmt,
               const char *node_name,
               bool direct,
               GError **error)
{
    GVariant *opts;

    if (!g_str_equal(fmt, "raw") && !g_str_equal(fmt, "qcow2")) {
        g_set_error(error, VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_INVALID,
                    "unsupported format '%s'", fmt);
        return NULL;
    }
    opts = g_variant_new_parsed(
        "{'driver': <%s>, 'node-name': <%s>,"
        " 'cache': <{'direct': <%b>, 'no-flush': <false>}>,"
        " 'file': <{'driver': <'file'>, 'filename': <%s>,"
        "           'cache': <{'direct': <%b>, 'no-flush': <false>}>}>}",
        fmt, node_name, direct, file, direct);
    return vbk_block_node_open(opts, error);
}

static gpointer
bench_worker(gpointer data)
{
    VbkBench *b = data;
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
        off = vbk_bench_request_offset(b, i);
        if (b->write)
            ret = vbk_block_pwrite(b->bs, off, b->size, buf, 0);
        else
            ret = vbk_block_pread(b->bs, off, b->size, buf);
        if (ret < 0) {
            g_atomic_int_compare_and_exchange(&b->failed, 0, ret);
            g_printerr("%s: request at %" G_GUINT64_FORMAT " failed: %s\n",
                       b->prog, off, g_strerror(-ret));
        }
    }
    free(buf);
    return NULL;
}

int
vbk_bench_run(VbkBench *b, int depth)
{
    g_autoptr(GPtrArray) threads = g_ptr_array_new();
    gint64 t0, t1;

    printf("Sending %" G_GINT64_FORMAT " %s requests, %" G_GUINT64_FORMAT
           " bytes each, %d in parallel (starting at offset %" G_GUINT64_FORMAT
           ", step size %" G_GUINT64_FORMAT ")\n",
           b->count, b->write ? "write" : "read", b->size, depth, b->offset,
           b->step);
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

double
vbk_bench_cpu_seconds(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}
