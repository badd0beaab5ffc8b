/*
 * testutil.c: helpers shared by vbackup's Check tests.
 */
#include "testutil.h"

#include <glib/gstdio.h>
#include <stdlib.h>

int
vbk_test_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    int failed;

    srunner_set_tap(sr, "-");
    srunner_run_all(sr, CK_SILENT);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

const char *
vbk_test_shared_dir(void)
{
    static char *dir;

    if (!dir) {
        const char *env = g_getenv("VBK_SHARED_DIR");
        if (env)
            dir = g_strdup(env);
        else
            dir = g_build_filename(VBK_SOURCE_ROOT, "..", "shared", NULL);
    }
    return dir;
}

char *
vbk_test_tmpdir_new(void)
{
    g_autoptr(GError) err = NULL;
    char *dir = g_dir_make_tmp("vbk-test-XXXXXX", &err);

    if (!dir)
        g_error("cannot make a temporary directory: %s", err->message);
    return dir;
}

void
vbk_test_tmpdir_remove(const char *dir)
{
    g_autoptr(GDir) d = NULL;
    const char *name;

    if (!dir)
        return;
    d = g_dir_open(dir, 0, NULL);
    if (d) {
        while ((name = g_dir_read_name(d))) {
            g_autofree char *p = g_build_filename(dir, name, NULL);
            if (g_file_test(p, G_FILE_TEST_IS_DIR))
                vbk_test_tmpdir_remove(p);
            else
                g_unlink(p);
        }
    }
    g_rmdir(dir);
}

int
vbk_test_spawn(const char *const *argv, char **out, char **err)
{
    int status = 0;
    g_autoptr(GError) gerr = NULL;

    if (!g_spawn_sync(NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL,
                      NULL, out, err, &status, &gerr))
        return -1;
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return -1;
}

gboolean
vbk_test_have_program(const char *prog)
{
    g_autofree char *p = g_find_program_in_path(prog);
    return p != NULL;
}
