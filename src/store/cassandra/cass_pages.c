/* cass_pages.c - the reads of the API's lists on Cassandra: a page of a
 * conversation's messages (one query), a page of a user's conversations
 * (conversation_recency's two tiers merged, then checked against
 * conversations_by_user: see "Recency with bounded tombstones" in
 * cass_internal.h), and one conversation.
 */
#include <stdlib.h>
#include <string.h>

#include "store/cassandra/cass_internal.h"
#include "util/log.h"

/* ------------------------------------------------------------------ message pages */

/* A page holds 1..MAX_PAGE items whatever the query asks: the arrays of a
 * page op are sized by MAX_PAGE. */
static int page_limit(int limit) { return limit < 1 ? 1 : limit > MAX_PAGE ? MAX_PAGE : limit; }

typedef struct msg_page_op {
    cass_store_t *s;
    store_msg_page_cb cb;
    void *ctx;
    store_msg_query_t q;
} msg_page_op_t;

static void on_meta_for_empty_page(void *arg, int status, cql_result *r) {
    msg_page_op_t *op = arg;
    int err = cass_map_cql(status, r, "metadata read");
    if (!err && cql_result_next_row(r) != 1) err = STORE_ENOTFOUND;
    store_msg_page_t page = {.items = NULL, .count = 0, .more = false};
    op->cb(op->ctx, err, err ? NULL : &page);
    free(op);
}

static void on_msg_page(void *arg, int status, cql_result *r) {
    msg_page_op_t *op = arg;
    int err = cass_map_cql(status, r, "message page");
    if (err) {
        op->cb(op->ctx, err, NULL);
        free(op);
        return;
    }
    message_t items[MAX_PAGE];
    store_msg_page_t page = {.items = items};
    while (cql_result_next_row(r) == 1) {
        if (page.count == (size_t)op->q.limit) { page.more = true; break; }
        if (cass_decode_message(r, &op->q.conversation_id, &items[page.count])) page.count++;
    }
    if (page.count == 0 && !page.more) {
        /* Empty: an empty conversation, or none at all? */
        cql_value v[1] = {v_uuid(&op->q.conversation_id)};
        cass_exec(op->s, Q_META_GET, v, 1, NULL, on_meta_for_empty_page, op);
        return;
    }
    op->cb(op->ctx, STORE_OK, &page);
    free(op);
}

void cass_messages_list(store_t *base, const store_msg_query_t *q, store_msg_page_cb cb, void *ctx) {
    cass_store_t *s = (cass_store_t *)base;
    msg_page_op_t *op = calloc(1, sizeof *op);
    if (!op) { cb(ctx, STORE_ENOMEM, NULL); return; }
    op->s = s;
    op->cb = cb;
    op->ctx = ctx;
    op->q = *q;
    op->q.limit = page_limit(q->limit);
    cql_value v[3];
    v[0] = v_uuid(&q->conversation_id);
    int32_t fetch = op->q.limit + 1; /* one more tells whether more exist */
    if (q->has_after || q->has_before) {
        v[1] = v_timeuuid(q->has_after ? &q->after : &q->before);
        v[2] = cql_value_int(fetch);
        cass_exec(s, q->has_after ? Q_MSG_AFTER : Q_MSG_BEFORE, v, 3, NULL, on_msg_page, op);
    } else {
        v[1] = cql_value_int(fetch);
        cass_exec(s, Q_MSG_TOP, v, 2, NULL, on_msg_page, op);
    }
}

/* ------------------------------------------------------------------ conversation pages */

typedef struct conv_item {
    conversation_t c;
    char *content; /* owned copy */
} conv_item_t;

/* A fetched recency row: its key and list position, and the list item it
 * carries (rec_row_item). */
typedef struct rec_row {
    int64_t activity;
    uuid_t conv;
    rec_key_t key;
    bool carried;               /* false: written before rows carried items */
    uuid_t other;
    char *content;              /* owned; NULL: no message */
    size_t content_len;
} rec_row_t;

typedef struct conv_page_op {
    cass_store_t *s;
    store_conv_page_cb cb;
    void *ctx;
    store_conv_query_t q;
    join_t start;                /* user exists; a bare cursor's position */
    probe_t user;
    bool cursor_set;             /* position to continue below */
    int64_t pos_activity;
    uuid_t pos_id;
    int64_t cursor_ms, cursor_newest; /* a bare cursor's conversation (on_conv_cursor) */
    bool has_start;              /* the page's own cursor (fixed), see relocate */
    int64_t start_activity;
    uuid_t start_id;
    /* rows of the current recency fetch: the tier-0 rows, then the best of
     * them and the tier-1 rows, in list order */
    size_t n_rows;
    bool rows_more;
    rec_row_t rows[CBU_IN_MAX];
    /* accepted items */
    size_t count;
    bool more;
    conv_item_t items[2 * (MAX_PAGE + 1) + RECENCY_SLACK]; /* the best limit+1, plus one fetch */
} conv_page_op_t;

/* What conversations_by_user says of one fetched recency row (on_cbu_in). */
typedef enum { MISSING, STALE, LIVE } row_state_t;

/* Frees the fetched rows' carried contents; the rows are gone. */
static void rows_clear(conv_page_op_t *op) {
    for (size_t i = 0; i < op->n_rows; i++) {
        free(op->rows[i].content);
        op->rows[i].content = NULL;
    }
    op->n_rows = 0;
}

static void conv_page_finish(conv_page_op_t *op, int err) {
    conversation_t out[MAX_PAGE];
    store_conv_page_t page = {.items = out, .count = 0, .more = op->more};
    if (!err) {
        for (size_t i = 0; i < op->count && i < (size_t)op->q.limit; i++) out[page.count++] = op->items[i].c;
    }
    op->cb(op->ctx, err, err ? NULL : &page);
    for (size_t i = 0; i < op->count; i++) free(op->items[i].content);
    rows_clear(op);
    free(op);
}

static void conv_fetch_recency(conv_page_op_t *op);

static void on_stale_deleted(void *arg, int status, cql_result *r) {
    (void)arg;
    if (status) cass_map_cql(status, r, "stale recency row delete");
}

/* Deletes a recency row that no longer matches its conversation. The
 * tombstone carries the timestamp its activity was written with: it removes
 * the row, and nothing written for a later message. */
static void delete_stale(cass_store_t *s, const uuid_t *user, int64_t activity, rec_key_t key, const uuid_t *conv) {
    cql_value v[REC_DEL_VALUES];
    cass_rec_del_values(v, user, conv, key, ticks_to_unix_us((uint64_t)activity));
    cass_exec(s, Q_REC_DEL, v, REC_DEL_VALUES, NULL, on_stale_deleted, NULL);
}

/* The item of conv this request already accepted, or NULL (a conversation
 * can have two live recency rows: one a send left behind). */
static const conv_item_t *conv_find(const conv_page_op_t *op, const uuid_t *conv) {
    for (size_t i = 0; i < op->count; i++)
        if (uuid_cmp(&op->items[i].c.id, conv) == 0) return &op->items[i];
    return NULL;
}

static bool conv_seen(const conv_page_op_t *op, const uuid_t *conv) { return conv_find(op, conv) != NULL; }

/* Position order of the list: activity, then conversation id, descending. */
static int position_cmp(int64_t a_act, const uuid_t *a_id, int64_t b_act, const uuid_t *b_id) {
    if (a_act != b_act) return a_act < b_act ? -1 : 1;
    return uuid_cmp(a_id, b_id);
}

static int item_desc(const void *x, const void *y) {
    const conv_item_t *a = x, *b = y;
    return -position_cmp((int64_t)a->c.activity, &a->c.id, (int64_t)b->c.activity, &b->c.id);
}

/* An owned copy of a text column's bytes (NUL added), or NULL when out of
 * memory. */
static char *text_copy(const cql_str *t) {
    char *p = malloc(t->len + 1);
    if (!p) return NULL;
    if (t->len) memcpy(p, t->ptr, t->len);
    p[t->len] = '\0';
    return p;
}

/* A list item of the user's conversation conv with other, at activity at
 * (100-ns ticks); content (owned by it, len bytes) or NULL for none. */
static void item_set(conv_item_t *it, const conv_page_op_t *op, const uuid_t *conv, const uuid_t *other, int64_t at,
                     char *content, size_t len) {
    conversation_t *c = &it->c;
    c->id = *conv;
    c->user1_id = op->q.user_id;
    c->user2_id = *other;
    c->activity = (uint64_t)at;
    c->created_at_ms = c->last_message_at_ms = ticks_to_unix_ms((uint64_t)at);
    it->content = content;
    c->has_last_message = content != NULL;
    c->last_message_content = content;
    c->last_message_len = content ? len : 0;
}

/* on_cbu_in, step 1: matches the conversations_by_user rows in r to the
 * fetched recency rows, filling state[] and found[] (found[i].content owned);
 * returns STORE_ENOMEM when a copy failed, else STORE_OK. */
static int cbu_match(conv_page_op_t *op, cql_result *r, row_state_t *state, conv_item_t *found) {
    int err = STORE_OK;
    while (!err && cql_result_next_row(r) == 1) {
        uuid_t conv, other;
        int64_t updated;
        if (!row_uuid(r, 0, &conv) || !row_uuid(r, 1, &other) || cass_row_time_ms(r, 3, &updated) != CQL_OK)
            continue;
        for (size_t i = 0; i < op->n_rows; i++) {
            const rec_row_t *row = &op->rows[i];
            if (state[i] != MISSING || uuid_cmp(&row->conv, &conv) != 0) continue;
            /* last_updated is in ms (the FastAPI format): a row whose
             * activity lies in an earlier ms is superseded, and the
             * conversation's position is the start of that ms. */
            int64_t row_ms = ticks_to_unix_ms((uint64_t)row->activity);
            state[i] = row_ms < updated ? STALE : LIVE;
            int64_t at = row_ms < updated ? (int64_t)unix_ms_to_ticks(updated) : row->activity;
            cql_str text;
            bool has_text = cql_row_get_text(r, 2, &text) == CQL_OK;
            char *content = has_text ? text_copy(&text) : NULL;
            if (has_text && !content) { err = STORE_ENOMEM; break; }
            item_set(&found[i], op, &conv, &other, at, content, has_text ? text.len : 0);
        }
    }
    return err;
}

/* on_cbu_in, step 2: moves the accepted rows of found[] into op->items,
 * deleting stale rows unless err; frees whatever of found[] is left. */
static void cbu_accept(conv_page_op_t *op, const row_state_t *state, conv_item_t *found, int err) {
    /* Live rows first, so that a relocated stale row never doubles one. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < op->n_rows; i++) {
            if (state[i] != (pass == 0 ? LIVE : STALE)) continue;
            conv_item_t *it = &found[i];
            if (pass == 1 && !err)
                delete_stale(op->s, &op->q.user_id, op->rows[i].activity, op->rows[i].key, &op->rows[i].conv);
            bool in_range = !op->has_start || position_cmp((int64_t)it->c.activity, &it->c.id, op->start_activity,
                                                           &op->start_id) < 0;
            /* A stale row is placed at the start of its conversation's
             * last_updated ms; its live row lies somewhere in that ms. With
             * the cursor in that ms too, the live row may be above it, on a
             * page already served: placing the conversation here would show
             * it twice. */
            if (pass == 1 && op->has_start &&
                ticks_to_unix_ms((uint64_t)op->start_activity) <= ticks_to_unix_ms(it->c.activity))
                in_range = false;
            if (err || !in_range || op->count == sizeof op->items / sizeof op->items[0] || conv_seen(op, &it->c.id)) {
                free(it->content);
                it->content = NULL;
                continue;
            }
            op->items[op->count++] = *it;
            it->content = NULL;
        }
    }
    for (size_t i = 0; i < op->n_rows; i++) free(found[i].content);
}

/* on_cbu_in, step 3: the page is complete, or the next recency fetch. */
static void conv_page_settle(conv_page_op_t *op) {
    qsort(op->items, op->count, sizeof op->items[0], item_desc);
    /* Only the first limit+1 can ever be on this page. */
    while (op->count > (size_t)op->q.limit + 1) free(op->items[--op->count].content);
    /* Enough when the first limit+1 items all lie above the rows still to be
     * fetched (anything fetched later sorts below them). */
    if (op->count > (size_t)op->q.limit &&
        (!op->rows_more || position_cmp((int64_t)op->items[op->q.limit].c.activity, &op->items[op->q.limit].c.id,
                                        op->rows[op->n_rows - 1].activity, &op->rows[op->n_rows - 1].conv) >= 0)) {
        op->more = true;
        conv_page_finish(op, STORE_OK);
        return;
    }
    if (!op->rows_more) { conv_page_finish(op, STORE_OK); return; }
    /* Skipped rows made the page short: continue below the last row seen. */
    op->cursor_set = true;
    op->pos_activity = op->rows[op->n_rows - 1].activity;
    op->pos_id = op->rows[op->n_rows - 1].conv;
    conv_fetch_recency(op);
}

/* Checks the fetched recency rows against conversations_by_user, whose
 * last_updated is the conversation's true position:
 *  - activity == last_updated: the conversation's row -> accept once;
 *  - activity >  last_updated: a send's batch reached the recency partition
 *    before conversations_by_user -> accept once (the position is right);
 *  - activity <  last_updated: superseded -> delete it, and if no live row
 *    of the conversation was seen, place the conversation at last_updated
 *    itself (its batch reached conversations_by_user first, or the row was
 *    left behind by a race): within this page's range it belongs there;
 *  - no conversations_by_user row yet: a first send in flight -> skip.
 * Only provably superseded rows are deleted, so a reader never removes the
 * row that makes a conversation visible. While one of its batches is
 * half-applied a conversation still shows at its true position on a page
 * that covers it; a walk whose cursor is already below that position misses
 * it, which is the "moved to the top by new activity" case the API allows. */
static void on_cbu_in(void *arg, int status, cql_result *r) {
    conv_page_op_t *op = arg;
    int err = cass_map_cql(status, r, "conversation rows");
    if (err) { conv_page_finish(op, err); return; }
    row_state_t state[CBU_IN_MAX];
    conv_item_t found[CBU_IN_MAX];
    memset(found, 0, sizeof found);
    for (size_t i = 0; i < op->n_rows; i++) state[i] = MISSING;
    err = cbu_match(op, r, state, found);
    cbu_accept(op, state, found, err);
    if (err) { conv_page_finish(op, err); return; }
    conv_page_settle(op);
}

/* A page without a cursor reads the recency rows from the top, so the
 * first row of a conversation it meets is that conversation's newest: a
 * row a send left behind always lies below the one that superseded it (the
 * user's two tables are written in one batch, see cass_internal.h). So when
 * every row carries its list item, the page needs no other read; a later
 * row of a conversation already accepted is stale, and deleted. */
static void conv_accept_carried(conv_page_op_t *op) {
    for (size_t i = 0; i < op->n_rows; i++) {
        rec_row_t *row = &op->rows[i];
        const conv_item_t *seen = conv_find(op, &row->conv);
        if (seen) {
            if ((int64_t)seen->c.activity > row->activity)
                delete_stale(op->s, &op->q.user_id, row->activity, row->key, &row->conv);
            continue;
        }
        if (op->count == sizeof op->items / sizeof op->items[0]) continue;
        conv_item_t *it = &op->items[op->count++];
        memset(it, 0, sizeof *it);
        item_set(it, op, &row->conv, &row->other, row->activity, row->content, row->content_len);
        row->content = NULL; /* the item owns it now */
    }
    conv_page_settle(op);
}

static bool rows_all_carried(const conv_page_op_t *op) {
    for (size_t i = 0; i < op->n_rows; i++)
        if (!op->rows[i].carried) return false;
    return true;
}

static void conv_validate(conv_page_op_t *op) {
    if (op->n_rows == 0) { conv_page_finish(op, STORE_OK); return; }
    if (!op->has_start && rows_all_carried(op)) { conv_accept_carried(op); return; }
    cql_value v[CBU_IN_MAX + 1];
    v[0] = v_uuid(&op->q.user_id);
    for (size_t i = 0; i < op->n_rows; i++) v[i + 1] = v_uuid(&op->rows[i].conv);
    cass_exec_cql(op->s, op->s->cbu_in[op->n_rows], v, op->n_rows + 1, NULL, on_cbu_in, op);
}

/* Reads the list item a row of the REC_COLS shape carries (other_user_id,
 * last_message) into x: x->carried false for a row written before rows
 * carried it (indexed from an older keyspace: such rows are checked the old
 * way). x->content: an owned copy, NULL for a conversation without a
 * message. False when out of memory. */
static bool rec_row_item(cql_result *r, rec_row_t *x) {
    x->content = NULL;
    x->content_len = 0;
    x->carried = row_uuid(r, 4, &x->other);
    cql_str text;
    if (!x->carried || cql_row_get_text(r, 5, &text) != CQL_OK) return true;
    if (!(x->content = text_copy(&text))) return false;
    x->content_len = text.len;
    return true;
}

/* Reads the key of a row of the REC_COLS shape (activity, conversation_id,
 * tier, pos) into x; the carried item is rec_row_item's. */
static bool rec_row_key(cql_result *r, rec_row_t *x) {
    const uint8_t *k;
    size_t k_len;
    int32_t tier;
    if (cql_row_get_bigint(r, 0, &x->activity) != CQL_OK || cql_row_get_blob(r, 1, &k, &k_len) != CQL_OK ||
        k_len != 16 || cql_row_get_int(r, 2, &tier) != CQL_OK || cql_row_get_bigint(r, 3, &x->key.pos) != CQL_OK)
        return false;
    memcpy(x->conv.b, k, 16);
    x->key.tier = tier;
    return time_ms_valid(ticks_to_unix_ms((uint64_t)x->activity));
}

static int row_desc(const void *x, const void *y) {
    const rec_row_t *a = x, *b = y;
    return -position_cmp(a->activity, &a->conv, b->activity, &b->conv);
}

/* The fetch's wanted row count: the page's remaining items and the slack. */
static size_t fetch_want(const conv_page_op_t *op) {
    return (size_t)op->q.limit + 1 - op->count + RECENCY_SLACK;
}

/* The tier-1 rows, merged with the tier-0 rows into op->row_* in list
 * order: every hot row below the cursor that can rank above the last
 * tier-0 row was read (on_recency asked for their buckets). */
static void on_recency_hot(void *arg, int status, cql_result *r) {
    conv_page_op_t *op = arg;
    int err = cass_map_cql(status, r, "conversation recency (hot)");
    if (err) { conv_page_finish(op, err); return; }
    int32_t n_hot = cql_result_row_count(r);
    if (n_hot >= RECENCY_HOT_MAX)
        log_warn("store", "cassandra: a conversation page read %d hot recency rows (the most it reads): some may be "
                 "missing from the list", (int)n_hot);
    size_t cap = op->n_rows + (size_t)(n_hot > 0 ? n_hot : 0);
    rec_row_t *c = malloc((cap ? cap : 1) * sizeof *c);
    if (!c) { conv_page_finish(op, STORE_ENOMEM); return; }
    size_t n = op->n_rows;
    memcpy(c, op->rows, n * sizeof *c);
    for (size_t i = 0; i < n; i++) op->rows[i].content = NULL; /* c's now */
    op->n_rows = 0;
    bool oom = false;
    while (!oom && n < cap && cql_result_next_row(r) == 1) {
        rec_row_t *x = &c[n];
        if (!rec_row_key(r, x) || x->key.tier != 1) continue;
        if (op->cursor_set && position_cmp(x->activity, &x->conv, op->pos_activity, &op->pos_id) >= 0) continue;
        oom = !rec_row_item(r, x);
        n++;
    }
    qsort(c, n, sizeof *c, row_desc);
    size_t want = fetch_want(op);
    if (n > want) op->rows_more = true; /* the rest is read again below the last row kept */
    op->n_rows = n < want ? n : want;
    memcpy(op->rows, c, op->n_rows * sizeof *c);
    for (size_t i = op->n_rows; i < n; i++) free(c[i].content);
    free(c);
    if (oom) { conv_page_finish(op, STORE_ENOMEM); return; }
    conv_validate(op);
}

/* The tier-0 rows below the cursor, in order; then the hot buckets from the
 * last of them (all, when there are fewer than wanted) up to the cursor. */
static void on_recency(void *arg, int status, cql_result *r) {
    conv_page_op_t *op = arg;
    int err = cass_map_cql(status, r, "conversation recency");
    if (err) { conv_page_finish(op, err); return; }
    size_t want = fetch_want(op), got = 0;
    rows_clear(op);
    while (got < want && cql_result_next_row(r) == 1) {
        got++;
        rec_row_t *x = &op->rows[op->n_rows];
        if (!rec_row_key(r, x) || x->key.tier != 0) continue;
        op->n_rows++; /* rows_clear frees what rec_row_item copied, even when it fails */
        if (!rec_row_item(r, x)) {
            conv_page_finish(op, STORE_ENOMEM);
            return;
        }
    }
    op->rows_more = got == want;
    int64_t lo = op->rows_more && op->n_rows ? op->rows[op->n_rows - 1].activity / RECENCY_HOT_TICKS : 0;
    int64_t hi = op->cursor_set ? op->pos_activity / RECENCY_HOT_TICKS : INT64_MAX;
    cql_value v[4] = {v_uuid(&op->q.user_id), cql_value_bigint(lo), cql_value_bigint(hi),
                      cql_value_int(RECENCY_HOT_MAX)};
    cass_exec(op->s, Q_REC_HOT, v, 4, NULL, on_recency_hot, op);
}

static void conv_fetch_recency(conv_page_op_t *op) {
    int32_t want = (int32_t)fetch_want(op);
    cql_value v[4];
    v[0] = v_uuid(&op->q.user_id);
    if (op->cursor_set) {
        v[1] = cql_value_bigint(op->pos_activity);
        v[2] = v_conv_key(&op->pos_id);
        v[3] = cql_value_int(want);
        cass_exec(op->s, Q_REC_BELOW, v, 4, NULL, on_recency, op);
    } else {
        v[1] = cql_value_int(want);
        cass_exec(op->s, Q_REC_TOP, v, 2, NULL, on_recency, op);
    }
}

/* A bare cursor's position is its conversation's activity: last_updated
 * (ms, from conversations_by_user, which also proves the conversation is
 * the user's), refined to the newest message's ticks when that message is
 * the one last_updated records. */
static void on_conv_cursor(void *arg, int status, cql_result *r) {
    conv_page_op_t *op = arg;
    int err = cass_map_cql(status, r, "cursor conversation read");
    int64_t ms = 0;
    if (!err && (cql_result_next_row(r) != 1 || cass_row_time_ms(r, 2, &ms) != CQL_OK)) err = STORE_EBADCURSOR;
    op->cursor_ms = ms;
    cass_join_arrive(&op->start, err);
}

static void on_cursor_newest(void *arg, int status, cql_result *r) {
    conv_page_op_t *op = arg;
    int err = cass_map_cql(status, r, "cursor conversation read");
    uuid_t id;
    if (!err && cql_result_next_row(r) == 1 && row_uuid(r, 0, &id) && uuid_version(&id) == 1)
        op->cursor_newest = (int64_t)uuid_time_ticks(&id);
    cass_join_arrive(&op->start, err);
}

static void conv_start_done(void *arg, int err) {
    conv_page_op_t *op = arg;
    if (!err && !op->user.found) err = STORE_ENOTFOUND;
    if (err) { conv_page_finish(op, err); return; }
    if (op->q.has_cursor && op->q.cursor_is_id) {
        int64_t at = (int64_t)unix_ms_to_ticks(op->cursor_ms);
        if (ticks_to_unix_ms((uint64_t)op->cursor_newest) == op->cursor_ms) at = op->cursor_newest;
        op->cursor_set = op->has_start = true;
        op->pos_id = op->start_id = op->q.cursor_id;
        op->pos_activity = op->start_activity = at;
    }
    conv_fetch_recency(op);
}

/* A cursor this store gave before activity was in ticks held ms: anything
 * below the ticks of 1970 is one, and names the start of its ms. */
static int64_t cursor_ticks(uint64_t activity) {
    if (activity < UUID_TICKS_UNIX_EPOCH) return (int64_t)unix_ms_to_ticks((int64_t)activity);
    return activity > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)activity;
}

void cass_conversations_list(store_t *base, const store_conv_query_t *q, store_conv_page_cb cb, void *ctx) {
    cass_store_t *s = (cass_store_t *)base;
    conv_page_op_t *op = calloc(1, sizeof *op);
    if (!op) { cb(ctx, STORE_ENOMEM, NULL); return; }
    op->s = s;
    op->cb = cb;
    op->ctx = ctx;
    op->q = *q;
    op->q.limit = page_limit(q->limit);
    bool bare = q->has_cursor && q->cursor_is_id;
    if (q->has_cursor && !bare) {
        op->cursor_set = op->has_start = true;
        op->pos_activity = op->start_activity = cursor_ticks(q->cursor_activity);
        op->pos_id = op->start_id = q->cursor_id;
    }
    cass_join_start(&op->start, bare ? 3 : 1, conv_start_done, op);
    cql_value vu[1] = {v_uuid(&q->user_id)};
    cass_probe(s, &op->start, &op->user, "user read", Q_USER_GET, vu, 1);
    if (bare) {
        cql_value vc[2] = {v_uuid(&q->user_id), v_uuid(&q->cursor_id)};
        cass_exec(s, Q_CBU_GET, vc, 2, NULL, on_conv_cursor, op);
        cass_exec(s, Q_MSG_NEWEST, vc + 1, 1, NULL, on_cursor_newest, op);
    }
    cass_join_arrive(&op->start, 0);
}

/* ------------------------------------------------------------------ one conversation */

typedef struct conv_get_op {
    cass_store_t *s;
    store_conv_cb cb;
    void *ctx;
    conversation_t conv;
    join_t reads;               /* metadata, participants, newest message */
    bool has_meta, has_part;
    uuid_t part1, part2;
    char *content;
} conv_get_op_t;

static void conv_get_done(void *arg, int err) {
    conv_get_op_t *op = arg;
    if (!err && !op->has_meta) err = STORE_ENOTFOUND;
    if (!err && op->has_part) {
        op->conv.user1_id = op->part1;
        op->conv.user2_id = op->part2;
    }
    op->cb(op->ctx, err, err ? NULL : &op->conv);
    free(op->content);
    free(op);
}

static void on_get_meta(void *arg, int status, cql_result *r) {
    conv_get_op_t *op = arg;
    int err = cass_map_cql(status, r, "metadata read");
    if (!err && cql_result_next_row(r) == 1) {
        op->has_meta = true;
        if (cass_row_time_ms(r, 0, &op->conv.created_at_ms) != CQL_OK) op->conv.created_at_ms = 0;
    }
    cass_join_arrive(&op->reads, err);
}

static void on_get_part(void *arg, int status, cql_result *r) {
    conv_get_op_t *op = arg;
    int err = cass_map_cql(status, r, "participants read");
    if (!err && cql_result_next_row(r) == 1 && row_uuid(r, 0, &op->part1) && row_uuid(r, 1, &op->part2))
        op->has_part = true;
    cass_join_arrive(&op->reads, err);
}

static void on_get_last(void *arg, int status, cql_result *r) {
    conv_get_op_t *op = arg;
    int err = cass_map_cql(status, r, "last message read");
    message_t m;
    if (!err && cql_result_next_row(r) == 1 && cass_decode_message(r, &op->conv.id, &m)) {
        op->content = malloc(m.content_len + 1);
        if (!op->content) {
            err = STORE_ENOMEM;
        } else {
            if (m.content_len) memcpy(op->content, m.content, m.content_len);
            op->conv.has_last_message = true;
            op->conv.last_message_id = m.id;
            op->conv.last_message_at_ms = m.created_at_ms;
            op->conv.last_message_content = op->content;
            op->conv.last_message_len = m.content_len;
            /* Participants of a conversation the FastAPI implementation wrote
             * (no participants row): the sender and receiver. */
            op->conv.user1_id = m.sender_id;
            op->conv.user2_id = m.receiver_id;
        }
    }
    cass_join_arrive(&op->reads, err);
}

void cass_conversation_get(store_t *base, const uuid_t *id, store_conv_cb cb, void *ctx) {
    cass_store_t *s = (cass_store_t *)base;
    conv_get_op_t *op = calloc(1, sizeof *op);
    if (!op) { cb(ctx, STORE_ENOMEM, NULL); return; }
    op->s = s;
    op->cb = cb;
    op->ctx = ctx;
    op->conv.id = *id;
    cass_join_start(&op->reads, 3, conv_get_done, op);
    cql_value v[2] = {v_uuid(id), cql_value_int(1)};
    cass_exec(s, Q_META_GET, v, 1, NULL, on_get_meta, op);
    cass_exec(s, Q_PART_GET, v, 1, NULL, on_get_part, op);
    cass_exec(s, Q_MSG_TOP, v, 2, NULL, on_get_last, op);
    cass_join_arrive(&op->reads, 0);
}
