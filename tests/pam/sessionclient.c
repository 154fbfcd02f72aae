/* A PAM application for tests/test_pam_profiles.py: pam_open_session then pam_close_session of SERVICE for USER,
 * with no authentication, printing each result; the test runs it as an unprivileged user (a PAM host that is not
 * root, as a screen locker is). Exit 0 only when both returned PAM_SUCCESS. */
#include <security/pam_appl.h>
#include <stdio.h>

static int no_conversation(int n, const struct pam_message **msg, struct pam_response **resp, void *data)
{
    (void)n, (void)msg, (void)resp, (void)data;
    return PAM_CONV_ERR;
}

int main(int argc, char **argv)
{
    struct pam_conv conv = {no_conversation, NULL};
    pam_handle_t *pamh = NULL;
    int opened, closed = PAM_SYSTEM_ERR, rc;
    if (argc != 3) {
        fprintf(stderr, "usage: %s SERVICE USER\n", argv[0]);
        return 2;
    }
    rc = pam_start(argv[1], argv[2], &conv, &pamh);
    if (rc != PAM_SUCCESS) {
        printf("pam_start: %d\n", rc);
        return 1;
    }
    opened = pam_open_session(pamh, 0);
    if (opened == PAM_SUCCESS)
        closed = pam_close_session(pamh, 0);
    printf("open %d close %d\n", opened, closed);
    pam_end(pamh, closed);
    return opened == PAM_SUCCESS && closed == PAM_SUCCESS ? 0 : 1;
}
