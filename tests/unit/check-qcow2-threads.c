/*
 * check-qcow2-threads.c: several threads on one qcow2 node.
 *
 * Disjoint regions with a shadow each (every read checked), then the
 * same clusters raced by aligned writes, zeroes and discards: no cluster
 * may leak or be freed twice (qemu-img check), and every cluster ends up
 * holding one request's data whole.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "block/block.h"
#include "interop-util.h"
#include "testutil.h"

/* ---- several threads on one node ----------------------------------- */

typedef struct {
    VbkBlockNode *bs;
    uint64_t base;
    uint64_t len;
    uint32_t seed;
    uint32_t cs;
    int errors;
} Worker;

static gpointer
worker_run(gpointer data)
{
    Worker *w = data;
    g_autofree uint8_t *shadow = g_malloc0(w->len);
    g_autofree uint8_t *buf = g_malloc(w->len);
    GRand *r = g_rand_new_with_seed(w->seed);

    for (int op = 0; op < 150; op++) {
        uint64_t off = g_rand_int_range(r, 0, w->len / 512) * 512;
        uint64_t want = (uint64_t) g_rand_int_range(r, 1, 64) * 512;
        uint64_t len = MIN(w->len - off, want);
        int kind = g_rand_int_range(r, 0, 4);
        uint64_t a, b;

        switch (kind) {
        case 0:
            memset(buf, (uint8_t) g_rand_int(r), len);
            w->errors +=
                vbk_block_pwrite(w->bs, w->base + off, len, buf, 0) != 0;
            memcpy(shadow + off, buf, len);
            break;
        case 1:
            w->errors += vbk_block_pwrite_zeroes(w->bs, w->base + off, len,
                                                 VBK_REQ_MAY_UNMAP) != 0;
            memset(shadow + off, 0, len);
            break;
        case 2:
            /* whole clusters only; regions are cluster aligned */
            a = (off + w->cs - 1) / w->cs * w->cs;
            b = (off + len) / w->cs * w->cs;
            w->errors += vbk_block_pdiscard(w->bs, w->base + off, len) != 0;
            if (b > a)
                memset(shadow + a, 0, b - a);
            break;
        default:
            w->errors += vbk_block_pread(w->bs, w->base + off, len, buf) != 0;
            w->errors += memcmp(buf, shadow + off, len) != 0;
            break;
        }
    }
    w->errors += vbk_block_pread(w->bs, w->base, w->len, buf) != 0;
    w->errors += memcmp(buf, shadow, w->len) != 0;
    g_rand_free(r);
    return NULL;
}

START_TEST(test_threads)
{
    static const uint32_t sizes[] = {4096, 65536};
    g_autofree char *path = itu_path("th.qcow2");
    VbkQcow2CreateOptions o = {.size = 8 << 20, .cluster_size = sizes[_i]};
    Worker w[4];
    GThread *t[4];
    VbkBlockNode *bs;

    itu_create_qcow2(path, &o);
    bs = itu_open_image(path, false);
    for (int i = 0; i < 4; i++) {
        w[i] = (Worker){.bs = bs,
                        .base = (uint64_t) i * (2 << 20),
                        .len = 2 << 20,
                        .seed = 1000 + i,
                        .cs = sizes[_i]};
        t[i] = g_thread_new("worker", worker_run, &w[i]);
    }
    for (int i = 0; i < 4; i++) {
        g_thread_join(t[i]);
        ck_assert_msg(w[i].errors == 0, "worker %d: %d errors", i, w[i].errors);
    }
    itu_close(bs);
    itu_assert_qemu_img_check(path);
}
END_TEST

/*
 * Threads racing on the *same* clusters with cluster-aligned writes
 * (which allocate with the state lock dropped), zeroes and discards: no
 * cluster may leak or be freed twice, and every cluster ends up holding
 * one request's data whole.
 */
static gpointer
overlap_run(gpointer data)
{
    Worker *w = data;
    g_autofree uint8_t *buf = g_malloc(8 * w->cs);
    GRand *r = g_rand_new_with_seed(w->seed);

    for (int op = 0; op < 200; op++) {
        uint64_t off = g_rand_int_range(r, 0, w->len / w->cs - 8) * w->cs;
        uint64_t len = g_rand_int_range(r, 1, 9) * w->cs;
        int kind = g_rand_int_range(r, 0, 6);

        if (kind < 4) {
            memset(buf, (uint8_t) g_rand_int_range(r, 1, 256), len);
            w->errors += vbk_block_pwrite(w->bs, off, len, buf, 0) != 0;
        } else if (kind == 4) {
            w->errors += vbk_block_pwrite_zeroes(w->bs, off, len,
                                                 VBK_REQ_MAY_UNMAP) != 0;
        } else {
            w->errors += vbk_block_pdiscard(w->bs, off, len) != 0;
        }
    }
    g_rand_free(r);
    return NULL;
}

START_TEST(test_threads_overlap)
{
    g_autofree char *path = itu_path("ov.qcow2");
    VbkQcow2CreateOptions o = {.size = 4 << 20, .cluster_size = 65536};
    g_autofree uint8_t *buf = g_malloc(o.size);
    Worker w[4];
    GThread *t[4];
    VbkBlockNode *bs;

    itu_create_qcow2(path, &o);
    bs = itu_open_image(path, false);
    for (int i = 0; i < 4; i++) {
        w[i] = (Worker){
            .bs = bs, .len = o.size, .seed = 77 + i, .cs = o.cluster_size};
        t[i] = g_thread_new("overlap", overlap_run, &w[i]);
    }
    for (int i = 0; i < 4; i++) {
        g_thread_join(t[i]);
        ck_assert_msg(w[i].errors == 0, "worker %d: %d errors", i, w[i].errors);
    }
    ck_assert_int_eq(vbk_block_pread(bs, 0, o.size, buf), 0);
    for (uint64_t c = 0; c < o.size; c += o.cluster_size) {
        for (uint64_t j = 1; j < o.cluster_size; j++)
            ck_assert_msg(buf[c + j] == buf[c],
                          "cluster at %" G_GUINT64_FORMAT " mixes two requests",
                          c);
    }
    itu_close(bs);
    itu_assert_qemu_img_check(path);
}
END_TEST

static Suite *
qcow2_threads_suite(void)
{
    Suite *s = suite_create("qcow2-threads");
    TCase *tc;

    tc = tcase_create("threads");
    tcase_add_checked_fixture(tc, itu_setup, itu_teardown);
    tcase_add_loop_test(tc, test_threads, 0, 2);
    tcase_add_test(tc, test_threads_overlap);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return vbk_test_run(qcow2_threads_suite());
}
