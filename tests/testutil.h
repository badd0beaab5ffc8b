/*
 * testutil.h: helpers shared by vbackup's Check tests.
 */
#pragma once

#include <check.h>
#include <glib.h>

/* Run @s, writing TAP to stdout (meson runs tests with protocol 'tap').
 * Returns the exit status for main(). Takes ownership of @s. */
int vbk_test_run(Suite *s);

/* Absolute path of ../shared (beside the checkout), or the value of
 * VBK_SHARED_DIR. */
const char *vbk_test_shared_dir(void);

/* A fresh temporary directory, removed with its files by
 * vbk_test_tmpdir_remove(). */
char *vbk_test_tmpdir_new(void);
void vbk_test_tmpdir_remove(const char *dir);

/* Run @argv (NULL-terminated), capture stdout/stderr; returns exit code
 * or -1 if it could not be spawned. */
int vbk_test_spawn(const char *const *argv, char **out, char **err);

/* Is @prog on PATH? */
gboolean vbk_test_have_program(const char *prog);
