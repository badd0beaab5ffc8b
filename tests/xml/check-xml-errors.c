/*
 * check-xml-errors.c: every failure of the XML layer reports libvirt's
 * error code (virErrorNumber) and message.
 */
#include "testutil.h"

#include "backup-conf.h"
#include "checkpoint-conf.h"

#include <string.h>

/* hda: block; hdc: read-only cdrom; vda, vdb: qcow2 files; fd0: empty */
static const char domain_xml[] =
    "<domain type='kvm'><name>d</name>"
    "<uuid>c7a5fdbd-edaf-9455-926a-d65c16db1809</uuid>"
    "<memory unit='KiB'>1024</memory><devices>"
    "<disk type='block' device='disk'><source dev='/dev/sda'/>"
    "<target dev='hda'/></disk>"
    "<disk type='block' device='cdrom'><source dev='/dev/sr0'/>"
    "<target dev='hdc'/><readonly/></disk>"
    "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
    "<source file='/img/a.qcow2'/><target dev='vda'/></disk>"
    "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
    "<source file='/img/b.qcow2'/><target dev='vdb'/></disk>"
    "<disk type='file' device='floppy'><target dev='fda'/></disk>"
    "</devices></domain>";

static const struct {
    char kind;      /* b: backup, c: checkpoint, r: redefine, d: domain */
    gboolean align; /* align against domain_xml */
    const char *xml;
    int code;
    const char *msg;
} cases[] = {
    {'b', FALSE, "<domainbackup mode='x'/>", 67, "unknown backup mode 'x'"},
    {'b', FALSE, "<domainbackup><server name='h'/></domainbackup>", 27,
     "use of <server> requires pull mode backup"},
    {'b', FALSE,
     "<domainbackup mode='pull'><server transport='rdma' "
     "name='h'/></domainbackup>",
     27, "transport rdma is not supported for <server>"},
    {'b', FALSE,
     "<domainbackup mode='pull'><server transport='unix' "
     "socket='rel/sock'/></domainbackup>",
     27, "backup socket path 'rel/sock' must be absolute"},
    {'b', FALSE,
     "<domainbackup mode='pull'><server transport='unix'/>"
     "</domainbackup>",
     27, "missing socket for unix transport"},
    {'b', FALSE,
     "<domainbackup mode='pull'><server transport='tcp' "
     "name='h' port='x'/></domainbackup>",
     27,
     "Invalid value for attribute 'port' in element 'server': 'x'. "
     "Expected integer value"},
    {'b', FALSE,
     "<domainbackup><disks><disk type='file'/></disks>"
     "</domainbackup>",
     27, "missing name from disk backup element"},
    {'b', FALSE,
     "<domainbackup><disks><disk name='vda' type='network'/>"
     "</disks></domainbackup>",
     27, "unsupported disk backup type 'network'"},
    {'b', FALSE,
     "<domainbackup><disks><disk name='vda' backupmode='x'/>"
     "</disks></domainbackup>",
     27, "Invalid value for attribute 'backupmode' in element 'disk': 'x'."},
    {'b', FALSE,
     "<domainbackup><disks><disk name='vda' backup='maybe'/>"
     "</disks></domainbackup>",
     27, "Invalid value for attribute 'backup' in element 'disk': 'maybe'."},
    {'b', FALSE,
     "<domainbackup><disks><disk name='vda'><driver "
     "type='foo'/></disk></disks></domainbackup>",
     67, "unknown disk backup driver 'foo'"},
    {'b', FALSE,
     "<domainbackup mode='pull'><disks><disk name='vda'>"
     "<driver type='raw'/></disk></disks></domainbackup>",
     67, "pull mode backup for disk 'vda' requires qcow2 driver"},
    {'b', FALSE,
     "<domainbackup><disks><disk name='vda'><target "
     "file='/a'><encryption format='luks'><secret type='passphrase'/>"
     "</encryption></target></disk></disks></domainbackup>",
     27, "missing either uuid or usage attribute"},
    {'b', TRUE,
     "<domainbackup><disks><disk name='vdz'/></disks>"
     "</domainbackup>",
     67, "no disk named 'vdz'"},
    {'b', TRUE,
     "<domainbackup><disks><disk name='vda'/><disk name='vda'/>"
     "</disks></domainbackup>",
     67, "disk 'vda' specified twice"},
    {'b', TRUE,
     "<domainbackup><disks><disk name='vda' "
     "backupmode='incremental'/></disks></domainbackup>",
     67,
     "'incremental' backup mode of disk 'vda' requires setting "
     "'incremental' field for disk or backup"},
    {'b', TRUE,
     "<domainbackup><disks><disk name='fda'/></disks>"
     "</domainbackup>",
     67, "disk 'fda' has no media"},
    {'c', FALSE,
     "<domaincheckpoint><name>../escape</name>"
     "</domaincheckpoint>",
     27, "invalid checkpoint name '../escape'"},
    {'c', FALSE,
     "<domaincheckpoint><name>.hidden</name>"
     "</domaincheckpoint>",
     27, "invalid checkpoint name '.hidden'"},
    {'c', FALSE,
     "<domaincheckpoint><disks><disk/></disks>"
     "</domaincheckpoint>",
     27, "missing name from disk checkpoint element"},
    {'c', FALSE,
     "<domaincheckpoint><disks><disk name='vda' "
     "checkpoint='x'/></disks></domaincheckpoint>",
     67, "unknown disk checkpoint setting 'x'"},
    {'c', FALSE,
     "<domaincheckpoint><disks><disk name='vda' "
     "checkpoint='no' bitmap='b'/></disks></domaincheckpoint>",
     67, "disk checkpoint bitmap 'b' requires checkpoint='bitmap'"},
    {'c', TRUE,
     "<domaincheckpoint><disks><disk name='vdz'/></disks>"
     "</domaincheckpoint>",
     67, "no disk named 'vdz'"},
    {'c', TRUE,
     "<domaincheckpoint><disks><disk name='vda'/>"
     "<disk name='/img/a.qcow2'/></disks></domaincheckpoint>",
     67, "disk '/img/a.qcow2' specified twice"},
    {'c', TRUE,
     "<domaincheckpoint><disks><disk name='hdc'/></disks>"
     "</domaincheckpoint>",
     67, "disk 'hdc' is empty or readonly"},
    {'c', TRUE,
     "<domaincheckpoint><disks><disk name='vda'/>"
     "<disk name='vdb'/><disk name='hda'/><disk name='hdc' checkpoint='no'/>"
     "<disk name='fda' checkpoint='no'/><disk name='sdz'/></disks>"
     "</domaincheckpoint>",
     67, "too many disk checkpoint requests for domain"},
    {'r', FALSE, "<domaincheckpoint/>", 27,
     "a redefined checkpoint must have a name"},
    {'r', FALSE, "<domaincheckpoint><name>c1</name></domaincheckpoint>", 1,
     "missing creationTime from existing checkpoint"},
    {'r', TRUE,
     "<domaincheckpoint><name>c1</name><creationTime>1"
     "</creationTime><domain type='kvm'><name>d</name>"
     "<uuid>00000000-0000-0000-0000-000000000001</uuid></domain>"
     "</domaincheckpoint>",
     8,
     "definition for checkpoint c1 must use uuid "
     "c7a5fdbd-edaf-9455-926a-d65c16db1809"},
    {'d', FALSE, "<domain type='kvm'/>", 21, "missing name information"},
    {'d', FALSE, "<domain><name>x</name></domain>", 27,
     "Missing required attribute 'type' in element 'domain'"},
    {'d', FALSE, "<domain type='kvm'><name>x</name><uuid>zz</uuid></domain>", 1,
     "malformed uuid element"},
    {'d', FALSE,
     "<domain type='kvm'><name>x</name><devices><disk "
     "type='file'><source file='/a'/></disk></devices></domain>",
     20, "missing target information for device /a"},
    {'d', FALSE,
     "<domain type='kvm'><name>x</name><devices>"
     "<disk><source file='/a'/><target dev='vda'/></disk>"
     "<disk><source file='/b'/><target dev='vda'/></disk>"
     "</devices></domain>",
     27, "target 'vda' duplicated for disk sources '/a' and '/b'"},
    {'d', FALSE, "<notdomain/>", 27,
     "expecting root element of 'domain', not 'notdomain'"},
};

static gboolean
run_case(int i, GError **err)
{
    g_autoptr(VbkDomainDef) dom = NULL;

    if (cases[i].align) {
        dom = vbk_domain_def_parse_string(domain_xml, 0, NULL);
        ck_assert_ptr_nonnull(dom);
    }
    switch (cases[i].kind) {
    case 'b': {
        g_autoptr(VbkBackupDef) def =
            vbk_backup_def_parse_string(cases[i].xml, 0, err);
        if (!def)
            return FALSE;
        return dom && vbk_backup_def_align_disks(def, dom, "s", err);
    }
    case 'c': {
        g_autoptr(VbkCheckpointDef) def =
            vbk_checkpoint_def_parse_string(cases[i].xml, 5, 0, err);
        if (!def)
            return FALSE;
        if (dom)
            def->dom = g_steal_pointer(&dom);
        return def->dom && vbk_checkpoint_def_align_disks(def, err);
    }
    case 'r': {
        g_autoptr(VbkCheckpointDef) def = vbk_checkpoint_def_parse_string(
            cases[i].xml, 5, VBK_CHECKPOINT_PARSE_REDEFINE, err);
        if (!def)
            return FALSE;
        return dom && vbk_checkpoint_def_redefine_prep(def, dom, err);
    }
    default: {
        g_autoptr(VbkDomainDef) d =
            vbk_domain_def_parse_string(cases[i].xml, 0, err);
        return d != NULL;
    }
    }
}

START_TEST(test_error)
{
    g_autoptr(GError) err = NULL;

    ck_assert_msg(!run_case(_i, &err), "case %d (%s) succeeded", _i,
                  cases[_i].xml);
    ck_assert_ptr_nonnull(err);
    ck_assert(err->domain == VBK_XML_ERROR);
    ck_assert_msg(err->code == cases[_i].code, "case %d: code %d, want %d (%s)",
                  _i, err->code, cases[_i].code, err->message);
    ck_assert_str_eq(err->message, cases[_i].msg);
}
END_TEST

START_TEST(test_full_message)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *full = NULL;

    ck_assert_ptr_null(
        vbk_backup_def_parse_string("<domainbackup mode='x'/>", 0, &err));
    full = vbk_xml_error_format_full(err);
    ck_assert_str_eq(full,
                     "unsupported configuration: unknown backup mode 'x'");
    g_clear_error(&err);
    g_free(full);

    ck_assert_ptr_null(vbk_backup_def_parse_string("<domainbackup>\n <disks>\n"
                                                   "</domainbackup>\n",
                                                   0, &err));
    ck_assert_int_eq(err->code, VBK_XML_ERR_XML_DETAIL);
    full = vbk_xml_error_format_full(err);
    ck_assert_str_eq(full, "(domain_backup):3: Opening and ending tag "
                           "mismatch: disks line 2 and domainbackup\n"
                           "</domainbackup>\n"
                           "---------------^");
}
END_TEST

START_TEST(test_schema_first)
{
    g_autoptr(GError) err = NULL;

    /* like libvirt, the RelaxNG check runs before the parser's own */
    ck_assert_ptr_null(vbk_backup_def_parse_string(
        "<domainbackup mode='x'/>", VBK_BACKUP_PARSE_VALIDATE, &err));
    ck_assert_int_eq(err->code, VBK_XML_ERR_XML_INVALID_SCHEMA);
    ck_assert(g_str_has_prefix(
        err->message, "Unable to validate doc against "
                      "/usr/share/libvirt/schemas/domainbackup.rng\n"));
}
END_TEST

static Suite *
errors_suite(void)
{
    Suite *s = suite_create("xml-errors");
    TCase *tc = tcase_create("messages");

    tcase_add_loop_test(tc, test_error, 0, G_N_ELEMENTS(cases));
    tcase_add_test(tc, test_full_message);
    tcase_add_test(tc, test_schema_first);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return vbk_test_run(errors_suite());
}
