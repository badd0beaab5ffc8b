/*
 * check-xml-domain.c: the <domain> subset (lossless round trip, disks,
 * backing chains, setters, secure format), test-driver <node> fixtures
 * and the hardened parser.
 */
#include "testutil.h"

#include "backup-conf.h"
#include "checkpoint-conf.h"
#include "node-conf.h"

#include <string.h>

static const char rich_domain[] =
    "<domain type='kvm' "
    "xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>\n"
    "  <name>guest</name>\n"
    "  <uuid>C7A5FDBDEDAF9455926AD65C16DB1809</uuid>\n"
    "  <description>a &amp; b &lt;c&gt; it's</description>\n"
    "  <memory unit='MiB'>512</memory>\n"
    "  <vcpu placement='static'>2</vcpu>\n"
    "  <os>\n"
    "    <type arch='x86_64' machine='pc'>hvm</type>\n"
    "  </os>\n"
    "  <devices>\n"
    "    <disk type='file' device='disk'>\n"
    "      <driver name='qemu' type='qcow2'/>\n"
    "      <source file='/img/top.qcow2'/>\n"
    "      <backingStore type='file' index='1'>\n"
    "        <format type='qcow2'/>\n"
    "        <source file='/img/mid.qcow2'/>\n"
    "        <backingStore type='block' index='2'>\n"
    "          <format type='raw'/>\n"
    "          <source dev='/dev/base'/>\n"
    "          <backingStore/>\n"
    "        </backingStore>\n"
    "      </backingStore>\n"
    "      <target dev='vda' bus='virtio'/>\n"
    "      <shareable/>\n"
    "    </disk>\n"
    "    <disk type='file' device='cdrom'>\n"
    "      <target dev='hdc' bus='ide'/>\n"
    "    </disk>\n"
    "    <graphics type='vnc' port='-1' passwd='secret'/>\n"
    "  </devices>\n"
    "  <qemu:commandline>\n"
    "    <qemu:arg value='-S'/>\n"
    "  </qemu:commandline>\n"
    "</domain>\n";

START_TEST(test_domain_model)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(VbkDomainDef) def =
        vbk_domain_def_parse_string(rich_domain, 0, &err);
    VbkDomainDisk *vda;
    VbkDomainDisk *hdc;

    ck_assert_msg(def != NULL, "%s", err ? err->message : "");
    ck_assert_str_eq(def->virt_type, "kvm");
    ck_assert_str_eq(def->name, "guest");
    ck_assert_str_eq(def->uuid, "c7a5fdbd-edaf-9455-926a-d65c16db1809");
    ck_assert_uint_eq(def->memory_kib, 512 * 1024);
    ck_assert_uint_eq(def->vcpus, 2);
    ck_assert_str_eq(def->os_type, "hvm");
    ck_assert_str_eq(def->os_arch, "x86_64");
    ck_assert_uint_eq(def->disks->len, 2);
    vda = vbk_domain_def_find_disk(def, "/img/top.qcow2");
    ck_assert_ptr_eq(vda, def->disks->pdata[0]);
    ck_assert_str_eq(vda->dst, "vda");
    ck_assert_str_eq(vda->src->format, "qcow2");
    ck_assert(vda->shareable && !vda->readonly);
    ck_assert_str_eq(vda->src->backing->path, "/img/mid.qcow2");
    ck_assert_uint_eq(vda->src->backing->index, 1);
    ck_assert_int_eq(vda->src->backing->backing->type, VBK_STORAGE_TYPE_BLOCK);
    ck_assert_str_eq(vda->src->backing->backing->path, "/dev/base");
    ck_assert_ptr_null(vda->src->backing->backing->backing);
    hdc = vbk_domain_def_disk_by_target(def, "hdc");
    ck_assert(hdc->readonly && vbk_domain_disk_is_empty(hdc));
}
END_TEST

START_TEST(test_domain_lossless)
{
    g_autoptr(VbkDomainDef) def =
        vbk_domain_def_parse_string(rich_domain, 0, NULL);
    g_autofree char *secure =
        vbk_domain_def_format(def, VBK_DOMAIN_FORMAT_SECURE);
    g_autofree char *plain = vbk_domain_def_format(def, 0);
    g_autofree char *expect = NULL;
    g_autoptr(GString) e = g_string_new(rich_domain);

    /* libvirt prints the uuid canonically and escapes the apostrophe */
    g_string_replace(e, "C7A5FDBDEDAF9455926AD65C16DB1809",
                     "c7a5fdbd-edaf-9455-926a-d65c16db1809", 1);
    g_string_replace(e, "it's", "it&apos;s", 1);
    expect = g_string_free(g_steal_pointer(&e), FALSE);
    ck_assert_str_eq(secure, expect);
    ck_assert_ptr_null(strstr(plain, "passwd"));
    ck_assert_ptr_nonnull(strstr(secure, "passwd='secret'"));
}
END_TEST

START_TEST(test_domain_uuid_generated)
{
    g_autoptr(VbkDomainDef) def = vbk_domain_def_parse_string(
        "<domain type='test'><name>t</name></domain>", 0, NULL);
    g_autofree char *out = vbk_domain_def_format(def, 0);
    g_autofree char *expect = g_strdup_printf(
        "<domain type='test'>\n  <name>t</name>\n  <uuid>%s</uuid>\n"
        "</domain>\n",
        def->uuid);

    ck_assert(g_uuid_string_is_valid(def->uuid));
    ck_assert_str_eq(out, expect);
}
END_TEST

START_TEST(test_domain_set_source)
{
    g_autoptr(VbkDomainDef) def =
        vbk_domain_def_parse_string(rich_domain, 0, NULL);
    g_autoptr(VbkDomainDef) copy = NULL;
    g_autofree char *out = NULL;
    VbkDomainDisk *vda = def->disks->pdata[0];

    vbk_domain_disk_set_source(vda, "/img/new.qcow2", "raw");
    out = vbk_domain_def_format(def, VBK_DOMAIN_FORMAT_SECURE);
    ck_assert_ptr_nonnull(strstr(out, "<driver name='qemu' type='raw'/>\n"
                                      "      <source file='/img/new.qcow2'/>"));
    copy = vbk_domain_def_copy(def);
    ck_assert_str_eq(((VbkDomainDisk *) copy->disks->pdata[0])->src->path,
                     "/img/new.qcow2");
}
END_TEST

/* The <domain> of libvirt's redefine fixture, and the rich domain
 * above, formatted standalone: valid for xmllint against domain.rng,
 * both through vbk_xml_validate and the real xmllint. */
START_TEST(test_domain_schema)
{
    g_autofree char *path = g_build_filename(
        vbk_test_shared_dir(), "conformance", "libvirt",
        "qemudomaincheckpointxml2xmlout", "redefine.xml", NULL);
    g_autofree char *xml = NULL;
    g_autoptr(GError) err = NULL;
    g_autoptr(VbkCheckpointDef) cp = NULL;
    const char *docs[2];
    g_autofree char *out0 = NULL;
    g_autofree char *out1 = NULL;
    g_autoptr(VbkDomainDef) rich = NULL;
    int i;

    ck_assert(g_file_get_contents(path, &xml, NULL, NULL));
    cp = vbk_checkpoint_def_parse_string(xml, 0, VBK_CHECKPOINT_PARSE_REDEFINE,
                                         &err);
    ck_assert_ptr_nonnull(cp);
    rich = vbk_domain_def_parse_string(rich_domain, VBK_DOMAIN_PARSE_VALIDATE,
                                       &err);
    ck_assert_msg(rich != NULL, "%s", err ? err->message : "");
    docs[0] = out0 = vbk_domain_def_format(cp->dom, VBK_DOMAIN_FORMAT_SECURE);
    docs[1] = out1 = vbk_domain_def_format(rich, VBK_DOMAIN_FORMAT_SECURE);
    for (i = 0; i < 2; i++) {
        g_autofree char *dir = vbk_test_tmpdir_new();
        g_autofree char *file = g_build_filename(dir, "d.xml", NULL);
        g_autofree char *so = NULL;
        g_autofree char *se = NULL;
        const char *argv[] = {
            "xmllint",   "--noout",
            "--relaxng", "/usr/share/libvirt/schemas/domain.rng",
            file,        NULL};
        g_autoptr(VbkDomainDef) again = vbk_domain_def_parse_string(
            docs[i], VBK_DOMAIN_PARSE_VALIDATE, &err);

        ck_assert_msg(again != NULL, "%s", err ? err->message : "");
        ck_assert(g_file_set_contents(file, docs[i], -1, NULL));
        ck_assert_msg(vbk_test_spawn(argv, &so, &se) == 0, "%s", se);
        vbk_test_tmpdir_remove(dir);
    }

    /* and an invalid one is refused with libvirt's schema error */
    ck_assert_ptr_null(vbk_domain_def_parse_string(
        "<domain type='kvm'><name>x</name><bogus/></domain>",
        VBK_DOMAIN_PARSE_VALIDATE, &err));
    ck_assert_int_eq(err->code, VBK_XML_ERR_XML_INVALID_SCHEMA);
}
END_TEST

START_TEST(test_node_fixture)
{
    g_autofree char *dir = vbk_test_tmpdir_new();
    g_autofree char *node = g_build_filename(dir, "node.xml", NULL);
    g_autofree char *dom = g_build_filename(dir, "dom1.xml", NULL);
    g_autoptr(GError) err = NULL;
    g_autoptr(VbkNodeDef) def = NULL;
    VbkDomainDef *d;

    ck_assert(g_file_set_contents(
        dom,
        "<domain type='test'><name>fromfile</name><memory>1024</memory>"
        "<devices><disk type='file'><source file='/x.qcow2'/>"
        "<target dev='vda'/></disk></devices></domain>",
        -1, NULL));
    ck_assert(g_file_set_contents(
        node,
        "<node><cpu><mhz>6000</mhz><model>i686</model><active>50</active>"
        "<nodes>4</nodes><sockets>4</sockets><cores>4</cores>"
        "<threads>2</threads></cpu><memory>8192000</memory>"
        "<domain file='dom1.xml'/>"
        "<domain type='test' "
        "xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>"
        "<name>inline</name><test:runstate>5</test:runstate>"
        "<test:transient/></domain>"
        "<network file='net.xml'/></node>",
        -1, NULL));
    def = vbk_node_def_load_fixture(node, &err);
    ck_assert_msg(def != NULL, "%s", err ? err->message : "");
    ck_assert_uint_eq(def->domains->len, 2);
    ck_assert_uint_eq(def->cpu_mhz, 6000);
    ck_assert_uint_eq(def->cpu_threads, 2);
    ck_assert_uint_eq(def->memory_kib, 8192000);
    d = vbk_node_def_find_domain(def, "fromfile");
    ck_assert_ptr_nonnull(d);
    ck_assert_str_eq(((VbkDomainDisk *) d->disks->pdata[0])->src->path,
                     "/x.qcow2");
    d = vbk_node_def_find_domain(def, "inline");
    ck_assert_int_eq(d->test_runstate, 5);
    ck_assert(d->test_transient);
    g_clear_pointer(&def, vbk_node_def_free);

    /* a bare <domain> file is a one-domain fixture */
    def = vbk_node_def_load_fixture(dom, &err);
    ck_assert_uint_eq(def->domains->len, 1);
    vbk_test_tmpdir_remove(dir);
}
END_TEST

START_TEST(test_hostile_doctype)
{
    static const char *const docs[] = {
        "<!DOCTYPE d [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;'>]>"
        "<domainbackup><incremental>&b;</incremental></domainbackup>",
        "<!DOCTYPE d SYSTEM 'http://example.invalid/x.dtd'><domainbackup/>",
        "<!DOCTYPE d [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>"
        "<domainbackup><incremental>&x;</incremental></domainbackup>",
    };
    g_autoptr(GError) err = NULL;

    ck_assert_ptr_null(vbk_backup_def_parse_string(docs[_i], 0, &err));
    ck_assert_str_eq(err->message,
                     "XML document must not contain a DOCTYPE declaration");
}
END_TEST

START_TEST(test_hostile_depth_and_size)
{
    g_autoptr(GString) deep = g_string_new("<domaincheckpoint><description>");
    g_autoptr(GError) err = NULL;
    g_autofree char *big = NULL;
    int i;

    for (i = 0; i < 250; i++)
        g_string_append(deep, "<a>");
    for (i = 0; i < 250; i++)
        g_string_append(deep, "</a>");
    g_string_append(deep, "</description></domaincheckpoint>");
    ck_assert_ptr_null(vbk_checkpoint_def_parse_string(deep->str, 1, 0, &err));
    ck_assert_int_eq(err->code, VBK_XML_ERR_XML_ERROR);
    g_clear_error(&err);

    big = g_malloc(VBK_XML_MAX_DOC_SIZE + 2);
    memset(big, ' ', VBK_XML_MAX_DOC_SIZE + 1);
    big[VBK_XML_MAX_DOC_SIZE + 1] = '\0';
    ck_assert_ptr_null(vbk_checkpoint_def_parse_string(big, 1, 0, &err));
    ck_assert(g_str_has_prefix(err->message, "XML document is too large"));
}
END_TEST

static Suite *
domain_suite(void)
{
    Suite *s = suite_create("xml-domain");
    TCase *tc = tcase_create("domain");
    TCase *th = tcase_create("hostile");

    tcase_add_test(tc, test_domain_model);
    tcase_add_test(tc, test_domain_lossless);
    tcase_add_test(tc, test_domain_uuid_generated);
    tcase_add_test(tc, test_domain_set_source);
    tcase_add_test(tc, test_domain_schema);
    tcase_add_test(tc, test_node_fixture);
    tcase_add_loop_test(th, test_hostile_doctype, 0, 3);
    tcase_add_test(th, test_hostile_depth_and_size);
    suite_add_tcase(s, tc);
    suite_add_tcase(s, th);
    return s;
}

int
main(void)
{
    return vbk_test_run(domain_suite());
}
