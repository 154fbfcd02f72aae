/*
 * pam_hmacunlock: sign in with a FIDO2 security key's hmac-secret and its PIN.
 *
 * This module is deliberately small: option parsing, the PAM conversation, a timeout and one child process.
 * All the work (store, key, verification) happens in the Python helper it runs; Python is never loaded into the
 * PAM host (a second interpreter in a Python host crashes it). The two sides speak the framed protocol described
 * in PROTOCOL.md over one socketpair that is the helper's stdin and stdout.
 *
 * Fail closed: PAM_SUCCESS only after a well-formed "success" verdict AND a clean exit (status 0) of the helper.
 * With `socket=PATH` the module first tries a warm helper daemon (hmacunlock_pam.warm) over a root-only unix
 * socket: the same exchange, and success only on the verdict followed by end of file (there is no exit status).
 * PAM_IGNORE only for `nouserok` plus a "user_unknown" verdict; nothing else ever returns it (CVE-2025-23013).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#define PAM_SM_AUTH
#define PAM_SM_SESSION
#include <security/pam_ext.h>
#include <security/pam_modules.h>

#ifndef HELPER_PYTHON
#error "build with -DHELPER_PYTHON='\"/abs/path/to/python\"' (the interpreter that has hmacunlock installed)"
#endif

#if !defined(HMU_MAX_PAYLOAD) || !defined(HMU_MAX_TRIES_LIMIT)
#error "build with -DHMU_MAX_PAYLOAD=N -DHMU_MAX_TRIES_LIMIT=M: pam_module/Makefile reads them from protocol.py"
#endif

/* The warm helper's socket tried when the PAM line has no socket= (and no nosocket). The installed build sets it to
 * the path its systemd socket unit listens on (`make install`: /run/hmacunlock/helper.sock); the source-tree build
 * leaves it empty, so the test suites never sign in through an installed daemon by accident. */
#ifndef DEFAULT_SOCKET
#define DEFAULT_SOCKET ""
#endif

#define PUBLIC __attribute__((visibility("default")))
#define SUN_PATH_LEN sizeof(((struct sockaddr_un *)0)->sun_path)

enum {
    MAX_PAYLOAD = HMU_MAX_PAYLOAD, /* protocol limit for one frame's payload (PROTOCOL.md, protocol.py) */
    HEADER_LEN = 3,      /* type byte + 16-bit big-endian length */
    MAX_FRAMES = 256,    /* a helper that talks forever is broken */
    MAX_PROMPTS = 16,    /* bounds the retries a broken helper could ask for */
    MAX_USER_LEN = 256,
    DEFAULT_TIMEOUT_S = 60,
    MAX_TIMEOUT_S = 3600,
    MAX_TRIES_LIMIT = HMU_MAX_TRIES_LIMIT, /* the most PIN tries one sign-in may allow (protocol.py) */
    MAX_PIN_FLOOR = 8,  /* a key has 8 PIN attempts in its life */
    REAP_TIMEOUT_S = 5, /* a helper that has sent its verdict and closed the channel exits at once */
    WARM_FIRST_FRAME_MS = 2000, /* a warm helper's child says it is there at once, or the helper is spawned */
    HELPER_NOFILE = 1024,       /* the root helper's descriptor limit, whatever the caller set */
    HELPER_STACK = 8 << 20,
    PROFILE_MAX = 2048,         /* profile= after %u is expanded */
};

enum touch_first { TOUCH_AUTO = 0, TOUCH_ALWAYS, TOUCH_NEVER };

/* Verdicts the helper may send (PROTOCOL.md). */
enum verdict { V_NONE, V_SUCCESS, V_AUTH_ERR, V_AUTHINFO_UNAVAIL, V_USER_UNKNOWN, V_SYSTEM_ERR };

struct options {
    int debug, nouserok, cue, try_first_pass, use_first_pass, nosocket;
    int profile_record; /* `profile` or `profile=record`: the directories the user's record names */
    int lock_on_logout; /* session phase: count sessions, lock the profiles at the user's last close */
    int timeout_s;
    int max_tries; /* 0: the helper's default */
    int pin_floor; /* -1: the helper's default */
    enum touch_first touch_first;
    const char *helper; /* NULL: HELPER_PYTHON -I -m hmacunlock_pam.helper */
    const char *socket_path; /* socket= or DEFAULT_SOCKET: a warm helper daemon to try before spawning one */
    const char *store, *device, *rp_id, *cue_prompt, *profile; /* profile: a pattern (%u, %%) */
};

struct channel {
    int fd;
    int timeout_ms;
    struct timespec deadline;
};

/* The one way this module lets go of a secret (a PIN): zeroed, then freed. NULL is fine. Declare a variable
 * `_cleanup_erase_ char *pin = NULL;` and every return path does it (systemd's erase_and_freep). */
static void erase_and_free(char *s)
{
    if (s) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

static void erase_and_freep(char **p)
{
    erase_and_free(*p);
    *p = NULL;
}

#define _cleanup_erase_ __attribute__((cleanup(erase_and_freep)))

/* ---------------------------------------------------------------------------------------------------------- */
/* options                                                                                                     */

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end = NULL;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

static int value_ok(const char *v)
{
    /* A value goes on one line of the request; PAM config cannot carry a newline, but check anyway. */
    return v[0] != '\0' && strchr(v, '\n') == NULL && strlen(v) < 1024;
}

/* The helper runs with the host's privileges (root for login): only a file that root owns and nobody else can
 * change may be it. The file itself is checked, as the admin named it; its directories are the admin's care. */
static int helper_file_ok(pam_handle_t *pamh, const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0) {
        pam_syslog(pamh, LOG_ERR, "helper=%s: %m", path);
        return -1;
    }
    if (!S_ISREG(st.st_mode) || st.st_uid != 0 || (st.st_mode & (S_IWGRP | S_IWOTH))) {
        pam_syslog(pamh, LOG_ERR, "helper=%s refused: must be a regular file owned by root and writable by root only",
                   path);
        return -1;
    }
    return 0;
}

/* profile=PATTERN: %u is the user, %% a percent sign, and nothing else may follow a %. -1: another escape, or the
 * result does not fit `cap`. Used to check a pattern when the options are read; the helper (profiles.expand)
 * expands it for the user the key unlocked, and checks the result the same way (records.check_directory). */
static int expand_profile(const char *pattern, const char *user, char *out, size_t cap)
{
    size_t n = 0;
    for (const char *p = pattern; *p; p++) {
        const char *piece = p;
        size_t len = 1;
        if (*p == '%') {
            if (p[1] == 'u')
                piece = user, len = strlen(user);
            else if (p[1] != '%')
                return -1;
            p++;
        }
        if (len >= cap - n)
            return -1;
        memcpy(out + n, piece, len);
        n += len;
    }
    out[n] = '\0';
    return 0;
}

/* An absolute path with no "." or ".." component and no control character: what a profile directory may be. */
static int profile_path_ok(const char *path)
{
    if (path[0] != '/')
        return 0;
    for (const unsigned char *p = (const unsigned char *)path; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return 0;
    for (const char *c = path; *c;) {
        size_t len;
        while (*c == '/')
            c++;
        len = strcspn(c, "/");
        if ((len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
            return 0;
        c += len;
    }
    return 1;
}

/* The pattern itself, with a stand-in user: a configuration error, at every sign-in, not only some users'. */
static int profile_pattern_ok(pam_handle_t *pamh, const char *pattern)
{
    char probe[PROFILE_MAX];
    if (expand_profile(pattern, "u", probe, sizeof(probe)) < 0 || !profile_path_ok(probe)) {
        pam_syslog(pamh, LOG_ERR, "bad option profile=%s: an absolute directory in which %%u (the user) and %%%% are "
                   "the only escapes and no component is . or ..", pattern);
        return -1;
    }
    return 0;
}

/* Unknown or malformed options are a configuration error: refuse (fail closed) rather than guess. */
static int parse_options(pam_handle_t *pamh, int argc, const char **argv, struct options *o)
{
    static const struct { const char *name; size_t off; } strs[] = {
        {"store=", offsetof(struct options, store)},
        {"device=", offsetof(struct options, device)},
        {"rp_id=", offsetof(struct options, rp_id)},
        {"cue_prompt=", offsetof(struct options, cue_prompt)},
        {"profile=", offsetof(struct options, profile)},
        {"helper=", offsetof(struct options, helper)},
        {"socket=", offsetof(struct options, socket_path)},
    };
    memset(o, 0, sizeof(*o));
    o->timeout_s = DEFAULT_TIMEOUT_S;
    o->pin_floor = -1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int matched = 0;
        if (!strcmp(a, "debug")) o->debug = 1, matched = 1;
        else if (!strcmp(a, "nouserok")) o->nouserok = 1, matched = 1;
        else if (!strcmp(a, "cue")) o->cue = 1, matched = 1;
        else if (!strcmp(a, "try_first_pass")) o->try_first_pass = 1, matched = 1;
        else if (!strcmp(a, "use_first_pass")) o->use_first_pass = 1, matched = 1;
        else if (!strcmp(a, "nosocket")) o->nosocket = 1, matched = 1;
        else if (!strcmp(a, "profile") || !strcmp(a, "profile=record")) o->profile_record = 1, o->profile = NULL, matched = 1;
        else if (!strcmp(a, "lock_on_logout")) o->lock_on_logout = 1, matched = 1;
        else if (!strcmp(a, "touch_first") || !strcmp(a, "touch_first=always")) o->touch_first = TOUCH_ALWAYS, matched = 1;
        else if (!strcmp(a, "touch_first=never")) o->touch_first = TOUCH_NEVER, matched = 1;
        else if (!strcmp(a, "touch_first=auto")) o->touch_first = TOUCH_AUTO, matched = 1;
        else if (!strncmp(a, "pin_floor=", 10)) {
            if (parse_int(a + 10, 0, MAX_PIN_FLOOR, &o->pin_floor) < 0) {
                pam_syslog(pamh, LOG_ERR, "bad option %s (0..%d)", a, MAX_PIN_FLOOR);
                return -1;
            }
            matched = 1;
        }
        else if (!strncmp(a, "timeout=", 8)) {
            if (parse_int(a + 8, 1, MAX_TIMEOUT_S, &o->timeout_s) < 0) {
                pam_syslog(pamh, LOG_ERR, "bad option %s (1..%d seconds)", a, MAX_TIMEOUT_S);
                return -1;
            }
            matched = 1;
        } else if (!strncmp(a, "max_tries=", 10)) {
            if (parse_int(a + 10, 1, MAX_TRIES_LIMIT, &o->max_tries) < 0) {
                pam_syslog(pamh, LOG_ERR, "bad option %s (1..%d)", a, MAX_TRIES_LIMIT);
                return -1;
            }
            matched = 1;
        }
        for (size_t k = 0; !matched && k < sizeof(strs) / sizeof(strs[0]); k++) {
            size_t n = strlen(strs[k].name);
            if (!strncmp(a, strs[k].name, n)) {
                if (!value_ok(a + n)) {
                    pam_syslog(pamh, LOG_ERR, "bad option %s", a);
                    return -1;
                }
                *(const char **)((char *)o + strs[k].off) = a + n;
                if (strs[k].off == offsetof(struct options, profile))
                    o->profile_record = 0; /* the last profile option wins, as for every option */
                matched = 1;
            }
        }
        if (!matched) {
            pam_syslog(pamh, LOG_ERR, "unknown option %s", a);
            return -1;
        }
    }
    /* Every path option is absolute: a relative one would be resolved against the caller's working directory,
     * which the caller chooses (su from a directory of their own turning an enrolled user into "no record"). */
    if ((o->helper && o->helper[0] != '/') || (o->store && o->store[0] != '/') ||
        (o->profile && o->profile[0] != '/')) {
        pam_syslog(pamh, LOG_ERR, "helper=, store= and profile= must be absolute paths");
        return -1;
    }
    if (o->profile && profile_pattern_ok(pamh, o->profile) < 0)
        return -1;
    if (o->nosocket && o->socket_path) {
        pam_syslog(pamh, LOG_ERR, "socket= and nosocket contradict each other");
        return -1;
    }
    if (!o->socket_path && !o->nosocket && DEFAULT_SOCKET[0])
        o->socket_path = DEFAULT_SOCKET;
    if (o->socket_path && (o->socket_path[0] != '/' || strlen(o->socket_path) >= SUN_PATH_LEN)) {
        pam_syslog(pamh, LOG_ERR, "socket= must be an absolute path shorter than %zu bytes", SUN_PATH_LEN);
        return -1;
    }
    return o->helper ? helper_file_ok(pamh, o->helper) : 0;
}

/* The request is the options the helper needs, one key=value per line (PROTOCOL.md). */
/* What the module knows of the caller and the helper cannot: passed in the request (PROTOCOL.md). */
struct caller {
    unsigned ruid;   /* the PAM host's real uid: under su/sudo, the person who ran it */
    int silent;      /* PAM_SILENT: what must be seen rides in a prompt or an error message */
    int touch_first; /* ask for a touch before the PIN is spent */
    const char *session; /* "open" / "close": a lock_on_logout session event instead of a sign-in */
    int pid;             /* the PAM host's pid: whose session, whose sign-in unlocked a profile */
};

static int build_request(const struct options *o, const struct caller *c, const char *user, char *buf, size_t cap,
                         size_t *len)
{
    size_t n = 0;
    int w;
#define ADD(...)                                                        \
    do {                                                                \
        w = snprintf(buf + n, cap - n, __VA_ARGS__);                    \
        if (w < 0 || (size_t)w >= cap - n) return -1;                   \
        n += (size_t)w;                                                 \
    } while (0)
    ADD("user=%s\n", user);
    if (o->store) ADD("store=%s\n", o->store);
    if (o->device) ADD("device=%s\n", o->device);
    if (o->rp_id) ADD("rp_id=%s\n", o->rp_id);
    if (o->max_tries) ADD("max_tries=%d\n", o->max_tries);
    if (o->cue) ADD("cue=1\n");
    if (o->cue_prompt) ADD("cue_prompt=%s\n", o->cue_prompt);
    if (o->nouserok) ADD("nouserok=1\n");
    if (o->debug) ADD("debug=1\n");
    if (c->session) ADD("session=%s\n", c->session);
    else if (o->profile) ADD("profile=%s\n", o->profile); /* the pattern: the helper expands %u for the user it unlocked */
    else if (o->profile_record) ADD("profile_record=1\n");
    if (c->session || o->profile || o->profile_record) ADD("pid=%d\n", c->pid);
    if (o->pin_floor >= 0) ADD("pin_floor=%d\n", o->pin_floor);
    ADD("ruid=%u\n", c->ruid);
    if (c->silent) ADD("silent=1\n");
    if (c->touch_first) ADD("touch_first=1\n");
#undef ADD
    *len = n;
    return 0;
}

/* ---------------------------------------------------------------------------------------------------------- */
/* the child                                                                                                   */

static void close_from(int lowfd, int maxfd)
{
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned)lowfd, ~0U, 0) == 0)
        return;
#endif
    for (int fd = lowfd; fd < maxfd; fd++)
        close(fd);
}

/* In the child, under a root PAM host (euid 0: login, sshd, su, sudo): become fully root, so the caller's real
 * ids, groups and limits decide nothing in the helper (under su the real uid is the caller's, and the store's
 * writes, the sign count and the lock would otherwise depend on it). Async-signal-safe system calls only. */
static int become_root(void)
{
    static const struct { int resource; rlim_t value; } limits[] = {
        {RLIMIT_CPU, RLIM_INFINITY}, {RLIMIT_FSIZE, RLIM_INFINITY}, {RLIMIT_DATA, RLIM_INFINITY},
        {RLIMIT_AS, RLIM_INFINITY}, {RLIMIT_STACK, HELPER_STACK}, {RLIMIT_CORE, 0},
        {RLIMIT_NOFILE, HELPER_NOFILE}, {RLIMIT_MEMLOCK, 64 * 1024},
    };
    if (setgroups(0, NULL) < 0 || setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
        return -1;
    for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
        struct rlimit rl = {limits[i].value, limits[i].value};
        if (setrlimit(limits[i].resource, &rl) < 0)
            return -1;
    }
    return 0;
}

/* Runs in the forked child: only async-signal-safe calls, everything prepared by the parent. */
static void __attribute__((noreturn))
exec_helper(int sock, int devnull, int maxfd, pid_t parent, const char *path, char *const argv[], char *const envp[])
{
    sigset_t none;
    struct sigaction dfl;
    /* Privileges first: a change of credentials would clear the parent-death signal set below. */
    if (geteuid() == 0 && become_root() < 0)
        _exit(127);
    /* Nothing of the caller's place: not its working directory, not its umask. */
    if (chdir("/") < 0)
        _exit(127);
    umask(077);
    /* Move our two descriptors out of 0..2 first: the host may have had those closed. */
    int s = fcntl(sock, F_DUPFD, 3);
    int n = fcntl(devnull, F_DUPFD, 3);
    if (s < 0 || n < 0 || dup2(s, 0) < 0 || dup2(s, 1) < 0 || dup2(n, 2) < 0)
        _exit(127);
    /* Nothing else crosses exec: no host descriptor leaks into the helper (CVE-2019-12210 class). */
    close_from(3, maxfd);
    /* Signal mask and ignored signals survive exec; give the helper a clean slate. Handlers to the default
     * first, the mask opened last: a signal pending since fork must not run the host's handler in this child. */
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        sigaction(sig, &dfl, NULL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* If the PAM host dies, the helper must not live on holding the key. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
    execve(path, argv, envp);
    _exit(127);
}

/* Keeps a descriptor of ours out of 0..2: a host with its standard descriptors closed would otherwise have its
 * conversation (which we run while the helper works) read and write our channel. -1 on failure (fd closed). */
static int above_stdio(pam_handle_t *pamh, int fd)
{
    int high;
    if (fd >= 3)
        return fd;
    high = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (high < 0)
        pam_syslog(pamh, LOG_ERR, "fcntl: %m");
    close(fd);
    return high;
}

static pid_t spawn_helper(pam_handle_t *pamh, const struct options *o, int *fd_out)
{
    static char *const env[] = {"PATH=/usr/bin:/bin", "LANG=C", NULL};
    char *const py_argv[] = {HELPER_PYTHON, "-I", "-m", "hmacunlock_pam.helper", NULL};
    char *const fake_argv[] = {(char *)o->helper, NULL};
    const char *path = o->helper ? o->helper : HELPER_PYTHON;
    struct rlimit rl;
    int maxfd = 65536;
    int sv[2], devnull;
    pid_t parent = getpid(), pid;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < INT_MAX)
        maxfd = (int)rl.rlim_cur;
    /* A socketpair, not two pipes: send(MSG_NOSIGNAL) cannot raise SIGPIPE in the host if the helper dies. */
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        pam_syslog(pamh, LOG_ERR, "socketpair: %m");
        return -1;
    }
    sv[0] = above_stdio(pamh, sv[0]);
    if (sv[0] < 0) {
        close(sv[1]);
        return -1;
    }
    devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0) {
        pam_syslog(pamh, LOG_ERR, "open /dev/null: %m");
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    pid = fork();
    if (pid == 0)
        exec_helper(sv[1], devnull, maxfd, parent, path, o->helper ? fake_argv : py_argv, env);
    close(sv[1]);
    close(devnull);
    if (pid < 0) {
        pam_syslog(pamh, LOG_ERR, "fork: %m");
        close(sv[0]);
        return -1;
    }
    *fd_out = sv[0];
    return pid;
}

static void deadline_in(struct timespec *deadline, int seconds)
{
    clock_gettime(CLOCK_MONOTONIC, deadline);
    deadline->tv_sec += seconds;
}

static void deadline_in_ms(struct timespec *deadline, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, deadline);
    deadline->tv_sec += ms / 1000;
    deadline->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (deadline->tv_nsec >= 1000000000L) {
        deadline->tv_sec += 1;
        deadline->tv_nsec -= 1000000000L;
    }
}

static int ms_until(const struct timespec *deadline)
{
    struct timespec now;
    long long ms;
    clock_gettime(CLOCK_MONOTONIC, &now);
    ms = (long long)(deadline->tv_sec - now.tv_sec) * 1000 + (deadline->tv_nsec - now.tv_nsec) / 1000000;
    return ms < 0 ? 0 : (ms > INT_MAX ? INT_MAX : (int)ms);
}

static int wait_status(pid_t pid)
{
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return -1; /* reaped by someone else: exit status unknown, so not a success */
    }
    return status;
}

/* Kill (if still ours) and reap the helper. Returns its wait status, or -1 if it is not ours to reap. */
static int kill_and_reap(pid_t pid)
{
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    /* Only signal a pid that is still our child (running or a zombie, which holds the pid): if a host handler
     * reaped it, the pid may already name someone else's process. */
    while (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0) {
        if (errno != EINTR)
            return -1; /* ECHILD: reaped by someone else, do not kill */
    }
    kill(pid, SIGKILL);
    return wait_status(pid);
}

/* 1: the child exited (or pidfd says so), 0: deadline passed, -1: pidfds unavailable here. */
static int wait_exit_pidfd(pid_t pid, const struct timespec *deadline)
{
#ifdef SYS_pidfd_open
    int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
    int r;
    if (pfd < 0)
        return -1; /* ENOSYS before Linux 5.3, or ESRCH: the polling loop copes with both */
    for (;;) {
        struct pollfd p = {.fd = pfd, .events = POLLIN};
        r = poll(&p, 1, ms_until(deadline));
        if (r >= 0 || errno != EINTR)
            break;
    }
    close(pfd);
    return r > 0 ? 1 : (r == 0 ? 0 : -1);
#else
    (void)pid, (void)deadline;
    return -1;
#endif
}

/* Without pidfds: poll waitpid every 10 ms. 1: exited (status in *status), 0: deadline, -1: not ours. */
static int wait_exit_polling(pid_t pid, const struct timespec *deadline, int *status)
{
    for (;;) {
        struct timespec tick = {0, 10 * 1000 * 1000};
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid)
            return 1;
        if (r < 0 && errno != EINTR)
            return -1;
        if (ms_until(deadline) == 0)
            return 0;
        nanosleep(&tick, NULL);
    }
}

/* Wait for a helper that has finished talking, on a deadline of its own (not what is left of the exchange's). */
static int reap(pam_handle_t *pamh, pid_t pid)
{
    struct timespec deadline;
    int status = -1, r;
    deadline_in(&deadline, REAP_TIMEOUT_S);
    r = wait_exit_pidfd(pid, &deadline);
    if (r == 1)
        return wait_status(pid);
    if (r < 0) {
        r = wait_exit_polling(pid, &deadline, &status);
        if (r != 0)
            return r == 1 ? status : -1;
    }
    pam_syslog(pamh, LOG_ERR, "helper did not exit after its verdict; killed");
    kill_and_reap(pid);
    return -1;
}

/* ---------------------------------------------------------------------------------------------------------- */
/* framed I/O with a deadline                                                                                  */

enum io { IO_OK = 0, IO_EOF = -1, IO_TIMEOUT = -2, IO_ERROR = -3, IO_PROTOCOL = -4, IO_NOT_THERE = -5 };

static void reset_deadline(struct channel *ch)
{
    deadline_in(&ch->deadline, ch->timeout_ms / 1000);
}

static int remaining_ms(const struct channel *ch)
{
    return ms_until(&ch->deadline);
}

static int wait_fd(const struct channel *ch, short events)
{
    for (;;) {
        struct pollfd p = {.fd = ch->fd, .events = events};
        int left = remaining_ms(ch);
        int r = poll(&p, 1, left);
        if (r > 0)
            return IO_OK;
        if (r == 0)
            return IO_TIMEOUT;
        if (errno != EINTR)
            return IO_ERROR;
    }
}

static int read_exact(const struct channel *ch, unsigned char *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r;
        int w = wait_fd(ch, POLLIN);
        if (w != IO_OK)
            return w;
        r = recv(ch->fd, buf + got, n - got, MSG_DONTWAIT);
        if (r == 0)
            return got == 0 ? IO_EOF : IO_PROTOCOL; /* EOF inside a frame is garbage */
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return IO_ERROR;
        }
        got += (size_t)r;
    }
    return IO_OK;
}

static int write_all(const struct channel *ch, const unsigned char *buf, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r;
        int w = wait_fd(ch, POLLOUT);
        if (w != IO_OK)
            return w;
        r = send(ch->fd, buf + done, n - done, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return IO_ERROR;
        }
        done += (size_t)r;
    }
    return IO_OK;
}

static int send_frame(const struct channel *ch, char type, const char *payload, size_t len)
{
    unsigned char frame[HEADER_LEN + MAX_PAYLOAD];
    int r;
    if (len > MAX_PAYLOAD)
        return IO_PROTOCOL;
    frame[0] = (unsigned char)type;
    frame[1] = (unsigned char)(len >> 8);
    frame[2] = (unsigned char)(len & 0xff);
    if (len)
        memcpy(frame + HEADER_LEN, payload, len);
    r = write_all(ch, frame, HEADER_LEN + len);
    explicit_bzero(frame, sizeof(frame)); /* may have held the PIN */
    return r;
}

/* Reads one frame; the payload is NUL-terminated and must contain no NUL itself. */
static int recv_frame(const struct channel *ch, char *type, char *payload /* MAX_PAYLOAD + 1 */)
{
    unsigned char hdr[HEADER_LEN];
    size_t len;
    int r = read_exact(ch, hdr, HEADER_LEN);
    if (r != IO_OK)
        return r;
    len = ((size_t)hdr[1] << 8) | hdr[2];
    if (len > MAX_PAYLOAD || !strchr("PIELV", hdr[0]) || hdr[0] == '\0')
        return IO_PROTOCOL;
    r = read_exact(ch, (unsigned char *)payload, len);
    if (r != IO_OK)
        return r == IO_EOF ? IO_PROTOCOL : r;
    payload[len] = '\0';
    if (strlen(payload) != len)
        return IO_PROTOCOL;
    *type = (char)hdr[0];
    return IO_OK;
}

/* ---------------------------------------------------------------------------------------------------------- */
/* the conversation                                                                                            */

/* Ask one echo-off question; returns a malloc'd answer the caller zeroes and frees, or NULL. */
static char *converse_secret(pam_handle_t *pamh, const char *text)
{
    const struct pam_conv *conv = NULL;
    struct pam_message msg = {.msg_style = PAM_PROMPT_ECHO_OFF, .msg = text};
    const struct pam_message *msgp = &msg;
    struct pam_response *resp = NULL;
    char *answer;
    if (pam_get_item(pamh, PAM_CONV, (const void **)&conv) != PAM_SUCCESS || !conv || !conv->conv)
        return NULL;
    if (conv->conv(1, &msgp, &resp, conv->appdata_ptr) != PAM_SUCCESS || !resp) {
        if (resp) {
            erase_and_free(resp->resp);
            free(resp);
        }
        return NULL;
    }
    answer = resp->resp;
    free(resp);
    return answer;
}

/* PAM_SILENT silences PAM_TEXT_INFO only. The helper, told about PAM_SILENT in the request, sends what the person
 * must see (attempts left, a soft lock, no key, the floor, the touch cue) in the next prompt's text or as an E
 * frame, which is always shown: sudo before 1.9.16 passes PAM_SILENT to every sign-in. */
static void converse_show(pam_handle_t *pamh, int style, const char *text, int flags)
{
    if (((unsigned int)flags & PAM_SILENT) && style == PAM_TEXT_INFO) /* PAM_SILENT is unsigned, flags an int */
        return;
    /* A conversation that cannot show a message does not change the outcome. */
    pam_prompt(pamh, style, NULL, "%s", text);
}

/* ---------------------------------------------------------------------------------------------------------- */
/* the exchange                                                                                                */

static const struct { const char *code; enum verdict v; } verdict_codes[] = {
    {"success", V_SUCCESS}, {"auth_err", V_AUTH_ERR}, {"authinfo_unavail", V_AUTHINFO_UNAVAIL},
    {"user_unknown", V_USER_UNKNOWN}, {"system_err", V_SYSTEM_ERR},
};

static enum verdict parse_verdict(const char *payload)
{
    size_t n = strcspn(payload, "\n");
    for (size_t i = 0; i < sizeof(verdict_codes) / sizeof(verdict_codes[0]); i++)
        if (strlen(verdict_codes[i].code) == n && !strncmp(payload, verdict_codes[i].code, n))
            return verdict_codes[i].v;
    return V_NONE;
}

static const char *verdict_name(enum verdict v)
{
    for (size_t i = 0; i < sizeof(verdict_codes) / sizeof(verdict_codes[0]); i++)
        if (verdict_codes[i].v == v)
            return verdict_codes[i].code;
    return "none";
}

struct session {
    pam_handle_t *pamh;
    const struct options *o;
    int flags;
    const char *first_pass; /* PAM_AUTHTOK (owned by PAM): the answer to the helper's first P */
    int first_pass_used;
    int prompts;
    int no_prompts; /* a session event: the helper has nothing to ask, so a prompt is a protocol error */
};

/* Answer a prompt_secret frame: PAM_AUTHTOK first if configured, else the conversation. The module never asks
 * for a PIN before the helper does: the helper first checks what would make a PIN pointless (no record, no key,
 * no key holding the user's credential, a key at its floor), so nobody is asked in vain. */
static int answer_prompt(struct channel *ch, struct session *s, const char *text)
{
    _cleanup_erase_ char *pin = NULL;
    if (++s->prompts > MAX_PROMPTS || s->no_prompts)
        return IO_PROTOCOL;
    if (!s->first_pass_used && s->first_pass) {
        s->first_pass_used = 1;
        return send_frame(ch, 'S', s->first_pass, strlen(s->first_pass));
    }
    if (s->o->use_first_pass) /* no second chance through the conversation */
        return send_frame(ch, 'C', NULL, 0);
    pin = converse_secret(s->pamh, text);
    reset_deadline(ch); /* the time the person took to type is not the helper's */
    if (!pin || strlen(pin) > MAX_PAYLOAD)
        return send_frame(ch, 'C', NULL, 0);
    return send_frame(ch, 'S', pin, strlen(pin));
}

/* Runs the helper's side of the protocol until its verdict; returns IO_OK with *verdict set, or an IO error. */
static int exchange(struct channel *ch, struct session *s, const char *request, size_t request_len,
                    int first_frame_ms, enum verdict *verdict)
{
    char payload[MAX_PAYLOAD + 1];
    char type = 0;
    int r = send_frame(ch, 'Q', request, request_len);
    for (int frames = 0; r == IO_OK; frames++) {
        if (frames >= MAX_FRAMES)
            return IO_PROTOCOL;
        if (frames == 0 && first_frame_ms > 0) {
            /* A warm helper's child answers the request at once (an L frame): one that does not, or closes, is
             * busy or broken, and nothing has been asked yet, so the caller may still spawn a helper. */
            deadline_in_ms(&ch->deadline, first_frame_ms);
            r = recv_frame(ch, &type, payload);
            if (r == IO_TIMEOUT || r == IO_EOF)
                return IO_NOT_THERE;
            reset_deadline(ch);
        } else {
            r = recv_frame(ch, &type, payload);
        }
        if (r != IO_OK)
            break;
        switch (type) {
        case 'P':
            r = answer_prompt(ch, s, payload);
            break;
        case 'I':
            converse_show(s->pamh, PAM_TEXT_INFO, payload, s->flags);
            break;
        case 'E':
            converse_show(s->pamh, PAM_ERROR_MSG, payload, s->flags);
            break;
        case 'L':
            if (s->o->debug)
                pam_syslog(s->pamh, LOG_DEBUG, "helper: %s", payload);
            break;
        case 'V':
            *verdict = parse_verdict(payload);
            if (*verdict == V_NONE)
                return IO_PROTOCOL;
            if (payload[strcspn(payload, "\n")])
                pam_syslog(s->pamh, *verdict == V_SUCCESS ? LOG_INFO : LOG_NOTICE, "%s",
                           payload + strcspn(payload, "\n") + 1);
            /* Nothing may follow the verdict: the next thing on the channel must be end of file. */
            r = read_exact(ch, (unsigned char *)payload, 1);
            return r == IO_EOF ? IO_OK : (r == IO_OK ? IO_PROTOCOL : r);
        }
    }
    return r;
}

static const char *io_reason(int r)
{
    switch (r) {
    case IO_EOF: return "helper ended without a verdict";
    case IO_TIMEOUT: return "helper timed out";
    case IO_PROTOCOL: return "helper broke the protocol";
    case IO_NOT_THERE: return "helper did not answer the request";
    default: return "helper channel error";
    }
}

static int to_pam(const struct options *o, enum verdict v)
{
    switch (v) {
    case V_SUCCESS: return PAM_SUCCESS;
    case V_AUTH_ERR: return PAM_AUTH_ERR;
    case V_AUTHINFO_UNAVAIL: return PAM_AUTHINFO_UNAVAIL;
    case V_USER_UNKNOWN: return o->nouserok ? PAM_IGNORE : PAM_USER_UNKNOWN;
    default: return PAM_SYSTEM_ERR;
    }
}

/* No control character at all (CR, ESC... would forge syslog lines or drive a terminal), no '/' or '=' (a file
 * name, a request line). */
static int user_ok(const char *user)
{
    size_t n = strlen(user);
    for (const unsigned char *p = (const unsigned char *)user; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return 0;
    return n > 0 && n <= MAX_USER_LEN && strpbrk(user, "/=") == NULL;
}

/* ---------------------------------------------------------------------------------------------------------- */
/* the warm helper (socket=)                                                                                   */

enum warm { WARM_NONE = 0, WARM_CONNECTED = 1, WARM_FAILED = -1 };

/* Root owns it and only root can change it (lstat: a symlink is refused, never followed). */
static int root_only(pam_handle_t *pamh, const char *path, mode_t type)
{
    struct stat st;
    if (lstat(path, &st) < 0) {
        if (errno == ENOENT) /* the ordinary "no daemon": connect() says so below */
            return 0;
        pam_syslog(pamh, LOG_ERR, "socket=: %s: %m", path);
        return -1;
    }
    if ((st.st_mode & S_IFMT) != type || st.st_uid != 0 || (st.st_mode & (S_IWGRP | S_IWOTH))) {
        pam_syslog(pamh, LOG_ERR, "socket=: %s refused: must be owned by root and writable by root only; "
                   "spawning the helper instead", path);
        return -1;
    }
    return 0;
}

/* The socket and its directory, before connecting: anyone who could replace them could pose as the helper. */
static int socket_path_ok(pam_handle_t *pamh, const char *path)
{
    char dir[SUN_PATH_LEN];
    char *slash;
    snprintf(dir, sizeof(dir), "%s", path);
    slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = '\0';
    else
        *slash = '\0';
    return root_only(pamh, dir, S_IFDIR) == 0 && root_only(pamh, path, S_IFSOCK) == 0 ? 0 : -1;
}

/* Connects to the warm helper within the module's timeout. WARM_NONE: no daemon (or an unsafe path): the caller
 * spawns the helper as without socket=. WARM_FAILED: something is there but is not root's: fail closed. */
static int connect_warm(pam_handle_t *pamh, const struct options *o, int *fd_out)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    struct ucred peer;
    socklen_t len = sizeof(peer);
    struct timespec deadline;
    int fd, err = 0;

    if (socket_path_ok(pamh, o->socket_path) < 0)
        return WARM_NONE;
    snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", o->socket_path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || (fd = above_stdio(pamh, fd)) < 0)
        return WARM_NONE;
    deadline_in(&deadline, o->timeout_s);
    /* A unix socket whose backlog is full answers EAGAIN without queueing us (there is no EINPROGRESS to poll
     * for): try again every 10 ms until the deadline. */
    while (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        struct timespec tick = {0, 10 * 1000 * 1000};
        err = errno;
        if (err == EINTR)
            continue;
        if (err != EAGAIN)
            break;
        if (ms_until(&deadline) == 0) {
            err = ETIMEDOUT;
            break;
        }
        nanosleep(&tick, NULL);
        err = 0;
    }
    if (err) {
        if (err == ENOENT || err == ECONNREFUSED) {
            if (o->debug)
                pam_syslog(pamh, LOG_DEBUG, "socket=%s: no warm helper (%s); spawning one", o->socket_path,
                           strerror(err));
        } else {
            pam_syslog(pamh, LOG_NOTICE, "socket=%s: %s; spawning the helper instead", o->socket_path,
                       strerror(err));
        }
        close(fd);
        return WARM_NONE;
    }
    /* The path was root's a moment ago; the process that answered must be root's now. */
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &len) < 0 || len != sizeof(peer) || peer.uid != 0) {
        pam_syslog(pamh, LOG_ERR, "socket=%s: the server is not root (uid %d); refusing", o->socket_path,
                   len == sizeof(peer) ? (int)peer.uid : -1);
        close(fd);
        return WARM_FAILED;
    }
    *fd_out = fd;
    return WARM_CONNECTED;
}

/* The exchange with a warm helper's child. No exit status to check: the verdict must be followed by end of file
 * (exchange() requires it). A child that does not answer the request at once (every child busy, a per-caller cap
 * reached, a stuck daemon) has been asked nothing: WARM_NONE, and the caller spawns the helper. Any failure after
 * that is PAM_SYSTEM_ERR, never a fallback (the PIN may have been sent: no second chance at it). */
static int run_warm(pam_handle_t *pamh, const struct options *o, struct session *s, const char *user, int fd,
                    const char *request, size_t request_len, int *rc)
{
    struct channel ch = {.fd = fd, .timeout_ms = o->timeout_s * 1000};
    enum verdict verdict = V_NONE;
    int r;
    reset_deadline(&ch);
    r = exchange(&ch, s, request, request_len, WARM_FIRST_FRAME_MS, &verdict);
    close(fd);
    if (r == IO_NOT_THERE) {
        pam_syslog(pamh, LOG_NOTICE, "user %s: the warm helper did not answer; spawning the helper", user);
        return WARM_NONE;
    }
    if (r != IO_OK) {
        pam_syslog(pamh, LOG_ERR, "user %s: warm %s", user, io_reason(r));
        *rc = PAM_SYSTEM_ERR;
        return WARM_CONNECTED;
    }
    if (o->debug)
        pam_syslog(pamh, LOG_DEBUG, "user %s: verdict %s from the warm helper", user, verdict_name(verdict));
    *rc = to_pam(o, verdict);
    return WARM_CONNECTED;
}

static int run_helper(pam_handle_t *pamh, const struct options *o, struct session *s, const struct caller *c,
                      const char *user)
{
    char request[MAX_PAYLOAD];
    size_t request_len;
    struct channel ch = {.timeout_ms = o->timeout_s * 1000};
    enum verdict verdict = V_NONE;
    pid_t pid;
    int r, status;

    if (build_request(o, c, user, request, sizeof(request), &request_len) < 0) {
        pam_syslog(pamh, LOG_ERR, "request too long");
        return PAM_SYSTEM_ERR;
    }
    if (o->socket_path && geteuid() != 0) {
        /* A screen locker runs PAM as the user: the warm helper serves root only (and its socket's directory is
         * root's alone), so do not try; spawn the helper, which runs as the user. */
        if (o->debug)
            pam_syslog(pamh, LOG_DEBUG, "socket=%s: not root, the warm helper serves root only; spawning one",
                       o->socket_path);
    } else if (o->socket_path) {
        int fd = -1, rc = PAM_SYSTEM_ERR;
        int w = connect_warm(pamh, o, &fd);
        if (w == WARM_FAILED)
            return PAM_SYSTEM_ERR;
        if (w == WARM_CONNECTED && run_warm(pamh, o, s, user, fd, request, request_len, &rc) == WARM_CONNECTED)
            return rc;
    }
    pid = spawn_helper(pamh, o, &ch.fd);
    if (pid < 0)
        return PAM_SYSTEM_ERR;
    reset_deadline(&ch);
    r = exchange(&ch, s, request, request_len, 0, &verdict);
    close(ch.fd);
    if (r != IO_OK) {
        pam_syslog(pamh, LOG_ERR, "user %s: %s; helper killed", user, io_reason(r));
        kill_and_reap(pid);
        return PAM_SYSTEM_ERR;
    }
    status = reap(pamh, pid);
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        /* A verdict from a helper that then crashed or failed is not believed, whatever it said. */
        pam_syslog(pamh, LOG_ERR, "user %s: helper did not exit cleanly (status %d)", user, status);
        return PAM_SYSTEM_ERR;
    }
    if (o->debug)
        pam_syslog(pamh, LOG_DEBUG, "user %s: verdict %s, helper exited 0", user, verdict_name(verdict));
    return to_pam(o, verdict);
}

/* touch_first=auto: a touch before the PIN when the person asking may not be the one at the key: a remote
 * sign-in (PAM_RHOST set), or a caller (real uid) who is neither root nor the user signing in (su, sudo -u). */
static int want_touch_first(pam_handle_t *pamh, const struct options *o, const char *user, uid_t ruid)
{
    const void *rhost = NULL;
    struct passwd pw, *found = NULL;
    char buf[1 << 14]; /* getpwnam_r: room for any passwd entry */
    if (o->touch_first != TOUCH_AUTO)
        return o->touch_first == TOUCH_ALWAYS;
    if (pam_get_item(pamh, PAM_RHOST, &rhost) == PAM_SUCCESS && rhost && ((const char *)rhost)[0])
        return 1;
    if (ruid == 0)
        return 0;
    if (getpwnam_r(user, &pw, buf, sizeof(buf), &found) == 0 && found && found->pw_uid == ruid)
        return 0;
    return 1;
}

/* With SIGCHLD ignored, the kernel reaps the helper and its exit status (which we require) is lost. Only in that
 * case switch to the default for the duration, as pam_unix does for unix_chkpwd; any handler is left. Returns
 * whether sigchld_restore must put `old` back. */
static int sigchld_default(struct sigaction *old)
{
    struct sigaction dfl;
    if (sigaction(SIGCHLD, NULL, old) != 0 || old->sa_handler != SIG_IGN)
        return 0;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    return sigaction(SIGCHLD, &dfl, NULL) == 0;
}

static void sigchld_restore(int restore, const struct sigaction *old)
{
    if (restore)
        sigaction(SIGCHLD, old, NULL);
}

/* open_session / close_session with lock_on_logout: the helper counts the user's sessions (by this process), and
 * at the last close locks what the user's sign-ins unlocked. It needs no PIN and no key; the state it keeps is
 * root's, so a PAM host that is not root (a screen locker) counts nothing and locks nothing, and says so. */
static int session_event(pam_handle_t *pamh, int flags, int argc, const char **argv, const char *event)
{
    struct options o;
    struct session s = {.pamh = pamh, .flags = flags, .no_prompts = 1};
    struct caller caller = {0};
    struct sigaction old_chld;
    const void *item = NULL;
    const char *user;
    int rc, restore;

    if (parse_options(pamh, argc, argv, &o) < 0)
        return PAM_SESSION_ERR;
    if (!o.lock_on_logout)
        return PAM_SUCCESS;
    s.o = &o;
    if (pam_get_item(pamh, PAM_USER, &item) != PAM_SUCCESS || !item || !user_ok(item)) {
        pam_syslog(pamh, LOG_ERR, "lock_on_logout: %s_session without a well-formed user", event);
        return PAM_SESSION_ERR;
    }
    user = item;
    if (geteuid() != 0) {
        pam_syslog(pamh, LOG_NOTICE, "user %s: lock_on_logout needs a root PAM host (this one runs as uid %u): the "
                   "session is not counted and nothing is locked at logout", user, (unsigned)geteuid());
        return PAM_IGNORE;
    }
    caller.ruid = (unsigned)getuid();
    caller.session = event;
    caller.pid = (int)getpid();
    restore = sigchld_default(&old_chld);
    rc = run_helper(pamh, &o, &s, &caller, user);
    sigchld_restore(restore, &old_chld);
    return rc == PAM_SUCCESS ? PAM_SUCCESS : PAM_SESSION_ERR;
}

/* ---------------------------------------------------------------------------------------------------------- */
/* entry points                                                                                                */

PUBLIC int pam_sm_authenticate(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    struct options o;
    struct session s = {.pamh = pamh, .flags = flags};
    struct caller caller = {0};
    struct sigaction old_chld;
    const char *user = NULL;
    int rc, restore;

    if (parse_options(pamh, argc, argv, &o) < 0)
        return PAM_SYSTEM_ERR;
    s.o = &o;
    rc = pam_get_user(pamh, &user, NULL);
    if (rc != PAM_SUCCESS || !user)
        return rc == PAM_SUCCESS || rc == PAM_IGNORE ? PAM_SYSTEM_ERR : rc;
    if (!user_ok(user)) {
        pam_syslog(pamh, LOG_NOTICE, "refusing a malformed user name (a control character, '/' or '=')");
        return PAM_USER_UNKNOWN;
    }
    if (o.try_first_pass || o.use_first_pass) {
        const void *tok = NULL;
        if (pam_get_item(pamh, PAM_AUTHTOK, &tok) == PAM_SUCCESS && tok && ((const char *)tok)[0])
            s.first_pass = tok;
        else if (o.use_first_pass) {
            pam_syslog(pamh, LOG_NOTICE, "use_first_pass: no PIN from an earlier module");
            return PAM_AUTH_ERR;
        }
    }
    caller.ruid = (unsigned)getuid();
    caller.silent = ((unsigned)flags & PAM_SILENT) != 0;
    caller.touch_first = want_touch_first(pamh, &o, user, getuid());
    caller.pid = (int)getpid();
    restore = sigchld_default(&old_chld);
    rc = run_helper(pamh, &o, &s, &caller, user);
    sigchld_restore(restore, &old_chld);
    return rc;
}

PUBLIC int pam_sm_setcred(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    (void)pamh, (void)flags, (void)argc, (void)argv;
    return PAM_SUCCESS;
}

PUBLIC int pam_sm_open_session(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    return session_event(pamh, flags, argc, argv, "open");
}

PUBLIC int pam_sm_close_session(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    return session_event(pamh, flags, argc, argv, "close");
}
