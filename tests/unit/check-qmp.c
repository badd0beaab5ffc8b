/*
 * check-qmp.c: the pieces of the QMP door, without a socket.
 *
 * The JSON writer against lines qemu-storage-daemon 7.2 printed (member
 * order, separators, escapes); QAPI-style argument checks and their
 * messages; the JSON to GVariant conversion blockdev-add uses; qemu-io's
 * number parser against what qemu-io 7.2 accepts; and the HMP qemu-io
 * command end to end on null-co and file nodes.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "core/block/block.h"
#include "core/qmp/qemu-io.h"
#include "core/qmp/qmp-json.h"
#include "core/qmp/qmp.h"
#include "testutil.h"

static JsonNode *
parse(const char *text)
{
    g_autoptr(JsonParser) p = json_parser_new();

    ck_assert(json_parser_load_from_data(p, text, -1, NULL));
    return json_node_copy(json_parser_get_root(p));
}

/* @qapi lists members in QAPI declaration order; @wire is what qsd
 * printed for the same object. */
static const struct {
    const char *qapi;
    const char *wire;
} order_cases[] = {
    {"{\"QMP\": {\"version\": {\"qemu\": {\"major\": 7, \"minor\": 2, "
     "\"micro\": 22}, \"package\": \"P\"}, \"capabilities\": [\"oob\"]}}",
     "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, "
     "\"major\": 7}, \"package\": \"P\"}, \"capabilities\": [\"oob\"]}}"},
    {"{\"id\": \"j3\", \"type\": \"create\", \"status\": \"concluded\", "
     "\"current-progress\": 1, \"total-progress\": 1, \"error\": \"e\"}",
     "{\"current-progress\": 1, \"status\": \"concluded\", "
     "\"total-progress\": 1, \"type\": \"create\", \"id\": \"j3\", "
     "\"error\": \"e\"}"},
    {"{\"writeback\": true, \"direct\": true, \"no-flush\": false}",
     "{\"no-flush\": false, \"direct\": true, \"writeback\": true}"},
    {"{\"type\": \"qcow2\", \"data\": {\"compat\": \"1.1\", "
     "\"extended-l2\": false, \"lazy-refcounts\": false, \"corrupt\": false, "
     "\"refcount-bits\": 16, \"compression-type\": \"zlib\"}}",
     "{\"type\": \"qcow2\", \"data\": {\"compat\": \"1.1\", "
     "\"compression-type\": \"zlib\", \"lazy-refcounts\": false, "
     "\"refcount-bits\": 16, \"corrupt\": false, \"extended-l2\": false}}"},
    {"{\"return\": [], \"id\": \"\xc3\xa9\xf0\x9f\x98\x80\"}",
     "{\"return\": [], \"id\": \"\\u00E9\\uD83D\\uDE00\"}"},
    {"{\"id\": 1, \"error\": {\"class\": \"GenericError\", "
     "\"desc\": \"a\\\"b\\\\c\\n\\t\"}}",
     "{\"id\": 1, \"error\": {\"class\": \"GenericError\", "
     "\"desc\": \"a\\\"b\\\\c\\n\\t\"}}"},
    {"{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, "
     "\"event\": \"JOB_STATUS_CHANGE\", \"data\": {\"id\": \"j\", "
     "\"status\": \"null\"}}",
     "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, "
     "\"event\": \"JOB_STATUS_CHANGE\", \"data\": {\"status\": \"null\", "
     "\"id\": \"j\"}}"},
    {"{\"return\": {}}", "{\"return\": {}}"},
};

START_TEST(test_json_wire_order)
{
    g_autoptr(JsonNode) node = parse(order_cases[_i].qapi);
    g_autofree char *out = vbk_qmp_json_to_string(node);

    ck_assert_str_eq(out, order_cases[_i].wire);
}
END_TEST

static const VbkQmpArg spec[] = {
    {"name", VBK_QMP_ARG_STR, false}, {"count", VBK_QMP_ARG_INT, true},
    {"size", VBK_QMP_ARG_SIZE, true}, {"flag", VBK_QMP_ARG_BOOL, true},
    {"file", VBK_QMP_ARG_REF, true},  {NULL},
};

static const struct {
    const char *args;
    const char *error; /* NULL: accepted */
} arg_cases[] = {
    {"{\"name\": \"a\"}", NULL},
    {"{\"name\": \"a\", \"count\": -3, \"size\": 5, \"flag\": true, "
     "\"file\": {\"driver\": \"file\"}}",
     NULL},
    {"{\"name\": \"a\", \"file\": \"node\"}", NULL},
    {"{}", "Parameter 'o.name' is missing"},
    {"{\"name\": 1}", "Invalid parameter type for 'o.name', expected: string"},
    {"{\"name\": \"a\", \"count\": \"1\"}",
     "Invalid parameter type for 'o.count', expected: integer"},
    {"{\"name\": \"a\", \"size\": 1.5}", "Parameter 'o.size' expects uint64"},
    {"{\"name\": \"a\", \"flag\": 1}",
     "Invalid parameter type for 'o.flag', expected: boolean"},
    {"{\"name\": \"a\", \"file\": 5}",
     "Invalid parameter type for 'file', expected: BlockdevRef"},
    {"{\"name\": \"a\", \"extra\": 5}", "Parameter 'o.extra' is unexpected"},
    /* declared members are checked before left-over ones */
    {"{\"extra\": 5}", "Parameter 'o.name' is missing"},
};

START_TEST(test_check_args)
{
    g_autoptr(JsonNode) node = parse(arg_cases[_i].args);
    g_autoptr(GError) err = NULL;
    bool ok =
        vbk_qmp_check_args(json_node_get_object(node), "o.", spec, false, &err);

    if (!arg_cases[_i].error) {
        ck_assert_msg(ok, "%s", err ? err->message : "");
    } else {
        ck_assert(!ok);
        ck_assert_str_eq(err->message, arg_cases[_i].error);
        ck_assert_str_eq(vbk_qmp_error_class(err), "GenericError");
    }
}
END_TEST

START_TEST(test_error_classes)
{
    g_autoptr(GError) a =
        g_error_new(VBK_QMP_ERROR, VBK_QMP_ERROR_COMMAND_NOT_FOUND, "x");
    g_autoptr(GError) b =
        g_error_new(VBK_QMP_ERROR, VBK_QMP_ERROR_DEVICE_NOT_FOUND, "x");
    g_autoptr(GError) c =
        g_error_new(VBK_BLOCK_ERROR, VBK_BLOCK_ERROR_NOT_FOUND, "x");

    ck_assert_str_eq(vbk_qmp_error_class(a), "CommandNotFound");
    ck_assert_str_eq(vbk_qmp_error_class(b), "DeviceNotFound");
    /* QEMU reports missing nodes as GenericError */
    ck_assert_str_eq(vbk_qmp_error_class(c), "GenericError");
    ck_assert_ptr_null(vbk_qmp_command_find("nope"));
    ck_assert_ptr_nonnull(vbk_qmp_command_find("blockdev-create"));
    ck_assert(vbk_qmp_is_qemu_block_driver("qcow2"));
    ck_assert(!vbk_qmp_is_qemu_block_driver("qcow3"));
}
END_TEST

START_TEST(test_json_to_variant)
{
    g_autoptr(JsonNode) node =
        parse("{\"driver\": \"qcow2\", \"n\": -5, \"b\": true, \"d\": 0.5, "
              "\"backing\": null, \"file\": {\"driver\": \"file\", "
              "\"cache\": {\"direct\": false}}, \"l\": [1, \"x\"]}");
    g_autoptr(GVariant) v = g_variant_ref_sink(vbk_qmp_json_to_variant(node));
    g_autofree char *text = g_variant_print(v, TRUE);

    ck_assert(g_variant_is_of_type(v, G_VARIANT_TYPE_VARDICT));
    ck_assert_str_eq(text,
                     "{'driver': <'qcow2'>, 'n': <int64 -5>, 'b': <true>, "
                     "'d': <0.5>, 'backing': <@mv nothing>, 'file': "
                     "<{'driver': <'file'>, 'cache': <{'direct': <false>}>}>, "
                     "'l': <[<int64 1>, <'x'>]>}");
}
END_TEST

/* What qemu-io 7.2 made of these (checked with `qemu-io -c "read N 0"`). */
static const struct {
    const char *in;
    int64_t out;
} num_cases[] = {
    {"0", 0},
    {"512", 512},
    {"010", 10},
    {"64k", 65536},
    {"64K", 65536},
    {"1M", 1 << 20},
    {"2G", G_GINT64_CONSTANT(2) << 30},
    {"1T", G_GINT64_CONSTANT(1) << 40},
    {"1b", 1},
    {"1B", 1},
    {"1.5k", 1536},
    {"0.5k", 512},
    {"1.0k", 1024},
    {"0x10000", 65536},
    {"0x10k", 16384},
    {"7E", G_GINT64_CONSTANT(7) << 60},
    {"9223372036854775807", G_MAXINT64},
    {"9223372036854775808", -ERANGE},
    {"8E", -ERANGE},
    {"1.5", -EINVAL},
    {"1e3", -EINVAL},
    {"1e3k", -EINVAL},
    {"abc", -EINVAL},
    {"1x", -EINVAL},
    {"-5", -EINVAL},
    {"0x", -EINVAL},
    {"", -EINVAL},
};

START_TEST(test_cvtnum)
{
    ck_assert_msg(vbk_qemu_io_cvtnum(num_cases[_i].in) == num_cases[_i].out,
                  "'%s' gave %" G_GINT64_FORMAT, num_cases[_i].in,
                  vbk_qemu_io_cvtnum(num_cases[_i].in));
}
END_TEST

/* human-monitor-command through the dispatch table. */
static char *
hmp(const char *line)
{
    const VbkQmpCommand *cmd = vbk_qmp_command_find("human-monitor-command");
    g_autoptr(JsonObject) args = json_object_new();
    g_autoptr(JsonNode) ret = NULL;
    g_autoptr(GError) err = NULL;

    json_object_set_string_member(args, "command-line", line);
    ck_assert(vbk_qmp_check_args(args, "", cmd->args, cmd->loose, &err));
    ck_assert(cmd->handler(args, &ret, &err));
    return g_strdup(json_node_get_string(ret));
}

static VbkBlockNode *
open_node(const char *text)
{
    g_autoptr(JsonNode) node = parse(text);
    g_autoptr(GVariant) v = g_variant_ref_sink(vbk_qmp_json_to_variant(node));
    g_autoptr(GError) err = NULL;
    VbkBlockNode *bs = vbk_block_node_open(v, &err);

    ck_assert_msg(bs, "%s", err ? err->message : "");
    return bs;
}

/* The embedding program's sink for successful qemu-io reports. */
static void
collect_output(const char *text, void *data)
{
    g_string_append(data, text);
}

START_TEST(test_hmp_qemu_io_null)
{
    g_autoptr(VbkBlockNode) bs = open_node(
        "{\"driver\": \"null-co\", \"node-name\": \"n0\", \"size\": 1048576}");
    g_autoptr(GString) printed = g_string_new(NULL);
    g_autofree char *r1 = NULL;
    g_autofree char *r2 = NULL;

    vbk_qmp_set_hmp_output_func(collect_output, printed);
    r1 = hmp("qemu-io n0 \"read -P 0xab 0 4k\"");
    r2 = hmp("qemu-io n0 \"write -P 0x11 0 1M\"");
    vbk_qmp_set_hmp_output_func(NULL, NULL);
    /* the reports went to the sink, not the reply */
    ck_assert_msg(
        g_str_has_prefix(printed->str, "read 4096/4096 bytes at offset 0\n"),
        "%s", printed->str);
    ck_assert_msg(
        strstr(printed->str, "\nwrote 1048576/1048576 bytes at offset 0\n"),
        "%s", printed->str);
    g_autofree char *r3 = hmp("qemu-io n0 \"read -P 0x11 512 512\"");
    g_autofree char *r4 = hmp("qemu-io n0 \"write 1M 1\"");
    g_autofree char *r5 = hmp("qemu-io n0 \"flush extra\"");
    g_autofree char *r6 = hmp("qemu-io n0 \"write\"");
    g_autofree char *r7 = hmp("qemu-io n0 \"write -z -P 1 0 1\"");
    g_autofree char *r8 = hmp("qemu-io n0 \"write -u 0 1\"");
    g_autofree char *r9 = hmp("qemu-io n0 \"read -X 0 1\"");
    g_autofree char *r10 = hmp("info block");
    g_autofree char *r11 = hmp("qemu-io n0");

    /* null-co without read-zeroes leaves qemu-io's 0xab filler */
    ck_assert_str_eq(r1, "");
    ck_assert_str_eq(r2, "");
    ck_assert_msg(g_str_has_prefix(r3, "Pattern verification failed at "
                                       "offset 512, 512 bytes\r\n"
                                       "read 512/512 bytes at offset 512\r\n"
                                       "512 bytes, 1 ops; 00.00 sec ("),
                  "%s", r3);
    ck_assert_str_eq(r4, "write failed: Input/output error\r\n");
    ck_assert_str_eq(r5, "flush -- flush all in-core file state to disk\r\n");
    ck_assert_str_eq(r6, "bad argument count 0 to write, expected at least 2 "
                         "arguments\r\n");
    ck_assert_str_eq(r7, "Only one of -z, -P, and -s can be specified at "
                         "the same time\r\n");
    ck_assert_str_eq(r8, "-u requires -z to be specified\r\n");
    ck_assert_msg(g_str_has_prefix(r9, "read: invalid option -- 'X'\r\n"
                                       "read [-abCqv]"),
                  "%s", r9);
    ck_assert_str_eq(r10, "unknown command: 'info'\r\n");
    ck_assert_str_eq(r11, "qemu-io: string expected\r\n"
                          "Try \"help qemu-io\" for more information\r\n");
}
END_TEST

START_TEST(test_hmp_qemu_io_file)
{
    g_autofree char *dir = vbk_test_tmpdir_new();
    g_autofree char *path = g_build_filename(dir, "f.raw", NULL);
    g_autofree char *opts = NULL;
    g_autoptr(GError) err = NULL;
    g_autofree char *out = NULL;
    const char *argv[] = {"qemu-io",
                          "-f",
                          "raw",
                          "-c",
                          "read -P 0x5a 4k 4k",
                          "-c",
                          "read -P 0 0 4k",
                          "-c",
                          "read -P 0x5a 0 4k",
                          NULL,
                          NULL};
    VbkBlockNode *bs;
    char *r;
    int rc;

    ck_assert(vbk_file_create(path, 65536, &err));
    opts = g_strdup_printf("{\"driver\": \"file\", \"node-name\": \"f0\", "
                           "\"filename\": \"%s\"}",
                           path);
    bs = open_node(opts);
    r = hmp("qemu-io f0 \"write -P 0x5a 0x1000 4k\"");
    ck_assert_str_eq(r, "");
    g_free(r);
    r = hmp("qemu-io f0 \"write -z 0 4k\"");
    ck_assert_str_eq(r, "");
    g_free(r);
    r = hmp("qemu-io f0 \"flush\"");
    ck_assert_str_eq(r, "");
    g_free(r);
    vbk_block_node_unref(bs);
    ck_assert(vbk_block_node_delete("f0", NULL));

    /* the real qemu-io sees the data; its mismatch text is ours */
    argv[9] = path;
    /* exit status 1: its last command (the mismatch) failed */
    rc = vbk_test_spawn(argv, &out, NULL);
    ck_assert_int_eq(rc, 1);
    ck_assert_msg(strstr(out, "Pattern verification failed at offset 0, "
                              "4096 bytes\n"),
                  "%s", out);
    ck_assert_msg(strstr(out, "read 4096/4096 bytes at offset 4096\n"), "%s",
                  out);
    vbk_test_tmpdir_remove(dir);
}
END_TEST

static Suite *
qmp_suite(void)
{
    Suite *s = suite_create("qmp");
    TCase *json = tcase_create("json");
    TCase *io = tcase_create("qemu-io");

    tcase_add_loop_test(json, test_json_wire_order, 0,
                        G_N_ELEMENTS(order_cases));
    tcase_add_loop_test(json, test_check_args, 0, G_N_ELEMENTS(arg_cases));
    tcase_add_test(json, test_error_classes);
    tcase_add_test(json, test_json_to_variant);
    suite_add_tcase(s, json);

    tcase_add_loop_test(io, test_cvtnum, 0, G_N_ELEMENTS(num_cases));
    tcase_add_test(io, test_hmp_qemu_io_null);
    tcase_add_test(io, test_hmp_qemu_io_file);
    suite_add_tcase(s, io);
    return s;
}

int
main(void)
{
    return vbk_test_run(qmp_suite());
}
