/*
 * check-xml-conformance.c: libvirt 9.0's own backup and checkpoint
 * round-trip fixtures (../shared/conformance/libvirt), run the way
 * libvirt's genericxml2xmltest and qemudomaincheckpointxml2xmltest run
 * them, plus virschematest's expectations for the same files and an
 * xmllint --relaxng check of every document we format.
 */
#include "testutil.h"

#include "backup-conf.h"
#include "checkpoint-conf.h"

#include <glib/gstdio.h>
#include <string.h>

static char *
fixture_path(const char *dir, const char *name)
{
    return g_build_filename(vbk_test_shared_dir(), "conformance", "libvirt",
                            dir, name, NULL);
}

static char *
read_fixture(const char *dir, const char *name)
{
    g_autofree char *path = fixture_path(dir, name);
    char *data = NULL;

    ck_assert_msg(g_file_get_contents(path, &data, NULL, NULL),
                  "cannot read %s", path);
    return data;
}

static GPtrArray *
list_fixtures(const char *dir)
{
    g_autofree char *path = fixture_path(dir, "");
    g_autoptr(GDir) d = g_dir_open(path, 0, NULL);
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    const char *n;

    ck_assert_msg(d != NULL, "missing fixture dir %s", path);
    while ((n = g_dir_read_name(d))) {
        if (g_str_has_suffix(n, ".xml"))
            g_ptr_array_add(names, g_strdup(n));
    }
    g_ptr_array_sort(names, (GCompareFunc) g_strcmp0);
    return names;
}

/* Validate @xml with the real xmllint against libvirt's schema @rng. */
static void
assert_xmllint_valid(const char *xml, const char *rng)
{
    g_autofree char *dir = vbk_test_tmpdir_new();
    g_autofree char *file = g_build_filename(dir, "doc.xml", NULL);
    g_autofree char *schema =
        g_build_filename("/usr/share/libvirt/schemas", rng, NULL);
    g_autofree char *out = NULL;
    g_autofree char *err = NULL;
    const char *argv[] = {"xmllint", "--noout", "--relaxng",
                          schema,    file,      NULL};
    int rc;

    ck_assert(g_file_set_contents(file, xml, -1, NULL));
    rc = vbk_test_spawn(argv, &out, &err);
    vbk_test_tmpdir_remove(dir);
    ck_assert_msg(rc == 0, "xmllint rejects output against %s:\n%s\n%s", rng,
                  err, xml);
}

/* The fake domain of testCompareBackupXML: one qcow2 file disk per disk
 * named in the request, then vdextradisk. */
static VbkDomainDef *
fake_domain(const VbkBackupDef *req)
{
    g_autoptr(GString) xml = g_string_new(
        "<domain type='qemu'><name>fake</name><memory>1024</memory>"
        "<devices>");
    g_autoptr(GError) err = NULL;
    VbkDomainDef *dom;
    guint i;

    for (i = 0; i <= req->disks->len; i++) {
        const char *dst =
            i < req->disks->len
                ? ((VbkBackupDiskDef *) req->disks->pdata[i])->name
                : "vdextradisk";
        g_string_append_printf(xml,
                               "<disk type='file' device='disk'>"
                               "<driver name='qemu' type='qcow2'/>"
                               "<source file='/fake/%s.qcow2'/>"
                               "<target dev='%s'/></disk>",
                               dst, dst);
    }
    g_string_append(xml, "</devices></domain>");
    dom = vbk_domain_def_parse_string(xml->str, 0, &err);
    ck_assert_msg(dom != NULL, "fake domain: %s", err ? err->message : "");
    return dom;
}

START_TEST(test_backup_fixtures)
{
    g_autoptr(GPtrArray) names = list_fixtures("domainbackupxml2xmlin");
    guint i;

    ck_assert_uint_ge(names->len, 8);
    for (i = 0; i < names->len; i++) {
        const char *name = names->pdata[i];
        gboolean internal = strstr(name, "-internal-invalid") != NULL;
        g_autofree char *in = read_fixture("domainbackupxml2xmlin", name);
        g_autofree char *expect = read_fixture("domainbackupxml2xmlout", name);
        g_autofree char *got = NULL;
        g_autoptr(GError) err = NULL;
        g_autoptr(VbkBackupDef) def = NULL;
        g_autoptr(VbkDomainDef) dom = NULL;
        guint flags =
            internal ? VBK_BACKUP_PARSE_INTERNAL : VBK_BACKUP_PARSE_VALIDATE;

        def = vbk_backup_def_parse_string(in, flags, &err);
        ck_assert_msg(def != NULL, "%s: %s", name, err ? err->message : "");
        dom = fake_domain(def);
        ck_assert_msg(vbk_backup_def_align_disks(def, dom, "SUFFIX", &err),
                      "%s: %s", name, err ? err->message : "");
        got = vbk_backup_def_format(def, internal);
        ck_assert_msg(g_str_equal(got, expect), "%s differs:\n%s", name, got);
        if (!internal)
            assert_xmllint_valid(got, "domainbackup.rng");
    }
}
END_TEST

enum {
    TEST_PARENT = 1 << 0,
    TEST_VDA_BITMAP = 1 << 1,
    TEST_SIZE = 1 << 2,
};

/* qemudomaincheckpointxml2xmltest's in->out cases. */
static const struct {
    const char *name;
    gint64 now;
    guint flags;
} checkpoint_cases[] = {
    {"empty", 1525889631, TEST_VDA_BITMAP},
    {"disk-default", 1525889631, TEST_PARENT | TEST_VDA_BITMAP},
    {"sample", 1525889631, TEST_PARENT | TEST_VDA_BITMAP},
    {"size", 1553648510, TEST_PARENT | TEST_VDA_BITMAP | TEST_SIZE},
};

static void
apply_test_flags(VbkCheckpointDef *def, guint tflags, guint *fmt)
{
    if (tflags & TEST_PARENT) {
        g_free(def->parent_name);
        def->parent_name = g_strdup("1525111885");
    }
    if (tflags & TEST_VDA_BITMAP) {
        VbkCheckpointDiskDef *disk;
        if (def->disks->len == 0) {
            disk = g_new0(VbkCheckpointDiskDef, 1);
            disk->name = g_strdup("vda");
            disk->type = VBK_CHECKPOINT_TYPE_BITMAP;
            g_ptr_array_add(def->disks, disk);
        }
        disk = def->disks->pdata[0];
        ck_assert_str_eq(disk->name, "vda");
        g_free(disk->bitmap);
        disk->bitmap = g_strdup(def->name);
    }
    if (tflags & TEST_SIZE) {
        VbkCheckpointDiskDef *disk = def->disks->pdata[0];
        disk->size = 1048576;
        disk->size_valid = TRUE;
        *fmt |= VBK_CHECKPOINT_FORMAT_SIZE;
    }
    if (!def->dom)
        *fmt |= VBK_CHECKPOINT_FORMAT_NO_DOMAIN;
}

START_TEST(test_checkpoint_inout)
{
    const char *name = checkpoint_cases[_i].name;
    g_autofree char *file = g_strdup_printf("%s.xml", name);
    g_autofree char *in = read_fixture("qemudomaincheckpointxml2xmlin", file);
    g_autofree char *expect =
        read_fixture("qemudomaincheckpointxml2xmlout", file);
    g_autofree char *got = NULL;
    g_autoptr(GError) err = NULL;
    g_autoptr(VbkCheckpointDef) def = NULL;
    guint fmt = VBK_CHECKPOINT_FORMAT_SECURE;

    def = vbk_checkpoint_def_parse_string(in, checkpoint_cases[_i].now,
                                          VBK_CHECKPOINT_PARSE_VALIDATE, &err);
    ck_assert_msg(def != NULL, "%s: %s", name, err ? err->message : "");
    apply_test_flags(def, checkpoint_cases[_i].flags, &fmt);
    got = vbk_checkpoint_def_format(def, fmt);
    ck_assert_msg(g_str_equal(got, expect), "%s differs:\n%s", name, got);
    assert_xmllint_valid(got, "domaincheckpoint.rng");
}
END_TEST

START_TEST(test_checkpoint_redefine)
{
    g_autofree char *in =
        read_fixture("qemudomaincheckpointxml2xmlout", "redefine.xml");
    g_autofree char *got = NULL;
    g_autoptr(GError) err = NULL;
    g_autoptr(VbkCheckpointDef) def = NULL;

    def = vbk_checkpoint_def_parse_string(
        in, 0, VBK_CHECKPOINT_PARSE_REDEFINE | VBK_CHECKPOINT_PARSE_VALIDATE,
        &err);
    ck_assert_msg(def != NULL, "%s", err ? err->message : "");
    ck_assert_ptr_nonnull(def->dom);
    got = vbk_checkpoint_def_format(def, VBK_CHECKPOINT_FORMAT_SECURE);
    ck_assert_msg(g_str_equal(got, in), "redefine differs:\n%s", got);
    assert_xmllint_valid(got, "domaincheckpoint.rng");

    /* aligning against its own domain changes nothing */
    ck_assert(vbk_checkpoint_def_align_disks(def, &err));
    g_free(got);
    got = vbk_checkpoint_def_format(def, VBK_CHECKPOINT_FORMAT_SECURE);
    ck_assert_str_eq(got, in);
}
END_TEST

/* disk-invalid and name-invalid must fail to parse: by the RelaxNG
 * schema as in libvirt, and by vbackup's own checks without it. */
START_TEST(test_checkpoint_invalid)
{
    static const char *const names[] = {"disk-invalid.xml", "name-invalid.xml"};
    const char *name = names[_i];
    g_autofree char *in = read_fixture("qemudomaincheckpointxml2xmlin", name);
    g_autoptr(GError) err = NULL;
    VbkCheckpointDef *def;

    def = vbk_checkpoint_def_parse_string(in, 1525889631,
                                          VBK_CHECKPOINT_PARSE_VALIDATE, &err);
    ck_assert_ptr_null(def);
    ck_assert_int_eq(err->code, VBK_XML_ERR_XML_INVALID_SCHEMA);
    ck_assert(g_str_has_prefix(err->message, "Unable to validate doc against"));
    g_clear_error(&err);

    def = vbk_checkpoint_def_parse_string(in, 1525889631, 0, &err);
    ck_assert_ptr_null(def);
    ck_assert_int_eq(err->code, VBK_XML_ERR_XML_ERROR);
}
END_TEST

/* virschematest: every fixture validates, except the -invalid ones. */
START_TEST(test_schema_fixtures)
{
    static const char *const dirs[][2] = {
        {"domainbackupxml2xmlin", "domainbackup.rng"},
        {"domainbackupxml2xmlout", "domainbackup.rng"},
        {"qemudomaincheckpointxml2xmlin", "domaincheckpoint.rng"},
        {"qemudomaincheckpointxml2xmlout", "domaincheckpoint.rng"},
    };
    g_autoptr(GPtrArray) names = list_fixtures(dirs[_i][0]);
    guint i;

    ck_assert_uint_gt(names->len, 0);
    for (i = 0; i < names->len; i++) {
        const char *name = names->pdata[i];
        g_autofree char *xml = read_fixture(dirs[_i][0], name);
        g_autoptr(xmlDoc) doc = vbk_xml_parse(xml, -1, name, NULL, NULL);
        g_autoptr(GError) err = NULL;
        gboolean ok;

        ck_assert_ptr_nonnull(doc);
        ok = vbk_xml_validate(doc, dirs[_i][1], &err);
        if (strstr(name, "-invalid"))
            ck_assert_msg(!ok, "%s/%s must not validate", dirs[_i][0], name);
        else
            ck_assert_msg(ok, "%s/%s: %s", dirs[_i][0], name,
                          err ? err->message : "");
    }
}
END_TEST

static Suite *
conformance_suite(void)
{
    Suite *s = suite_create("xml-conformance");
    TCase *tc = tcase_create("libvirt-fixtures");

    tcase_add_test(tc, test_backup_fixtures);
    tcase_add_loop_test(tc, test_checkpoint_inout, 0,
                        G_N_ELEMENTS(checkpoint_cases));
    tcase_add_test(tc, test_checkpoint_redefine);
    tcase_add_loop_test(tc, test_checkpoint_invalid, 0, 2);
    tcase_add_loop_test(tc, test_schema_fixtures, 0, 4);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    if (!g_file_test("/usr/share/libvirt/schemas/domainbackup.rng",
                     G_FILE_TEST_EXISTS)) {
        g_printerr("libvirt's schemas are missing: install libvirt0\n");
        return 1;
    }
    return vbk_test_run(conformance_suite());
}
