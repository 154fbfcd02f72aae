/* A PAM client that starts PAM with no user, as a greeter does or `login` with the name left empty (the tests build
 * it: tests/test_pam_usernameless.py). Usage: nameless SERVICE [silent]. Its conversation prints every message on
 * stdout, one line each, tagged with its style ("[echo-off] Security key PIN: ", "[echo-on] Which account? ",
 * "[info] ...", "[error] ..."; a message's own newlines are kept), and answers each prompt, echo on or off, with
 * the next line of stdin (end of input: the conversation fails). After pam_authenticate it prints the result as
 * "result: CODE TEXT" and "PAM_USER: NAME" ("(unset)" when no one is named). Exit 0 only on PAM_SUCCESS. */
#define _GNU_SOURCE
#include <security/pam_appl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int conversation(int n, const struct pam_message **msg, struct pam_response **resp, void *data)
{
    struct pam_response *answers = calloc((size_t)n, sizeof(*answers));
    (void)data;
    if (!answers)
        return PAM_BUF_ERR;
    for (int i = 0; i < n; i++) {
        int style = msg[i]->msg_style;
        const char *tag = style == PAM_PROMPT_ECHO_OFF ? "echo-off"
                          : style == PAM_PROMPT_ECHO_ON ? "echo-on"
                          : style == PAM_ERROR_MSG      ? "error"
                                                        : "info";
        printf("[%s] %s\n", tag, msg[i]->msg);
        fflush(stdout);
        if (style == PAM_PROMPT_ECHO_OFF || style == PAM_PROMPT_ECHO_ON) {
            char *line = NULL;
            size_t cap = 0;
            ssize_t len = getline(&line, &cap, stdin);
            if (len < 0) {
                free(line);
                for (int k = 0; k < i; k++)
                    free(answers[k].resp);
                free(answers);
                return PAM_CONV_ERR;
            }
            if (len > 0 && line[len - 1] == '\n')
                line[len - 1] = '\0';
            answers[i].resp = line;
        }
    }
    *resp = answers;
    return PAM_SUCCESS;
}

int main(int argc, char **argv)
{
    struct pam_conv conv = {conversation, NULL};
    pam_handle_t *pamh = NULL;
    const void *user = NULL;
    int flags, rc;
    if (argc < 2) {
        fprintf(stderr, "usage: %s SERVICE [silent]\n", argv[0]);
        return 2;
    }
    flags = argc > 2 && !strcmp(argv[2], "silent") ? PAM_SILENT : 0;
    rc = pam_start(argv[1], NULL, &conv, &pamh);
    if (rc != PAM_SUCCESS) {
        fprintf(stderr, "pam_start: %d\n", rc);
        return 2;
    }
    rc = pam_authenticate(pamh, flags);
    if (pam_get_item(pamh, PAM_USER, &user) != PAM_SUCCESS)
        user = NULL;
    printf("result: %d %s\n", rc, pam_strerror(pamh, rc));
    printf("PAM_USER: %s\n", user && ((const char *)user)[0] ? (const char *)user : "(unset)");
    fflush(stdout);
    pam_end(pamh, rc);
    return rc == PAM_SUCCESS ? 0 : 1;
}
