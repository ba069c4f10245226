/* sse.c - GET /api/events: a caller's new messages as Server-Sent Events,
 * and the rendering of each committed message as one event.
 *
 * A stream resumes without loss: with Last-Event-ID (a message id), the
 * subscriber first joins the hub, holding live events back, then reads from
 * the store every message of the caller's conversations after that id
 * ("catch-up"), sends those oldest first, and then the held live events
 * except those the catch-up already sent. Joining before reading is what
 * leaves no gap; the de-duplication is what leaves no repeat.
 *
 * Lifetime of an sse_t: one reference for the stream (dropped in
 * on_closed, after leaving the hub) and one while a catch-up runs. mu
 * guards the fields below it; the hub calls the sink with its own lock
 * held, so this file never calls into the hub while holding mu.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "api/handlers.h"
#include "api/input.h"
#include "api/render.h"
#include "util/log.h"
#include "util/timefmt.h"

#include <jansson.h>

#define CATCHUP_MAX 1000      /* missed messages sent; beyond that: reset */
#define PAGE 100
/* The catch-up sends in chunks of this many messages, and starts a chunk
 * only once at most CHUNK_QUEUE_BELOW bytes are still queued for the
 * client: a stream's memory is a chunk and that queue, however much it
 * missed and however slowly its client reads. */
#define CHUNK 32
#define CHUNK_QUEUE_BELOW (16u << 10)
/* How long a live stream remembers what its catch-up sent (see sse_t.sent):
 * far longer than an event spends between a commit and a hub, unless its
 * publisher lost it, which every stream hears of as a reset. */
#define SENT_KEEP_MS 60000

typedef struct held {
    struct held *next;
    uuid_t id;
    size_t len;
    char event[];
} held_t;

/* A missed message, as the catch-up knows it: its key only, until its
 * chunk is read again and rendered. */
typedef struct missed {
    uint8_t key[16];          /* timeuuid sort key: the order to send in (first: missed_cmp) */
    uint32_t conv;            /* index into sse_t.convs */
    bool echoed;              /* once live: its event came from the hub, and was skipped */
    char *event;              /* rendered, while its chunk is being sent */
    size_t len;
} missed_t;

/* The catch-up, step by step (each step one store read):
 *   CU_CONVS  the caller's conversations with activity since the last event;
 *   CU_KEYS   the keys of every message missed in them (no content kept);
 *             more than CATCHUP_MAX: "reset" instead;
 *   CU_CHUNK  the next CHUNK keys in global order: each conversation among
 *             them is read again from its own cursor, exactly that many
 *             messages, rendered, sorted, written; then wait until the
 *             client has read all but CHUNK_QUEUE_BELOW bytes;
 *   CU_DONE   the held live events go out (those not sent already). */
typedef enum { CU_CONVS, CU_KEYS, CU_CHUNK, CU_DONE } cu_phase_t;

typedef struct sse {
    api_t *api;
    uuid_t user;
    events_sub_t *sub;
    pthread_mutex_t mu;
    int refs;
    http_stream_t *stream;    /* NULL before it exists and after on_closed */
    bool closed;
    bool session_over;        /* ended by the hub: end the stream as soon as it exists */
    bool live;                /* catch-up over: events go straight out */
    held_t *held, **held_tail;
    size_t held_bytes;
    /* Once live: what the catch-up sent (keys only, sorted). A message it
     * read may be published a moment after it went live (LMDB publishes once
     * the write-ahead log is synced, a broker relays with a delay); that
     * event is skipped. Not in id order: instances publish independently,
     * and a message commits on one a moment after a later id on another.
     * So each key is crossed off when its event comes, and the rest is
     * forgotten once none is left or SENT_KEEP_MS have passed (sent_until). */
    missed_t *sent;
    size_t n_sent, n_sent_left;
    int64_t sent_until;       /* time_mono_ms() */
    /* catch-up (touched only by the one step in progress) */
    bool driving, again;
    cu_phase_t phase;
    int err;
    bool overflow;
    uuid_t after;
    int64_t after_ms;
    bool has_conv_cursor;
    uint64_t conv_cursor_activity;
    uuid_t conv_cursor_id;
    uuid_t *convs;            /* with activity since the last event */
    uuid_t *conv_sent;        /* per conversation: the newest message sent (CU_CHUNK) */
    size_t n_convs, cap_convs, conv_i;
    uuid_t msg_after;
    missed_t *missed;         /* CATCHUP_MAX of them, sorted once CU_KEYS is over */
    size_t n_missed;
    size_t chunk_start, chunk_end; /* [start, end) of missed: the chunk being read */
    size_t chunk_read;        /* conversations of the chunk read so far */
    uint32_t chunk_convs[CHUNK]; /* the chunk's conversations, each once */
    uint32_t chunk_count[CHUNK]; /* and how many of its messages it holds */
    size_t n_chunk_convs;
    bool chunk_written;
} sse_t;

/* ---- rendering ---- */

static void render_event(void *arg, buf_t *b) {
    const message_t *m = arg;
    char id[UUID_STR_LEN + 1];
    uuid_format(&m->id, id);
    buf_lit(b, "id: ");
    buf_append(b, id, UUID_STR_LEN);
    buf_lit(b, "\nevent: message\ndata: ");
    render_message(b, m); /* one line: the renderer escapes every control character */
    buf_lit(b, "\n\n");
}

void events_publish_message(api_t *api, const message_t *m) {
    if (api->events) events_publish(api->events, &m->sender_id, &m->receiver_id, &m->id, render_event, (void *)m);
}

/* ---- lifetime ---- */

static void sse_unref(sse_t *c) {
    pthread_mutex_lock(&c->mu);
    bool last = --c->refs == 0;
    pthread_mutex_unlock(&c->mu);
    if (!last) return;
    for (held_t *h = c->held, *n; h; h = n) {
        n = h->next;
        free(h);
    }
    for (size_t i = 0; i < c->n_missed; i++) free(c->missed[i].event);
    free(c->missed);
    free(c->sent);
    free(c->convs);
    free(c->conv_sent);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* Writes to the stream, if there still is one. Called with c->mu held. */
static void put(sse_t *c, const char *data, size_t len) {
    if (c->stream && !c->closed) http_stream_write(c->stream, data, len);
}

static int missed_cmp(const void *a, const void *b) {
    return memcmp(((const missed_t *)a)->key, ((const missed_t *)b)->key, 16);
}

/* The entry of arr[0, n) (sorted by key) of the message with this id, or
 * NULL. */
static missed_t *missed_find(missed_t *arr, size_t n, const uuid_t *id) {
    if (!n) return NULL;
    missed_t k;
    uuid_sort_key(id, k.key);
    return bsearch(&k, arr, n, sizeof k, missed_cmp);
}

static void sent_forget(sse_t *c) {
    free(c->sent);
    c->sent = NULL;
    c->n_sent = c->n_sent_left = 0;
}

/* Forgets what the catch-up sent once it is old enough. With c->mu held. */
static void sent_expire(sse_t *c) {
    if (c->n_sent && time_mono_ms() >= c->sent_until) sent_forget(c);
}

/* True when the catch-up already sent the message with this id (its event
 * is then skipped). With c->mu held. */
static bool sent_by_catchup(sse_t *c, const uuid_t *id) {
    sent_expire(c);
    missed_t *m = missed_find(c->sent, c->n_sent, id);
    if (!m) return false;
    if (!m->echoed) {
        m->echoed = true;
        if (--c->n_sent_left == 0) sent_forget(c);
    }
    return true;
}

/* ---- the hub's sink ---- */

static void sink_deliver(void *ctx, const uuid_t *id, const char *event, size_t len) {
    sse_t *c = ctx;
    pthread_mutex_lock(&c->mu);
    if (c->closed) {
        /* leaving the hub */
    } else if (c->live && c->stream) {
        if (!sent_by_catchup(c, id)) put(c, event, len);
    } else if (c->held_bytes + len > c->api->sse_max_pending) {
        /* Too much arrived during the catch-up: end the stream; the
         * client resumes from its last event. */
        if (c->stream) http_stream_end(c->stream);
    } else {
        held_t *h = malloc(sizeof *h + len);
        if (h) {
            h->next = NULL;
            h->id = *id;
            h->len = len;
            memcpy(h->event, event, len);
            *c->held_tail = h;
            c->held_tail = &h->next;
            c->held_bytes += len;
        } else if (c->stream) {
            http_stream_end(c->stream);
        }
    }
    pthread_mutex_unlock(&c->mu);
}

static void sink_heartbeat(void *ctx) {
    sse_t *c = ctx;
    pthread_mutex_lock(&c->mu);
    sent_expire(c);
    put(c, ": keep-alive\n\n", 14);
    pthread_mutex_unlock(&c->mu);
}

/* Events may have been lost, or the session is over: either way the
 * stream ends (after what is queued), and the client reconnects, resuming
 * from its last event if it still may. */
static void sink_end(void *ctx) {
    sse_t *c = ctx;
    pthread_mutex_lock(&c->mu);
    if (c->stream && !c->closed) http_stream_end(c->stream);
    c->session_over = true;
    pthread_mutex_unlock(&c->mu);
}

static void on_closed(void *ctx) {
    sse_t *c = ctx;
    pthread_mutex_lock(&c->mu);
    c->closed = true;
    http_stream_t *s = c->stream;
    c->stream = NULL;
    pthread_mutex_unlock(&c->mu);
    events_unsubscribe(c->api->events, c->sub); /* no sink call runs after this */
    http_stream_release(s);
    sse_unref(c);
}

/* ---- catch-up ---- */

/* True when the catch-up sent the message with this id; its event, which
 * came meanwhile, is crossed off. */
static bool was_missed(sse_t *c, const uuid_t *id) {
    missed_t *m = missed_find(c->missed, c->n_missed, id);
    if (m) m->echoed = true;
    return m != NULL;
}

/* Sends the reset or nothing, then the held live events; goes live. */
static void catchup_finish(sse_t *c) {
    pthread_mutex_lock(&c->mu);
    if (c->err) {
        if (c->stream) http_stream_end(c->stream); /* the client retries from the same id */
    } else if (c->overflow) {
        static const char reset[] = "event: reset\ndata: {\"detail\":\"more than 1000 messages were missed: "
                                    "reload conversations through the REST API\"}\n\n";
        put(c, reset, sizeof reset - 1);
    }
    size_t echoed = 0;
    for (held_t *h = c->held, *n; h; h = n) {
        n = h->next;
        if (c->overflow) put(c, h->event, h->len);
        else if (was_missed(c, &h->id)) echoed++;
        else put(c, h->event, h->len);
        free(h);
    }
    c->held = NULL;
    c->held_tail = &c->held;
    c->held_bytes = 0;
    c->live = true;
    if (!c->overflow && !c->err && c->n_missed > echoed) { /* the keys stay, for sent_by_catchup */
        c->sent = c->missed;
        c->n_sent = c->n_missed;
        c->n_sent_left = c->n_missed - echoed;
        c->sent_until = time_mono_ms() + SENT_KEEP_MS;
    } else {
        for (size_t i = 0; i < c->n_missed; i++) free(c->missed[i].event);
        free(c->missed);
    }
    c->missed = NULL;
    c->n_missed = 0;
    pthread_mutex_unlock(&c->mu);
}

static void drive(sse_t *c);

/* Appends a conversation to c->convs; false when out of memory. */
static bool add_conv(sse_t *c, const uuid_t *id) {
    if (c->n_convs == c->cap_convs) {
        size_t cap = c->cap_convs ? c->cap_convs * 2 : 16;
        uuid_t *p = realloc(c->convs, cap * sizeof *p);
        if (!p) return false;
        c->convs = p;
        c->cap_convs = cap;
    }
    c->convs[c->n_convs++] = *id;
    return true;
}

static void on_convs(void *ctx, int err, const store_conv_page_t *page) {
    sse_t *c = ctx;
    bool done = err != 0;
    c->err = err;
    for (size_t i = 0; !err && i < page->count; i++) {
        const conversation_t *cv = &page->items[i];
        /* In ms, the unit both stores give (activity's unit is the store's own). */
        int64_t at_ms = cv->has_last_message ? cv->last_message_at_ms : cv->created_at_ms;
        if (at_ms < c->after_ms) {
            done = true; /* older than the last event: nothing missed there, nor further on */
            break;
        }
        /* Each such conversation holds a missed message: more of them than
         * CATCHUP_MAX is a reset whatever they hold. */
        if (c->n_convs == CATCHUP_MAX) {
            c->overflow = done = true;
            break;
        }
        if (!add_conv(c, &cv->id)) {
            c->err = STORE_ENOMEM;
            done = true;
            break;
        }
    }
    if (!done && page->more && page->count) {
        c->has_conv_cursor = true;
        c->conv_cursor_activity = page->items[page->count - 1].activity;
        c->conv_cursor_id = page->items[page->count - 1].id;
    } else {
        c->phase = c->overflow || c->err || !c->n_convs ? CU_DONE : CU_KEYS; /* none: nothing missed */
        c->msg_after = c->after;
    }
    drive(c);
}

/* The key pass is over: sort the keys, and start every conversation's
 * cursor at the last event. */
static void keys_done(sse_t *c) {
    c->phase = CU_CHUNK;
    if (!c->n_missed) {
        c->phase = CU_DONE;
        return;
    }
    qsort(c->missed, c->n_missed, sizeof *c->missed, missed_cmp);
    if (!(c->conv_sent = malloc(c->n_convs * sizeof *c->conv_sent))) {
        c->err = STORE_ENOMEM;
        c->phase = CU_DONE;
        return;
    }
    for (size_t i = 0; i < c->n_convs; i++) c->conv_sent[i] = c->after;
    c->chunk_start = c->chunk_end = 0;
    c->chunk_written = true; /* nothing to write before the first chunk */
}

static void on_keys(void *ctx, int err, const store_msg_page_t *page) {
    sse_t *c = ctx;
    if (err == STORE_ENOTFOUND) err = 0, page = NULL; /* gone meanwhile: nothing to send */
    size_t count = page ? page->count : 0;
    if (!err && !c->missed && !(c->missed = calloc(CATCHUP_MAX, sizeof *c->missed))) err = STORE_ENOMEM;
    if (err) {
        c->err = err;
        c->phase = CU_DONE;
        drive(c);
        return;
    }
    for (size_t i = 0; i < count; i++) {
        if (c->n_missed == CATCHUP_MAX) {
            c->overflow = true;
            c->phase = CU_DONE;
            drive(c);
            return;
        }
        missed_t *m = &c->missed[c->n_missed++];
        uuid_sort_key(&page->items[i].id, m->key);
        m->conv = (uint32_t)c->conv_i;
    }
    if (page && page->more && count) {
        c->msg_after = page->items[count - 1].id;
    } else {
        c->msg_after = c->after;
        if (++c->conv_i == c->n_convs) keys_done(c);
    }
    drive(c);
}

/* Marks out the next chunk of c->missed and the conversations it needs. */
static void chunk_plan(sse_t *c) {
    c->chunk_start = c->chunk_end;
    c->chunk_end = c->chunk_start + CHUNK < c->n_missed ? c->chunk_start + CHUNK : c->n_missed;
    c->n_chunk_convs = 0;
    c->chunk_read = 0;
    c->chunk_written = false;
    for (size_t i = c->chunk_start; i < c->chunk_end; i++) {
        size_t j = 0;
        while (j < c->n_chunk_convs && c->chunk_convs[j] != c->missed[i].conv) j++;
        if (j == c->n_chunk_convs) {
            c->chunk_convs[j] = c->missed[i].conv;
            c->chunk_count[j] = 0;
            c->n_chunk_convs++;
        }
        c->chunk_count[j]++;
    }
}

/* Puts a message read again into its place in the chunk (by its key); a
 * message the key pass did not see (it came later) is left for the live
 * stream. False when out of memory. */
static bool chunk_fill(sse_t *c, const message_t *m) {
    missed_t *slot = missed_find(c->missed + c->chunk_start, c->chunk_end - c->chunk_start, &m->id);
    if (!slot || slot->event) return true;
    buf_t b;
    buf_init(&b);
    render_event((void *)m, &b);
    if (!buf_ok(&b)) {
        buf_free(&b);
        return false;
    }
    slot->event = buf_steal(&b, &slot->len);
    return true;
}

static void on_chunk_messages(void *ctx, int err, const store_msg_page_t *page) {
    sse_t *c = ctx;
    if (err == STORE_ENOTFOUND) err = 0, page = NULL;
    uint32_t conv = c->chunk_convs[c->chunk_read];
    for (size_t i = 0; !err && page && i < page->count; i++) {
        if (!chunk_fill(c, &page->items[i])) err = STORE_ENOMEM;
        c->conv_sent[conv] = page->items[i].id;
    }
    if (err) {
        c->err = err;
        c->phase = CU_DONE;
    } else {
        c->chunk_read++;
    }
    drive(c);
}

static void on_drained(void *ctx) { drive(ctx); }

/* Writes the chunk that has been read, in key order, and frees its events.
 * True when the client has not read enough of it yet: drive() resumes when
 * it has (or the stream is gone). */
static bool chunk_write(sse_t *c) {
    pthread_mutex_lock(&c->mu);
    http_stream_t *s = c->closed ? NULL : c->stream;
    for (size_t i = c->chunk_start; i < c->chunk_end; i++) {
        missed_t *m = &c->missed[i];
        /* Bounded by CHUNK and the wait below, not by the limit for live events. */
        if (s && m->event) http_stream_write_limit(s, m->event, m->len, c->api->sse_max_pending + CHUNK_QUEUE_BELOW);
        free(m->event);
        m->event = NULL;
    }
    if (c->chunk_end == c->n_missed) c->phase = CU_DONE;
    /* Holding a reference to s past c->mu is safe: the connection's own
     * reference goes only in on_closed, which takes c->mu first. */
    bool wait = s && http_stream_when_drained(s, CHUNK_QUEUE_BELOW, on_drained, c) == 0;
    pthread_mutex_unlock(&c->mu);
    return wait;
}

/* Issues the next store read of the chunk phase, or writes the chunk. True
 * when a read was issued or the client is being waited for. */
static bool chunk_step(sse_t *c) {
    if (c->chunk_read == c->n_chunk_convs) {
        if (!c->chunk_written) {
            c->chunk_written = true;
            if (chunk_write(c)) return true;
        }
        if (c->phase != CU_CHUNK) return false; /* the last chunk was written */
        chunk_plan(c);
    }
    uint32_t conv = c->chunk_convs[c->chunk_read];
    store_msg_query_t q = {.conversation_id = c->convs[conv], .limit = (int)c->chunk_count[c->chunk_read],
                           .has_after = true, .after = c->conv_sent[conv]};
    store_messages_list(c->api->store, &q, on_chunk_messages, c);
    return true;
}

/* Issues the next store read of the catch-up; true when the catch-up is
 * over instead (c may then be freed). */
static bool step(sse_t *c) {
    pthread_mutex_lock(&c->mu);
    bool gone = c->closed;
    pthread_mutex_unlock(&c->mu);
    if (gone) c->phase = CU_DONE;
    switch (c->phase) {
    case CU_CONVS: {
        store_conv_query_t q = {.user_id = c->user, .limit = PAGE, .has_cursor = c->has_conv_cursor,
                                .cursor_activity = c->conv_cursor_activity, .cursor_id = c->conv_cursor_id};
        store_conversations_list(c->api->store, &q, on_convs, c);
        return false;
    }
    case CU_KEYS: {
        store_msg_query_t q = {.conversation_id = c->convs[c->conv_i], .limit = PAGE, .has_after = true,
                               .after = c->msg_after};
        store_messages_list(c->api->store, &q, on_keys, c);
        return false;
    }
    case CU_CHUNK:
        if (chunk_step(c)) return false;
        break;
    case CU_DONE:
        break;
    }
    if (!gone) catchup_finish(c);
    sse_unref(c); /* the catch-up's reference */
    return true;
}

/* Runs steps until one completes later. Every store answer comes back
 * through drive(), after the step that asked returned (util/defer.h), or
 * on another thread while it is still returning: `again` hands the next
 * step to whichever drive() is running, so exactly one runs at a time. */
static void drive(sse_t *c) {
    pthread_mutex_lock(&c->mu);
    if (c->driving) {
        c->again = true;
        pthread_mutex_unlock(&c->mu);
        return;
    }
    c->driving = true;
    pthread_mutex_unlock(&c->mu);
    for (;;) {
        if (step(c)) return; /* c may be freed */
        pthread_mutex_lock(&c->mu);
        if (!c->again) {
            c->driving = false;
            pthread_mutex_unlock(&c->mu);
            return;
        }
        c->again = false;
        pthread_mutex_unlock(&c->mu);
    }
}

/* ---- the session ---- */

/* A logout that completed between this stream's token check and its
 * subscription found nothing to end: so the token is read once more now
 * that the stream is in the hub, and a token gone by then ends it. */
static void on_recheck(void *ctx, int err, const store_token_t *t) {
    (void)t;
    sse_t *c = ctx;
    if (err == STORE_ENOTFOUND) sink_end(c);
    sse_unref(c);
}

static void recheck_token(sse_t *c, const uint8_t *token_hash) {
    pthread_mutex_lock(&c->mu);
    c->refs++;
    pthread_mutex_unlock(&c->mu);
    store_token_get(c->api->store, token_hash, on_recheck, c);
}

/* ---- events from the broker ---- */

bool events_accept_message(const uuid_t *sender, const uuid_t *receiver, const uuid_t *id, const char *event,
                           size_t len) {
    /* Exactly what render_event makes of the message these ids and this
     * content describe, byte for byte: one data line (no field or event of
     * its own can be smuggled into a client's stream), the ids consistent,
     * the conversation derived, created_at the id's own time. The content is
     * the one thing taken from the payload, and jansson checks it is text. */
    static const char data_line[] = "\nevent: message\ndata: ";
    const char *d = memmem(event, len, data_line, sizeof data_line - 1);
    if (uuid_version(id) != 1 || !d || len < 2 || memcmp(event + len - 2, "\n\n", 2) != 0) return false;
    d += sizeof data_line - 1;
    json_t *j = json_loadb(d, (size_t)(event + len - 2 - d), JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, NULL);
    json_t *content = json_object_get(j, "content");
    message_t m = {.id = *id, .sender_id = *sender, .receiver_id = *receiver,
                   .created_at_ms = ticks_to_unix_ms(uuid_time_ticks(id)),
                   .content = json_string_value(content), .content_len = json_string_length(content)};
    bool ok = json_is_string(content) && time_ms_valid(m.created_at_ms);
    buf_t b;
    buf_init(&b);
    if (ok) {
        conversation_id_derive(sender, receiver, &m.conversation_id);
        render_event(&m, &b);
        ok = buf_ok(&b) && b.len == len && memcmp(b.data, event, len) == 0;
    }
    buf_free(&b);
    json_decref(j);
    return ok;
}

/* ---- the handler ---- */

static int parse_last_event_id(http_request_t *req, bool *has, uuid_t *out, input_err_t *e) {
    const char *h = http_request_header(req, "Last-Event-ID");
    if (!h || !*h) return input_query_timeuuid(req, "last_event_id", has, out, e);
    *has = true;
    if (uuid_parse(out, h, strlen(h)) != 0 || uuid_version(out) != 1)
        return input_fail(e, "Last-Event-ID", "not a message id (a version-1 UUID)");
    return 0;
}

/* The user whose events the caller may stream: the caller itself, or with
 * auth off the one ?user_id= names. False after answering 422. */
static bool stream_user(http_request_t *req, const api_call_t *call, uuid_t *user) {
    if (call->has_caller) {
        *user = call->caller;
        return true;
    }
    const char *u = http_request_query(req, "user_id");
    if (!u) {
        http_respond_error(req, 422, "user_id: query parameter required (authentication is off)");
        return false;
    }
    if (uuid_parse(user, u, strlen(u)) != 0) {
        http_respond_error(req, 422, "user_id: not a valid UUID");
        return false;
    }
    return true;
}

/* One reference for the stream (on_closed drops it), one for the catch-up,
 * and one for handle_events() itself: the stream may close on an HTTP
 * thread as soon as http_respond_stream() has answered, while that runs on
 * whatever thread completed the token check. */
static sse_t *sse_new(api_t *api, const uuid_t *user, bool has_after, const uuid_t *after) {
    sse_t *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    pthread_mutex_init(&c->mu, NULL);
    c->api = api;
    c->user = *user;
    c->refs = has_after ? 3 : 2;
    c->held_tail = &c->held;
    c->live = !has_after;
    if (has_after) {
        c->after = *after;
        c->after_ms = ticks_to_unix_ms(uuid_time_ticks(after));
    }
    return c;
}

/* Hands the new stream to c, with the preamble and what came meanwhile;
 * or releases it, when the connection is already done with it. */
static void stream_attach(sse_t *c, http_stream_t *s) {
    pthread_mutex_lock(&c->mu);
    if (!c->closed) {
        c->stream = s;
        put(c, "retry: 2000\n\n", 13);
        if (c->session_over) http_stream_end(s); /* displaced or logged out meanwhile */
        if (c->live) { /* events that came before the stream existed */
            for (held_t *h = c->held, *n; h; h = n) {
                n = h->next;
                put(c, h->event, h->len);
                free(h);
            }
            c->held = NULL;
            c->held_tail = &c->held;
            c->held_bytes = 0;
        }
        s = NULL;
    }
    pthread_mutex_unlock(&c->mu);
    if (s) http_stream_release(s); /* closed before we got here */
}

void handle_events(http_request_t *req, void *app, const http_params_t *p) {
    (void)p;
    api_t *api = app;
    const api_call_t *call = api_call(req);
    input_err_t e;
    uuid_t user, after;
    bool has_after = false;
    if (!stream_user(req, call, &user)) return;
    if (parse_last_event_id(req, &has_after, &after, &e)) {
        http_respond_error(req, 422, e.detail);
        return;
    }
    sse_t *c = sse_new(api, &user, has_after, &after);
    if (!c) {
        http_respond_error(req, 503, "server out of memory; try again");
        return;
    }
    /* Copied: once the stream has been answered, req (and call in it) may be
     * gone at any moment. */
    bool has_session = call->has_caller;
    events_session_t session = {.expires_at_ms = call->token_expires_ms};
    memcpy(session.token_hash, call->token_hash, sizeof session.token_hash);
    events_sink_t sink = {.deliver = sink_deliver, .heartbeat = sink_heartbeat, .reset = sink_end,
                          .end = sink_end, .ctx = c};
    /* Into the hub first: from here on no event is lost (held until the
     * stream exists and the catch-up is over). */
    http_stream_t *s = NULL;
    if (events_subscribe(api->events, &user, has_session ? &session : NULL, &sink, &c->sub) != 0)
        http_respond_error(req, 503, "server out of memory; try again");
    else if (!(s = http_respond_stream(req, "text/event-stream", api->sse_max_pending, on_closed, c)))
        events_unsubscribe(api->events, c->sub);
    if (!s) {
        pthread_mutex_destroy(&c->mu);
        free(c);
        return;
    }
    /* From here on only c, s and the copies above. */
    stream_attach(c, s);
    if (has_session) recheck_token(c, session.token_hash);
    if (has_after) drive(c);
    sse_unref(c); /* this function's reference */
}
