/* proto.h — PostgreSQL v3 wire protocol: framing, startup packets, a packet builder. Pure functions, no sockets. */
#ifndef PARLEY_PROTO_H
#define PARLEY_PROTO_H
#include "common.h"

/* Codes in the first word of an untyped startup-phase packet. */
#define PROTO_V3 196608u                 /* 3.0 */
#define PROTO_CANCEL_REQUEST 80877102u
#define PROTO_SSL_REQUEST 80877103u
#define PROTO_GSSENC_REQUEST 80877104u

/* Frontend (client → server) message types. */
#define FE_BIND 'B'
#define FE_CLOSE 'C'
#define FE_COPY_DATA 'd'
#define FE_COPY_DONE 'c'
#define FE_COPY_FAIL 'f'
#define FE_DESCRIBE 'D'
#define FE_EXECUTE 'E'
#define FE_FLUSH 'H'
#define FE_FUNCTION_CALL 'F'
#define FE_PARSE 'P'
#define FE_PASSWORD 'p'                  /* also SASLInitialResponse, SASLResponse, GSSResponse */
#define FE_QUERY 'Q'
#define FE_SYNC 'S'
#define FE_TERMINATE 'X'

/* Backend (server → client) message types. */
#define BE_AUTH 'R'
#define BE_BACKEND_KEY 'K'
#define BE_BIND_COMPLETE '2'
#define BE_CLOSE_COMPLETE '3'
#define BE_COMMAND_COMPLETE 'C'
#define BE_COPY_DATA 'd'
#define BE_COPY_DONE 'c'
#define BE_COPY_IN 'G'
#define BE_COPY_OUT 'H'
#define BE_COPY_BOTH 'W'
#define BE_DATA_ROW 'D'
#define BE_EMPTY_QUERY 'I'
#define BE_ERROR 'E'
#define BE_FUNCTION_RESULT 'V'
#define BE_NEGOTIATE_VERSION 'v'
#define BE_NO_DATA 'n'
#define BE_NOTICE 'N'
#define BE_NOTIFICATION 'A'
#define BE_PARAM_DESCRIPTION 't'
#define BE_PARAM_STATUS 'S'
#define BE_PARSE_COMPLETE '1'
#define BE_PORTAL_SUSPENDED 's'
#define BE_READY 'Z'
#define BE_ROW_DESCRIPTION 'T'

/* AuthenticationXXX codes. */
#define AUTH_REQ_OK 0
#define AUTH_REQ_KRB5 2
#define AUTH_REQ_PASSWORD 3
#define AUTH_REQ_MD5 5
#define AUTH_REQ_GSS 7
#define AUTH_REQ_GSS_CONT 8
#define AUTH_REQ_SSPI 9
#define AUTH_REQ_SASL 10
#define AUTH_REQ_SASL_CONT 11
#define AUTH_REQ_SASL_FIN 12

/* SQLSTATEs parley emits. */
#define SQLSTATE_PROTOCOL_VIOLATION "08P01"
#define SQLSTATE_CONNECTION_FAILURE "08006"
#define SQLSTATE_CANNOT_CONNECT "08001"
#define SQLSTATE_INVALID_PASSWORD "28P01"
#define SQLSTATE_INVALID_AUTH_SPEC "28000"
#define SQLSTATE_TOO_MANY_CONNECTIONS "53300"
#define SQLSTATE_ADMIN_SHUTDOWN "57P01"
#define SQLSTATE_QUERY_CANCELED "57014"
#define SQLSTATE_INVALID_CATALOG "3D000"
#define SQLSTATE_FEATURE_NOT_SUPPORTED "0A000"
#define SQLSTATE_INSUFFICIENT_PRIVILEGE "42501"
#define SQLSTATE_SYNTAX_ERROR "42601"
#define SQLSTATE_INTERNAL_ERROR "XX000"
#define SQLSTATE_IDLE_SESSION_TIMEOUT "57P05"
#define SQLSTATE_IDLE_IN_TXN_TIMEOUT "25P03"

/* Largest startup packet accepted (PostgreSQL uses 10000). */
#define PROTO_MAX_STARTUP 10000u
/* Header sizes: typed messages have 1 type byte + 4 length bytes; startup packets only the length. */
#define PROTO_HDR_TYPED 5u
#define PROTO_HDR_UNTYPED 4u

enum proto_rc { PROTO_OK = 0, PROTO_INCOMPLETE = 1, PROTO_BAD = -1 };

/* A typed message header as found in a buffer. len counts the 4 length bytes, like the wire. */
struct pkt_header {
	uint8_t type;
	uint32_t len;
};

/* Reads a typed message header from data[0..avail). PROTO_INCOMPLETE if fewer than 5 bytes; PROTO_BAD if the length is
 * below 4 or above max_len (message text in *why). */
enum proto_rc proto_read_header(const uint8_t *data, size_t avail, uint32_t max_len, struct pkt_header *h,
				const char **why) MUST_CHECK;

/* Reads the length word of a startup-phase packet; PROTO_BAD if under 8 or over PROTO_MAX_STARTUP. */
enum proto_rc proto_read_startup_len(const uint8_t *data, size_t avail, uint32_t *len, const char **why) MUST_CHECK;

#define STARTUP_MAX_PARAMS 64

/* A parsed startup-phase packet. Strings point into the caller's packet buffer. */
struct startup_packet {
	uint32_t code;                 /* PROTO_V3 (any 3.x), PROTO_CANCEL_REQUEST, PROTO_SSL_REQUEST, PROTO_GSSENC_REQUEST */
	uint16_t minor;                /* PROTO_V3: the minor version the client asked for (3.minor) */
	bool bad_version;              /* PROTO_BAD because of the version or request code (PostgreSQL: 0A000) */
	uint32_t cancel_pid;           /* CancelRequest only */
	uint32_t cancel_key;
	int nparams;
	const char *names[STARTUP_MAX_PARAMS];
	const char *values[STARTUP_MAX_PARAMS];
	const char *user;              /* shortcuts into names/values, or NULL */
	const char *database;
};

/* PostgreSQL's message for a protocol version (or request code) it does not speak, with major and minor. */
#define PROTO_UNSUPPORTED_VERSION_FMT "unsupported frontend protocol %u.%u: server supports 3.0 to 3.0"

/* Parses a whole startup-phase packet (length word included). The packet must be NUL-terminated lists, which this
 * checks. Returns PROTO_OK or PROTO_BAD with a message in err. */
enum proto_rc proto_parse_startup(const uint8_t *pkt, size_t len, struct startup_packet *sp, char *err, size_t errlen) MUST_CHECK;

/* Sequential reader over one message body with a sticky failure flag. */
struct pkt_reader {
	const uint8_t *data;
	size_t len;
	size_t pos;
	bool failed;
};
void reader_init(struct pkt_reader *r, const uint8_t *data, size_t len);
uint8_t reader_u8(struct pkt_reader *r);
uint16_t reader_u16(struct pkt_reader *r);
uint32_t reader_u32(struct pkt_reader *r);
/* Returns a pointer to a NUL-terminated string inside the message, or "" (and fails) if none. */
const char *reader_cstr(struct pkt_reader *r);
/* Returns a pointer to n bytes inside the message, or NULL (and fails) if fewer remain. */
const uint8_t *reader_bytes(struct pkt_reader *r, size_t n);

/* Growable packet builder with a sticky failure flag (allocation failure or misuse). */
struct pkt_builder {
	uint8_t *buf;
	size_t len;
	size_t cap;
	size_t msg_start;     /* offset of the current message's type byte, or SIZE_MAX */
	bool failed;
};
void pkt_init(struct pkt_builder *b);
void pkt_free(struct pkt_builder *b);
void pkt_reset(struct pkt_builder *b);
/* Starts a typed message (type != 0) or an untyped startup packet (type == 0). */
void pkt_begin(struct pkt_builder *b, uint8_t type);
void pkt_u8(struct pkt_builder *b, uint8_t v);
void pkt_u16(struct pkt_builder *b, uint16_t v);
void pkt_u32(struct pkt_builder *b, uint32_t v);
void pkt_cstr(struct pkt_builder *b, const char *s);
void pkt_bytes(struct pkt_builder *b, const void *p, size_t n);
/* Patches the current message's length. */
void pkt_end(struct pkt_builder *b);

/* Whole-message helpers (each begins and ends one message). */
void pkt_error(struct pkt_builder *b, const char *severity, const char *sqlstate, const char *message);
void pkt_notice(struct pkt_builder *b, const char *severity, const char *sqlstate, const char *message);
/* An error in protocol 2.0's format ('E', then "SEVERITY:  message\n" and a NUL, no length word): what PostgreSQL
 * sends a client that asked for a protocol older than 3.0, so that the client can show why it was refused. */
void pkt_error_v2(struct pkt_builder *b, const char *severity, const char *message);
void pkt_param_status(struct pkt_builder *b, const char *name, const char *value);
void pkt_backend_key(struct pkt_builder *b, uint32_t pid, uint32_t key);
void pkt_ready(struct pkt_builder *b, char status);
void pkt_auth(struct pkt_builder *b, uint32_t code, const void *data, size_t len);
void pkt_auth_sasl(struct pkt_builder *b, const char *mechanism);
void pkt_query(struct pkt_builder *b, const char *sql);
void pkt_startup(struct pkt_builder *b, const char *const *names, const char *const *values, int n);
void pkt_cancel(struct pkt_builder *b, uint32_t pid, uint32_t key);
void pkt_password(struct pkt_builder *b, const char *password);
void pkt_sasl_initial(struct pkt_builder *b, const char *mechanism, const void *data, size_t len);
void pkt_sasl_response(struct pkt_builder *b, const void *data, size_t len);
void pkt_terminate(struct pkt_builder *b);
void pkt_row_description(struct pkt_builder *b, const char *const *names, const uint32_t *type_oids, int n);
/* values[i] may be NULL for SQL NULL. */
void pkt_data_row(struct pkt_builder *b, const char *const *values, int n);
void pkt_command_complete(struct pkt_builder *b, const char *tag);

/* Parsed ErrorResponse / NoticeResponse fields of interest. Strings point into the message. */
struct error_fields {
	const char *severity;
	const char *sqlstate;
	const char *message;
};
/* body/len: the message without its 5-byte header. */
enum proto_rc proto_parse_error(const uint8_t *body, size_t len, struct error_fields *ef) MUST_CHECK;

/* Human-readable name of a message type for logs ("Query", "Parse", …); direction true = from the frontend. */
const char *proto_msg_name(uint8_t type, bool from_frontend);

#endif
