/*
 * backup-conf.c: the <domainbackup> document of virDomainBackupBegin.
 *
 * A request names the mode (push: the hypervisor writes each disk to a
 * <target>; pull: it serves the disks over NBD from a <server>, with a
 * <scratch> image holding copy-before-write data), an optional
 * <incremental> checkpoint, and optionally the disks:
 *
 *     <domainbackup mode='pull'>
 *       <incremental>c1</incremental>
 *       <server transport='unix' socket='/run/backup.sock'/>
 *       <disks>
 *         <disk name='vda' type='file'>
 *           <scratch file='/tmp/vda.scratch'/>
 *         </disk>
 *         <disk name='vdb' backup='no'/>
 *       </disks>
 *     </domainbackup>
 *
 * Alignment against the domain (virDomainBackupAlignDisks) completes the
 * request: every domain disk appears exactly once, backupmode and the
 * per-disk incremental checkpoint are filled in, and disks without a
 * store get "<source path>.<suffix>". Output is byte-identical to libvirt
 * 9.0's virDomainBackupDefFormat.
 */
#include "backup-conf.h"

#include <glib/gi18n-lib.h>
#include <string.h>

static const char *const backup_type_names[] = {
    "default",
    "push",
    "pull",
    NULL,
};
static const char *const disk_state_names[] = {
    "", "running", "complete", "failed", "cancelling", "cancelled", NULL,
};
static const char *const disk_mode_names[] = {
    "default",
    "full",
    "incremental",
    NULL,
};
static const char *const transport_names[] = {
    "tcp",
    "unix",
    "rdma",
    NULL,
};

static void
backup_disk_free(gpointer p)
{
    VbkBackupDiskDef *disk = p;

    g_free(disk->name);
    g_free(disk->incremental);
    g_free(disk->exportname);
    g_free(disk->exportbitmap);
    vbk_storage_source_free(disk->store);
    g_free(disk);
}

static void
server_free(VbkBackupServer *server)
{
    if (!server)
        return;
    g_free(server->name);
    g_free(server->socket);
    g_free(server);
}

void
vbk_backup_def_free(VbkBackupDef *def)
{
    if (!def)
        return;
    g_free(def->incremental);
    server_free(def->server);
    if (def->disks)
        g_ptr_array_unref(def->disks);
    g_free(def->tls_alias);
    g_free(def->tls_secret_alias);
    g_free(def);
}

static gboolean
disk_parse_store(VbkBackupDiskDef *disk,
                 xmlNodePtr node,
                 gboolean push,
                 GError **error)
{
    g_autofree char *type = vbk_xml_prop(node, "type");
    g_autofree char *driver = NULL;
    xmlNodePtr cur;
    int val = VBK_STORAGE_TYPE_FILE;

    if (type) {
        val = vbk_xml_enum_from_string(vbk_storage_type_names, type);
        if (val <= 0) {
            g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR,
                        _("unknown disk backup type '%s'"), type);
            return FALSE;
        }
        if (val != VBK_STORAGE_TYPE_FILE && val != VBK_STORAGE_TYPE_BLOCK) {
            g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR,
                        _("unsupported disk backup type '%s'"), type);
            return FALSE;
        }
    }
    disk->store = vbk_storage_source_new(val);

    if ((cur = vbk_xml_child(node, push ? "target" : "scratch")) &&
        !vbk_storage_source_parse(disk->store, cur, error))
        return FALSE;

    if ((driver = vbk_xml_prop(vbk_xml_child(node, "driver"), "type"))) {
        val = vbk_xml_enum_from_string(vbk_storage_format_names, driver);
        if (val <= 0) {
            g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_CONFIG_UNSUPPORTED,
                        _("unknown disk backup driver '%s'"), driver);
            return FALSE;
        }
        if (!push && val != VBK_STORAGE_FORMAT_QCOW2) {
            g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_CONFIG_UNSUPPORTED,
                        _("pull mode backup for disk '%s' requires qcow2 "
                          "driver"),
                        disk->name);
            return FALSE;
        }
        disk->store->format = val;
    }
    return TRUE;
}

static VbkBackupDiskDef *
disk_parse(xmlNodePtr node, gboolean push, guint flags, GError **error)
{
    g_autoptr(GPtrArray) holder =
        g_ptr_array_new_with_free_func(backup_disk_free);
    VbkBackupDiskDef *disk = g_new0(VbkBackupDiskDef, 1);
    int val = 0;

    g_ptr_array_add(holder, disk);
    if (!(disk->name = vbk_xml_prop(node, "name"))) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR, "%s",
                    _("missing name from disk backup element"));
        return NULL;
    }
    if (vbk_xml_prop_enum(node, "backup", vbk_tristate_names, FALSE, TRUE, &val,
                          error) < 0)
        return NULL;
    disk->backup = val == VBK_TRISTATE_NO ? VBK_TRISTATE_NO : VBK_TRISTATE_YES;
    if (disk->backup == VBK_TRISTATE_NO)
        return g_ptr_array_steal_index(holder, 0);

    val = 0;
    if (vbk_xml_prop_enum(node, "backupmode", disk_mode_names, FALSE, TRUE,
                          &val, error) < 0)
        return NULL;
    disk->backupmode = val;
    disk->incremental = vbk_xml_prop(node, "incremental");
    if (!push) {
        disk->exportname = vbk_xml_prop(node, "exportname");
        disk->exportbitmap = vbk_xml_prop(node, "exportbitmap");
    }
    val = 0;
    if ((flags & VBK_BACKUP_PARSE_INTERNAL) &&
        vbk_xml_prop_enum(node, "state", disk_state_names, FALSE, TRUE, &val,
                          error) < 0)
        return NULL;
    disk->state = val;
    if (!disk_parse_store(disk, node, push, error))
        return NULL;
    return g_ptr_array_steal_index(holder, 0);
}

static gboolean
server_parse(VbkBackupDef *def, xmlNodePtr node, GError **error)
{
    g_autofree char *transport = vbk_xml_prop(node, "transport");
    VbkBackupServer *server = g_new0(VbkBackupServer, 1);
    int val = 0;

    def->server = server;
    if (transport) {
        if ((val = vbk_xml_enum_from_string(transport_names, transport)) < 0) {
            g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_CONFIG_UNSUPPORTED,
                        _("unknown protocol transport type '%s'"), transport);
            return FALSE;
        }
        server->transport = val;
    }
    server->socket = vbk_xml_prop(node, "socket");
    if (server->transport == VBK_BACKUP_TRANSPORT_UNIX && !server->socket) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR, "%s",
                    _("missing socket for unix transport"));
        return FALSE;
    }
    if (server->transport != VBK_BACKUP_TRANSPORT_UNIX && server->socket) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR,
                    _("transport '%s' does not support socket attribute"),
                    transport_names[server->transport]);
        return FALSE;
    }
    if (server->transport != VBK_BACKUP_TRANSPORT_UNIX) {
        if (!(server->name = vbk_xml_prop(node, "name"))) {
            g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR, "%s",
                        _("missing name for host"));
            return FALSE;
        }
        if (vbk_xml_prop_uint(node, "port", FALSE, &server->port, error) < 0)
            return FALSE;
    }
    if (server->transport == VBK_BACKUP_TRANSPORT_RDMA) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR, "%s",
                    _("transport rdma is not supported for <server>"));
        return FALSE;
    }
    if (server->transport == VBK_BACKUP_TRANSPORT_UNIX &&
        !g_path_is_absolute(server->socket)) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR,
                    _("backup socket path '%s' must be absolute"),
                    server->socket);
        return FALSE;
    }
    val = 0;
    if (vbk_xml_prop_enum(node, "tls", vbk_tristate_names, FALSE, TRUE, &val,
                          error) < 0)
        return FALSE;
    def->tls = val;
    return TRUE;
}

static void
private_parse(VbkBackupDef *def, xmlNodePtr node)
{
    xmlNodePtr objects = vbk_xml_child(node, "objects");
    xmlNodePtr cur;

    for (cur = objects ? objects->children : NULL; cur; cur = cur->next) {
        g_autofree char *type = vbk_xml_prop(cur, "type");

        if (vbk_xml_node_is(cur, "TLSx509") && !def->tls_alias)
            def->tls_alias = vbk_xml_prop(cur, "alias");
        else if (vbk_xml_node_is(cur, "secret") &&
                 g_strcmp0(type, "tlskey") == 0 && !def->tls_secret_alias)
            def->tls_secret_alias = vbk_xml_prop(cur, "alias");
    }
}

static gboolean
disks_parse(VbkBackupDef *def, xmlNodePtr root, guint flags, GError **error)
{
    gboolean push = def->type == VBK_BACKUP_TYPE_PUSH;
    xmlNodePtr disks = vbk_xml_child(root, "disks");
    xmlNodePtr cur;

    for (cur = disks ? disks->children : NULL; cur; cur = cur->next) {
        VbkBackupDiskDef *disk;

        if (cur->type != XML_ELEMENT_NODE)
            continue;
        if (!(disk = disk_parse(cur, push, flags, error)))
            return FALSE;
        g_ptr_array_add(def->disks, disk);
    }
    return TRUE;
}

VbkBackupDef *
vbk_backup_def_parse_node(xmlNodePtr root, guint flags, GError **error)
{
    g_autoptr(VbkBackupDef) def = g_new0(VbkBackupDef, 1);
    g_autofree char *mode = vbk_xml_prop(root, "mode");
    xmlNodePtr node;

    def->disks = g_ptr_array_new_with_free_func(backup_disk_free);
    def->type = VBK_BACKUP_TYPE_PUSH;
    if (mode) {
        int val = vbk_xml_enum_from_string(backup_type_names, mode);
        if (val <= 0) {
            g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_CONFIG_UNSUPPORTED,
                        _("unknown backup mode '%s'"), mode);
            return NULL;
        }
        def->type = val;
    }
    def->incremental = vbk_xml_child_text(root, "incremental");
    if ((node = vbk_xml_child(root, "server"))) {
        if (def->type != VBK_BACKUP_TYPE_PULL) {
            g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR, "%s",
                        _("use of <server> requires pull mode backup"));
            return NULL;
        }
        if (!server_parse(def, node, error))
            return NULL;
    }
    if (!disks_parse(def, root, flags, error))
        return NULL;
    if ((flags & VBK_BACKUP_PARSE_INTERNAL) &&
        (node = vbk_xml_child(root, "privateData")))
        private_parse(def, node);
    return g_steal_pointer(&def);
}

VbkBackupDef *
vbk_backup_def_parse_string(const char *xml, guint flags, GError **error)
{
    g_autoptr(xmlDoc) doc =
        vbk_xml_parse(xml, -1, _("(domain_backup)"), "domainbackup", error);

    if (!doc)
        return NULL;
    if ((flags & VBK_BACKUP_PARSE_VALIDATE) &&
        !(flags & VBK_BACKUP_PARSE_INTERNAL) &&
        !vbk_xml_validate(doc, "domainbackup.rng", error))
        return NULL;
    return vbk_backup_def_parse_node(xmlDocGetRootElement(doc), flags, error);
}

/* ---- format ------------------------------------------------------------ */

static void
disk_format(VbkXmlBuf *buf,
            const VbkBackupDiskDef *disk,
            gboolean push,
            gboolean internal)
{
    VbkXmlBuf attrs;
    VbkXmlBuf child;

    vbk_xml_buf_init(&attrs, 0);
    vbk_xml_buf_init_child(&child, buf);
    vbk_xml_buf_attr(&attrs, "name", disk->name);
    vbk_xml_buf_attr(&attrs, "backup", vbk_tristate_names[disk->backup]);
    if (internal && disk->state != VBK_BACKUP_DISK_STATE_NONE)
        vbk_xml_buf_attr(&attrs, "state", disk_state_names[disk->state]);
    if (disk->backup == VBK_TRISTATE_YES && disk->store) {
        const VbkStorageSource *store = disk->store;

        vbk_xml_buf_attr(&attrs, "type", vbk_storage_type_names[store->type]);
        if (disk->backupmode != VBK_BACKUP_DISK_MODE_DEFAULT)
            vbk_xml_buf_attr(&attrs, "backupmode",
                             disk_mode_names[disk->backupmode]);
        vbk_xml_buf_attr(&attrs, "incremental", disk->incremental);
        vbk_xml_buf_attr(&attrs, "exportname", disk->exportname);
        vbk_xml_buf_attr(&attrs, "exportbitmap", disk->exportbitmap);
        if (store->id != 0)
            vbk_xml_buf_printf(&attrs, " index='%u'", store->id);
        if (store->format > 0)
            vbk_xml_buf_printf(&child, "<driver type='%s'/>\n",
                               vbk_storage_format_names[store->format]);
        vbk_storage_source_format(&child, store, push ? "target" : "scratch");
    }
    vbk_xml_buf_element(buf, "disk", &attrs, &child);
}

static void
server_format(VbkXmlBuf *buf, const VbkBackupDef *def)
{
    const VbkBackupServer *server = def->server;
    VbkXmlBuf attrs;

    vbk_xml_buf_init(&attrs, 0);
    vbk_xml_buf_attr(&attrs, "transport", transport_names[server->transport]);
    if (def->tls != VBK_TRISTATE_ABSENT)
        vbk_xml_buf_attr(&attrs, "tls", vbk_tristate_names[def->tls]);
    vbk_xml_buf_attr(&attrs, "name", server->name);
    if (server->port)
        vbk_xml_buf_printf(&attrs, " port='%u'", server->port);
    vbk_xml_buf_attr(&attrs, "socket", server->socket);
    vbk_xml_buf_element(buf, "server", &attrs, NULL);
}

static void
private_format(VbkXmlBuf *buf, const VbkBackupDef *def)
{
    VbkXmlBuf priv;
    VbkXmlBuf objects;

    vbk_xml_buf_init_child(&priv, buf);
    vbk_xml_buf_init_child(&objects, &priv);
    if (def->tls_secret_alias) {
        vbk_xml_buf_add(&objects, "<secret type='tlskey'");
        vbk_xml_buf_attr(&objects, "alias", def->tls_secret_alias);
        vbk_xml_buf_add(&objects, "/>\n");
    }
    if (def->tls_alias) {
        vbk_xml_buf_add(&objects, "<TLSx509");
        vbk_xml_buf_attr(&objects, "alias", def->tls_alias);
        vbk_xml_buf_add(&objects, "/>\n");
    }
    vbk_xml_buf_element(&priv, "objects", NULL, &objects);
    vbk_xml_buf_element(buf, "privateData", NULL, &priv);
}

void
vbk_backup_def_format_buf(VbkXmlBuf *buf,
                          const VbkBackupDef *def,
                          gboolean internal)
{
    gboolean push = def->type != VBK_BACKUP_TYPE_PULL;
    VbkXmlBuf attrs;
    VbkXmlBuf child;
    VbkXmlBuf disks;
    guint i;

    vbk_xml_buf_init(&attrs, 0);
    vbk_xml_buf_init_child(&child, buf);
    vbk_xml_buf_init_child(&disks, &child);
    vbk_xml_buf_attr(
        &attrs, "mode",
        backup_type_names[push ? VBK_BACKUP_TYPE_PUSH : VBK_BACKUP_TYPE_PULL]);
    vbk_xml_buf_text_element(&child, "incremental", def->incremental);
    if (def->server)
        server_format(&child, def);
    for (i = 0; i < def->disks->len; i++)
        disk_format(&disks, def->disks->pdata[i], push, internal);
    vbk_xml_buf_element(&child, "disks", NULL, &disks);
    if (internal)
        private_format(&child, def);
    vbk_xml_buf_element(buf, "domainbackup", &attrs, &child);
}

char *
vbk_backup_def_format(const VbkBackupDef *def, gboolean internal)
{
    VbkXmlBuf buf;

    vbk_xml_buf_init(&buf, 0);
    vbk_backup_def_format_buf(&buf, def, internal);
    return vbk_xml_buf_steal(&buf);
}
