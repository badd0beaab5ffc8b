/*
 * null.c: the "null-co" driver — a bottomless node for benchmarks.
 *
 * Writes are dropped; reads leave the buffer untouched unless
 * read-zeroes=on (QEMU 7.2's default is off).  Options: size (bytes,
 * default 1 GiB), read-zeroes.
 */
#include <glib/gi18n-lib.h>
#include <string.h>

#include "block-int.h"

typedef struct {
    uint64_t size;
    bool read_zeroes;
} NullState;

static const char *const null_options[] = {
    "size", "read-zeroes", "latency-ns", NULL,
};

static bool
null_open(VbkBlockNode *bs, GVariant *opts, GError **error)
{
    NullState *s = bs->opaque;

    s->size = 1ull << 30;
    if (vbk_opts_lookup_uint64(opts, "size", &s->size, error) < 0)
        return false;
    if (vbk_opts_lookup_bool(opts, "read-zeroes", &s->read_zeroes, error) < 0)
        return false;
    bs->filename = g_strdup("null-co://");
    return true;
}

static int
null_pread(VbkBlockNode *bs, uint64_t offset, uint64_t bytes, void *buf)
{
    NullState *s = bs->opaque;

    if (s->read_zeroes)
        memset(buf, 0, bytes);
    return 0;
}

static int
null_pwrite(VbkBlockNode *bs, uint64_t offset, uint64_t bytes,
            const void *buf, VbkRequestFlags flags)
{
    return 0;
}

static int
null_pwrite_zeroes(VbkBlockNode *bs, uint64_t offset, uint64_t bytes,
                   VbkRequestFlags flags)
{
    return 0;
}

static int
null_block_status(VbkBlockNode *bs, uint64_t offset, uint64_t bytes,
                  uint64_t *pnum, uint64_t *map, VbkBlockNode **file)
{
    NullState *s = bs->opaque;

    *pnum = bytes;
    *map = offset;
    *file = bs;
    return VBK_BS_OFFSET_VALID | (s->read_zeroes ? VBK_BS_ZERO : VBK_BS_DATA);
}

static int64_t
null_getlength(VbkBlockNode *bs)
{
    NullState *s = bs->opaque;
    return (int64_t) s->size;
}

const VbkBlockDriver vbk_drv_null_co = {
    .format_name = "null-co",
    .instance_size = sizeof(NullState),
    .options = null_options,
    .open = null_open,
    .pread = null_pread,
    .pwrite = null_pwrite,
    .pwrite_zeroes = null_pwrite_zeroes,
    .block_status = null_block_status,
    .getlength = null_getlength,
};
