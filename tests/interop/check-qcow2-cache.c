/*
 * check-qcow2-cache.c: the qcow2 write-back metadata cache — contents,
 * crash safety and write ordering, judged by the real qemu-img.
 *
 *  - workload: random writes, write-zeroes (with and without unmap),
 *    discards and flushes on images with tiny caches (2 L2 tables, 4
 *    refcount blocks, 1 KiB clusters: nearly every request evicts) are
 *    checked against a shadow buffer while running; after each flush a
 *    copy of the file must be clean (`qemu-img check`, not even leaks)
 *    and equal the shadow (`qemu-img compare`), as must the image after
 *    close.
 *  - crash: this binary re-run as a child (--crash-child) runs a
 *    deterministic workload and reports each operation before it starts
 *    and each completed flush; the parent kills it with SIGKILL at a
 *    random moment.  `qemu-img check` must then find no corruption
 *    (leaks allowed) and every byte no operation after the last
 *    completed flush touched must read back as it was at that flush.
 *  - ordering: blkdebug fails the refcount write-back of a flush after
 *    allocating writes; the file as it is then must show no L2 entry
 *    whose cluster is unrefcounted (qemu-img check of a copy); and fails
 *    the L2 write-back after a discard, so no refcount decrement may
 *    have reached the file.  Written in the wrong order, either leaves
 *    an image qemu-img calls corrupt.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "interop-util.h"
#include "testutil.h"

#define KiB (1024ull)
#define MiB (1024ull * 1024)

/* qemu-img create -f qcow2 -o cluster_size=@cs PATH @size */
static void
create_image(const char *path, uint64_t cs, uint64_t size)
{
    g_autofree char *o = g_strdup_printf("cluster_size=%" G_GUINT64_FORMAT, cs);
    g_autofree char *sz = g_strdup_printf("%" G_GUINT64_FORMAT, size);
    g_autofree char *err = NULL;
    int rc = itu_run(NULL, &err, "qemu-img", "create", "-q", "-f", "qcow2",
                     "-o", o, path, sz, NULL);

    ck_assert_msg(rc == 0, "qemu-img create: %s", err);
}

/*
 * Open @path as qcow2 with caches of @l2 and @rb bytes (0: default),
 * through a blkdebug node with @rules (a GVariant text of an
 * inject-error list) when not NULL.
 */
static VbkBlockNode *
try_open(
    const char *path, uint64_t l2, uint64_t rb, const char *rules, GError **err)
{
    g_autofree char *file = NULL;
    g_autofree char *text = NULL;
    g_autoptr(GVariant) opts = NULL;

    if (rules)
        file = g_strdup_printf(
            "{'driver': <'blkdebug'>, 'inject-error': <%s>, 'image': "
            "<{'driver': <'file'>, 'filename': <'%s'>}>}",
            rules, path);
    else
        file =
            g_strdup_printf("{'driver': <'file'>, 'filename': <'%s'>}", path);
    if (l2)
        text = g_strdup_printf(
            "{'driver': <'qcow2'>, 'discard': <'unmap'>, 'file': <%s>, "
            "'l2-cache-size': <@t %" G_GUINT64_FORMAT ">, "
            "'refcount-cache-size': <@t %" G_GUINT64_FORMAT ">}",
            file, l2, rb);
    else
        text = g_strdup_printf(
            "{'driver': <'qcow2'>, 'discard': <'unmap'>, 'file': <%s>}", file);
    opts = g_variant_parse(NULL, text, NULL, NULL, err);
    return opts ? vbk_block_node_open(opts, err) : NULL;
}

static VbkBlockNode *
open_image(const char *path, uint64_t l2, uint64_t rb, const char *rules)
{
    g_autoptr(GError) err = NULL;
    VbkBlockNode *bs = try_open(path, l2, rb, rules, &err);

    ck_assert_msg(bs != NULL, "open %s: %s", path, err ? err->message : "");
    return bs;
}

/* blockdev-del: closing writes the cached metadata back. */
static void
close_node(VbkBlockNode *bs)
{
    itu_close(bs);
}

static void
write_file(const char *path, const uint8_t *buf, size_t len)
{
    g_autoptr(GError) err = NULL;

    ck_assert_msg(g_file_set_contents(path, (const char *) buf, len, &err),
                  "%s", err ? err->message : "");
}

/* Copy the image file as it is on disk now (the node stays open). */
static char *
snapshot_file(const char *path, const char *name)
{
    g_autofree char *data = NULL;
    g_autoptr(GError) err = NULL;
    char *copy = itu_path(name);
    gsize len;

    ck_assert_msg(g_file_get_contents(path, &data, &len, &err), "%s",
                  err ? err->message : "");
    write_file(copy, (const uint8_t *) data, len);
    return copy;
}

/* `qemu-img check`: no corruption; leaks only when @leaks_ok. */
static void
assert_check(const char *path, bool leaks_ok, const char *what)
{
    g_autofree char *out = NULL;
    g_autofree char *err = NULL;
    int rc =
        itu_run(&out, &err, "qemu-img", "check", "-f", "qcow2", path, NULL);

    ck_assert_msg(rc == 0 || (leaks_ok && rc == 3),
                  "%s: qemu-img check rc %d\n%s%s", what, rc, out, err);
    ck_assert_msg(!strstr(out, "ERROR") && !strstr(err, "ERROR"),
                  "%s: qemu-img check\n%s%s", what, out, err);
}

/* ---- (a) random workload against a shadow, tiny caches -------------- */

static void
shadow_apply_discard(uint8_t *shadow, uint64_t off, uint64_t len)
{
    memset(shadow + off, 0, len); /* callers pass whole clusters */
}

static void
assert_reads(VbkBlockNode *bs,
             const uint8_t *shadow,
             uint64_t off,
             uint64_t len,
             uint8_t *buf)
{
    ck_assert_int_eq(vbk_block_pread(bs, off, len, buf), 0);
    ck_assert_msg(memcmp(buf, shadow + off, len) == 0,
                  "read at %" G_GUINT64_FORMAT "+%" G_GUINT64_FORMAT
                  " differs from the shadow",
                  off, len);
}

/* One random request of the workload, mirrored into @shadow. */
static void
workload_step(VbkBlockNode *bs,
              GRand *r,
              uint8_t *shadow,
              uint64_t size,
              uint64_t cs,
              uint8_t *buf)
{
    uint32_t kind = g_rand_int_range(r, 0, 100);
    uint64_t len = g_rand_int_range(r, 1, 48 * KiB);
    uint64_t off = g_rand_int_range(r, 0, size - len);

    if (kind < 65) {
        itu_fill_random(r, buf, len);
        ck_assert_int_eq(vbk_block_pwrite(bs, off, len, buf, 0), 0);
        memcpy(shadow + off, buf, len);
    } else if (kind < 80) {
        ck_assert_int_eq(vbk_block_pwrite_zeroes(
                             bs, off, len, kind < 72 ? VBK_REQ_MAY_UNMAP : 0),
                         0);
        memset(shadow + off, 0, len);
    } else if (kind < 90) {
        off = off / cs * cs;
        len = MAX(len / cs, 1) * cs;
        ck_assert_int_eq(vbk_block_pdiscard(bs, off, len), 0);
        shadow_apply_discard(shadow, off, len);
    } else {
        assert_reads(bs, shadow, off, len, buf);
    }
}

START_TEST(test_workload_small_cache)
{
    const uint64_t size = 8 * MiB, cs = 1024;
    g_autofree char *path = itu_path("w.qcow2");
    g_autofree char *raw = itu_path("w.raw");
    g_autofree uint8_t *shadow = g_malloc0(size);
    g_autofree uint8_t *buf = g_malloc(64 * KiB);
    g_autoptr(GRand) r = g_rand_new_with_seed(4242);
    VbkBlockNode *bs;

    create_image(path, cs, size);
    bs = open_image(path, 2 * cs, 4 * cs, NULL);
    for (int round = 0; round < 3; round++) {
        g_autofree char *name = g_strdup_printf("copy%d.qcow2", round);
        g_autofree char *copy = NULL;

        for (int i = 0; i < 250; i++)
            workload_step(bs, r, shadow, size, cs, buf);
        for (uint64_t off = 0; off < size; off += 64 * KiB)
            assert_reads(bs, shadow, off, 64 * KiB, buf);
        /* after a flush the file alone is complete and exact */
        ck_assert_int_eq(vbk_block_flush(bs), 0);
        copy = snapshot_file(path, name);
        write_file(raw, shadow, size);
        assert_check(copy, false, "copy after flush");
        itu_assert_qemu_img_compare(copy, raw);
    }
    for (int i = 0; i < 200; i++)
        workload_step(bs, r, shadow, size, cs, buf);
    for (uint64_t off = 0; off < size; off += 64 * KiB)
        assert_reads(bs, shadow, off, 64 * KiB, buf);
    close_node(bs);
    write_file(raw, shadow, size);
    assert_check(path, false, "after close");
    itu_assert_qemu_img_compare(path, raw);
}
END_TEST

/* ---- (b) SIGKILL at random points ----------------------------------- */

#define CRASH_SIZE (16 * MiB)
#define CRASH_CS   (4 * KiB)

typedef enum { OP_WRITE, OP_ZERO, OP_ZERO_UNMAP, OP_DISCARD, OP_FLUSH } OpKind;

typedef struct {
    OpKind kind;
    uint64_t off;
    uint64_t len;
    uint32_t seed; /* data of a write */
} CrashOp;

/* Operation @i of the workload seeded @seed (the same in both
 * processes): every 12th is a flush. */
static void
crash_op(uint32_t seed, uint64_t i, CrashOp *op)
{
    g_autoptr(GRand) r = g_rand_new_with_seed(seed * 1000003u + (uint32_t) i);
    uint32_t k = g_rand_int_range(r, 0, 100);

    op->len = g_rand_int_range(r, 1, 96 * KiB);
    op->off = g_rand_int_range(r, 0, CRASH_SIZE - op->len);
    op->seed = g_rand_int(r);
    if (i % 12 == 11)
        op->kind = OP_FLUSH;
    else if (k < 75)
        op->kind = OP_WRITE;
    else if (k < 83)
        op->kind = OP_ZERO;
    else if (k < 91)
        op->kind = OP_ZERO_UNMAP;
    else
        op->kind = OP_DISCARD;
    if (op->kind == OP_DISCARD) {
        op->off = op->off / CRASH_CS * CRASH_CS;
        op->len = MAX(op->len / CRASH_CS, 1) * CRASH_CS;
    }
}

static void
crash_op_data(const CrashOp *op, uint8_t *buf)
{
    g_autoptr(GRand) r = g_rand_new_with_seed(op->seed);

    itu_fill_random(r, buf, op->len);
}

static void
say(char what, uint64_t v)
{
    char line[64];
    int n =
        g_snprintf(line, sizeof(line), "%c %" G_GUINT64_FORMAT "\n", what, v);

    if (write(STDOUT_FILENO, line, n) != n)
        _exit(3);
}

/* The child: run the workload until killed.  "S i" before op i starts,
 * "F i" once the flush that is op i returned. */
static int
crash_child(const char *path, uint32_t seed, bool small)
{
    g_autoptr(GError) err = NULL;
    VbkBlockNode *bs = try_open(path, small ? 2 * CRASH_CS : 0,
                                small ? 4 * CRASH_CS : 0, NULL, &err);
    g_autofree uint8_t *buf = g_malloc(96 * KiB);

    if (!bs) {
        g_printerr("crash child: %s\n", err->message);
        return 2;
    }

    for (uint64_t i = 0; i < 1000000; i++) {
        CrashOp op;
        int ret = 0;

        crash_op(seed, i, &op);
        say('S', i);
        switch (op.kind) {
        case OP_WRITE:
            crash_op_data(&op, buf);
            ret = vbk_block_pwrite(bs, op.off, op.len, buf, 0);
            break;
        case OP_ZERO:
        case OP_ZERO_UNMAP:
            ret = vbk_block_pwrite_zeroes(
                bs, op.off, op.len,
                op.kind == OP_ZERO_UNMAP ? VBK_REQ_MAY_UNMAP : 0);
            break;
        case OP_DISCARD:
            ret = vbk_block_pdiscard(bs, op.off, op.len);
            break;
        case OP_FLUSH:
            ret = vbk_block_flush(bs);
            if (ret == 0)
                say('F', i);
            break;
        }
        if (ret < 0)
            return 2;
    }
    return 0;
}

/* Replay ops [0, upto) into @shadow. */
static void
crash_replay(uint32_t seed, uint64_t upto, uint8_t *shadow, uint8_t *buf)
{
    for (uint64_t i = 0; i < upto; i++) {
        CrashOp op;

        crash_op(seed, i, &op);
        if (op.kind == OP_WRITE) {
            crash_op_data(&op, buf);
            memcpy(shadow + op.off, buf, op.len);
        } else if (op.kind != OP_FLUSH) {
            memset(shadow + op.off, 0, op.len);
        }
    }
}

/* Run the child on @path, kill it after @delay_ms; returns the index of
 * the last completed flush (-1: none) and in *last the last op started. */
static int64_t
crash_run(
    const char *path, uint32_t seed, bool small, int delay_ms, int64_t *last)
{
    g_autofree char *seed_s = g_strdup_printf("%u", seed);
    const char *argv[] = {"/proc/self/exe",
                          "--crash-child",
                          path,
                          seed_s,
                          small ? "small" : "default",
                          NULL};
    g_autoptr(GError) err = NULL;
    g_autoptr(GString) out = g_string_new(NULL);
    g_auto(GStrv) lines = NULL;
    int64_t flushed = -1;
    char chunk[4096];
    GPid pid;
    int fd, status;
    ssize_t n;

    ck_assert_msg(g_spawn_async_with_pipes(NULL, (char **) argv, NULL,
                                           G_SPAWN_DO_NOT_REAP_CHILD, NULL,
                                           NULL, &pid, NULL, &fd, NULL, &err),
                  "%s", err ? err->message : "");
    /* wait until it runs, then let it go on for the delay */
    n = read(fd, chunk, 1);
    ck_assert_int_eq(n, 1);
    g_string_append_len(out, chunk, 1);
    g_usleep(delay_ms * 1000);
    kill(pid, SIGKILL);
    while ((n = read(fd, chunk, sizeof(chunk))) > 0)
        g_string_append_len(out, chunk, n);
    close(fd);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                  "child ended by itself (status %d): %s", status, out->str);
    *last = -1;
    lines = g_strsplit(out->str, "\n", -1);
    for (int i = 0; lines[i]; i++) {
        if (lines[i][0] == 'S')
            *last = g_ascii_strtoll(lines[i] + 2, NULL, 10);
        else if (lines[i][0] == 'F')
            flushed = g_ascii_strtoll(lines[i] + 2, NULL, 10);
    }
    return flushed;
}

START_TEST(test_crash_sigkill)
{
    g_autofree char *path = itu_path("c.qcow2");
    g_autofree char *raw = itu_path("c.raw");
    g_autofree uint8_t *want = g_malloc(CRASH_SIZE);
    g_autofree uint8_t *touched = g_malloc(CRASH_SIZE);
    g_autofree uint8_t *buf = g_malloc(96 * KiB);
    g_autoptr(GRand) r = g_rand_new_with_seed(99);
    uint32_t seed = 1000 + _i;
    bool small = _i % 2;
    int64_t last, flushed;
    g_autofree char *got = NULL;
    gsize got_len;
    uint64_t checked = 0;

    create_image(path, CRASH_CS, CRASH_SIZE);
    for (int i = 0; i <= _i; i++)
        g_rand_int(r);
    flushed =
        crash_run(path, seed, small, g_rand_int_range(r, 150, 700), &last);
    ck_assert_msg(last >= 0, "the child ran no operation");
    assert_check(path, true, "after SIGKILL");

    /* the content at the last completed flush, and what came after */
    memset(want, 0, CRASH_SIZE);
    memset(touched, 0, CRASH_SIZE);
    crash_replay(seed, flushed + 1, want, buf);
    for (int64_t i = flushed + 1; i <= last; i++) {
        CrashOp op;

        crash_op(seed, i, &op);
        if (op.kind != OP_FLUSH)
            memset(touched + op.off, 1, op.len);
    }
    ck_assert_int_eq(itu_run(NULL, NULL, "qemu-img", "convert", "-f", "qcow2",
                             "-O", "raw", path, raw, NULL),
                     0);
    ck_assert(g_file_get_contents(raw, &got, &got_len, NULL));
    ck_assert_uint_eq(got_len, CRASH_SIZE);
    for (uint64_t b = 0; b < CRASH_SIZE; b++) {
        if (touched[b])
            continue;
        checked++;
        if ((uint8_t) got[b] != want[b]) /* (no per-byte mark points) */
            ck_abort_msg(
                "seed %u (%s caches): byte %" G_GUINT64_FORMAT
                " differs from its state at the flush of op %" G_GINT64_FORMAT
                " (killed at op %" G_GINT64_FORMAT ")",
                seed, small ? "small" : "default", b, flushed, last);
    }
    ck_assert_msg(flushed < 0 || checked > 0, "nothing left to check");
}
END_TEST

/* ---- (c) ordering under failed write-back (blkdebug) ---------------- */

/* A 1 GiB image (64 KiB clusters) whose two L2 tables exist already, so
 * that new data clusters only change L2 entries and refcounts. */
static void
create_with_l2(const char *path)
{
    g_autofree char *err = NULL;

    create_image(path, 64 * KiB, 1024 * MiB);
    ck_assert_msg(itu_run(NULL, &err, "qemu-io", "-f", "qcow2", "-c",
                          "write -P 1 0 512", "-c", "write -P 2 512M 512", path,
                          NULL) == 0,
                  "qemu-io: %s", err);
    /* blkdebug does not let the file grow: room up front */
    ck_assert_int_eq(truncate(path, 64 * MiB), 0);
}

static void
write_pattern(VbkBlockNode *bs, uint64_t off, uint64_t len, uint8_t v)
{
    g_autofree uint8_t *b = g_malloc(len);

    memset(b, v, len);
    ck_assert_int_eq(vbk_block_pwrite(bs, off, len, b, 0), 0);
}

START_TEST(test_order_refcounts_before_l2)
{
    g_autofree char *path = itu_path("o.qcow2");
    g_autofree char *copy = NULL;
    g_autofree char *map = NULL;
    VbkBlockNode *bs;

    create_with_l2(path);
    bs = open_image(path, 0, 0,
                    "[{'event': <'refblock_update_part'>, 'errno': <5>, "
                    "'once': <true>}]");
    for (int i = 0; i < 8; i++)
        write_pattern(bs, (uint64_t) i * 3 * MiB + 64 * KiB, 128 * KiB,
                      0x40 + i);
    write_pattern(bs, 600 * MiB, 64 * KiB, 0x55);
    /* the refcount write-back fails: no L2 entry may have been written */
    ck_assert_int_lt(vbk_block_flush(bs), 0);
    copy = snapshot_file(path, "o-copy.qcow2");
    assert_check(copy, true, "refcounts failed to write");
    ck_assert_int_eq(itu_run(&map, NULL, "qemu-io", "-f", "qcow2", "-c",
                             "read -P 0 64k 128k", "-c", "read -P 0 600M 64k",
                             copy, NULL),
                     0);
    ck_assert_msg(!strstr(map, "Pattern verification failed"),
                  "new data is mapped while its refcounts failed:\n%s", map);
    /* the next flush succeeds and everything is there */
    ck_assert_int_eq(vbk_block_flush(bs), 0);
    close_node(bs);
    assert_check(path, false, "after the retried flush");
    g_free(map);
    map = NULL;
    ck_assert_int_eq(itu_run(&map, NULL, "qemu-io", "-f", "qcow2", "-c",
                             "read -P 0x47 21568k 128k", "-c",
                             "read -P 0x55 600M 64k", path, NULL),
                     0);
    ck_assert_msg(!strstr(map, "Pattern verification failed"), "%s", map);
}
END_TEST

START_TEST(test_order_l2_before_decrements)
{
    g_autofree char *path = itu_path("d.qcow2");
    g_autofree char *copy = NULL;
    g_autofree char *out = NULL;
    VbkBlockNode *bs;

    create_with_l2(path);
    bs = open_image(path, 0, 0, NULL);
    for (int i = 0; i < 8; i++)
        write_pattern(bs, (uint64_t) i * MiB, 256 * KiB, 0x60 + i);
    close_node(bs);
    assert_check(path, false, "after the writes");

    bs = open_image(path, 0, 0,
                    "[{'event': <'l2_update'>, 'errno': <5>, "
                    "'once': <true>}]");
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(vbk_block_pdiscard(bs, (uint64_t) i * MiB, 256 * KiB),
                         0);
    /* the L2 write-back fails: no refcount may have dropped on disk */
    ck_assert_int_lt(vbk_block_flush(bs), 0);
    copy = snapshot_file(path, "d-copy.qcow2");
    assert_check(copy, true, "L2 failed to write");
    /* (the data clusters themselves may be discarded already, as in
     * QEMU: a discarded range reads as zeroes or as before) */
    ck_assert_int_eq(itu_run(&out, NULL, "qemu-img", "map", "--output=json",
                             "-f", "qcow2", copy, NULL),
                     0);
    ck_assert_msg(strstr(out, "\"start\": 3145728, \"length\": 262144, "
                              "\"depth\": 0, \"present\": true, "
                              "\"zero\": false, \"data\": true"),
                  "the L2 entries were written:\n%s", out);
    ck_assert_int_eq(vbk_block_flush(bs), 0);
    close_node(bs);
    assert_check(path, false, "after the retried flush");
    g_free(out);
    out = NULL;
    ck_assert_int_eq(itu_run(&out, NULL, "qemu-io", "-f", "qcow2", "-c",
                             "read -P 0 3M 256k", path, NULL),
                     0);
    ck_assert_msg(!strstr(out, "Pattern verification failed"), "%s", out);
}
END_TEST

static TCase *
cache_tcase(Suite *s, const char *name)
{
    TCase *tc = tcase_create(name);

    tcase_add_checked_fixture(tc, itu_setup, itu_teardown);
    tcase_set_timeout(tc, 300);
    suite_add_tcase(s, tc);
    return tc;
}

static Suite *
cache_suite(void)
{
    Suite *s = suite_create("qcow2-cache");

    tcase_add_test(cache_tcase(s, "workload"), test_workload_small_cache);
    tcase_add_loop_test(cache_tcase(s, "crash"), test_crash_sigkill, 0, 6);
    TCase *tc = cache_tcase(s, "order");
    tcase_add_test(tc, test_order_refcounts_before_l2);
    tcase_add_test(tc, test_order_l2_before_decrements);
    return s;
}

int
main(int argc, char **argv)
{
    if (argc == 5 && g_str_equal(argv[1], "--crash-child"))
        return crash_child(argv[2],
                           (uint32_t) g_ascii_strtoull(argv[3], NULL, 10),
                           g_str_equal(argv[4], "small"));
    return vbk_test_run(cache_suite());
}
