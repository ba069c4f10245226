/*
 * cql.h - asynchronous Apache Cassandra client, CQL native protocol v4.
 *
 * Conventions (libuv style):
 *   - every function is named cql_<object>_<verb>() or cql_<verb>();
 *   - functions that can fail return 0 on success or a negative CQL_E* code;
 *     cql_strerror() turns a code into a static English message;
 *   - objects are opaque; the few plain structs (cql_value, cql_str,
 *     cql_error, cql_column, option structs) are value types owned by the
 *     caller.
 *
 * Topology: a client connects to its contact points, discovers the other
 * nodes of the cluster (system.peers_v2 / system.peers) and keeps one
 * connection per node, each reconnecting with its own back-off.  Prepared
 * statements whose partition key is bound are sent to a replica of their
 * partition (Murmur3 token-aware routing); other requests go round-robin.
 *
 * Threading: one cql_client owns one I/O thread (epoll).  cql_query(),
 * cql_execute(), cql_batch() may be called from any thread, including from
 * inside a callback.  Every callback runs on the client's I/O thread.
 *
 * Callback contract: if a submit function returns 0, its callback is invoked
 * exactly once (with a result, an error, CQL_ETIMEDOUT, or CQL_ECLOSED when
 * the client is closed); if it returns < 0, the callback is never invoked.
 */
#ifndef CQL_H
#define CQL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- error codes ------------------------------------------------------ */

enum {
    CQL_OK = 0,
    CQL_ENOMEM = -1,       /* allocation failed */
    CQL_EINVAL = -2,       /* invalid argument */
    CQL_EPROTO = -3,       /* malformed or truncated frame / protocol violation */
    CQL_ETOOBIG = -4,      /* frame body longer than the configured maximum */
    CQL_ESERVER = -5,      /* the server answered ERROR: see cql_result_error() */
    CQL_ETIMEDOUT = -6,    /* request timed out */
    CQL_ECONN = -7,        /* connection lost while the request was in flight */
    CQL_ENOHOST = -8,      /* no contact point could be reached */
    CQL_ECLOSED = -9,      /* client closed */
    CQL_ETYPE = -10,       /* column type does not match the accessor */
    CQL_ERANGE = -11,      /* index out of range / no current row */
    CQL_ENULL = -12,       /* value is null */
    CQL_EUNSUPPORTED = -13,/* feature not implemented (compression, auth) */
    CQL_EAGAIN = -14,      /* need more input (incremental decoding only) */
    CQL_ESYS = -15         /* system call failed (see errno at the call site) */
};

/* Static, never NULL. */
const char *cql_strerror(int err);

/* ---- protocol enums --------------------------------------------------- */

enum cql_consistency {
    CQL_ANY = 0x0000, CQL_ONE = 0x0001, CQL_TWO = 0x0002, CQL_THREE = 0x0003,
    CQL_QUORUM = 0x0004, CQL_ALL = 0x0005, CQL_LOCAL_QUORUM = 0x0006,
    CQL_EACH_QUORUM = 0x0007, CQL_SERIAL = 0x0008, CQL_LOCAL_SERIAL = 0x0009,
    CQL_LOCAL_ONE = 0x000A,
    CQL_CONSISTENCY_DEFAULT = 0xFFFF /* "use the client's default" */
};
const char *cql_consistency_name(unsigned consistency);

/* Column type ids ([option] ids of section 4.2.5.2). */
enum cql_type {
    CQL_TYPE_CUSTOM = 0x0000, CQL_TYPE_ASCII = 0x0001, CQL_TYPE_BIGINT = 0x0002,
    CQL_TYPE_BLOB = 0x0003, CQL_TYPE_BOOLEAN = 0x0004, CQL_TYPE_COUNTER = 0x0005,
    CQL_TYPE_DECIMAL = 0x0006, CQL_TYPE_DOUBLE = 0x0007, CQL_TYPE_FLOAT = 0x0008,
    CQL_TYPE_INT = 0x0009, CQL_TYPE_TIMESTAMP = 0x000B, CQL_TYPE_UUID = 0x000C,
    CQL_TYPE_VARCHAR = 0x000D, CQL_TYPE_VARINT = 0x000E, CQL_TYPE_TIMEUUID = 0x000F,
    CQL_TYPE_INET = 0x0010, CQL_TYPE_DATE = 0x0011, CQL_TYPE_TIME = 0x0012,
    CQL_TYPE_SMALLINT = 0x0013, CQL_TYPE_TINYINT = 0x0014,
    CQL_TYPE_LIST = 0x0020, CQL_TYPE_MAP = 0x0021, CQL_TYPE_SET = 0x0022,
    CQL_TYPE_UDT = 0x0030, CQL_TYPE_TUPLE = 0x0031,
    CQL_TYPE_UNKNOWN = 0xFFFE, /* no metadata (Skip_metadata) */
    CQL_TYPE_INVALID = 0xFFFF  /* a cql_value that could not be built */
};

/* Server error codes (section 9). */
enum cql_server_error {
    CQL_SERVER_ERROR = 0x0000, CQL_PROTOCOL_ERROR = 0x000A,
    CQL_AUTH_ERROR = 0x0100, CQL_UNAVAILABLE = 0x1000, CQL_OVERLOADED = 0x1001,
    CQL_IS_BOOTSTRAPPING = 0x1002, CQL_TRUNCATE_ERROR = 0x1003,
    CQL_WRITE_TIMEOUT = 0x1100, CQL_READ_TIMEOUT = 0x1200,
    CQL_READ_FAILURE = 0x1300, CQL_FUNCTION_FAILURE = 0x1400,
    CQL_WRITE_FAILURE = 0x1500, CQL_SYNTAX_ERROR = 0x2000,
    CQL_UNAUTHORIZED = 0x2100, CQL_INVALID = 0x2200, CQL_CONFIG_ERROR = 0x2300,
    CQL_ALREADY_EXISTS = 0x2400, CQL_UNPREPARED = 0x2500
};
const char *cql_server_error_name(int32_t code);

enum cql_opcode {
    CQL_OP_ERROR = 0x00, CQL_OP_STARTUP = 0x01, CQL_OP_READY = 0x02,
    CQL_OP_AUTHENTICATE = 0x03, CQL_OP_OPTIONS = 0x05, CQL_OP_SUPPORTED = 0x06,
    CQL_OP_QUERY = 0x07, CQL_OP_RESULT = 0x08, CQL_OP_PREPARE = 0x09,
    CQL_OP_EXECUTE = 0x0A, CQL_OP_REGISTER = 0x0B, CQL_OP_EVENT = 0x0C,
    CQL_OP_BATCH = 0x0D, CQL_OP_AUTH_CHALLENGE = 0x0E,
    CQL_OP_AUTH_RESPONSE = 0x0F, CQL_OP_AUTH_SUCCESS = 0x10
};

enum cql_result_kind {
    CQL_RESULT_NONE = 0, /* not a RESULT frame (ERROR, READY, SUPPORTED...) */
    CQL_RESULT_VOID = 1, CQL_RESULT_ROWS = 2, CQL_RESULT_SET_KEYSPACE = 3,
    CQL_RESULT_PREPARED = 4, CQL_RESULT_SCHEMA_CHANGE = 5
};

enum cql_batch_type { CQL_BATCH_LOGGED = 0, CQL_BATCH_UNLOGGED = 1, CQL_BATCH_COUNTER = 2 };

/* ---- plain value types ------------------------------------------------ */

/* A byte string that is NOT NUL-terminated; points into a result. */
typedef struct cql_str {
    const char *ptr;
    size_t len;
} cql_str;

/*
 * A bound value, already in wire encoding.  Fixed-width types are stored
 * inline (so a cql_value may be copied freely); text and blob values point
 * to caller memory, which must stay valid until the submit call returns
 * (the submit call copies it).
 */
typedef struct cql_value {
    int32_t len;          /* >= 0: byte length; -1 null; -2 unset */
    uint16_t type;        /* enum cql_type it was built as; 0 for null/unset */
    const uint8_t *ext;   /* external bytes, or NULL when inline */
    uint8_t inl[16];      /* inline encoding (uuid is the largest: 16) */
} cql_value;

cql_value cql_value_null(void);
cql_value cql_value_unset(void);
cql_value cql_value_int(int32_t v);
cql_value cql_value_bigint(int64_t v);
cql_value cql_value_bool(int v);
cql_value cql_value_timestamp(int64_t ms_since_epoch);
cql_value cql_value_uuid(const uint8_t uuid[16]);
cql_value cql_value_timeuuid(const uint8_t uuid[16]);
cql_value cql_value_text(const char *nul_terminated_utf8);
cql_value cql_value_textn(const char *utf8, size_t len);
cql_value cql_value_ascii(const char *s, size_t len);
cql_value cql_value_blob(const void *data, size_t len);

/* Decoders for one value's bytes (no length prefix).  Return CQL_EPROTO on
 * a wrong length.  Exposed so that callers can decode cql_row_get_raw(). */
int cql_decode_int(const uint8_t *p, size_t len, int32_t *out);
int cql_decode_bigint(const uint8_t *p, size_t len, int64_t *out);
int cql_decode_bool(const uint8_t *p, size_t len, int *out);
int cql_decode_uuid(const uint8_t *p, size_t len, uint8_t out[16]);

/* ---- results ---------------------------------------------------------- */

typedef struct cql_result cql_result;

typedef struct cql_column {
    cql_str keyspace, table, name;
    uint16_t type;          /* enum cql_type */
    uint16_t subtype[2];    /* list/set element: [0]; map key/value: [0],[1] */
    cql_str custom_class;   /* for CQL_TYPE_CUSTOM */
} cql_column;

typedef struct cql_error {
    int32_t code;           /* enum cql_server_error */
    cql_str message;
    /* Unavailable, Write/Read timeout, Read/Write failure */
    uint16_t consistency;
    int32_t required, alive;          /* Unavailable */
    int32_t received, blockfor;       /* timeouts and failures */
    int32_t numfailures;              /* failures */
    int data_present;                 /* Read_timeout, Read_failure */
    cql_str write_type;               /* Write_timeout, Write_failure */
    cql_str keyspace, table;          /* Already_exists (table "" = keyspace) */
    cql_str function;                 /* Function_failure (keyspace too) */
    uint16_t n_arg_types;             /* Function_failure */
    cql_str arg_types_raw;            /* the [string list] bytes, for format */
    const uint8_t *unprepared_id;     /* Unprepared */
    size_t unprepared_id_len;
} cql_error;

/* Opcode of the response frame (CQL_OP_RESULT, CQL_OP_ERROR, ...). */
int cql_result_opcode(const cql_result *r);
int cql_result_kind(const cql_result *r);
/* NULL unless the response is an ERROR. */
const cql_error *cql_result_error(const cql_result *r);
/* Human-readable one-line description of a server error, e.g.
 * "Write_timeout (0x1100): ... [cl=QUORUM received=1 blockfor=2 write_type=SIMPLE]".
 * snprintf semantics: returns the length it wanted to write. */
int cql_error_format(const cql_error *e, char *buf, size_t size);

/* Warnings the server attached (flag 0x08). */
size_t cql_result_warning_count(const cql_result *r);
cql_str cql_result_warning(const cql_result *r, size_t i);
/* 16-byte tracing session id, or NULL when tracing was not requested. */
const uint8_t *cql_result_tracing_id(const cql_result *r);

/*
 * Rows (and, for Prepared, the result metadata).
 *
 * Bounds on what a node may announce, so that no count in a frame makes the
 * parser or a caller's loop do work (or allocate memory) out of proportion
 * to the bytes actually received; a frame that breaks one is CQL_EPROTO:
 *   - a column count is at most CQL_MAX_COLUMNS, and with metadata every
 *     column spec is in the body (at least 4 bytes each);
 *   - a Rows result with 0 columns has 0 rows (a row of no columns costs no
 *     bytes, and no statement selects nothing);
 *   - rows x columns values are all present in the body (4 bytes at least
 *     each), checked before the row cursor is set up;
 *   - every other count (warnings, bind markers, partition key indexes,
 *     SUPPORTED options, collection elements) is checked against the bytes
 *     that remain before anything is allocated or iterated.
 */
#define CQL_MAX_COLUMNS 65535
int32_t cql_result_row_count(const cql_result *r);
int32_t cql_result_column_count(const cql_result *r);
int cql_result_column(const cql_result *r, int32_t idx, cql_column *out);
int cql_result_has_more_pages(const cql_result *r);
/* Paging state to pass to the next request; *len 0 when none.  The bytes
 * belong to the result: copy them if needed after the callback. */
void cql_result_paging_state(const cql_result *r, const uint8_t **p, size_t *len);

/* Row cursor.  cql_result_next_row() returns 1 when a row is current, 0 at
 * the end, < 0 on error.  Accessors read columns of the current row. */
int cql_result_next_row(cql_result *r);
void cql_result_rewind(cql_result *r);
int cql_row_is_null(const cql_result *r, int32_t col);
int cql_row_get_raw(const cql_result *r, int32_t col, const uint8_t **p, size_t *len);
int cql_row_get_int(const cql_result *r, int32_t col, int32_t *out);
int cql_row_get_bigint(const cql_result *r, int32_t col, int64_t *out);
int cql_row_get_timestamp(const cql_result *r, int32_t col, int64_t *ms);
int cql_row_get_bool(const cql_result *r, int32_t col, int *out);
int cql_row_get_uuid(const cql_result *r, int32_t col, uint8_t out[16]);
int cql_row_get_text(const cql_result *r, int32_t col, cql_str *out);
int cql_row_get_blob(const cql_result *r, int32_t col, const uint8_t **p, size_t *len);
/* inet: 4 (IPv4) or 16 (IPv6) address bytes into out, *len set to 4 or 16. */
int cql_row_get_inet(const cql_result *r, int32_t col, uint8_t out[16], size_t *len);

/*
 * Collections.  A list or set value is [int] n followed by n [bytes]
 * (section 6).  cql_collection_begin() validates the whole encoding first
 * (CQL_EPROTO on a negative count, truncation or trailing bytes), so a
 * loop over cql_iter_next() only fails on a damaged iterator.  Elements
 * point into the result and live as long as it.
 *
 *     cql_iter it;
 *     cql_str s;
 *     if (cql_row_get_text_set(r, 0, &it) == 0)
 *         while (cql_iter_next_text(&it, &s) == 1) ...
 */
typedef struct cql_iter {
    const uint8_t *p;
    size_t len, off;
    int32_t left;         /* elements not yet returned */
} cql_iter;

int cql_collection_begin(cql_iter *it, const uint8_t *p, size_t len);
/* 1 with the next element (*len -1 for a null one), 0 at the end, < 0 on error. */
int cql_iter_next(cql_iter *it, const uint8_t **p, int32_t *len);
/* Like cql_iter_next() for text elements; a null element is CQL_ENULL. */
int cql_iter_next_text(cql_iter *it, cql_str *out);
/* A list<...> or set<...> column of the current row. */
int cql_row_get_collection(const cql_result *r, int32_t col, cql_iter *it);
/* A set<text> / list<text> (or ascii) column: CQL_ETYPE for other elements. */
int cql_row_get_text_set(const cql_result *r, int32_t col, cql_iter *it);

/* Prepared: id and bind markers. */
int cql_result_prepared_id(const cql_result *r, const uint8_t **id, size_t *len);
int32_t cql_result_param_count(const cql_result *r);
/* Partition key: how many of the bind markers form it (0 when the server
 * did not say, e.g. for statements not restricted to one partition), and
 * the marker index of the i-th partition key column, in key order. */
int32_t cql_result_pk_count(const cql_result *r);
int cql_result_pk_index(const cql_result *r, int32_t i);
int cql_result_param(const cql_result *r, int32_t idx, cql_column *out);
/* Set_keyspace */
cql_str cql_result_keyspace(const cql_result *r);
/* Schema_change: change ("CREATED"...), target ("TABLE"...), keyspace, name
 * (name empty for KEYSPACE targets). */
int cql_result_schema_change(const cql_result *r, cql_str *change, cql_str *target,
                             cql_str *keyspace, cql_str *name);
/* SUPPORTED: number of options and the i-th key with its values as a
 * comma-separated list formatted into buf (snprintf semantics). */
size_t cql_result_supported_count(const cql_result *r);
int cql_result_supported(const cql_result *r, size_t i, cql_str *key, char *values,
                         size_t size);

/* ---- partition tokens (Murmur3Partitioner) ---------------------------- */

/* Cassandra's token for a routing key: the first half of its variant of
 * MurmurHash3_x64_128 (sign-extended tail bytes), seed 0. */
int64_t cql_murmur3_token(const void *key, size_t len);
/* Token of a partition key given its n (1..64) components as bound values
 * (one for a single-column key; composite keys are framed as Cassandra's
 * CompositeType does).  CQL_EINVAL for a null / unset component. */
int cql_partition_token(const cql_value *components, size_t n, int64_t *token);

/* ---- client ----------------------------------------------------------- */

typedef struct cql_client cql_client;

typedef struct cql_client_opts {
    const char *const *contact_points; /* "host" or "host:port"; port 9042 */
    size_t n_contact_points;
    const char *keyspace;              /* optional: USE on every connection */
    uint16_t consistency;              /* default CQL_ONE */
    uint32_t request_timeout_ms;       /* default 12000 */
    uint32_t connect_timeout_ms;       /* default 5000 (TCP + handshake) */
    uint32_t reconnect_base_ms;        /* default 100 */
    uint32_t reconnect_max_ms;         /* default 10000 */
    uint32_t max_frame_body;           /* default 256 MiB (spec maximum) */
    uint32_t max_streams;              /* in flight per connection, <= 32768 */
    /* Added with multi-node support; zero keeps the documented default. */
    int disable_discovery;             /* 0: also connect to the nodes listed
                                          in system.peers(_v2) */
    int disable_token_routing;         /* 0: send prepared statements to a
                                          replica of their partition */
    uint32_t topology_refresh_ms;      /* default 60000: re-read the peers */
} cql_client_opts;

void cql_client_opts_init(cql_client_opts *o);

/* Starts the I/O thread, which connects in the background. */
int cql_client_new(cql_client **out, const cql_client_opts *o);
/* Blocks until a connection is ready (0), or every known node failed its
 * last connection attempt (CQL_ENOHOST), or timeout_ms passed
 * (CQL_ETIMEDOUT).  Discovery and routing then proceed in the background:
 * see cql_client_topology_version(). */
int cql_client_wait_ready(cql_client *c, uint32_t timeout_ms);
/* Last connection error, e.g. "127.0.0.1:9042: connect: Connection refused". */
int cql_client_last_error(cql_client *c, char *buf, size_t size);
/* One known node, as seen by the I/O thread a moment ago. */
typedef struct cql_host_info {
    char address[64];       /* "ip:port" once connected or discovered,
                               else the contact point as given */
    char datacenter[64];    /* "" until discovered */
    int up;                 /* a connection to it is ready */
    int in_ring;            /* listed by the last topology refresh */
    int contact_point;      /* given in cql_client_opts */
    uint32_t tokens;        /* ring tokens it owns */
    uint64_t requests;      /* user requests sent to it */
} cql_host_info;

/* Copies up to max host descriptions into out (which may be NULL when max
 * is 0) and returns how many hosts are known. */
size_t cql_client_hosts(cql_client *c, cql_host_info *out, size_t max);
/* Completed topology refreshes (system.local + system.peers), so a caller
 * can wait for the first one; 0 before it or with disable_discovery. */
uint64_t cql_client_topology_version(cql_client *c);

/* Fails every pending request with CQL_ECLOSED (callbacks run), stops the
 * thread and frees the client.  Must not be called from a callback
 * (returns CQL_EINVAL then). */
int cql_client_close(cql_client *c);

/* The result is valid only during the callback; status is 0 for a RESULT,
 * CQL_ESERVER for an ERROR (r describes it), other codes with r == NULL. */
typedef void (*cql_result_cb)(void *arg, int status, cql_result *r);

typedef struct cql_query_opts {
    uint16_t consistency;            /* CQL_CONSISTENCY_DEFAULT */
    uint16_t serial_consistency;     /* 0 = not sent, else SERIAL/LOCAL_SERIAL */
    int32_t page_size;               /* <= 0: no paging */
    const uint8_t *paging_state;     /* from a previous page; copied */
    size_t paging_state_len;
    int64_t timestamp_us;            /* default timestamp; < 0 = not sent */
    uint32_t timeout_ms;             /* 0 = client default */
} cql_query_opts;

void cql_query_opts_init(cql_query_opts *o);

/* QUERY (unprepared). opts may be NULL.  All inputs are copied. */
int cql_query(cql_client *c, const char *cql, const cql_value *values, size_t n,
              const cql_query_opts *opts, cql_result_cb cb, void *arg);
/* EXECUTE through the client's prepare cache: the statement is prepared on
 * first use (concurrent first uses share one PREPARE, then it is prepared
 * on every other node too) and re-prepared transparently on a node that
 * answers UNPREPARED.  When the PREPARED metadata lists the partition key
 * and every key column is bound (not null / unset), the request goes to
 * the node owning the key's token, else to the next replica on the ring,
 * else to any node. */
int cql_execute(cql_client *c, const char *cql, const cql_value *values, size_t n,
                const cql_query_opts *opts, cql_result_cb cb, void *arg);

typedef struct cql_batch_stmt {
    const char *cql;
    const cql_value *values;
    size_t n_values;
    int prepared;                    /* nonzero: go through the prepare cache */
} cql_batch_stmt;

/* BATCH; opts->page_size and paging_state are ignored.  Routed like
 * cql_execute() by its first statement when that one is prepared. */
int cql_batch(cql_client *c, enum cql_batch_type type, const cql_batch_stmt *stmts,
              size_t n, const cql_query_opts *opts, cql_result_cb cb, void *arg);

#ifdef __cplusplus
}
#endif
#endif /* CQL_H */
