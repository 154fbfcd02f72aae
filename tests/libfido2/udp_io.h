/*
 * libfido2 I/O over UDP to the hmacunlock software key (device path "udp:HOST:PORT").
 *
 * One 64-byte CTAPHID report per datagram, no report-id byte: libfido2 writes a leading report id (0) that is
 * stripped here. Install with fido_dev_set_io_functions(dev, udp_io_functions()). Also reused by the pam-u2f
 * LD_PRELOAD shim of the benchmark, so it depends on nothing but libc and libfido2's types.
 */
#ifndef HMACUNLOCK_UDP_IO_H
#define HMACUNLOCK_UDP_IO_H

#include <stddef.h>

#include <fido.h>

#define UDP_IO_REPORT_LEN 64
/* libfido2 passes ms = -1 for "wait forever"; a waiting key sends a keepalive every 100 ms, so silence this
 * long means the key is gone. */
#define UDP_IO_MAX_WAIT_MS 15000

void *udp_io_open(const char *path);
void  udp_io_close(void *handle);
int   udp_io_read(void *handle, unsigned char *buf, size_t len, int ms);
int   udp_io_write(void *handle, const unsigned char *buf, size_t len);

/* the four functions above, for fido_dev_set_io_functions() and fido_dev_info_set() */
const fido_dev_io_t *udp_io_functions(void);

#endif
