/*
 * create-job.h: the "create" job behind blockdev-create.
 */
#pragma once

#include "core/block/block.h"
#include "job.h"

G_BEGIN_DECLS

typedef enum {
    VBK_CREATE_FILE,  /* a host file of @size bytes */
    VBK_CREATE_QCOW2, /* a qcow2 image on the node @file_node */
} VbkCreateKind;

typedef struct {
    VbkCreateKind kind;
    char *filename;  /* VBK_CREATE_FILE */
    char *file_node; /* VBK_CREATE_QCOW2: node-name of the file */
    uint64_t size;
    VbkQcow2CreateOptions qcow2; /* its string members point below */
    char *backing_file;
    char *backing_fmt;
} VbkCreateJobOptions;

void vbk_create_job_options_free(VbkCreateJobOptions *opts);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VbkCreateJobOptions, vbk_create_job_options_free)

/*
 * Create and start the job @id; takes ownership of @opts.  As in QEMU
 * the job needs a manual dismiss and finalizes itself; the node @file
 * of a qcow2 creation is looked up when the job runs, so an unknown
 * node makes the job fail rather than the command.
 */
VbkJob *
vbk_create_job_start(const char *id, VbkCreateJobOptions *opts, GError **error);

G_END_DECLS
