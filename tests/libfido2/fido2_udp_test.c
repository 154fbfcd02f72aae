/*
 * libfido2 against the hmacunlock software key over UDP.
 *
 * usage: fido2_udp_test udp:HOST:PORT   (the PIN is read from stdin, one line: secrets never travel in argv)
 *
 * Sets the PIN, makes a resident ES256 credential with hmac-secret, verifies its packed x5c attestation with
 * fido_cred_verify, gets an assertion with hmac-secret and the PIN, verifies it with fido_assert_verify against
 * the credential's public key, and prints one "ok: ..." line per step. Exit 0 only if every step passed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <fido.h>
#include <fido/es256.h>

#include "udp_io.h"

#define RP_ID "hmacunlock.test"

static int
fail(const char *step, int r)
{
	fprintf(stderr, "FAIL: %s: %s (%d)\n", step, fido_strerr(r), r);
	return 1;
}

static void
random_bytes(unsigned char *buf, size_t len)
{
	if (getrandom(buf, len, 0) != (ssize_t)len) {
		perror("getrandom");
		exit(2);
	}
}

static int
read_pin(char *pin, size_t len)
{
	if (fgets(pin, (int)len, stdin) == NULL)
		return -1;
	pin[strcspn(pin, "\r\n")] = '\0';
	return pin[0] ? 0 : -1;
}

static int
make_credential(fido_dev_t *dev, fido_cred_t *cred, const char *pin)
{
	unsigned char cdh[32], user_id[16];
	int r;

	random_bytes(cdh, sizeof(cdh));
	random_bytes(user_id, sizeof(user_id));
	if ((r = fido_cred_set_type(cred, COSE_ES256)) != FIDO_OK ||
	    (r = fido_cred_set_clientdata_hash(cred, cdh, sizeof(cdh))) != FIDO_OK ||
	    (r = fido_cred_set_rp(cred, RP_ID, "hmacunlock test")) != FIDO_OK ||
	    (r = fido_cred_set_user(cred, user_id, sizeof(user_id), "alice", "Alice", NULL)) != FIDO_OK ||
	    (r = fido_cred_set_rk(cred, FIDO_OPT_TRUE)) != FIDO_OK ||
	    (r = fido_cred_set_extensions(cred, FIDO_EXT_HMAC_SECRET)) != FIDO_OK)
		return fail("fido_cred_set_*", r);
	if ((r = fido_dev_make_cred(dev, cred, pin)) != FIDO_OK)
		return fail("fido_dev_make_cred", r);
	printf("ok: made resident credential (%zu-byte id, fmt %s)\n", fido_cred_id_len(cred),
	    fido_cred_fmt(cred) ? fido_cred_fmt(cred) : "?");
	if (fido_cred_x5c_len(cred) == 0)
		printf("note: no x5c certificate in the attestation\n");
	if ((r = fido_cred_verify(cred)) != FIDO_OK)
		return fail("fido_cred_verify (packed attestation with x5c)", r);
	printf("ok: fido_cred_verify\n");
	return 0;
}

static int
get_assertion(fido_dev_t *dev, const fido_cred_t *cred, const char *pin)
{
	unsigned char cdh[32], salt[32];
	fido_assert_t *assert = NULL;
	es256_pk_t *pk = NULL;
	int r, ret = 1;

	random_bytes(cdh, sizeof(cdh));
	random_bytes(salt, sizeof(salt));
	if ((assert = fido_assert_new()) == NULL || (pk = es256_pk_new()) == NULL) {
		fprintf(stderr, "FAIL: out of memory\n");
		goto out;
	}
	if ((r = fido_assert_set_rp(assert, RP_ID)) != FIDO_OK ||
	    (r = fido_assert_set_clientdata_hash(assert, cdh, sizeof(cdh))) != FIDO_OK ||
	    (r = fido_assert_set_extensions(assert, FIDO_EXT_HMAC_SECRET)) != FIDO_OK ||
	    (r = fido_assert_set_hmac_salt(assert, salt, sizeof(salt))) != FIDO_OK) {
		ret = fail("fido_assert_set_*", r);
		goto out;
	}
	/* no allow list: the key finds the resident credential itself */
	if ((r = fido_dev_get_assert(dev, assert, pin)) != FIDO_OK) {
		ret = fail("fido_dev_get_assert", r);
		goto out;
	}
	if (fido_assert_count(assert) != 1 ||
	    fido_assert_id_len(assert, 0) != fido_cred_id_len(cred) ||
	    memcmp(fido_assert_id_ptr(assert, 0), fido_cred_id_ptr(cred), fido_cred_id_len(cred)) != 0) {
		fprintf(stderr, "FAIL: the assertion is not for the credential just made\n");
		goto out;
	}
	if ((r = es256_pk_from_ptr(pk, fido_cred_pubkey_ptr(cred), fido_cred_pubkey_len(cred))) != FIDO_OK) {
		ret = fail("es256_pk_from_ptr", r);
		goto out;
	}
	if ((r = fido_assert_verify(assert, 0, COSE_ES256, pk)) != FIDO_OK) {
		ret = fail("fido_assert_verify", r);
		goto out;
	}
	printf("ok: fido_assert_verify\n");
	printf("ok: hmac-secret output length %zu\n", fido_assert_hmac_secret_len(assert, 0));
	ret = fido_assert_hmac_secret_len(assert, 0) == 32 ? 0 : 1;
out:
	es256_pk_free(&pk);
	fido_assert_free(&assert);
	return ret;
}

int
main(int argc, char **argv)
{
	fido_dev_t *dev = NULL;
	fido_cred_t *cred = NULL;
	char pin[128];
	int r, ret = 1;

	if (argc != 2) {
		fprintf(stderr, "usage: %s udp:HOST:PORT  (PIN on stdin)\n", argv[0]);
		return 2;
	}
	if (read_pin(pin, sizeof(pin)) < 0) {
		fprintf(stderr, "no PIN on stdin\n");
		return 2;
	}
	fido_init(getenv("FIDO_DEBUG") ? FIDO_DEBUG : 0);
	if ((dev = fido_dev_new()) == NULL || (cred = fido_cred_new()) == NULL) {
		fprintf(stderr, "FAIL: out of memory\n");
		goto out;
	}
	if ((r = fido_dev_set_io_functions(dev, udp_io_functions())) != FIDO_OK) {
		ret = fail("fido_dev_set_io_functions", r);
		goto out;
	}
	if ((r = fido_dev_open(dev, argv[1])) != FIDO_OK) {
		ret = fail("fido_dev_open", r);
		goto out;
	}
	printf("ok: opened %s (CTAPHID protocol %u, fido2 %s)\n", argv[1], fido_dev_protocol(dev),
	    fido_dev_is_fido2(dev) ? "yes" : "no");
	if ((r = fido_dev_set_pin(dev, pin, NULL)) != FIDO_OK) {
		ret = fail("fido_dev_set_pin", r);
		goto out;
	}
	printf("ok: fido_dev_set_pin\n");
	if (make_credential(dev, cred, pin) != 0 || get_assertion(dev, cred, pin) != 0)
		goto out;
	ret = 0;
out:
	explicit_bzero(pin, sizeof(pin));
	fido_cred_free(&cred);
	if (dev != NULL)
		fido_dev_close(dev);
	fido_dev_free(&dev);
	return ret;
}
