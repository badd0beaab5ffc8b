/*
 * check-blkdebug.c: the blkdebug fault-injection filter — events, states,
 * rule arming, once, sector and iotype matching, option errors.
 */
#include <errno.h>
#include <string.h>

#include "block/block-int.h"
#include "testutil.h"

static char *tmpdir;
static char *image;

static void
setup(void)
{
    tmpdir = vbk_test_tmpdir_new();
    image = g_build_filename(tmpdir, "img", NULL);
    ck_assert(vbk_file_create(image, 1 << 20, NULL));
}

static void
teardown(void)
{
    vbk_block_graph_close_all();
    vbk_test_tmpdir_remove(tmpdir);
    g_clear_pointer(&tmpdir, g_free);
    g_clear_pointer(&image, g_free);
}

/* raw -> blkdebug(rules) -> file */
static VbkBlockNode *
open_stack(const char *rules, GError **error)
{
    g_autofree char *text = g_strdup_printf(
        "{'driver': <'raw'>, 'node-name': <'top'>, 'file': <{"
        "'driver': <'blkdebug'>, 'node-name': <'dbg'>, %s"
        "'image': <{'driver': <'file'>, 'filename': <'%s'>}>}>}",
        rules, image);
    g_autoptr(GError) perr = NULL;
    GVariant *opts = g_variant_parse(NULL, text, NULL, NULL, &perr);

    ck_assert_msg(opts != NULL, "%s", perr ? perr->message : "");
    return vbk_block_node_open(opts, error);
}

START_TEST(test_state_chain)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(VbkBlockNode) bs = open_stack(
        "'set-state': <[{'event': <'flush_to_disk'>, 'state': <1>, "
        "'new_state': <2>}, {'event': <'read_aio'>, 'state': <2>, "
        "'new-state': <3>}]>, 'inject-error': <[{'event': <'read_aio'>, "
        "'state': <3>, 'errno': <5>, 'once': <true>, "
        "'immediately': <false>}]>,",
        &err);
    char buf[512];

    ck_assert_msg(bs != NULL, "%s", err ? err->message : "");
    /* state 1: reads pass, no rule armed */
    ck_assert_int_eq(vbk_block_pread(bs, 0, 512, buf), 0);
    ck_assert_int_eq(vbk_block_pread(bs, 0, 512, buf), 0);
    /* flush: 1 -> 2 */
    ck_assert_int_eq(vbk_block_flush(bs), 0);
    /* read_aio in state 2: moves to 3, the inject rule (state 3) is not
     * yet processed, so this read passes */
    ck_assert_int_eq(vbk_block_pread(bs, 0, 512, buf), 0);
    /* read_aio in state 3 arms the rule; the read fails, once */
    ck_assert_int_eq(vbk_block_pread(bs, 512, 512, buf), -EIO);
    ck_assert_int_eq(vbk_block_pread(bs, 512, 512, buf), 0);
    ck_assert_int_eq(vbk_block_pread(bs, 512, 512, buf), 0);
}
END_TEST

START_TEST(test_sector_and_iotype)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(VbkBlockNode) bs = open_stack(
        "'inject-error': <[{'event': <'write_aio'>, 'iotype': <'write'>, "
        "'errno': <28>, 'sector': <8>}]>,",
        &err);
    char buf[4096] = {1};

    ck_assert_msg(bs != NULL, "%s", err ? err->message : "");
    /* arms on the first write_aio; the first write does not cover 4096 */
    ck_assert_int_eq(vbk_block_pwrite(bs, 0, 512, buf, 0), 0);
    ck_assert_int_eq(vbk_block_pwrite(bs, 4096, 512, buf, 0), -ENOSPC);
    /* not once: stays armed */
    ck_assert_int_eq(vbk_block_pwrite(bs, 3584, 1024, buf, 0), -ENOSPC);
    /* reads are not matched by iotype 'write' */
    ck_assert_int_eq(vbk_block_pread(bs, 4096, 512, buf), 0);
}
END_TEST

START_TEST(test_events_api)
{
    ck_assert_str_eq(vbk_block_event_name(VBK_EVENT_L2_UPDATE), "l2_update");
    ck_assert_str_eq(vbk_block_event_name(VBK_EVENT_FLUSH_TO_DISK),
                     "flush_to_disk");
    ck_assert_str_eq(vbk_block_event_name(VBK_EVENT_NONE), "none");
    ck_assert_int_eq(vbk_block_event_from_name("refblock_alloc"),
                     VBK_EVENT_REFBLOCK_ALLOC);
    ck_assert_int_eq(vbk_block_event_from_name("nosuch"), -1);
    ck_assert_ptr_null(vbk_block_event_name(VBK_EVENT__MAX));
    for (int i = 0; i < VBK_EVENT__MAX; i++)
        ck_assert_int_eq(vbk_block_event_from_name(vbk_block_event_name(i)),
                         i);
}
END_TEST

START_TEST(test_option_errors)
{
    g_autoptr(GError) err = NULL;

    ck_assert_ptr_null(open_stack("'inject-error': <[{'state': <1>}]>,",
                                  &err));
    ck_assert_str_eq(err->message, "Missing event name for rule");
    g_clear_error(&err);
    ck_assert_ptr_null(open_stack(
        "'set-state': <[{'event': <'bogus'>, 'new-state': <2>}]>,", &err));
    ck_assert_str_eq(err->message,
                     "Parameter 'event' does not accept value 'bogus'");
    g_clear_error(&err);
    ck_assert_ptr_null(open_stack(
        "'set-state': <[{'event': <'read_aio'>}]>,", &err));
    ck_assert_str_eq(err->message, "Parameter 'new_state' is missing");
    g_clear_error(&err);
    ck_assert_ptr_null(open_stack("'file': <'x'>,", &err));
    ck_assert_str_eq(err->message, "Parameter 'file' is unexpected");
    ck_assert_ptr_null(vbk_block_node_find("dbg"));
}
END_TEST

/* A format above blkdebug grows its image through the filter. */
START_TEST(test_write_past_end_grows)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(VbkBlockNode) bs = open_stack("", &err);
    VbkBlockNode *dbg = vbk_block_node_find("dbg");
    char buf[512] = {9}, out[512];

    ck_assert_msg(bs != NULL, "%s", err ? err->message : "");
    ck_assert_int_eq(vbk_block_pwrite(dbg, 1 << 20, 512, buf, 0), 0);
    ck_assert_int_eq(vbk_block_node_getlength(dbg), (1 << 20) + 512);
    ck_assert_int_eq(vbk_block_pread(dbg, 1 << 20, 512, out), 0);
    ck_assert_mem_eq(buf, out, 512);
}
END_TEST

static Suite *
blkdebug_suite(void)
{
    Suite *s = suite_create("blkdebug");
    TCase *tc = tcase_create("rules");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_state_chain);
    tcase_add_test(tc, test_sector_and_iotype);
    tcase_add_test(tc, test_events_api);
    tcase_add_test(tc, test_option_errors);
    tcase_add_test(tc, test_write_past_end_grows);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return vbk_test_run(blkdebug_suite());
}
