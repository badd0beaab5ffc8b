/*
 * bench-common.h: what vbk-bench and bitmap-bench share: qemu-img
 * bench's request pattern, sizes with suffixes, opening an image as
 * blockdev-add would, and the timed run with qemu-img bench's output.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "block/block.h"

typedef struct {
    const char *prog; /* for messages */
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
} VbkBench;

/* @s as a number (0x for hex) with an optional k/m/g/t suffix; @def when
 * NULL.  Exits with a message on a bad value. */
uint64_t vbk_bench_parse_size(const char *prog,
                              const char *what,
                              const char *s,
                              uint64_t def);

/* Request @i goes to (offset + i * step) mod image-size: qemu-img
 * bench's wrap rule. */
uint64_t vbk_bench_request_offset(const VbkBench *b, gint64 i);

/* Open @file as blockdev-add would: {driver: @fmt (raw|qcow2),
 * node-name: @node_name, cache.direct: @direct, file: {driver: file,
 * filename, cache.direct: @direct}}. */
VbkBlockNode *vbk_bench_open(const char *file,
                             const char *fmt,
                             const char *node_name,
                             bool direct,
                             GError **error);

/* Send the requests from @depth threads; prints qemu-img bench's
 * "Sending ..." and "Run completed in X seconds." lines.  Returns 0, or
 * 1 if a request failed. */
int vbk_bench_run(VbkBench *b, int depth);

/* User + system CPU time of the process so far, all threads. */
double vbk_bench_cpu_seconds(void);
