/* fuzz_startup.c — libFuzzer target: the startup-phase reader (proto_read_startup_len, proto_parse_startup) on arbitrary packets, checking that what it accepts is rebuilt byte for byte by the packet builder. */
#include "proto.h"
#include "fuzz_common.h"

/* An accepted packet must be exactly what pkt_startup / pkt_cancel would write for the parsed contents. */
static void check_roundtrip(const uint8_t *pkt, size_t len, const struct startup_packet *sp)
{
	struct pkt_builder b;

	pkt_init(&b);
	switch (sp->code) {
	case PROTO_V3:
		FUZZ_CHECK(sp->nparams >= 0 && sp->nparams <= STARTUP_MAX_PARAMS);
		for (int i = 0; i < sp->nparams; i++) {
			FUZZ_CHECK(fuzz_str_inside(sp->names[i], pkt, len));
			FUZZ_CHECK(fuzz_str_inside(sp->values[i], pkt, len));
			FUZZ_CHECK(sp->names[i][0] != '\0');
		}
		if (sp->user)
			FUZZ_CHECK(fuzz_str_inside(sp->user, pkt, len));
		if (sp->database)
			FUZZ_CHECK(fuzz_str_inside(sp->database, pkt, len));
		pkt_startup(&b, sp->names, sp->values, sp->nparams);
		break;
	case PROTO_CANCEL_REQUEST:
		FUZZ_CHECK(len == 16);
		pkt_cancel(&b, sp->cancel_pid, sp->cancel_key);
		break;
	default:
		FUZZ_CHECK(sp->code == PROTO_SSL_REQUEST || sp->code == PROTO_GSSENC_REQUEST);
		FUZZ_CHECK(len == 8);
		pkt_free(&b);
		return;
	}
	FUZZ_CHECK(!b.failed);
	FUZZ_CHECK(b.len == len);
	if (sp->code == PROTO_V3 && b.len >= 8) {
		/* pkt_startup writes 3.0: put back the minor version the packet asked for */
		b.buf[6] = (uint8_t)(sp->minor >> 8);
		b.buf[7] = (uint8_t)sp->minor;
	}
	FUZZ_CHECK(memcmp(b.buf, pkt, len) == 0);
	pkt_free(&b);
}

/* Runs the reader on one candidate packet held in an exact-size heap buffer. */
static void one_packet(const uint8_t *pkt, size_t len)
{
	struct startup_packet sp;
	char err[256];
	uint32_t word;
	const char *why = (const char *)1;
	enum proto_rc rc;

	rc = proto_read_startup_len(pkt, len, &word, &why);
	if (rc == PROTO_INCOMPLETE)
		FUZZ_CHECK(len < PROTO_HDR_UNTYPED && why == NULL);
	else if (rc == PROTO_BAD)
		FUZZ_CHECK(why != NULL && *why && (word < 8 || word > PROTO_MAX_STARTUP));
	else
		FUZZ_CHECK(rc == PROTO_OK && word >= 8 && word <= PROTO_MAX_STARTUP);

	err[0] = 'x';
	rc = proto_parse_startup(pkt, len, &sp, err, sizeof(err));
	if (rc == PROTO_OK) {
		FUZZ_CHECK(err[0] == '\0');
		check_roundtrip(pkt, len, &sp);
	} else {
		FUZZ_CHECK(rc == PROTO_BAD);
		FUZZ_CHECK(err[0] != '\0' && memchr(err, '\0', sizeof(err)));
	}
	/* a tiny error buffer is truncated, never overrun */
	(void)proto_parse_startup(pkt, len, &sp, err, 1);
	(void)proto_parse_startup(pkt, len, &sp, NULL, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *copy = malloc(size ? size : 1);

	/* as given */
	memcpy(copy, data, size);
	one_packet(copy, size);
	/* with the length word made to match, so the fuzzer gets past the size check at once */
	if (size >= 4) {
		copy[0] = (uint8_t)(size >> 24);
		copy[1] = (uint8_t)(size >> 16);
		copy[2] = (uint8_t)(size >> 8);
		copy[3] = (uint8_t)size;
		one_packet(copy, size);
	}
	free(copy);
	return 0;
}
