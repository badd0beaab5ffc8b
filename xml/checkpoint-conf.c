/*
 * checkpoint-conf.c: the <domaincheckpoint> document.
 *
 * A checkpoint marks a point in time from which incremental backups
 * start; on each participating disk it is a persistent dirty bitmap of
 * the same name.
 *
 *     <domaincheckpoint>
 *       <name>c2</name>
 *       <description>after updates</description>
 *       <parent><name>c1</name></parent>
 *       <creationTime>1553648510</creationTime>
 *       <disks>
 *         <disk name='vda' checkpoint='bitmap' bitmap='c2'/>
 *         <disk name='vdb' checkpoint='no'/>
 *       </disks>
 *       <domain type='kvm'>...</domain>
 *     </domaincheckpoint>
 *
 * On creation only name, description and disks are read; the creation
 * time is now and names itself when no name is given. Redefinition
 * (restoring metadata, e.g. after a daemon restart) reads everything
 * and requires name and creationTime. Alignment against the nested
 * <domain> gives one entry per domain disk, in domain order.
 * Output matches libvirt 9.0's virDomainCheckpointDefFormat.
 */
#include "checkpoint-conf.h"

#include <glib/gi18n-lib.h>
#include <string.h>

static const char *const checkpoint_type_names[] = {
    "default",
    "no",
    "bitmap",
    NULL,
};

void
vbk_checkpoint_disk_def_free(gpointer p)
{
    VbkCheckpointDiskDef *disk = p;

    if (!disk)
        return;
    g_free(disk->name);
    g_free(disk->bitmap);
    g_free(disk);
}

VbkCheckpointDef *
vbk_checkpoint_def_new(void)
{
    VbkCheckpointDef *def = g_new0(VbkCheckpointDef, 1);

    def->disks = g_ptr_array_new_with_free_func(vbk_checkpoint_disk_def_free);
    return def;
}

void
vbk_checkpoint_def_free(VbkCheckpointDef *def)
{
    if (!def)
        return;
    g_free(def->name);
    g_free(def->description);
    g_free(def->parent_name);
    g_ptr_array_unref(def->disks);
    vbk_domain_def_free(def->dom);
    g_free(def);
}

gboolean
vbk_checkpoint_name_is_valid(const char *name)
{
    const char *p;

    if (!name || !*name || name[0] == '.')
        return FALSE;
    for (p = name; *p; p++) {
        if (!g_ascii_isalnum(*p) && *p != '_' && *p != '-' && *p != '.')
            return FALSE;
    }
    return TRUE;
}

static VbkCheckpointDiskDef *
disk_parse(xmlNodePtr node, GError **error)
{
    g_autofree char *type = NULL;
    VbkCheckpointDiskDef *disk = g_new0(VbkCheckpointDiskDef, 1);

    if (!(disk->name = vbk_xml_prop(node, "name"))) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR, "%s",
                    _("missing name from disk checkpoint element"));
        goto error;
    }
    disk->type = VBK_CHECKPOINT_TYPE_BITMAP;
    if ((type = vbk_xml_prop(node, "checkpoint"))) {
        int val = vbk_xml_enum_from_string(checkpoint_type_names, type);
        if (val <= 0) {
            g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_CONFIG_UNSUPPORTED,
                        _("unknown disk checkpoint setting '%s'"), type);
            goto error;
        }
        disk->type = val;
    }
    if ((disk->bitmap = vbk_xml_prop(node, "bitmap")) &&
        disk->type != VBK_CHECKPOINT_TYPE_BITMAP) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_CONFIG_UNSUPPORTED,
                    _("disk checkpoint bitmap '%s' requires "
                      "checkpoint='bitmap'"),
                    disk->bitmap);
        goto error;
    }
    return disk;

error:
    vbk_checkpoint_disk_def_free(disk);
    return NULL;
}

static gboolean
parse_redefine(VbkCheckpointDef *def, xmlNodePtr root, GError **error)
{
    g_autofree char *ctime = vbk_xml_child_text(root, "creationTime");
    xmlNodePtr node;
    gint64 val;

    if (!def->name) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR, "%s",
                    _("a redefined checkpoint must have a name"));
        return FALSE;
    }
    if (!ctime || !g_ascii_string_to_signed(ctime, 10, G_MININT64, G_MAXINT64,
                                            &val, NULL)) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_INTERNAL_ERROR, "%s",
                    _("missing creationTime from existing checkpoint"));
        return FALSE;
    }
    def->creation_time = val;
    def->parent_name =
        vbk_xml_child_text(vbk_xml_child(root, "parent"), "name");
    if ((node = vbk_xml_child(root, "domain")) &&
        !(def->dom = vbk_domain_def_parse_node(node, 0, error)))
        return FALSE;
    return TRUE;
}

static VbkCheckpointDef *
checkpoint_parse_root(xmlNodePtr root, gint64 now, guint flags, GError **error)
{
    g_autoptr(VbkCheckpointDef) def = vbk_checkpoint_def_new();
    xmlNodePtr disks;
    xmlNodePtr cur;

    def->name = vbk_xml_child_text(root, "name");
    if (def->name && !vbk_checkpoint_name_is_valid(def->name)) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR,
                    _("invalid checkpoint name '%s'"), def->name);
        return NULL;
    }
    def->description = vbk_xml_child_text(root, "description");
    if (flags & VBK_CHECKPOINT_PARSE_REDEFINE) {
        if (!parse_redefine(def, root, error))
            return NULL;
    } else {
        def->creation_time = now;
        if (!def->name)
            def->name = g_strdup_printf("%" G_GINT64_FORMAT, now);
    }

    disks = vbk_xml_child(root, "disks");
    for (cur = disks ? disks->children : NULL; cur; cur = cur->next) {
        VbkCheckpointDiskDef *disk;

        if (cur->type != XML_ELEMENT_NODE)
            continue;
        if (!(disk = disk_parse(cur, error)))
            return NULL;
        g_ptr_array_add(def->disks, disk);
    }
    return g_steal_pointer(&def);
}

VbkCheckpointDef *
vbk_checkpoint_def_parse_string(const char *xml,
                                gint64 now,
                                guint flags,
                                GError **error)
{
    g_autoptr(xmlDoc) doc = vbk_xml_parse(xml, -1, _("(domain_checkpoint)"),
                                          "domaincheckpoint", error);

    if (!doc)
        return NULL;
    if ((flags & VBK_CHECKPOINT_PARSE_VALIDATE) &&
        !vbk_xml_validate(doc, "domaincheckpoint.rng", error))
        return NULL;
    return checkpoint_parse_root(xmlDocGetRootElement(doc), now, flags, error);
}

void
vbk_checkpoint_def_assign_bitmap_names(VbkCheckpointDef *def)
{
    guint i;

    for (i = 0; i < def->disks->len; i++) {
        VbkCheckpointDiskDef *disk = def->disks->pdata[i];
        if (disk->type == VBK_CHECKPOINT_TYPE_BITMAP && !disk->bitmap)
            disk->bitmap = g_strdup(def->name);
    }
}

/* ---- format ------------------------------------------------------------ */

static void
disk_format(VbkXmlBuf *buf, const VbkCheckpointDiskDef *disk, guint flags)
{
    if (!disk->name)
        return;
    vbk_xml_buf_add(buf, "<disk");
    vbk_xml_buf_attr(buf, "name", disk->name);
    if (disk->type != VBK_CHECKPOINT_TYPE_DEFAULT)
        vbk_xml_buf_attr(buf, "checkpoint", checkpoint_type_names[disk->type]);
    if (disk->bitmap) {
        vbk_xml_buf_attr(buf, "bitmap", disk->bitmap);
        if ((flags & VBK_CHECKPOINT_FORMAT_SIZE) && disk->size_valid)
            vbk_xml_buf_printf(buf, " size='%" G_GUINT64_FORMAT "'",
                               disk->size);
    }
    vbk_xml_buf_add(buf, "/>\n");
}

void
vbk_checkpoint_def_format_buf(VbkXmlBuf *buf,
                              const VbkCheckpointDef *def,
                              guint flags)
{
    VbkXmlBuf child;
    VbkXmlBuf disks;
    VbkXmlBuf parent;
    guint i;

    vbk_xml_buf_init_child(&child, buf);
    vbk_xml_buf_init_child(&disks, &child);
    vbk_xml_buf_init_child(&parent, &child);
    vbk_xml_buf_text_element(&child, "name", def->name);
    vbk_xml_buf_text_element(&child, "description", def->description);
    vbk_xml_buf_text_element(&parent, "name", def->parent_name);
    vbk_xml_buf_element(&child, "parent", NULL, &parent);
    if (def->creation_time)
        vbk_xml_buf_printf(
            &child, "<creationTime>%" G_GINT64_FORMAT "</creationTime>\n",
            def->creation_time);
    for (i = 0; i < def->disks->len; i++)
        disk_format(&disks, def->disks->pdata[i], flags);
    vbk_xml_buf_element(&child, "disks", NULL, &disks);
    if (def->dom && !(flags & VBK_CHECKPOINT_FORMAT_NO_DOMAIN))
        vbk_domain_def_format_buf(&child, def->dom,
                                  (flags & VBK_CHECKPOINT_FORMAT_SECURE)
                                      ? VBK_DOMAIN_FORMAT_SECURE
                                      : 0);
    if (vbk_xml_buf_is_empty(&child)) {
        vbk_xml_buf_add(buf, "<domaincheckpoint>\n</domaincheckpoint>\n");
        vbk_xml_buf_clear(&child);
        return;
    }
    vbk_xml_buf_element(buf, "domaincheckpoint", NULL, &child);
}

char *
vbk_checkpoint_def_format(const VbkCheckpointDef *def, guint flags)
{
    VbkXmlBuf buf;

    vbk_xml_buf_init(&buf, 0);
    vbk_checkpoint_def_format_buf(&buf, def, flags);
    return vbk_xml_buf_steal(&buf);
}
