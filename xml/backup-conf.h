/*
 * backup-conf.h: libvirt's <domainbackup> document: parse, align
 * against a domain, format.
 */
#pragma once

#include "xml-util.h"
#include "storage-conf.h"
#include "domain-conf.h"

G_BEGIN_DECLS

typedef enum {
    VBK_BACKUP_TYPE_DEFAULT = 0,
    VBK_BACKUP_TYPE_PUSH,
    VBK_BACKUP_TYPE_PULL,
} VbkBackupType;

typedef enum {
    VBK_BACKUP_DISK_STATE_NONE = 0,
    VBK_BACKUP_DISK_STATE_RUNNING,
    VBK_BACKUP_DISK_STATE_COMPLETE,
    VBK_BACKUP_DISK_STATE_FAILED,
    VBK_BACKUP_DISK_STATE_CANCELLING,
    VBK_BACKUP_DISK_STATE_CANCELLED,
} VbkBackupDiskState;

typedef enum {
    VBK_BACKUP_DISK_MODE_DEFAULT = 0,
    VBK_BACKUP_DISK_MODE_FULL,
    VBK_BACKUP_DISK_MODE_INCREMENTAL,
} VbkBackupDiskMode;

typedef enum {
    VBK_BACKUP_TRANSPORT_TCP = 0,
    VBK_BACKUP_TRANSPORT_UNIX,
    VBK_BACKUP_TRANSPORT_RDMA,
} VbkBackupTransport;

typedef struct {
    VbkBackupTransport transport;
    char *name;
    guint port; /* 0: not given */
    char *socket;
} VbkBackupServer;

typedef struct {
    char *name;               /* target dev of the domain disk */
    VbkTristate backup;       /* YES or NO after parsing */
    VbkBackupDiskState state; /* internal XML only */
    VbkBackupDiskMode backupmode;
    char *incremental;
    char *exportname;        /* pull mode only */
    char *exportbitmap;      /* pull mode only */
    VbkStorageSource *store; /* target/scratch; NULL if backup='no' */
} VbkBackupDiskDef;

typedef struct {
    VbkBackupType type;      /* PUSH or PULL after parsing */
    char *incremental;       /* checkpoint to start from, or NULL */
    VbkBackupServer *server; /* pull mode, or NULL */
    VbkTristate tls;
    GPtrArray *disks; /* VbkBackupDiskDef */
    /* <privateData> of the internal (status) form */
    char *tls_alias;        /* objects/TLSx509/@alias */
    char *tls_secret_alias; /* objects/secret[@type='tlskey']/@alias */
} VbkBackupDef;

typedef enum {
    /* the internal (status) form: disk state, <privateData> */
    VBK_BACKUP_PARSE_INTERNAL = 1 << 0,
    /* validate against domainbackup.rng first (skipped for INTERNAL) */
    VBK_BACKUP_PARSE_VALIDATE = 1 << 1,
} VbkBackupParseFlags;

void vbk_backup_def_free(VbkBackupDef *def);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VbkBackupDef, vbk_backup_def_free)

VbkBackupDef *
vbk_backup_def_parse_string(const char *xml, guint flags, GError **error);
VbkBackupDef *
vbk_backup_def_parse_node(xmlNodePtr root, guint flags, GError **error);

/* virDomainBackupAlignDisks: check the listed disks against @dom, add
 * the missing ones, default backupmode/incremental, generate target or
 * scratch names "<source path>.<suffix>". */
gboolean vbk_backup_def_align_disks(VbkBackupDef *def,
                                    const VbkDomainDef *dom,
                                    const char *suffix,
                                    GError **error);

/* Format; @internal adds disk state and <privateData>. */
void vbk_backup_def_format_buf(VbkXmlBuf *buf,
                               const VbkBackupDef *def,
                               gboolean internal);
char *vbk_backup_def_format(const VbkBackupDef *def, gboolean internal);

G_END_DECLS
