/* fuzz_proto.c — libFuzzer target: the v3 protocol reader (typed message framing in both directions, the pkt_reader over every message body, proto_parse_error) on arbitrary bytes. */
#include "proto.h"
#include "fuzz_common.h"

/* Largest message the stream walk accepts (parley's max_packet_size is configurable; any bound works here). */
#define FUZZ_MAX_MSG (1u << 20)

/* The reader never moves past its data, and once failed it stays failed. */
static void reader_ok(const struct pkt_reader *r)
{
	FUZZ_CHECK(r->pos <= r->len);
}

/* Reads a string and checks it lies inside the body when the read succeeded. */
static const char *cstr(struct pkt_reader *r, const uint8_t *body, size_t len)
{
	bool was_failed = r->failed;
	const char *s = reader_cstr(r);
	FUZZ_CHECK(s != NULL);
	if (!r->failed)
		FUZZ_CHECK(fuzz_str_inside(s, body, len));
	else
		FUZZ_CHECK(*s == '\0');
	if (was_failed)
		FUZZ_CHECK(r->failed);
	reader_ok(r);
	return s;
}

static const uint8_t *bytes(struct pkt_reader *r, size_t n, const uint8_t *body, size_t len)
{
	size_t before = r->pos;
	const uint8_t *p = reader_bytes(r, n);
	if (p && n > 0) {
		FUZZ_CHECK(p >= body && p + n <= body + len);
		FUZZ_CHECK(r->pos == before + n);
		/* touch every byte so ASan sees any read past the message */
		volatile uint8_t sink = 0;
		for (size_t i = 0; i < n; i++)
			sink ^= p[i];
		(void)sink;
	}
	reader_ok(r);
	return p;
}

/* Walks a list of n 16-bit format codes. */
static void formats(struct pkt_reader *r)
{
	uint16_t n = reader_u16(r);
	for (uint16_t i = 0; i < n && !r->failed; i++)
		(void)reader_u16(r);
	reader_ok(r);
}

/* Parses a frontend (client → server) message body the way the protocol defines it. */
static void parse_frontend(uint8_t type, const uint8_t *body, size_t len)
{
	struct pkt_reader r;
	uint16_t n;

	reader_init(&r, body, len);
	switch (type) {
	case FE_QUERY:
	case FE_COPY_FAIL:
		(void)cstr(&r, body, len);
		break;
	case FE_PARSE:
		(void)cstr(&r, body, len);
		(void)cstr(&r, body, len);
		n = reader_u16(&r);
		(void)bytes(&r, (size_t)n * 4, body, len);
		break;
	case FE_BIND:
		(void)cstr(&r, body, len);
		(void)cstr(&r, body, len);
		formats(&r);
		n = reader_u16(&r);
		for (uint16_t i = 0; i < n && !r.failed; i++) {
			uint32_t l = reader_u32(&r);
			if (l != 0xFFFFFFFFu)
				(void)bytes(&r, l, body, len);
		}
		formats(&r);
		break;
	case FE_DESCRIBE:
	case FE_CLOSE:
		(void)reader_u8(&r);
		(void)cstr(&r, body, len);
		break;
	case FE_EXECUTE:
		(void)cstr(&r, body, len);
		(void)reader_u32(&r);
		break;
	case FE_FUNCTION_CALL:
		(void)reader_u32(&r);
		formats(&r);
		n = reader_u16(&r);
		for (uint16_t i = 0; i < n && !r.failed; i++) {
			uint32_t l = reader_u32(&r);
			if (l != 0xFFFFFFFFu)
				(void)bytes(&r, l, body, len);
		}
		(void)reader_u16(&r);
		break;
	case FE_PASSWORD:
		/* SASLInitialResponse: mechanism, then a length-prefixed payload (-1 = none) */
		(void)cstr(&r, body, len);
		{
			uint32_t l = reader_u32(&r);
			if (l != 0xFFFFFFFFu)
				(void)bytes(&r, l, body, len);
		}
		break;
	default:
		(void)bytes(&r, len, body, len);
		break;
	}
	reader_ok(&r);
	if (!r.failed)
		FUZZ_CHECK(r.pos <= len);
}

/* Parses a backend (server → client) message body the way the protocol defines it. */
static void parse_backend(uint8_t type, const uint8_t *body, size_t len)
{
	struct pkt_reader r;
	struct error_fields ef;
	uint16_t n;

	reader_init(&r, body, len);
	switch (type) {
	case BE_AUTH: {
		uint32_t code = reader_u32(&r);
		if (code == AUTH_REQ_MD5) {
			(void)bytes(&r, 4, body, len);
		} else if (code == AUTH_REQ_SASL) {
			for (int i = 0; i < 64 && !r.failed; i++)
				if (!*cstr(&r, body, len))
					break;
		} else if (code == AUTH_REQ_SASL_CONT || code == AUTH_REQ_SASL_FIN) {
			(void)bytes(&r, len - r.pos, body, len);
		}
		break;
	}
	case BE_BACKEND_KEY:
		(void)reader_u32(&r);
		(void)reader_u32(&r);
		break;
	case BE_PARAM_STATUS:
		(void)cstr(&r, body, len);
		(void)cstr(&r, body, len);
		break;
	case BE_READY:
		(void)reader_u8(&r);
		break;
	case BE_ROW_DESCRIPTION:
		n = reader_u16(&r);
		for (uint16_t i = 0; i < n && !r.failed; i++) {
			(void)cstr(&r, body, len);
			(void)reader_u32(&r);
			(void)reader_u16(&r);
			(void)reader_u32(&r);
			(void)reader_u16(&r);
			(void)reader_u32(&r);
			(void)reader_u16(&r);
		}
		break;
	case BE_DATA_ROW:
		n = reader_u16(&r);
		for (uint16_t i = 0; i < n && !r.failed; i++) {
			uint32_t l = reader_u32(&r);
			if (l != 0xFFFFFFFFu)
				(void)bytes(&r, l, body, len);
		}
		break;
	case BE_ERROR:
	case BE_NOTICE:
		if (proto_parse_error(body, len, &ef) == PROTO_OK) {
			if (ef.severity)
				FUZZ_CHECK(fuzz_str_inside(ef.severity, body, len));
			if (ef.sqlstate)
				FUZZ_CHECK(fuzz_str_inside(ef.sqlstate, body, len));
			if (ef.message)
				FUZZ_CHECK(fuzz_str_inside(ef.message, body, len));
			FUZZ_CHECK(len > 0 && body[len - 1] == '\0');
		}
		break;
	case BE_COMMAND_COMPLETE:
		(void)cstr(&r, body, len);
		break;
	case BE_NOTIFICATION:
		(void)reader_u32(&r);
		(void)cstr(&r, body, len);
		(void)cstr(&r, body, len);
		break;
	case BE_PARAM_DESCRIPTION:
		n = reader_u16(&r);
		(void)bytes(&r, (size_t)n * 4, body, len);
		break;
	case BE_COPY_IN:
	case BE_COPY_OUT:
	case BE_COPY_BOTH:
		(void)reader_u8(&r);
		formats(&r);
		break;
	case BE_NEGOTIATE_VERSION: {
		uint32_t k;
		(void)reader_u32(&r);
		k = reader_u32(&r);
		for (uint32_t i = 0; i < k && i < 64 && !r.failed; i++)
			(void)cstr(&r, body, len);
		break;
	}
	case BE_FUNCTION_RESULT: {
		uint32_t l = reader_u32(&r);
		if (l != 0xFFFFFFFFu)
			(void)bytes(&r, l, body, len);
		break;
	}
	default:
		(void)bytes(&r, len, body, len);
		break;
	}
	reader_ok(&r);
	(void)proto_msg_name(type, false);
}

/* Walks data as a stream of typed messages, as the client and server read paths do. */
static void walk_stream(const uint8_t *data, size_t size, uint32_t max_len)
{
	size_t off = 0;

	while (off < size) {
		struct pkt_header h;
		const char *why = (const char *)1;
		enum proto_rc rc = proto_read_header(data + off, size - off, max_len, &h, &why);
		if (rc == PROTO_INCOMPLETE) {
			FUZZ_CHECK(size - off < PROTO_HDR_TYPED);
			FUZZ_CHECK(why == NULL);
			break;
		}
		if (rc == PROTO_BAD) {
			FUZZ_CHECK(why != NULL && *why);
			break;
		}
		FUZZ_CHECK(rc == PROTO_OK && why == NULL);
		FUZZ_CHECK(h.len >= 4 && h.len <= max_len);
		if ((size_t)h.len + 1 > size - off)
			break; /* the rest of the message has not "arrived" */
		/* an exact-size heap copy, so ASan catches any read past the message body */
		{
			size_t blen = h.len - 4;
			uint8_t *body = malloc(blen ? blen : 1);
			memcpy(body, data + off + PROTO_HDR_TYPED, blen);
			parse_frontend(h.type, body, blen);
			parse_backend(h.type, body, blen);
			(void)proto_msg_name(h.type, true);
			free(body);
		}
		off += (size_t)h.len + 1;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct error_fields ef;

	/* the whole input as a stream of messages, with a generous and with a tight length limit */
	walk_stream(data, size, FUZZ_MAX_MSG);
	walk_stream(data, size, 64);
	/* the whole input as one ErrorResponse body */
	if (proto_parse_error(data, size, &ef) == PROTO_OK) {
		FUZZ_CHECK(size > 0 && data[size - 1] == '\0');
		if (ef.severity)
			FUZZ_CHECK(fuzz_str_inside(ef.severity, data, size));
		if (ef.sqlstate)
			FUZZ_CHECK(fuzz_str_inside(ef.sqlstate, data, size));
		if (ef.message)
			FUZZ_CHECK(fuzz_str_inside(ef.message, data, size));
	}
	return 0;
}
