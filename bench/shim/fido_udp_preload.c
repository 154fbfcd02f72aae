/*
 * LD_PRELOAD shim for the benchmark: make libfido2 (and so pam-u2f and pamu2fcfg, which only know HID keys) talk
 * to the software key over CTAPHID/UDP.
 *
 * Set HMACUNLOCK_BENCH_UDP=HOST:PORT (a benchmark setting, not a secret). Then
 *   - fido_dev_info_manifest() lists exactly one device, path "udp:HOST:PORT", and no HID device, so pam-u2f
 *     cannot pick up a real key plugged into the machine by accident;
 *   - fido_dev_open(dev, "udp:...") installs the UDP I/O functions (tests/libfido2/udp_io.c) with
 *     fido_dev_set_io_functions() before calling libfido2's own fido_dev_open, so all CTAPHID framing, the INIT
 *     handshake and getInfo stay libfido2's.
 * Without the variable every call goes straight to libfido2.
 *
 * pam-u2f 1.1 and pamu2fcfg 1.1 (Debian bookworm) call fido_dev_info_manifest, fido_dev_info_path, fido_dev_new
 * and fido_dev_open (checked with objdump -T); neither calls fido_dev_open_with_info or fido_dev_new_with_info.
 */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <fido.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "udp_io.h"

/* only the two interposed functions are exported (built with -fvisibility=hidden) */
#define EXPORTED __attribute__((visibility("default")))

#define UDP_PREFIX "udp:"
#define ENV_ADDR "HMACUNLOCK_BENCH_UDP"

typedef int open_fn(fido_dev_t *, const char *);

static const char *
bench_addr(void)
{
	const char *addr = getenv(ENV_ADDR);

	return (addr != NULL && *addr != '\0') ? addr : NULL;
}

static void *
next_symbol(const char *name)
{
	void *sym = dlsym(RTLD_NEXT, name);

	if (sym == NULL)
		fprintf(stderr, "fido_udp_preload: %s not found: %s\n", name, dlerror());
	return sym;
}

EXPORTED int
fido_dev_info_manifest(fido_dev_info_t *devlist, size_t ilen, size_t *olen)
{
	static int (*real)(fido_dev_info_t *, size_t, size_t *);
	const char *addr = bench_addr();
	char path[256];

	if (addr == NULL) {
		if (real == NULL && (real = next_symbol("fido_dev_info_manifest")) == NULL)
			return FIDO_ERR_INTERNAL;
		return real(devlist, ilen, olen);
	}
	*olen = 0;
	if (ilen == 0)
		return FIDO_OK;
	if ((size_t)snprintf(path, sizeof(path), UDP_PREFIX "%s", addr) >= sizeof(path))
		return FIDO_ERR_INVALID_ARGUMENT;
	/* the io functions travel with the entry for callers that use fido_dev_new_with_info() */
	if (fido_dev_info_set(devlist, 0, path, "hmacunlock", "software key (UDP, benchmark)",
	    udp_io_functions(), NULL) != FIDO_OK)
		return FIDO_ERR_INTERNAL;
	*olen = 1;
	return FIDO_OK;
}

EXPORTED int
fido_dev_open(fido_dev_t *dev, const char *path)
{
	static open_fn *real;
	int r;

	if (real == NULL && (real = (open_fn *)next_symbol("fido_dev_open")) == NULL)
		return FIDO_ERR_INTERNAL;
	if (path != NULL && strncmp(path, UDP_PREFIX, strlen(UDP_PREFIX)) == 0 &&
	    (r = fido_dev_set_io_functions(dev, udp_io_functions())) != FIDO_OK)
		return r;
	return real(dev, path);
}
