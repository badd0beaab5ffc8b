/*
 * vbackup-error.h: error domains of libvbackup.
 *
 * Every layer reports through GError with its own domain; the libvirt
 * driver maps them onto virErrorNumber in one table.
 */
#pragma once

#if !defined(VBK_H_INSIDE) && !defined(VBK_COMPILATION)
#error "Only <vbackup/vbackup.h> can be included directly."
#endif

#include <glib.h>

G_BEGIN_DECLS

/* Errors of the block layer (core/block, core/bitmap). */
#define VBK_BLOCK_ERROR (vbk_block_error_quark())
GQuark vbk_block_error_quark(void);

typedef enum {
    VBK_BLOCK_ERROR_FAILED,       /* generic: QEMU's GenericError */
    VBK_BLOCK_ERROR_NOT_FOUND,    /* QEMU's DeviceNotFound */
    VBK_BLOCK_ERROR_INVALID,      /* bad argument or bad on-disk data */
    VBK_BLOCK_ERROR_UNSUPPORTED,  /* feature not supported */
    VBK_BLOCK_ERROR_IO,           /* an I/O error, message from errno */
    VBK_BLOCK_ERROR_IN_USE,       /* node or bitmap busy */
} VbkBlockErrorCode;

/* Errors of the job layer (core/job). */
#define VBK_JOB_ERROR (vbk_job_error_quark())
GQuark vbk_job_error_quark(void);

typedef enum {
    VBK_JOB_ERROR_FAILED,
    VBK_JOB_ERROR_NOT_FOUND,
    VBK_JOB_ERROR_STATE,          /* verb not allowed in this state */
} VbkJobErrorCode;

/* Errors of the XML layer (xml/). The code is libvirt's virErrorNumber. */
#define VBK_XML_ERROR (vbk_xml_error_quark())
GQuark vbk_xml_error_quark(void);

G_END_DECLS
