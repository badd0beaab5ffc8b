/*
 * storage-conf.c: where a backup writes: the <target> (push) or
 * <scratch> (pull) of a backup disk.
 *
 *     <target file='/backup/vda.qcow2'>
 *       <seclabel model='dac' relabel='no'/>
 *       <encryption format='luks'>
 *         <secret type='passphrase' usage='/storage/backup/vda'/>
 *       </encryption>
 *     </target>
 *
 * The element carries file= for type='file' and dev= for type='block'.
 * Seclabels default to relabel='yes' and are always written with an
 * explicit relabel; encryption secrets name a libvirt secret either by
 * uuid or by usage. Output follows libvirt's virDomainDiskSourceFormat:
 * path attribute, then seclabels, then encryption.
 */
#include "storage-conf.h"

#include <glib/gi18n-lib.h>

const char *const vbk_storage_type_names[] = {
    "none",   "file", "block",     "dir", "network",
    "volume", "nvme", "vhostuser", NULL,
};

const char *const vbk_storage_format_names[] = {
    "none", "raw", "dir",   "bochs", "cloop", "dmg",   "iso", "vpc",  "vdi",
    "fat",  "vhd", "ploop", "cow",   "qcow",  "qcow2", "qed", "vmdk", NULL,
};

static const char *const encryption_format_names[] = {
    "default", "qcow", "luks", "luks2", NULL,
};

static const char *const encryption_engine_names[] = {
    "default",
    "qemu",
    "librbd",
    NULL,
};

static void
seclabel_free(gpointer p)
{
    VbkSeclabel *sl = p;

    g_free(sl->model);
    g_free(sl->label);
    g_free(sl);
}

static void
secret_free(gpointer p)
{
    VbkEncryptionSecret *s = p;

    g_free(s->uuid);
    g_free(s->usage);
    g_free(s);
}

static void
encryption_free(VbkEncryption *enc)
{
    if (!enc)
        return;
    g_ptr_array_unref(enc->secrets);
    g_free(enc->cipher_name);
    g_free(enc->cipher_mode);
    g_free(enc->cipher_hash);
    g_free(enc->ivgen_name);
    g_free(enc->ivgen_hash);
    g_free(enc);
}

VbkStorageSource *
vbk_storage_source_new(VbkStorageType type)
{
    VbkStorageSource *src = g_new0(VbkStorageSource, 1);

    src->type = type;
    src->seclabels = g_ptr_array_new_with_free_func(seclabel_free);
    return src;
}

void
vbk_storage_source_free(VbkStorageSource *src)
{
    if (!src)
        return;
    g_free(src->path);
    g_ptr_array_unref(src->seclabels);
    encryption_free(src->encryption);
    g_free(src);
}

static gboolean
seclabel_parse(VbkStorageSource *src, xmlNodePtr node, GError **error)
{
    g_autofree char *relabel = vbk_xml_prop(node, "relabel");
    VbkSeclabel *sl = g_new0(VbkSeclabel, 1);

    g_ptr_array_add(src->seclabels, sl);
    sl->model = vbk_xml_prop(node, "model");
    sl->relabel = TRUE;
    if (relabel) {
        if (g_strcmp0(relabel, "yes") != 0 && g_strcmp0(relabel, "no") != 0) {
            g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR,
                        _("invalid security relabel value %s"), relabel);
            return FALSE;
        }
        sl->relabel = g_str_equal(relabel, "yes");
    }
    sl->label = vbk_xml_child_text(node, "label");
    if (sl->label && !sl->relabel) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR,
                    _("Cannot specify a label if relabelling is turned off. "
                      "model=%s"),
                    sl->model ? sl->model : "<null>");
        return FALSE;
    }
    return TRUE;
}

static gboolean
secret_parse(VbkEncryption *enc, xmlNodePtr node, GError **error)
{
    g_autofree char *type = vbk_xml_prop(node, "type");
    VbkEncryptionSecret *sec;

    if (!type) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR, "%s",
                    _("unknown volume encryption secret type"));
        return FALSE;
    }
    if (!g_str_equal(type, "passphrase")) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR,
                    _("unknown volume encryption secret type %s"), type);
        return FALSE;
    }
    sec = g_new0(VbkEncryptionSecret, 1);
    g_ptr_array_add(enc->secrets, sec);
    sec->uuid = vbk_xml_prop(node, "uuid");
    sec->usage = vbk_xml_prop(node, "usage");
    if (!sec->uuid && !sec->usage) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR, "%s",
                    _("missing either uuid or usage attribute"));
        return FALSE;
    }
    if (sec->uuid && sec->usage) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR, "%s",
                    _("either uuid or usage attribute must be provided, "
                      "but not both"));
        return FALSE;
    }
    if (sec->uuid && !g_uuid_string_is_valid(sec->uuid)) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR,
                    _("malformed uuid '%s'"), sec->uuid);
        return FALSE;
    }
    return TRUE;
}

static gboolean
cipher_parse(VbkEncryption *enc, xmlNodePtr node, GError **error)
{
    xmlNodePtr ivgen = vbk_xml_child(node->parent, "ivgen");

    if (!(enc->cipher_name = vbk_xml_prop(node, "name"))) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR, "%s",
                    _("cipher info missing 'name' attribute"));
        return FALSE;
    }
    if (vbk_xml_prop_uint(node, "size", TRUE, &enc->cipher_size, error) < 0)
        return FALSE;
    enc->cipher_mode = vbk_xml_prop(node, "mode");
    enc->cipher_hash = vbk_xml_prop(node, "hash");
    if (ivgen) {
        if (!(enc->ivgen_name = vbk_xml_prop(ivgen, "name"))) {
            g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR, "%s",
                        _("missing ivgen info name string"));
            return FALSE;
        }
        enc->ivgen_hash = vbk_xml_prop(ivgen, "hash");
    }
    return TRUE;
}

static gboolean
encryption_parse(VbkStorageSource *src, xmlNodePtr node, GError **error)
{
    g_autofree char *format = vbk_xml_prop(node, "format");
    VbkEncryption *enc = g_new0(VbkEncryption, 1);
    xmlNodePtr cur;
    int val;

    src->encryption = enc;
    enc->secrets = g_ptr_array_new_with_free_func(secret_free);
    if (!format) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR, "%s",
                    _("unknown volume encryption format"));
        return FALSE;
    }
    if ((val = vbk_xml_enum_from_string(encryption_format_names, format)) < 0) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR,
                    _("unknown volume encryption format type %s"), format);
        return FALSE;
    }
    enc->format = val;
    if (vbk_xml_prop_enum(node, "engine", encryption_engine_names, FALSE, TRUE,
                          &enc->engine, error) < 0)
        return FALSE;
    for (cur = node->children; cur; cur = cur->next) {
        if (vbk_xml_node_is(cur, "secret") && !secret_parse(enc, cur, error))
            return FALSE;
    }
    if ((cur = vbk_xml_child(node, "cipher")) && !cipher_parse(enc, cur, error))
        return FALSE;
    return TRUE;
}

gboolean
vbk_storage_source_parse(VbkStorageSource *src, xmlNodePtr node, GError **error)
{
    xmlNodePtr cur;

    g_free(src->path);
    if (src->type == VBK_STORAGE_TYPE_BLOCK)
        src->path = vbk_xml_prop(node, "dev");
    else if (src->type == VBK_STORAGE_TYPE_DIR)
        src->path = vbk_xml_prop(node, "dir");
    else
        src->path = vbk_xml_prop(node, "file");

    for (cur = node->children; cur; cur = cur->next) {
        if (vbk_xml_node_is(cur, "seclabel") &&
            !seclabel_parse(src, cur, error))
            return FALSE;
    }
    if ((cur = vbk_xml_child(node, "encryption")) &&
        !encryption_parse(src, cur, error))
        return FALSE;
    return TRUE;
}

static void
encryption_format(VbkXmlBuf *buf, const VbkEncryption *enc)
{
    VbkXmlBuf attrs;
    VbkXmlBuf child;
    guint i;

    vbk_xml_buf_init(&attrs, 0);
    vbk_xml_buf_init_child(&child, buf);
    vbk_xml_buf_attr(&attrs, "format", encryption_format_names[enc->format]);
    if (enc->engine)
        vbk_xml_buf_attr(&attrs, "engine",
                         encryption_engine_names[enc->engine]);
    for (i = 0; i < enc->secrets->len; i++) {
        const VbkEncryptionSecret *sec = enc->secrets->pdata[i];
        vbk_xml_buf_add(&child, "<secret type='passphrase'");
        vbk_xml_buf_attr(&child, "uuid", sec->uuid);
        vbk_xml_buf_attr(&child, "usage", sec->usage);
        vbk_xml_buf_add(&child, "/>\n");
    }
    if (enc->cipher_name) {
        vbk_xml_buf_add(&child, "<cipher");
        vbk_xml_buf_attr(&child, "name", enc->cipher_name);
        vbk_xml_buf_printf(&child, " size='%u'", enc->cipher_size);
        vbk_xml_buf_attr(&child, "mode", enc->cipher_mode);
        vbk_xml_buf_attr(&child, "hash", enc->cipher_hash);
        vbk_xml_buf_add(&child, "/>\n");
    }
    if (enc->ivgen_name) {
        vbk_xml_buf_add(&child, "<ivgen");
        vbk_xml_buf_attr(&child, "name", enc->ivgen_name);
        vbk_xml_buf_attr(&child, "hash", enc->ivgen_hash);
        vbk_xml_buf_add(&child, "/>\n");
    }
    vbk_xml_buf_element(buf, "encryption", &attrs, &child);
}

void
vbk_storage_source_format(VbkXmlBuf *buf,
                          const VbkStorageSource *src,
                          const char *elem)
{
    VbkXmlBuf attrs;
    VbkXmlBuf child;
    guint i;

    vbk_xml_buf_init(&attrs, 0);
    vbk_xml_buf_init_child(&child, buf);
    if (src->type == VBK_STORAGE_TYPE_BLOCK)
        vbk_xml_buf_attr(&attrs, "dev", src->path);
    else if (src->type == VBK_STORAGE_TYPE_DIR)
        vbk_xml_buf_attr(&attrs, "dir", src->path);
    else
        vbk_xml_buf_attr(&attrs, "file", src->path);

    for (i = 0; i < src->seclabels->len; i++) {
        const VbkSeclabel *sl = src->seclabels->pdata[i];
        vbk_xml_buf_add(&child, "<seclabel");
        vbk_xml_buf_attr(&child, "model", sl->model);
        vbk_xml_buf_attr(&child, "relabel", sl->relabel ? "yes" : "no");
        if (sl->label) {
            vbk_xml_buf_add(&child, ">\n");
            child.indent += 2;
            vbk_xml_buf_text_element(&child, "label", sl->label);
            child.indent -= 2;
            vbk_xml_buf_add(&child, "</seclabel>\n");
        } else {
            vbk_xml_buf_add(&child, "/>\n");
        }
    }
    if (src->encryption)
        encryption_format(&child, src->encryption);
    vbk_xml_buf_element(buf, elem, &attrs, &child);
}
