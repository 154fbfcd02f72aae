/* A su-like PAM client for the tests (tests/pam/setuid.py builds it setuid root): run by an unprivileged user, it
 * authenticates SERVICE as USER through real libpam with libpam_misc's terminal conversation, as su does, with
 * PAM_SILENT when the third argument is "silent" (as sudo before 1.9.16 does). Exit 0 only on PAM_SUCCESS. */
#include <security/pam_appl.h>
#include <security/pam_misc.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    struct pam_conv conv = {misc_conv, NULL};
    pam_handle_t *pamh = NULL;
    int flags, rc;
    if (argc < 3) {
        fprintf(stderr, "usage: %s SERVICE USER [silent]\n", argv[0]);
        return 2;
    }
    flags = argc > 3 && !strcmp(argv[3], "silent") ? PAM_SILENT : 0;
    rc = pam_start(argv[1], argv[2], &conv, &pamh);
    if (rc == PAM_SUCCESS)
        rc = pam_authenticate(pamh, flags);
    printf("result: %s (ruid %d euid %d)\n", pam_strerror(pamh, rc), (int)getuid(), (int)geteuid());
    fflush(stdout);
    pam_end(pamh, rc);
    return rc == PAM_SUCCESS ? 0 : 1;
}
