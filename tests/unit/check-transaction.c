/*
 * check-transaction.c: all-or-nothing bitmap actions (core/job/transaction).
 *
 * On a null-co node with write marking: a failing action undoes every
 * action before it (add removed, clear and merge restored, enable and
 * disable reverted), removals wait for commit, and grouped completion
 * refuses actions that start no job — each with QEMU's message.
 */
#include <string.h>

#include "core/job/transaction.h"
#include "testutil.h"

static VbkBlockNode *node;

static void
setup(void)
{
    GVariantBuilder b;
    g_autoptr(GVariant) opts = NULL;
    g_autoptr(GError) err = NULL;

    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    g_variant_builder_add(&b, "{sv}", "driver",
                          g_variant_new_string("null-co"));
    g_variant_builder_add(&b, "{sv}", "node-name", g_variant_new_string("n0"));
    g_variant_builder_add(&b, "{sv}", "size", g_variant_new_uint64(1 << 24));
    opts = g_variant_ref_sink(g_variant_builder_end(&b));
    node = vbk_block_node_open(opts, &err);
    ck_assert_msg(node, "%s", err ? err->message : "");
}

static void
teardown(void)
{
    vbk_block_node_unref(node);
    vbk_block_graph_close_all();
}

/* name=count pairs of the node's bitmaps, newest first. */
static char *
bitmaps(void)
{
    g_autoptr(GPtrArray) infos = vbk_block_dirty_bitmap_query(node);
    GString *s = g_string_new(NULL);
    guint i;

    for (i = 0; infos && i < infos->len; i++) {
        VbkDirtyBitmapInfo *info = infos->pdata[i];
        g_string_append_printf(s, "%s%s=%" G_GUINT64_FORMAT "%s", i ? " " : "",
                               info->name, info->count,
                               info->recording ? "" : "(off)");
    }
    return g_string_free(s, FALSE);
}

static void
write_at(uint64_t off)
{
    char buf[512] = {0};

    ck_assert_int_eq(vbk_block_pwrite(node, off, sizeof(buf), buf, 0), 0);
}

#define ADD(n)                                                                 \
    {                                                                          \
        .type = VBK_TXN_BITMAP_ADD, .node = "n0", .name = n                    \
    }
#define ACT(t, n)                                                              \
    {                                                                          \
        .type = t, .node = "n0", .name = n                                     \
    }

START_TEST(test_commit)
{
    const VbkTxnAction add[] = {ADD("a"), ADD("b")};
    g_autofree char *s = NULL;

    ck_assert(vbk_transaction_run(add, 2, false, NULL));
    write_at(0);
    s = bitmaps();
    ck_assert_str_eq(s, "b=65536 a=65536");
}
END_TEST

START_TEST(test_abort_undoes_everything)
{
    const VbkTxnAction first[] = {ADD("a"), ADD("b")};
    const VbkBitmapRef src[] = {{NULL, "b"}};
    const VbkTxnAction second[] = {
        ACT(VBK_TXN_BITMAP_CLEAR, "a"),
        ACT(VBK_TXN_BITMAP_DISABLE, "a"),
        {.type = VBK_TXN_BITMAP_MERGE,
         .node = "n0",
         .name = "a",
         .sources = src,
         .n_sources = 1},
        ADD("c"),
        ACT(VBK_TXN_BITMAP_REMOVE, "b"),
        {.type = VBK_TXN_ABORT},
    };
    g_autoptr(GError) err = NULL;
    g_autofree char *before = NULL;
    g_autofree char *after = NULL;

    ck_assert(vbk_transaction_run(first, 2, false, NULL));
    write_at(0);
    write_at(1 << 20);
    ck_assert(vbk_block_dirty_bitmap_clear("n0", "b", NULL, NULL));
    write_at(2 << 20);
    before = bitmaps();
    ck_assert_str_eq(before, "b=65536 a=196608");
    ck_assert(!vbk_transaction_run(second, G_N_ELEMENTS(second), false, &err));
    ck_assert_str_eq(err->message, "Transaction aborted using Abort action");
    after = bitmaps();
    ck_assert_str_eq(after, before);
}
END_TEST

START_TEST(test_remove_waits_for_commit)
{
    const VbkTxnAction first[] = {ADD("a")};
    const VbkTxnAction remove_add[] = {ACT(VBK_TXN_BITMAP_REMOVE, "a"),
                                       ADD("a")};
    const VbkTxnAction remove[] = {ACT(VBK_TXN_BITMAP_REMOVE, "a")};
    const VbkTxnAction missing[] = {ACT(VBK_TXN_BITMAP_REMOVE, "zz")};
    g_autoptr(GError) e1 = NULL;
    g_autoptr(GError) e2 = NULL;
    g_autofree char *s1 = NULL;
    g_autofree char *s2 = NULL;

    ck_assert(vbk_transaction_run(first, 1, false, NULL));
    ck_assert(!vbk_transaction_run(remove_add, 2, false, &e1));
    ck_assert_str_eq(e1->message, "Bitmap already exists: a");
    s1 = bitmaps();
    ck_assert_str_eq(s1, "a=0");
    ck_assert(!vbk_transaction_run(missing, 1, false, &e2));
    ck_assert_str_eq(e2->message, "Dirty bitmap 'zz' not found");
    ck_assert(vbk_transaction_run(remove, 1, false, NULL));
    s2 = bitmaps();
    ck_assert_str_eq(s2, "");
}
END_TEST

START_TEST(test_enable_reverted)
{
    const VbkTxnAction first[] = {
        {.type = VBK_TXN_BITMAP_ADD,
         .node = "n0",
         .name = "a",
         .disabled = true},
    };
    const VbkTxnAction second[] = {ACT(VBK_TXN_BITMAP_ENABLE, "a"),
                                   ACT(VBK_TXN_BITMAP_CLEAR, "nosuch")};
    g_autoptr(GError) err = NULL;
    g_autofree char *s = NULL;

    ck_assert(vbk_transaction_run(first, 1, false, NULL));
    ck_assert(!vbk_transaction_run(second, 2, false, &err));
    ck_assert_str_eq(err->message, "Dirty bitmap 'nosuch' not found");
    write_at(0);
    s = bitmaps();
    ck_assert_str_eq(s, "a=0(off)");
}
END_TEST

START_TEST(test_grouped_refused)
{
    const VbkTxnAction add[] = {ADD("a")};
    g_autoptr(GError) err = NULL;
    g_autofree char *s = NULL;

    ck_assert(!vbk_transaction_run(add, 1, true, &err));
    ck_assert_str_eq(err->message,
                     "Action 'block-dirty-bitmap-add' does not support "
                     "Transaction property completion-mode = grouped");
    s = bitmaps();
    ck_assert_str_eq(s, "");
    ck_assert(vbk_transaction_run(NULL, 0, false, NULL));
}
END_TEST

static Suite *
txn_suite(void)
{
    Suite *s = suite_create("transaction");
    TCase *tc = tcase_create("bitmaps");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_commit);
    tcase_add_test(tc, test_abort_undoes_everything);
    tcase_add_test(tc, test_remove_waits_for_commit);
    tcase_add_test(tc, test_enable_reverted);
    tcase_add_test(tc, test_grouped_refused);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return vbk_test_run(txn_suite());
}
