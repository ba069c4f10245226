/*
 * cql_result_internal.h - the layout of a parsed response, shared by the
 * file that builds it (cql_result_parse.c) and the one that reads it
 * (cql_result.c).  Not used elsewhere: the client and the tests go through
 * cql.h's accessors.
 *
 * What the parser promises the readers (cql_result_parse() fails the frame
 * otherwise):
 *   - every pointer and cql_str read from the frame points inside body,
 *     which lives as long as the result (owned when parsed with copy_body);
 *   - the rows region [rows_off, rows_end) holds exactly nrows x ncols
 *     [bytes] values, and vp / vl have ncols entries when nrows > 0;
 *   - pk_raw holds npk [short] indexes, each below nparams;
 *   - each supported entry's raw is a valid [string list] of n strings.
 */
#ifndef CQL_RESULT_INTERNAL_H
#define CQL_RESULT_INTERNAL_H

#include "cql_internal.h"

typedef struct supported_entry {
    cql_str key;
    uint16_t n;
    cql_str raw; /* the [string list] of values */
} supported_entry;

struct cql_result {
    cql_header hdr;
    const uint8_t *body;
    size_t body_len;
    uint8_t *owned;              /* body copy when parsed with copy_body */

    const uint8_t *tracing_id;   /* 16 bytes inside body, or NULL */
    cql_str *warnings;
    size_t n_warnings;

    int32_t kind;                /* RESULT kind, 0 otherwise */
    bool is_error;
    cql_error err;

    /* Rows metadata (Rows result, or Prepared <result_metadata>). */
    int32_t flags;
    int32_t ncols;
    cql_column *cols;            /* NULL when No_metadata or ncols == 0 */
    const uint8_t *paging_state;
    size_t paging_state_len;

    /* Rows content: [rows_off, rows_end) of body, fully validated at parse
     * time, so the cursor below cannot run out of bounds. */
    int32_t nrows;
    size_t rows_off, rows_end;
    int32_t cur;                 /* current row index, -1 before the first */
    size_t next_off;             /* body offset of row cur + 1 */
    const uint8_t **vp;          /* current row's values (ncols entries) */
    int32_t *vl;                 /* their lengths, -1 = null */

    /* Prepared */
    const uint8_t *prep_id;
    size_t prep_id_len;
    int32_t npk;                 /* partition key columns among the markers */
    const uint8_t *pk_raw;       /* their npk [short] bind indexes, in body */
    int32_t nparams;
    cql_column *params;

    cql_str keyspace;            /* Set_keyspace */
    cql_str sc_change, sc_target, sc_keyspace, sc_name; /* Schema_change */
    supported_entry *supported;  /* SUPPORTED */
    size_t n_supported;
};

#endif /* CQL_RESULT_INTERNAL_H */
