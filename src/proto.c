/* proto.c — PostgreSQL v3 wire protocol: header framing, startup-packet parsing, a message reader and builder. */
#include "proto.h"
#include <stdarg.h>

static uint32_t get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

enum proto_rc proto_read_header(const uint8_t *data, size_t avail, uint32_t max_len, struct pkt_header *h,
				const char **why)
{
	h->type = 0;
	h->len = 0;
	if (why)
		*why = NULL;
	if (avail < PROTO_HDR_TYPED)
		return PROTO_INCOMPLETE;
	h->type = data[0];
	h->len = get_u32(data + 1);
	if (h->len < 4) {
		if (why)
			*why = "invalid message length: below the 4-byte minimum";
		return PROTO_BAD;
	}
	if (h->len > INT32_MAX) {
		if (why)
			*why = "invalid message length: negative";
		return PROTO_BAD;
	}
	if (h->len > max_len) {
		if (why)
			*why = "message length exceeds the allowed maximum";
		return PROTO_BAD;
	}
	return PROTO_OK;
}

enum proto_rc proto_read_startup_len(const uint8_t *data, size_t avail, uint32_t *len, const char **why)
{
	*len = 0;
	if (why)
		*why = NULL;
	if (avail < PROTO_HDR_UNTYPED)
		return PROTO_INCOMPLETE;
	*len = get_u32(data);
	if (*len < 8) {
		if (why)
			*why = "invalid startup packet length: below the 8-byte minimum";
		return PROTO_BAD;
	}
	if (*len > PROTO_MAX_STARTUP) {
		if (why)
			*why = "invalid startup packet length: above the 10000-byte maximum";
		return PROTO_BAD;
	}
	return PROTO_OK;
}

static enum proto_rc startup_fail(char *err, size_t errlen, const char *fmt, ...) PRINTF_LIKE(3, 4);

static enum proto_rc startup_fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	if (err && errlen > 0) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return PROTO_BAD;
}

/* Returns the string at pkt[*pos] and advances past its NUL, or NULL if it is not terminated before end. */
static const char *startup_str(const uint8_t *pkt, size_t end, size_t *pos)
{
	const uint8_t *nul = memchr(pkt + *pos, '\0', end - *pos);
	const char *s = (const char *)(pkt + *pos);
	if (!nul)
		return NULL;
	*pos = (size_t)(nul - pkt) + 1;
	return s;
}

/*
 * Validates the whole packet: the length word must equal len; special requests have fixed sizes; a v3
 * StartupMessage is name/value string pairs ended by one empty name, which must be the packet's last byte.
 */
enum proto_rc proto_parse_startup(const uint8_t *pkt, size_t len, struct startup_packet *sp, char *err, size_t errlen)
{
	uint32_t word, code;
	size_t pos;

	memset(sp, 0, sizeof(*sp));
	if (err && errlen > 0)
		err[0] = '\0';
	if (len < 8)
		return startup_fail(err, errlen, "startup packet too short: %zu bytes, need at least 8", len);
	if (len > PROTO_MAX_STARTUP)
		return startup_fail(err, errlen, "startup packet too long: %zu bytes, maximum is %u", len,
				    PROTO_MAX_STARTUP);
	word = get_u32(pkt);
	if (word != len)
		return startup_fail(err, errlen, "startup packet length word %u does not match packet size %zu", word,
				    len);
	code = get_u32(pkt + 4);
	sp->code = code;
	switch (code) {
	case PROTO_CANCEL_REQUEST:
		if (len != 16)
			return startup_fail(err, errlen, "invalid CancelRequest length %zu, expected 16", len);
		sp->cancel_pid = get_u32(pkt + 8);
		sp->cancel_key = get_u32(pkt + 12);
		return PROTO_OK;
	case PROTO_SSL_REQUEST:
		if (len != 8)
			return startup_fail(err, errlen, "invalid SSLRequest length %zu, expected 8", len);
		return PROTO_OK;
	case PROTO_GSSENC_REQUEST:
		if (len != 8)
			return startup_fail(err, errlen, "invalid GSSENCRequest length %zu, expected 8", len);
		return PROTO_OK;
	default:
		/* As PostgreSQL: any 3.x is accepted, and a minor version above 0 is answered with NegotiateProtocolVersion
		 * (the client then speaks 3.0); another major version, or a request code PostgreSQL does not know, is not. */
		if (code >> 16 != 3) {
			sp->bad_version = true;
			return startup_fail(err, errlen, PROTO_UNSUPPORTED_VERSION_FMT,
					    code >> 16, code & 0xFFFFu);
		}
		sp->code = PROTO_V3;
		sp->minor = code & 0xFFFFu;
		break;
	}

	pos = 8;
	for (;;) {
		const char *name, *value;
		if (pos >= len)
			return startup_fail(err, errlen, "invalid startup packet layout: missing final terminator");
		name = startup_str(pkt, len, &pos);
		if (!name)
			return startup_fail(err, errlen, "invalid startup packet layout: unterminated parameter name");
		if (!*name)
			break;
		value = startup_str(pkt, len, &pos);
		if (!value)
			return startup_fail(err, errlen,
					    "invalid startup packet layout: missing or unterminated value for parameter \"%.64s\"",
					    name);
		for (int i = 0; i < sp->nparams; i++)
			if (strcmp(sp->names[i], name) == 0)
				return startup_fail(err, errlen, "duplicate startup parameter \"%.64s\"", name);
		if (sp->nparams >= STARTUP_MAX_PARAMS)
			return startup_fail(err, errlen, "too many startup parameters (maximum is %d)",
					    STARTUP_MAX_PARAMS);
		sp->names[sp->nparams] = name;
		sp->values[sp->nparams] = value;
		sp->nparams++;
		if (strcmp(name, "user") == 0)
			sp->user = value;
		else if (strcmp(name, "database") == 0)
			sp->database = value;
	}
	if (pos != len)
		return startup_fail(err, errlen,
				    "invalid startup packet layout: %zu unexpected bytes after the final terminator", len - pos);
	return PROTO_OK;
}

void reader_init(struct pkt_reader *r, const uint8_t *data, size_t len)
{
	r->data = data;
	r->len = data ? len : 0;
	r->pos = 0;
	r->failed = false;
}

/* Returns a pointer to the next n bytes and consumes them, or NULL (setting failed) if fewer remain. */
static const uint8_t *reader_take(struct pkt_reader *r, size_t n)
{
	const uint8_t *p;
	if (r->failed || n > r->len - r->pos) {
		r->failed = true;
		return NULL;
	}
	if (!r->data)
		return (const uint8_t *)"";   /* n == 0 on an empty reader */
	p = r->data + r->pos;
	r->pos += n;
	return p;
}

uint8_t reader_u8(struct pkt_reader *r)
{
	const uint8_t *p = reader_take(r, 1);
	return p ? p[0] : 0;
}

uint16_t reader_u16(struct pkt_reader *r)
{
	const uint8_t *p = reader_take(r, 2);
	return p ? (uint16_t)(p[0] << 8 | p[1]) : 0;
}

uint32_t reader_u32(struct pkt_reader *r)
{
	const uint8_t *p = reader_take(r, 4);
	return p ? get_u32(p) : 0;
}

const char *reader_cstr(struct pkt_reader *r)
{
	const uint8_t *nul;
	const char *s;
	if (r->failed || r->pos >= r->len) {
		r->failed = true;
		return "";
	}
	nul = memchr(r->data + r->pos, '\0', r->len - r->pos);
	if (!nul) {
		r->failed = true;
		return "";
	}
	s = (const char *)(r->data + r->pos);
	r->pos = (size_t)(nul - r->data) + 1;
	return s;
}

const uint8_t *reader_bytes(struct pkt_reader *r, size_t n)
{
	return reader_take(r, n);
}

void pkt_init(struct pkt_builder *b)
{
	b->buf = NULL;
	b->len = 0;
	b->cap = 0;
	b->msg_start = SIZE_MAX;
	b->failed = false;
}

void pkt_free(struct pkt_builder *b)
{
	free(b->buf);
	pkt_init(b);
}

/* Empties the builder for reuse, keeping its buffer and clearing the failure flag. */
void pkt_reset(struct pkt_builder *b)
{
	b->len = 0;
	b->msg_start = SIZE_MAX;
	b->failed = false;
}

/* Makes room for n more bytes; false (and failed) on overflow or allocation failure. */
static bool pkt_reserve(struct pkt_builder *b, size_t n)
{
	size_t need, cap;
	uint8_t *p;
	if (b->failed)
		return false;
	if (n > SIZE_MAX - b->len) {
		b->failed = true;
		return false;
	}
	need = b->len + n;
	if (need <= b->cap)
		return true;
	cap = b->cap ? b->cap : 256;
	while (cap < need) {
		if (cap > SIZE_MAX / 2) {
			cap = need;
			break;
		}
		cap *= 2;
	}
	p = realloc(b->buf, cap);
	if (!p) {
		b->failed = true;
		return false;
	}
	b->buf = p;
	b->cap = cap;
	return true;
}

/*
 * A typed message is opened with its type byte and a zero length placeholder; an untyped startup packet with only
 * the placeholder. msg_start points at the first byte either way, and pkt_end tells them apart by that byte: a
 * type byte is never 0, while the high byte of a startup length placeholder always is.
 */
void pkt_begin(struct pkt_builder *b, uint8_t type)
{
	size_t n = type ? PROTO_HDR_TYPED : PROTO_HDR_UNTYPED;
	if (b->failed)
		return;
	if (b->msg_start != SIZE_MAX) {
		b->failed = true;        /* previous message not ended */
		return;
	}
	if (!pkt_reserve(b, n))
		return;
	b->msg_start = b->len;
	memset(b->buf + b->len, 0, n);
	if (type)
		b->buf[b->len] = type;
	b->len += n;
}

void pkt_u8(struct pkt_builder *b, uint8_t v)
{
	if (!pkt_reserve(b, 1))
		return;
	b->buf[b->len++] = v;
}

void pkt_u16(struct pkt_builder *b, uint16_t v)
{
	if (!pkt_reserve(b, 2))
		return;
	b->buf[b->len++] = (uint8_t)(v >> 8);
	b->buf[b->len++] = (uint8_t)v;
}

void pkt_u32(struct pkt_builder *b, uint32_t v)
{
	if (!pkt_reserve(b, 4))
		return;
	put_u32(b->buf + b->len, v);
	b->len += 4;
}

void pkt_cstr(struct pkt_builder *b, const char *s)
{
	if (!s) {
		b->failed = true;
		return;
	}
	pkt_bytes(b, s, strlen(s) + 1);
}

void pkt_bytes(struct pkt_builder *b, const void *p, size_t n)
{
	if (n == 0 || !pkt_reserve(b, n))
		return;
	if (!p) {
		b->failed = true;
		return;
	}
	memcpy(b->buf + b->len, p, n);
	b->len += n;
}

void pkt_end(struct pkt_builder *b)
{
	size_t at, mlen;
	if (b->failed)
		return;
	if (b->msg_start == SIZE_MAX) {
		b->failed = true;
		return;
	}
	at = b->buf[b->msg_start] ? b->msg_start + 1 : b->msg_start;
	mlen = b->len - at;
	b->msg_start = SIZE_MAX;
	if (mlen > INT32_MAX) {
		b->failed = true;
		return;
	}
	put_u32(b->buf + at, (uint32_t)mlen);
}

static void pkt_error_fields(struct pkt_builder *b, uint8_t type, const char *severity, const char *sqlstate,
			     const char *message)
{
	pkt_begin(b, type);
	pkt_u8(b, 'S');
	pkt_cstr(b, severity);
	pkt_u8(b, 'V');
	pkt_cstr(b, severity);
	pkt_u8(b, 'C');
	pkt_cstr(b, sqlstate);
	pkt_u8(b, 'M');
	pkt_cstr(b, message);
	pkt_u8(b, 0);
	pkt_end(b);
}

void pkt_error(struct pkt_builder *b, const char *severity, const char *sqlstate, const char *message)
{
	pkt_error_fields(b, BE_ERROR, severity, sqlstate, message);
}

void pkt_notice(struct pkt_builder *b, const char *severity, const char *sqlstate, const char *message)
{
	pkt_error_fields(b, BE_NOTICE, severity, sqlstate, message);
}

void pkt_error_v2(struct pkt_builder *b, const char *severity, const char *message)
{
	/* no length word, so not pkt_begin(): the message ends at its NUL */
	if (b->failed)
		return;
	if (b->msg_start != SIZE_MAX) {
		b->failed = true;
		return;
	}
	pkt_bytes(b, "E", 1);
	pkt_bytes(b, severity, strlen(severity));
	pkt_bytes(b, ":  ", 3);
	pkt_bytes(b, message, strlen(message));
	pkt_bytes(b, "\n", 2); /* the newline and the NUL */
}

void pkt_param_status(struct pkt_builder *b, const char *name, const char *value)
{
	pkt_begin(b, BE_PARAM_STATUS);
	pkt_cstr(b, name);
	pkt_cstr(b, value);
	pkt_end(b);
}

void pkt_backend_key(struct pkt_builder *b, uint32_t pid, uint32_t key)
{
	pkt_begin(b, BE_BACKEND_KEY);
	pkt_u32(b, pid);
	pkt_u32(b, key);
	pkt_end(b);
}

void pkt_ready(struct pkt_builder *b, char status)
{
	pkt_begin(b, BE_READY);
	pkt_u8(b, (uint8_t)status);
	pkt_end(b);
}

void pkt_auth(struct pkt_builder *b, uint32_t code, const void *data, size_t len)
{
	pkt_begin(b, BE_AUTH);
	pkt_u32(b, code);
	pkt_bytes(b, data, len);
	pkt_end(b);
}

/* AuthenticationSASL offering one mechanism: the list is ended by an empty string. */
void pkt_auth_sasl(struct pkt_builder *b, const char *mechanism)
{
	pkt_begin(b, BE_AUTH);
	pkt_u32(b, AUTH_REQ_SASL);
	pkt_cstr(b, mechanism);
	pkt_u8(b, 0);
	pkt_end(b);
}

void pkt_query(struct pkt_builder *b, const char *sql)
{
	pkt_begin(b, FE_QUERY);
	pkt_cstr(b, sql);
	pkt_end(b);
}

void pkt_startup(struct pkt_builder *b, const char *const *names, const char *const *values, int n)
{
	pkt_begin(b, 0);
	pkt_u32(b, PROTO_V3);
	for (int i = 0; i < n; i++) {
		if (!names[i] || !*names[i]) {
			b->failed = true;    /* an empty name would end the list early */
			return;
		}
		pkt_cstr(b, names[i]);
		pkt_cstr(b, values[i]);
	}
	pkt_u8(b, 0);
	pkt_end(b);
}

void pkt_cancel(struct pkt_builder *b, uint32_t pid, uint32_t key)
{
	pkt_begin(b, 0);
	pkt_u32(b, PROTO_CANCEL_REQUEST);
	pkt_u32(b, pid);
	pkt_u32(b, key);
	pkt_end(b);
}

void pkt_password(struct pkt_builder *b, const char *password)
{
	pkt_begin(b, FE_PASSWORD);
	pkt_cstr(b, password);
	pkt_end(b);
}

/* SASLInitialResponse; data == NULL sends length -1 (no initial response). */
void pkt_sasl_initial(struct pkt_builder *b, const char *mechanism, const void *data, size_t len)
{
	pkt_begin(b, FE_PASSWORD);
	pkt_cstr(b, mechanism);
	if (!data) {
		pkt_u32(b, UINT32_MAX);
	} else if (len > INT32_MAX) {
		b->failed = true;
	} else {
		pkt_u32(b, (uint32_t)len);
		pkt_bytes(b, data, len);
	}
	pkt_end(b);
}

void pkt_sasl_response(struct pkt_builder *b, const void *data, size_t len)
{
	pkt_begin(b, FE_PASSWORD);
	pkt_bytes(b, data, len);
	pkt_end(b);
}

void pkt_terminate(struct pkt_builder *b)
{
	pkt_begin(b, FE_TERMINATE);
	pkt_end(b);
}

/* RowDescription of text-format columns that belong to no table. */
void pkt_row_description(struct pkt_builder *b, const char *const *names, const uint32_t *type_oids, int n)
{
	if (n < 0 || n > INT16_MAX) {
		b->failed = true;
		return;
	}
	pkt_begin(b, BE_ROW_DESCRIPTION);
	pkt_u16(b, (uint16_t)n);
	for (int i = 0; i < n; i++) {
		pkt_cstr(b, names[i]);
		pkt_u32(b, 0);               /* table oid */
		pkt_u16(b, 0);               /* column attnum */
		pkt_u32(b, type_oids[i]);
		pkt_u16(b, UINT16_MAX);      /* typlen -1 */
		pkt_u32(b, UINT32_MAX);      /* typmod -1 */
		pkt_u16(b, 0);               /* text format */
	}
	pkt_end(b);
}

void pkt_data_row(struct pkt_builder *b, const char *const *values, int n)
{
	if (n < 0 || n > INT16_MAX) {
		b->failed = true;
		return;
	}
	pkt_begin(b, BE_DATA_ROW);
	pkt_u16(b, (uint16_t)n);
	for (int i = 0; i < n; i++) {
		size_t len;
		if (!values[i]) {
			pkt_u32(b, UINT32_MAX);      /* -1: SQL NULL */
			continue;
		}
		len = strlen(values[i]);
		if (len > INT32_MAX) {
			b->failed = true;
			return;
		}
		pkt_u32(b, (uint32_t)len);
		pkt_bytes(b, values[i], len);
	}
	pkt_end(b);
}

void pkt_command_complete(struct pkt_builder *b, const char *tag)
{
	pkt_begin(b, BE_COMMAND_COMPLETE);
	pkt_cstr(b, tag);
	pkt_end(b);
}

/* Fields are a type byte and a string each, ended by a zero byte that must be the body's last. */
enum proto_rc proto_parse_error(const uint8_t *body, size_t len, struct error_fields *ef)
{
	struct pkt_reader r;
	bool have_v = false;

	ef->severity = NULL;
	ef->sqlstate = NULL;
	ef->message = NULL;
	reader_init(&r, body, len);
	for (;;) {
		uint8_t code = reader_u8(&r);
		const char *val;
		if (r.failed)
			return PROTO_BAD;
		if (code == 0)
			break;
		val = reader_cstr(&r);
		if (r.failed)
			return PROTO_BAD;
		switch (code) {
		case 'V':
			ef->severity = val;
			have_v = true;
			break;
		case 'S':
			if (!have_v)
				ef->severity = val;
			break;
		case 'C':
			ef->sqlstate = val;
			break;
		case 'M':
			ef->message = val;
			break;
		default:
			break;
		}
	}
	return r.pos == r.len ? PROTO_OK : PROTO_BAD;
}

const char *proto_msg_name(uint8_t type, bool from_frontend)
{
	if (from_frontend) {
		switch (type) {
		case FE_BIND: return "Bind";
		case FE_CLOSE: return "Close";
		case FE_COPY_DATA: return "CopyData";
		case FE_COPY_DONE: return "CopyDone";
		case FE_COPY_FAIL: return "CopyFail";
		case FE_DESCRIBE: return "Describe";
		case FE_EXECUTE: return "Execute";
		case FE_FLUSH: return "Flush";
		case FE_FUNCTION_CALL: return "FunctionCall";
		case FE_PARSE: return "Parse";
		case FE_PASSWORD: return "PasswordMessage";
		case FE_QUERY: return "Query";
		case FE_SYNC: return "Sync";
		case FE_TERMINATE: return "Terminate";
		default: return "unknown";
		}
	}
	switch (type) {
	case BE_AUTH: return "Authentication";
	case BE_BACKEND_KEY: return "BackendKeyData";
	case BE_BIND_COMPLETE: return "BindComplete";
	case BE_CLOSE_COMPLETE: return "CloseComplete";
	case BE_COMMAND_COMPLETE: return "CommandComplete";
	case BE_COPY_DATA: return "CopyData";
	case BE_COPY_DONE: return "CopyDone";
	case BE_COPY_IN: return "CopyInResponse";
	case BE_COPY_OUT: return "CopyOutResponse";
	case BE_COPY_BOTH: return "CopyBothResponse";
	case BE_DATA_ROW: return "DataRow";
	case BE_EMPTY_QUERY: return "EmptyQueryResponse";
	case BE_ERROR: return "ErrorResponse";
	case BE_FUNCTION_RESULT: return "FunctionCallResponse";
	case BE_NEGOTIATE_VERSION: return "NegotiateProtocolVersion";
	case BE_NO_DATA: return "NoData";
	case BE_NOTICE: return "NoticeResponse";
	case BE_NOTIFICATION: return "NotificationResponse";
	case BE_PARAM_DESCRIPTION: return "ParameterDescription";
	case BE_PARAM_STATUS: return "ParameterStatus";
	case BE_PARSE_COMPLETE: return "ParseComplete";
	case BE_PORTAL_SUSPENDED: return "PortalSuspended";
	case BE_READY: return "ReadyForQuery";
	case BE_ROW_DESCRIPTION: return "RowDescription";
	default: return "unknown";
	}
}
