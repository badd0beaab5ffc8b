/*
 * vbackup-xml.c: check backup and checkpoint XML offline.
 *
 *   vbackup-xml backup [--domain DOMAIN.xml] [--suffix S] [--internal] FILE
 *   vbackup-xml checkpoint [--domain DOMAIN.xml] [--redefine] FILE
 *
 * The document is parsed as libvirt would parse it (including the
 * RelaxNG check when libvirt's schemas are installed), aligned against
 * the domain when one is given, and printed exactly as libvirt would
 * print it. On bad input the libvirt error message goes to stderr and
 * the exit status is 1. FILE '-' reads stdin. DOMAIN.xml may also be a
 * test-driver <node> fixture holding one domain, or pick one with
 * --domain-name.
 */
#include "backup-conf.h"
#include "checkpoint-conf.h"
#include "node-conf.h"

#include <glib/gi18n-lib.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct {
    char *domain_file;
    char *domain_name;
    char *suffix;
    gboolean internal;
    gboolean redefine;
    gboolean no_validate;
    gboolean no_domain;
    gint64 creation_time;
} Options;

static gboolean
read_input(const char *file, char **data, GError **error)
{
    gsize len;

    if (g_strcmp0(file, "-") == 0) {
        g_autoptr(GIOChannel) ch = g_io_channel_unix_new(STDIN_FILENO);
        if (g_io_channel_set_encoding(ch, NULL, error) != G_IO_STATUS_NORMAL ||
            g_io_channel_read_to_end(ch, data, &len, error) !=
                G_IO_STATUS_NORMAL)
            return FALSE;
    } else if (!g_file_get_contents(file, data, &len, error)) {
        return FALSE;
    }
    if (len > VBK_XML_MAX_DOC_SIZE) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_XML_ERROR,
                    _("XML document is too large: %zu bytes (limit %d)"), len,
                    VBK_XML_MAX_DOC_SIZE);
        return FALSE;
    }
    return TRUE;
}

static VbkDomainDef *
load_domain(const Options *opts, GError **error)
{
    g_autoptr(VbkNodeDef) node = NULL;
    VbkDomainDef *dom;

    if (!(node = vbk_node_def_load_fixture(opts->domain_file, error)))
        return NULL;
    if (opts->domain_name) {
        dom = vbk_node_def_find_domain(node, opts->domain_name);
    } else if (node->domains->len == 1) {
        dom = node->domains->pdata[0];
    } else {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_INVALID_ARG,
                    _("fixture '%s' holds %u domains; pick one with "
                      "--domain-name"),
                    opts->domain_file, node->domains->len);
        return NULL;
    }
    if (!dom) {
        g_set_error(error, VBK_XML_ERROR, VBK_XML_ERR_INVALID_ARG,
                    _("no domain named '%s' in fixture '%s'"),
                    opts->domain_name, opts->domain_file);
        return NULL;
    }
    return vbk_domain_def_copy(dom);
}

static char *
run_backup(const Options *opts, const char *xml, GError **error)
{
    g_autoptr(VbkBackupDef) def = NULL;
    g_autoptr(VbkDomainDef) dom = NULL;
    guint flags = opts->internal ? VBK_BACKUP_PARSE_INTERNAL : 0;
    g_autofree char *suffix = NULL;

    if (!opts->no_validate && vbk_xml_schema_available("domainbackup.rng"))
        flags |= VBK_BACKUP_PARSE_VALIDATE;
    if (!(def = vbk_backup_def_parse_string(xml, flags, error)))
        return NULL;
    if (opts->domain_file) {
        if (!(dom = load_domain(opts, error)))
            return NULL;
        suffix = opts->suffix
                     ? g_strdup(opts->suffix)
                     : g_strdup_printf("%" G_GINT64_FORMAT,
                                       g_get_real_time() / G_USEC_PER_SEC);
        if (!vbk_backup_def_align_disks(def, dom, suffix, error))
            return NULL;
    }
    return vbk_backup_def_format(def, opts->internal);
}

static char *
run_checkpoint(const Options *opts, const char *xml, GError **error)
{
    g_autoptr(VbkCheckpointDef) def = NULL;
    g_autoptr(VbkDomainDef) dom = NULL;
    guint flags = opts->redefine ? VBK_CHECKPOINT_PARSE_REDEFINE : 0;
    guint fmt = VBK_CHECKPOINT_FORMAT_SECURE;
    gint64 now = opts->creation_time > 0 ? opts->creation_time
                                         : g_get_real_time() / G_USEC_PER_SEC;

    if (!opts->no_validate && vbk_xml_schema_available("domaincheckpoint.rng"))
        flags |= VBK_CHECKPOINT_PARSE_VALIDATE;
    if (!(def = vbk_checkpoint_def_parse_string(xml, now, flags, error)))
        return NULL;
    if (opts->domain_file && !(dom = load_domain(opts, error)))
        return NULL;
    if (opts->redefine) {
        if (dom && !vbk_checkpoint_def_redefine_prep(def, dom, error))
            return NULL;
    } else if (dom) {
        /* what a hypervisor does on creation: the checkpoint records
         * the domain's definition and covers its disks */
        def->dom = g_steal_pointer(&dom);
        if (!vbk_checkpoint_def_align_disks(def, error))
            return NULL;
    }
    if (opts->no_domain)
        fmt |= VBK_CHECKPOINT_FORMAT_NO_DOMAIN;
    return vbk_checkpoint_def_format(def, fmt);
}

static int
usage_error(GOptionContext *ctx, const char *msg)
{
    g_autofree char *help = g_option_context_get_help(ctx, TRUE, NULL);

    fprintf(stderr, "error: %s\n\n%s", msg, help);
    return 2;
}

int
main(int argc, char **argv)
{
    Options opts = {0};
    g_autoptr(GOptionContext) ctx = NULL;
    g_autoptr(GError) err = NULL;
    g_autofree char *xml = NULL;
    g_autofree char *out = NULL;
    GOptionEntry entries[] = {
        {"domain", 0, 0, G_OPTION_ARG_FILENAME, &opts.domain_file,
         N_("align against this <domain> or <node> fixture"), "FILE"},
        {"domain-name", 0, 0, G_OPTION_ARG_STRING, &opts.domain_name,
         N_("domain to use from a <node> fixture"), "NAME"},
        {"suffix", 0, 0, G_OPTION_ARG_STRING, &opts.suffix,
         N_("suffix of generated backup file names (default: now)"), "S"},
        {"internal", 0, 0, G_OPTION_ARG_NONE, &opts.internal,
         N_("backup: the internal (status) form"), NULL},
        {"redefine", 0, 0, G_OPTION_ARG_NONE, &opts.redefine,
         N_("checkpoint: parse as a redefinition"), NULL},
        {"creation-time", 0, 0, G_OPTION_ARG_INT64, &opts.creation_time,
         N_("checkpoint: creation time to use (default: now)"), "SECS"},
        {"no-domain", 0, 0, G_OPTION_ARG_NONE, &opts.no_domain,
         N_("checkpoint: do not print the nested <domain>"), NULL},
        {"no-validate", 0, 0, G_OPTION_ARG_NONE, &opts.no_validate,
         N_("skip the RelaxNG check against libvirt's schemas"), NULL},
        {NULL, 0, 0, 0, NULL, NULL, NULL},
    };

    setlocale(LC_ALL, "");
    bindtextdomain(GETTEXT_PACKAGE, LOCALEDIR);
    bind_textdomain_codeset(GETTEXT_PACKAGE, "UTF-8");
    textdomain(GETTEXT_PACKAGE);

    ctx = g_option_context_new(_("backup|checkpoint FILE"));
    g_option_context_add_main_entries(ctx, entries, GETTEXT_PACKAGE);
    g_option_context_set_summary(
        ctx, _("Parse, align and format libvirt backup and checkpoint XML."));
    if (!g_option_context_parse(ctx, &argc, &argv, &err))
        return usage_error(ctx, err->message);
    if (argc != 3)
        return usage_error(ctx, _("expected a command and one FILE"));

    if (!read_input(argv[2], &xml, &err)) {
        fprintf(stderr, "error: %s\n", err->message);
        return 1;
    }
    if (g_str_equal(argv[1], "backup"))
        out = run_backup(&opts, xml, &err);
    else if (g_str_equal(argv[1], "checkpoint"))
        out = run_checkpoint(&opts, xml, &err);
    else
        return usage_error(ctx, _("the command is 'backup' or 'checkpoint'"));

    g_free(opts.domain_file);
    g_free(opts.domain_name);
    g_free(opts.suffix);
    if (!out) {
        g_autofree char *msg = vbk_xml_error_format_full(err);
        fprintf(stderr, "error: %s\n", msg);
        return 1;
    }
    fputs(out, stdout);
    return 0;
}
