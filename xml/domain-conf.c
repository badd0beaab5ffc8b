/*
 * domain-conf.c: a libvirt <domain> definition, modelled only as far as
 * backups need it and otherwise kept verbatim.
 *
 * libvirt's full domain model is enormous; vbackup needs the name, uuid,
 * type, memory, vcpus, OS and the disks (type, device, driver, source,
 * backing chain, target, readonly, shareable). The def therefore keeps
 * its own copy of the parsed <domain> element and reads those fields out
 * of it. Formatting writes the element back in libvirt's layout
 * (vbk_xml_buf_node), so a definition that libvirt wrote comes out
 * byte-identical, and nothing unmodelled (controllers, interfaces,
 * <qemu:commandline>, test-driver extensions...) is lost. Changes
 * vbackup makes (a disk's new source after a snapshot, say) go through
 * setters that update both the fields and the element.
 *
 * A definition without <uuid> gets a random one, inserted after <name>
 * as libvirt would print it.
 */
#include "domain-conf.h"

#include <glib/gi18n-lib.h>
#include <string.h>

#define TEST_NS "http://libvirt.org/schemas/domain/test/1.0"

static const char *const virt_type_names[] = {
    "none", "qemu",      "kqemu", "kvm",    "xen",    "lxc",
    "uml",  "openvz",    "test",  "vmware", "hyperv", "vbox",
    "phyp", "parallels", "bhyve", "vz",     "hvf",    NULL,
};

static const char *const disk_device_names[] = {
    "disk", "cdrom", "floppy", "lun", NULL,
};

static void
storage_free(VbkDomainStorage *st)
{
    while (st) {
        VbkDomainStorage *next = st->backing;
        g_free(st->path);
        g_free(st->format);
        g_free(st);
        st = next;
    }
}

static void
disk_free(gpointer p)
{
    VbkDomainDisk *disk = p;

    g_free(disk->driver_name);
    storage_free(disk->src);
    g_free(disk->dst);
    g_free(disk->bus);
    g_free(disk);
}

void
vbk_domain_def_free(VbkDomainDef *def)
{
    if (!def)
        return;
    if (def->doc)
        xmlFreeDoc(def->doc);
    g_free(def->virt_type);
    g_free(def->name);
    g_free(def->os_type);
    g_free(def->os_arch);
    g_free(def->os_machine);
    if (def->disks)
        g_ptr_array_unref(def->disks);
    g_free(def);
}

/* Canonical lower-case 8-4-4-4-12 form of a uuid written with or
 * without dashes; FALSE if malformed. */
static gboolean
uuid_canonical(const char *in, char out[37])
{
    char hex[33];
    int n = 0;
    const char *p;

    for (p = in; *p; p++) {
        if (*p == '-')
            continue;
        if (!g_ascii_isxdigit(*p) || n >= 32)
            return FALSE;
        hex[n++] = g_ascii_tolower(*p);
    }
    if (n != 32)
        return FALSE;
    hex[32] = '\0';
    g_snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12,
               hex + 16, hex + 20);
    return TRUE;
}

static gboolean
parse_uuid(VbkDomainDef *def, xmlNodePtr root, GError **error)
{
    xmlNodePtr node = vbk_xml_child(root, "uuid");
    g_autofree char *text = vbk_xml_node_text(node);

    if (!node) {
        g_autofree char *gen = g_uuid_string_random();
        xmlNodePtr name = vbk_xml_child(root, "name");
        xmlNodePtr n =
            xmlNewDocNode(def->doc, NULL, BAD_CAST "uuid", BAD_CAST gen);
        g_strlcpy(def->uuid, gen, sizeof(def->uuid));
        if (name)
            xmlAddNextSibling(name, n);
        else
            xmlAddChild(root, n);
        return TRUE;
    }
    if (!text || !uuid_canonical(g_strstrip(text), def->uuid)) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_INTERNAL_ERROR, "%s",
                    _("malformed uuid element"));
        return FALSE;
    }
    /* libvirt prints the canonical form, as plain text */
    if (strcmp(text, def->uuid) != 0 || !node->children ||
        node->children->next || node->children->type != XML_TEXT_NODE)
        xmlNodeSetContent(node, BAD_CAST def->uuid);
    return TRUE;
}

static gboolean
parse_memory(VbkDomainDef *def, xmlNodePtr root, GError **error)
{
    static const struct {
        const char *unit;
        guint64 bytes;
    } units[] = {
        {"b", 1},          {"bytes", 1},        {"KB", 1000},
        {"k", 1024},       {"KiB", 1024},       {"MB", 1000000},
        {"M", 1 << 20},    {"MiB", 1 << 20},    {"GB", 1000000000},
        {"G", 1 << 30},    {"GiB", 1 << 30},    {"TB", 1000000000000ULL},
        {"T", 1ULL << 40}, {"TiB", 1ULL << 40},
    };
    xmlNodePtr node = vbk_xml_child(root, "memory");
    g_autofree char *text = vbk_xml_node_text(node);
    g_autofree char *unit = NULL;
    guint64 scale = 1024;
    guint64 val;
    gsize i;

    if (!node)
        return TRUE;
    if ((unit = vbk_xml_prop(node, "unit"))) {
        scale = 0;
        for (i = 0; i < G_N_ELEMENTS(units); i++) {
            if (strcmp(units[i].unit, unit) == 0)
                scale = units[i].bytes;
        }
    }
    if (!text || scale == 0 ||
        !g_ascii_string_to_unsigned(g_strstrip(text), 10, 0,
                                    G_MAXUINT64 / scale, &val, NULL)) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR,
                    _("could not parse memory element %s"), "./memory[1]");
        return FALSE;
    }
    def->memory_kib = val * scale / 1024;
    return TRUE;
}

/* Path of a <source> for storage @type. */
static char *
source_path(xmlNodePtr source, VbkStorageType type)
{
    switch (type) {
    case VBK_STORAGE_TYPE_BLOCK:
        return vbk_xml_prop(source, "dev");
    case VBK_STORAGE_TYPE_DIR:
        return vbk_xml_prop(source, "dir");
    case VBK_STORAGE_TYPE_NETWORK:
        return vbk_xml_prop(source, "name");
    case VBK_STORAGE_TYPE_VOLUME:
        return vbk_xml_prop(source, "volume");
    case VBK_STORAGE_TYPE_NVME:
    case VBK_STORAGE_TYPE_VHOST_USER:
        return vbk_xml_prop(source, "path");
    case VBK_STORAGE_TYPE_FILE:
    case VBK_STORAGE_TYPE_NONE:
    case VBK_STORAGE_TYPE_LAST:
        break;
    }
    return vbk_xml_prop(source, "file");
}

static gboolean
storage_type_parse(xmlNodePtr node, VbkStorageType *type, GError **error)
{
    int val = VBK_STORAGE_TYPE_FILE;

    if (vbk_xml_prop_enum(node, "type", vbk_storage_type_names, FALSE, TRUE,
                          &val, error) < 0)
        return FALSE;
    *type = val;
    return TRUE;
}

/* Parse the chain of <backingStore> elements below @parent into
 * @layer->backing. An empty <backingStore/> ends the chain. */
static gboolean
backing_parse(VbkDomainStorage *layer, xmlNodePtr parent, GError **error)
{
    xmlNodePtr node;

    while ((node = vbk_xml_child(parent, "backingStore"))) {
        VbkDomainStorage *st;
        xmlNodePtr source = vbk_xml_child(node, "source");

        if (!node->properties && !node->children)
            break;
        st = g_new0(VbkDomainStorage, 1);
        layer->backing = st;
        if (!storage_type_parse(node, &st->type, error))
            return FALSE;
        if (source)
            st->path = source_path(source, st->type);
        st->format = vbk_xml_prop(vbk_xml_child(node, "format"), "type");
        if (vbk_xml_prop_uint(node, "index", FALSE, &st->index, error) < 0)
            return FALSE;
        layer = st;
        parent = node;
    }
    return TRUE;
}

static VbkDomainDisk *
disk_parse(xmlNodePtr node, GError **error)
{
    g_autoptr(GPtrArray) holder = g_ptr_array_new_with_free_func(disk_free);
    VbkDomainDisk *disk = g_new0(VbkDomainDisk, 1);
    xmlNodePtr source = vbk_xml_child(node, "source");
    xmlNodePtr driver = vbk_xml_child(node, "driver");
    xmlNodePtr target = vbk_xml_child(node, "target");
    int device = 0;

    g_ptr_array_add(holder, disk);
    disk->node = node;
    disk->src = g_new0(VbkDomainStorage, 1);
    if (!storage_type_parse(node, &disk->src->type, error))
        return NULL;
    if (vbk_xml_prop_enum(node, "device", disk_device_names, FALSE, FALSE,
                          &device, error) < 0)
        return NULL;
    disk->device = device;
    if (source)
        disk->src->path = source_path(source, disk->src->type);
    if (driver) {
        disk->driver_name = vbk_xml_prop(driver, "name");
        disk->src->format = vbk_xml_prop(driver, "type");
    }
    if (!backing_parse(disk->src, node, error))
        return NULL;
    disk->dst = vbk_xml_prop(target, "dev");
    disk->bus = vbk_xml_prop(target, "bus");
    if (!disk->dst) {
        if (disk->src->path)
            g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_NO_TARGET,
                        _("missing target information for device %s"),
                        disk->src->path);
        else
            g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_NO_TARGET, "%s",
                        _("missing target information for device"));
        return NULL;
    }
    disk->readonly = vbk_xml_child(node, "readonly") != NULL ||
                     disk->device == VBK_DOMAIN_DISK_DEVICE_CDROM;
    disk->shareable = vbk_xml_child(node, "shareable") != NULL;
    return g_ptr_array_steal_index(holder, 0);
}

static gboolean
parse_disks(VbkDomainDef *def, xmlNodePtr root, GError **error)
{
    xmlNodePtr devices = vbk_xml_child(root, "devices");
    xmlNodePtr cur;
    guint i;

    for (cur = devices ? devices->children : NULL; cur; cur = cur->next) {
        VbkDomainDisk *disk;

        if (!vbk_xml_node_is(cur, "disk"))
            continue;
        if (!(disk = disk_parse(cur, error)))
            return FALSE;
        for (i = 0; i < def->disks->len; i++) {
            VbkDomainDisk *other = def->disks->pdata[i];
            if (strcmp(other->dst, disk->dst) == 0) {
                g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR,
                            _("target '%s' duplicated for disk sources "
                              "'%s' and '%s'"),
                            disk->dst, other->src->path ? other->src->path : "",
                            disk->src->path ? disk->src->path : "");
                disk_free(disk);
                return FALSE;
            }
        }
        g_ptr_array_add(def->disks, disk);
    }
    return TRUE;
}

static void
parse_test_ns(VbkDomainDef *def, xmlNodePtr root)
{
    xmlNodePtr cur;

    for (cur = root->children; cur; cur = cur->next) {
        g_autofree char *text = NULL;
        gint64 v;

        if (cur->type != XML_ELEMENT_NODE || !cur->ns ||
            g_strcmp0((const char *) cur->ns->href, TEST_NS) != 0)
            continue;
        if (strcmp((const char *) cur->name, "transient") == 0)
            def->test_transient = TRUE;
        if (strcmp((const char *) cur->name, "runstate") == 0 &&
            (text = vbk_xml_node_text(cur)) &&
            g_ascii_string_to_signed(text, 10, 0, 7, &v, NULL))
            def->test_runstate = (int) v;
    }
}

static gboolean
parse_os_and_cpus(VbkDomainDef *def, xmlNodePtr root, GError **error)
{
    xmlNodePtr os = vbk_xml_child(root, "os");
    xmlNodePtr type = vbk_xml_child(os, "type");
    g_autofree char *vcpu = vbk_xml_child_text(root, "vcpu");
    guint64 v;

    def->os_type = vbk_xml_node_text(type);
    if (def->os_type)
        g_strstrip(def->os_type);
    def->os_arch = vbk_xml_prop(type, "arch");
    def->os_machine = vbk_xml_prop(type, "machine");
    if (vcpu) {
        if (!g_ascii_string_to_unsigned(g_strstrip(vcpu), 10, 1, G_MAXUINT16,
                                        &v, NULL)) {
            g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR, "%s",
                        _("maximum vcpus count must be an integer"));
            return FALSE;
        }
        def->vcpus = (guint) v;
    }
    return TRUE;
}

static VbkDomainDef *
domain_parse_doc(xmlDocPtr doc, guint flags, GError **error)
{
    g_autoptr(VbkDomainDef) def = g_new0(VbkDomainDef, 1);
    xmlNodePtr root = xmlDocGetRootElement(doc);
    int vt = 0;

    def->doc = doc;
    def->disks = g_ptr_array_new_with_free_func(disk_free);
    def->test_runstate = -1;
    if ((flags & VBK_DOMAIN_PARSE_VALIDATE) &&
        !vbk_xml_validate(doc, "domain.rng", error))
        return NULL;
    if (vbk_xml_prop_enum(root, "type", virt_type_names, TRUE, FALSE, &vt,
                          error) < 0)
        return NULL;
    def->virt_type = g_strdup(virt_type_names[vt]);
    if (!(def->name = vbk_xml_child_text(root, "name"))) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_NO_NAME, "%s",
                    _("missing name information"));
        return NULL;
    }
    if (!parse_uuid(def, root, error) || !parse_memory(def, root, error) ||
        !parse_os_and_cpus(def, root, error) || !parse_disks(def, root, error))
        return NULL;
    parse_test_ns(def, root);
    return g_steal_pointer(&def);
}

VbkDomainDef *
vbk_domain_def_parse_string(const char *xml, guint flags, GError **error)
{
    xmlDocPtr doc =
        vbk_xml_parse(xml, -1, _("(domain_definition)"), "domain", error);

    if (!doc)
        return NULL;
    return domain_parse_doc(doc, flags, error);
}

VbkDomainDef *
vbk_domain_def_parse_node(xmlNodePtr node, guint flags, GError **error)
{
    xmlDocPtr doc;
    xmlNodePtr copy;

    if (!vbk_xml_node_is(node, "domain")) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR,
                    _("expecting root element of '%s', not '%s'"), "domain",
                    node ? (const char *) node->name : "");
        return NULL;
    }
    doc = xmlNewDoc(BAD_CAST "1.0");
    copy = xmlDocCopyNode(node, doc, 1);
    xmlDocSetRootElement(doc, copy);
    xmlReconciliateNs(doc, copy);
    return domain_parse_doc(doc, flags, error);
}

VbkDomainDef *
vbk_domain_def_copy(const VbkDomainDef *def)
{
    return vbk_domain_def_parse_node(xmlDocGetRootElement(def->doc), 0, NULL);
}

static gboolean
skip_insecure(xmlNodePtr elem, xmlAttrPtr attr)
{
    return vbk_xml_node_is(elem, "graphics") &&
           strcmp((const char *) attr->name, "passwd") == 0;
}

void
vbk_domain_def_format_buf(VbkXmlBuf *buf, const VbkDomainDef *def, guint flags)
{
    vbk_xml_buf_node(buf, xmlDocGetRootElement(def->doc),
                     (flags & VBK_DOMAIN_FORMAT_SECURE) ? NULL : skip_insecure);
}

char *
vbk_domain_def_format(const VbkDomainDef *def, guint flags)
{
    VbkXmlBuf buf;

    vbk_xml_buf_init(&buf, 0);
    vbk_domain_def_format_buf(&buf, def, flags);
    return vbk_xml_buf_steal(&buf);
}

VbkDomainDisk *
vbk_domain_def_disk_by_target(const VbkDomainDef *def, const char *dst)
{
    guint i;

    for (i = 0; dst && i < def->disks->len; i++) {
        VbkDomainDisk *disk = def->disks->pdata[i];
        if (strcmp(disk->dst, dst) == 0)
            return disk;
    }
    return NULL;
}

VbkDomainDisk *
vbk_domain_def_find_disk(const VbkDomainDef *def, const char *name)
{
    VbkDomainDisk *found = NULL;
    guint i;

    if ((found = vbk_domain_def_disk_by_target(def, name)))
        return found;
    if (!name || !g_path_is_absolute(name))
        return NULL;
    for (i = 0; i < def->disks->len; i++) {
        VbkDomainDisk *disk = def->disks->pdata[i];
        if (g_strcmp0(disk->src->path, name) == 0) {
            if (found)
                return NULL; /* ambiguous */
            found = disk;
        }
    }
    return found;
}

int
vbk_domain_def_disk_index(const VbkDomainDef *def, const VbkDomainDisk *disk)
{
    guint i;

    for (i = 0; i < def->disks->len; i++) {
        if (def->disks->pdata[i] == disk)
            return (int) i;
    }
    return -1;
}

gboolean
vbk_domain_disk_is_empty(const VbkDomainDisk *disk)
{
    return disk->src->type == VBK_STORAGE_TYPE_NONE || !disk->src->path;
}

void
vbk_domain_disk_set_source(VbkDomainDisk *disk,
                           const char *path,
                           const char *format)
{
    xmlNodePtr source = vbk_xml_child(disk->node, "source");
    const char *attr =
        disk->src->type == VBK_STORAGE_TYPE_BLOCK ? "dev" : "file";

    if (!source) {
        xmlNodePtr driver = vbk_xml_child(disk->node, "driver");
        source = xmlNewDocNode(disk->node->doc, NULL, BAD_CAST "source", NULL);
        if (driver)
            xmlAddNextSibling(driver, source);
        else if (disk->node->children)
            xmlAddPrevSibling(disk->node->children, source);
        else
            xmlAddChild(disk->node, source);
    }
    xmlSetProp(source, BAD_CAST attr, BAD_CAST path);
    g_free(disk->src->path);
    disk->src->path = g_strdup(path);
    if (format) {
        xmlNodePtr driver = vbk_xml_child(disk->node, "driver");
        if (!driver) {
            driver =
                xmlNewDocNode(disk->node->doc, NULL, BAD_CAST "driver", NULL);
            xmlAddPrevSibling(source, driver);
        }
        xmlSetProp(driver, BAD_CAST "type", BAD_CAST format);
        g_free(disk->src->format);
        disk->src->format = g_strdup(format);
    }
}
