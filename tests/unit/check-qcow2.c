/*
 * check-qcow2.c: the qcow2 driver under shadowed workloads, judged by the
 * real qemu-img.
 *
 * - a matrix of cluster sizes (all 13 powers of two from 512 B to 2 MiB)
 *   and refcount widths (1..64 bits): create, write/zero/discard/grow
 *   with a shadow copy, read back, then `qemu-img check` must find no
 *   error and no leak, `qemu-img info` must show what was created and
 *   `qemu-img convert` must return exactly the shadow;
 * - v2 (compat 0.10) images the same way;
 * - random workloads on an overlay over a qemu-img base (v2 and v3).
 *
 * The other qcow2 tests: check-qcow2-qemu.c (images QEMU wrote),
 * check-qcow2-threads.c, check-qcow2-faults.c (I/O errors, bad images).
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "block/block.h"
#include "interop-util.h"
#include "testutil.h"

/* ---- workload with a shadow ---------------------------------------- */

typedef struct {
    VbkBlockNode *bs;
    uint8_t *shadow;
    uint64_t size;
    uint32_t cs;
} Shadow;

static void
sh_write(Shadow *sh, uint64_t off, uint64_t len, uint8_t seed)
{
    g_autofree uint8_t *buf = g_malloc(len);

    for (uint64_t i = 0; i < len; i++)
        buf[i] = (uint8_t) (seed + i * 7 + (i >> 9));
    ck_assert_int_eq(vbk_block_pwrite(sh->bs, off, len, buf, 0), 0);
    memcpy(sh->shadow + off, buf, len);
}

static void
sh_zero(Shadow *sh, uint64_t off, uint64_t len, VbkRequestFlags flags)
{
    ck_assert_int_eq(vbk_block_pwrite_zeroes(sh->bs, off, len, flags), 0);
    memset(sh->shadow + off, 0, len);
}

/* Discard drops whole clusters only; no backing, so they read zero. */
static void
sh_discard(Shadow *sh, uint64_t off, uint64_t len)
{
    uint64_t a = (off + sh->cs - 1) / sh->cs * sh->cs;
    uint64_t b = (off + len) / sh->cs * sh->cs;

    if (off + len == sh->size)
        b = off + len;
    ck_assert_int_eq(vbk_block_pdiscard(sh->bs, off, len), 0);
    if (b > a)
        memset(sh->shadow + a, 0, b - a);
}

static void
sh_grow(Shadow *sh, uint64_t size)
{
    g_autoptr(GError) err = NULL;

    ck_assert_msg(vbk_block_truncate(sh->bs, size, &err), "%s",
                  err ? err->message : "");
    sh->shadow = g_realloc(sh->shadow, size);
    memset(sh->shadow + sh->size, 0, size - sh->size);
    sh->size = size;
    ck_assert_int_eq(vbk_block_node_getlength(sh->bs), size);
}

static void
workload(Shadow *sh)
{
    uint64_t cs = sh->cs;
    uint64_t mib = 1 << 20;
    uint64_t d;

    sh_write(sh, 0, 4096, 1);
    sh_write(sh, 1000, 3000, 2);                /* unaligned, in place */
    sh_write(sh, cs * 3 + 17, cs * 2 + 100, 3); /* partial + full */
    sh_write(sh, 3 * mib - 512, 1024, 4);       /* crosses 3 MiB */
    sh_zero(sh, cs * 3, cs * 2, VBK_REQ_MAY_UNMAP);
    sh_zero(sh, 100, 300, 0); /* partial: data */
    sh_write(sh, 5 * mib, mib, 5);
    sh_zero(sh, 5 * mib + 512, cs, 0);
    sh_discard(sh, 5 * mib + 1024, mib / 2);
    sh_write(sh, 5 * mib + 2048, 8192, 6); /* over discarded */
    sh_grow(sh, sh->size + 4 * mib + 512 * 3);
    sh_write(sh, sh->size - 2048, 2048, 7); /* the new tail */
    sh_zero(sh, sh->size - 1024, 1024, VBK_REQ_MAY_UNMAP);
    d = MAX(sh->size - 2 * cs, 8 * mib);
    sh_discard(sh, d, sh->size - d);
    sh_write(sh, 7 * mib + 3, 5 * cs > mib ? mib : 5 * cs, 8);
    ck_assert_int_eq(vbk_block_flush(sh->bs), 0);
    itu_assert_read(sh->bs, sh->shadow, 0, sh->size);
}

static void
run_matrix_case(uint32_t cs, int refbits, int version)
{
    g_autofree char *path = itu_path("m.qcow2");
    g_autofree char *info = NULL;
    g_autofree char *want = NULL;
    VbkQcow2CreateOptions o = {.size = MAX(8u << 20, 16 * cs),
                               .cluster_size = cs,
                               .refcount_bits = refbits,
                               .version = version};
    Shadow sh = {.size = o.size, .cs = cs};

    itu_create_qcow2(path, &o);
    itu_assert_qemu_img_check(path);
    sh.shadow = g_malloc0(sh.size);
    sh.bs = itu_open_image(path, false);
    ck_assert_uint_eq(vbk_block_node_cluster_size(sh.bs), cs);
    workload(&sh);
    itu_close(sh.bs);
    itu_assert_qemu_img_check(path);
    ck_assert_int_eq(
        itu_run(&info, NULL, "qemu-img", "info", "--output=json", path, NULL),
        0);
    want = g_strdup_printf("\"cluster-size\": %u", cs);
    ck_assert_msg(strstr(info, want), "%s", info);
    g_free(want);
    want = g_strdup_printf("\"refcount-bits\": %d", refbits);
    ck_assert_msg(strstr(info, want), "%s", info);
    ck_assert_msg(strstr(info, version == 2 ? "\"compat\": \"0.10\""
                                            : "\"compat\": \"1.1\""),
                  "%s", info);
    itu_assert_qemu_content(path, sh.shadow, sh.size);
    /* and reopened by us, read-only */
    sh.bs = itu_open_image(path, true);
    itu_assert_read(sh.bs, sh.shadow, 0, sh.size);
    itu_close(sh.bs);
    g_free(sh.shadow);
}

START_TEST(test_matrix)
{
    static const int widths[] = {1, 2, 4, 8, 16, 32, 64};
    uint32_t cs = 512u << (_i / 7);

    run_matrix_case(cs, widths[_i % 7], 3);
}
END_TEST

START_TEST(test_v2)
{
    static const uint32_t sizes[] = {512, 4096, 65536, 2 << 20};

    run_matrix_case(sizes[_i], 16, 2);
}
END_TEST

/* ---- random workload on an overlay ------------------------------- */

typedef struct {
    uint32_t cs;
    int version;
    int refbits;
} ChainCase;

static const ChainCase chain_cases[] = {
    {65536, 3, 16},
    {4096, 3, 2},
    {65536, 2, 16},
    {512, 2, 16},
};

/* Overlay on a 3 MiB base, itself 4 MiB and grown: random writes, zero
 * writes, discards and a grow; qemu-img must read the chain as the
 * shadow says.  Discarded whole clusters read as zeroes on v3 (zero
 * flag) but show the backing file again on v2. */
START_TEST(test_overlay_random)
{
    const ChainCase *c = &chain_cases[_i];
    g_autofree char *base = itu_path("rb.qcow2");
    g_autofree char *top = itu_path("rt.qcow2");
    uint64_t bsize = 3 << 20, size = 4 << 20;
    g_autofree uint8_t *below = g_malloc0(8 << 20);
    VbkQcow2CreateOptions o = {.size = size,
                               .cluster_size = c->cs,
                               .version = c->version,
                               .refcount_bits = c->refbits,
                               .backing_file = "rb.qcow2",
                               .backing_fmt = "qcow2"};
    GRand *r = g_rand_new_with_seed(77 + _i);
    Shadow sh = {.size = size, .cs = c->cs};

    itu_qemu_img_create(base, "cluster_size=65536", NULL, "3M");
    itu_qemu_io(base, "write -P 0xb1 0 3M");
    memset(below, 0xb1, bsize);
    itu_create_qcow2(top, &o);
    sh.shadow = g_malloc(size);
    memcpy(sh.shadow, below, size);
    sh.bs = itu_open_image(top, false);
    for (int op = 0; op < 120; op++) {
        uint64_t off = g_rand_int_range(r, 0, sh.size / 512) * 512ull +
                       g_rand_int_range(r, 0, 2) * 7;
        uint64_t want = (uint64_t) g_rand_int_range(r, 1, 400) * 512;
        uint64_t len = MIN(sh.size - off, want);
        uint64_t a, b;

        switch (g_rand_int_range(r, 0, 5)) {
        case 0:
        case 1:
            sh_write(&sh, off, len, (uint8_t) op);
            break;
        case 2:
            sh_zero(&sh, off, len, g_rand_boolean(r) ? VBK_REQ_MAY_UNMAP : 0);
            break;
        case 3:
            a = (off + c->cs - 1) / c->cs * c->cs;
            b = (off + len) / c->cs * c->cs;
            ck_assert_int_eq(vbk_block_pdiscard(sh.bs, off, len), 0);
            if (b > a && c->version >= 3)
                memset(sh.shadow + a, 0, b - a);
            else if (b > a)
                memcpy(sh.shadow + a, below + a, b - a);
            break;
        default:
            if (op == 60)
                sh_grow(&sh, 6 << 20);
            itu_assert_read(sh.bs, sh.shadow + off, off, len);
            break;
        }
    }
    ck_assert_int_eq(vbk_block_flush(sh.bs), 0);
    itu_assert_read(sh.bs, sh.shadow, 0, sh.size);
    itu_close(sh.bs);
    g_rand_free(r);
    itu_assert_qemu_img_check(top);
    itu_assert_qemu_content(top, sh.shadow, sh.size);
    g_free(sh.shadow);
}
END_TEST

static Suite *
qcow2_suite(void)
{
    Suite *s = suite_create("qcow2");
    TCase *tc;

    tc = tcase_create("matrix");
    tcase_add_checked_fixture(tc, itu_setup, itu_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_matrix, 0, 13 * 7);
    tcase_add_loop_test(tc, test_v2, 0, 4);
    suite_add_tcase(s, tc);

    tc = tcase_create("overlay");
    tcase_add_checked_fixture(tc, itu_setup, itu_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_overlay_random, 0, G_N_ELEMENTS(chain_cases));
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return vbk_test_run(qcow2_suite());
}
