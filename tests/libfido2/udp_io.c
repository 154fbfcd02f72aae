/* libfido2 I/O over UDP: see udp_io.h. */
#include "udp_io.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct udp_io {
	int fd;
};

static const fido_dev_io_t io_functions = {
	udp_io_open,
	udp_io_close,
	udp_io_read,
	udp_io_write,
};

const fido_dev_io_t *
udp_io_functions(void)
{
	return &io_functions;
}

/* "udp:HOST:PORT" or "HOST:PORT"; HOST may be "[v6]". Fills host (NUL-terminated) and port. */
static int
split_path(const char *path, char *host, size_t host_len, const char **port)
{
	const char *colon;
	size_t n;

	if (strncmp(path, "udp:", 4) == 0)
		path += 4;
	if ((colon = strrchr(path, ':')) == NULL || colon == path || colon[1] == '\0')
		return -1;
	n = (size_t)(colon - path);
	if (path[0] == '[' && n >= 2 && path[n - 1] == ']') {
		path++;
		n -= 2;
	}
	if (n == 0 || n >= host_len)
		return -1;
	memcpy(host, path, n);
	host[n] = '\0';
	*port = colon + 1;
	return 0;
}

void *
udp_io_open(const char *path)
{
	struct addrinfo hints, *res = NULL, *ai;
	struct udp_io *io;
	char host[256];
	const char *port;
	int fd = -1;

	if (path == NULL || split_path(path, host, sizeof(host), &port) < 0)
		return NULL;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_DGRAM;
	if (getaddrinfo(host, port, &hints, &res) != 0)
		return NULL;
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		if ((fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol)) < 0)
			continue;
		/* connected: only the key's datagrams are received, and a dead port is reported */
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return NULL;
	if ((io = calloc(1, sizeof(*io))) == NULL) {
		close(fd);
		return NULL;
	}
	io->fd = fd;
	return io;
}

void
udp_io_close(void *handle)
{
	struct udp_io *io = handle;

	if (io == NULL)
		return;
	close(io->fd);
	free(io);
}

int
udp_io_read(void *handle, unsigned char *buf, size_t len, int ms)
{
	struct udp_io *io = handle;
	unsigned char report[UDP_IO_REPORT_LEN + 1];
	struct pollfd pfd;
	ssize_t n;

	if (io == NULL || len != UDP_IO_REPORT_LEN)
		return -1;
	if (ms < 0 || ms > UDP_IO_MAX_WAIT_MS)
		ms = UDP_IO_MAX_WAIT_MS;
	pfd.fd = io->fd;
	pfd.events = POLLIN;
	for (;;) {
		int r;

		pfd.revents = 0;
		r = poll(&pfd, 1, ms);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1; /* timeout or error */
		n = recv(io->fd, report, sizeof(report), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1; /* ECONNREFUSED: nothing listens there any more */
		if (n != UDP_IO_REPORT_LEN)
			continue; /* not a report of this device */
		memcpy(buf, report, UDP_IO_REPORT_LEN);
		return UDP_IO_REPORT_LEN;
	}
}

int
udp_io_write(void *handle, const unsigned char *buf, size_t len)
{
	struct udp_io *io = handle;
	ssize_t n;

	/* libfido2 writes report id 0 followed by one 64-byte report */
	if (io == NULL || len != UDP_IO_REPORT_LEN + 1 || buf[0] != 0)
		return -1;
	do {
		n = send(io->fd, buf + 1, UDP_IO_REPORT_LEN, 0);
	} while (n < 0 && errno == EINTR);
	if (n != UDP_IO_REPORT_LEN)
		return -1;
	return (int)len;
}
