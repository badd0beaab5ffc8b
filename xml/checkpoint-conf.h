/*
 * checkpoint-conf.h: libvirt's <domaincheckpoint> document: parse,
 * align against the domain, redefine checks, format.
 */
#pragma once

#include "xml-util.h"
#include "domain-conf.h"

G_BEGIN_DECLS

typedef enum {
    VBK_CHECKPOINT_TYPE_DEFAULT = 0,
    VBK_CHECKPOINT_TYPE_NONE,   /* checkpoint='no' */
    VBK_CHECKPOINT_TYPE_BITMAP, /* checkpoint='bitmap' */
} VbkCheckpointType;

typedef struct {
    char *name; /* target dev (or a source path on input) */
    VbkCheckpointType type;
    char *bitmap;
    guint64 size; /* printed with FORMAT_SIZE if size_valid */
    gboolean size_valid;
} VbkCheckpointDiskDef;

typedef struct {
    char *name;
    char *description;
    char *parent_name;
    gint64 creation_time; /* seconds since the epoch */
    GPtrArray *disks;     /* VbkCheckpointDiskDef */
    VbkDomainDef *dom;    /* inactive definition, or NULL */
} VbkCheckpointDef;

/* Same values as virDomainCheckpointCreateFlags' REDEFINE. */
typedef enum {
    VBK_CHECKPOINT_PARSE_REDEFINE = 1 << 0,
    /* validate against domaincheckpoint.rng first */
    VBK_CHECKPOINT_PARSE_VALIDATE = 1 << 1,
} VbkCheckpointParseFlags;

/* Same values as virDomainCheckpointXMLFlags. */
typedef enum {
    VBK_CHECKPOINT_FORMAT_SECURE = 1 << 0,
    VBK_CHECKPOINT_FORMAT_NO_DOMAIN = 1 << 1,
    VBK_CHECKPOINT_FORMAT_SIZE = 1 << 2,
} VbkCheckpointFormatFlags;

void vbk_checkpoint_disk_def_free(gpointer disk);
VbkCheckpointDef *vbk_checkpoint_def_new(void);
void vbk_checkpoint_def_free(VbkCheckpointDef *def);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VbkCheckpointDef, vbk_checkpoint_def_free)

/* Parse. Without REDEFINE, <creationTime>, <parent> and <domain> are
 * ignored; the creation time becomes @now and a missing name becomes
 * its decimal string (the qemu driver's post-parse step). With
 * REDEFINE, name and creationTime are required and <parent>/<domain>
 * are read. */
VbkCheckpointDef *vbk_checkpoint_def_parse_string(const char *xml,
                                                  gint64 now,
                                                  guint flags,
                                                  GError **error);

/* Checkpoint names follow the schema pattern
 * [a-zA-Z0-9_\-][a-zA-Z0-9_\-.]*: no '/', no leading '.'. */
gboolean vbk_checkpoint_name_is_valid(const char *name);

/* virDomainCheckpointAlignDisks: one entry per domain disk of def->dom,
 * in domain order; defaults and bitmap names filled in. */
gboolean vbk_checkpoint_def_align_disks(VbkCheckpointDef *def, GError **error);

/* Bitmap names default to the checkpoint name. */
void vbk_checkpoint_def_assign_bitmap_names(VbkCheckpointDef *def);

/* virDomainCheckpointRedefinePrep's checks against the live domain
 * @vm: a <domain> in the checkpoint must carry @vm's uuid, then the
 * disks are aligned; without one, bitmap names are defaulted. */
gboolean vbk_checkpoint_def_redefine_prep(VbkCheckpointDef *def,
                                          const VbkDomainDef *vm,
                                          GError **error);

void vbk_checkpoint_def_format_buf(VbkXmlBuf *buf,
                                   const VbkCheckpointDef *def,
                                   guint flags);
char *vbk_checkpoint_def_format(const VbkCheckpointDef *def, guint flags);

G_END_DECLS
