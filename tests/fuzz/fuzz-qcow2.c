/*
 * fuzz-qcow2.c: libFuzzer target for the qcow2 open-and-read path.
 *
 * Each input is an image file.  It is placed in a memfd and opened
 * read-only through the public blockdev-add style API exactly as a QMP
 * client would open a disk (the file driver needs a path, so the memfd
 * is named /proc/self/fd/N), with no backing file: a fuzzed header may
 * name any path, and following it would make the target read the host's
 * files.  Then the target reads a handful of ranges — the start, the
 * end, and offsets chosen by the input's own bytes — and asks for the
 * block status of a few ranges, and closes the node.
 *
 * Whatever the input, the only acceptable outcomes are a refused open
 * (a GError) or reads that return 0 or -errno; sanitizers catch the rest.
 *
 *   CC=clang meson setup build-fuzz -Dfuzz=true \
 *       -Db_sanitize=address,undefined -Db_lundef=false
 *   build-fuzz/tests/fuzz/fuzz-qcow2 tests/fuzz/corpus/fuzz-qcow2 \
 *       -max_total_time=60
 *
 * The target compiles the core sources itself, so that -fsanitize=fuzzer
 * instruments the qcow2 driver and libFuzzer gets its coverage.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "block/block.h"

#define FUZZ_READ_MAX (64 * 1024)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static int memfd = -1;
static uint8_t *readbuf;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    memfd = memfd_create("fuzz-qcow2", MFD_CLOEXEC);
    if (memfd < 0) {
        perror("memfd_create");
        abort();
    }
    readbuf = g_malloc(FUZZ_READ_MAX);
    return 0;
}

static bool
load_input(const uint8_t *data, size_t size)
{
    size_t done = 0;

    if (ftruncate(memfd, 0) < 0)
        return false;
    while (done < size) {
        ssize_t n = pwrite(memfd, data + done, size - done, done);
        if (n <= 0)
            return false;
        done += n;
    }
    return true;
}

static VbkBlockNode *
open_image(void)
{
    g_autofree char *path = g_strdup_printf("/proc/self/fd/%d", memfd);
    g_autoptr(GError) err = NULL;
    GVariant *opts;
    VbkBlockNode *bs;

    opts =
        g_variant_new_parsed("{'driver': <'qcow2'>, 'node-name': <'fuzz0'>,"
                             " 'read-only': <true>, 'backing': <''>,"
                             " 'file': <{'driver': <'file'>, 'filename': <%s>,"
                             "           'read-only': <true>}>}",
                             path);
    /* a refused image is a normal outcome; the message must exist */
    bs = vbk_block_node_open(opts, &err);
    if (!bs && (!err || !err->message || !err->message[0]))
        abort();
    return bs;
}

/* An offset inside [0, len) taken from the input's bytes. */
static uint64_t
pick_offset(const uint8_t *data, size_t size, unsigned k, uint64_t len)
{
    uint64_t v = 0;
    unsigned i;

    for (i = 0; i < 8 && size; i++)
        v = (v << 8) | data[(k * 8 + i * 131) % size];
    return len ? v % len : 0;
}

static void
exercise(VbkBlockNode *bs, const uint8_t *data, size_t size)
{
    int64_t len = vbk_block_node_getlength(bs);
    uint64_t offs[6];
    unsigned i;

    if (len <= 0)
        return;
    offs[0] = 0;
    offs[1] = len > FUZZ_READ_MAX ? len - FUZZ_READ_MAX : 0;
    for (i = 2; i < G_N_ELEMENTS(offs); i++)
        offs[i] = pick_offset(data, size, i, len) & ~511ull;

    for (i = 0; i < G_N_ELEMENTS(offs); i++) {
        uint64_t n = MIN((uint64_t) FUZZ_READ_MAX, len - offs[i]);
        uint64_t pnum = 0;
        uint32_t depth = 0;
        int ret;

        if (n == 0)
            continue;
        ret = vbk_block_pread(bs, offs[i], n, readbuf);
        if (ret > 0)
            abort(); /* 0 or -errno, nothing else */
        ret = vbk_block_block_status(bs, offs[i], len - offs[i], &pnum, NULL,
                                     NULL);
        if (ret >= 0 && (pnum == 0 || pnum > (uint64_t) len - offs[i]))
            abort();
        ret = vbk_block_block_status_above(bs, offs[i], n, &pnum, &depth);
        if (ret >= 0 && (pnum == 0 || pnum > n))
            abort();
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    VbkBlockNode *bs;

    if (memfd < 0)
        LLVMFuzzerInitialize(NULL, NULL);
    if (!load_input(data, size))
        return 0;
    bs = open_image();
    if (!bs)
        return 0;
    exercise(bs, data, size);
    vbk_block_node_unref(bs);
    if (!vbk_block_node_delete("fuzz0", NULL))
        abort();
    return 0;
}
