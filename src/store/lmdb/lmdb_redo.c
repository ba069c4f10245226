/* lmdb_redo.c - redo records: the one path by which the writer changes the
 * database, logging each change into the open batch's record (the
 * invariant under "redo records" in lmdb_internal.h), and the replay of a
 * record read back from the log.
 *
 * Apart because both ends of the format (writing it, parsing it back) must
 * agree byte for byte, and because "every write goes through here" is what
 * the log's durability rests on.
 *
 * A batch's redo record is every put and delete it made, in order, each
 *   op u8 | db u8 | key length u16 | value length u32 | key | value
 * (big-endian). Replayed in order onto the database the batch started from,
 * they give the database it committed. A put overwrites and a delete of a
 * missing key does nothing, so replaying onto a database that already holds
 * some of them gives the same result as well.
 */
#include "store/lmdb/lmdb_internal.h"

#include "util/buf.h"

#define REDO_HDR 8

void lmdb_redo_log(lmdb_store_t *s, int op, int db, const MDB_val *k, const MDB_val *v) {
    if (s->bulk) return;
    size_t vlen = v ? v->mv_size : 0;
    uint8_t h[REDO_HDR] = {(uint8_t)op, (uint8_t)db, (uint8_t)(k->mv_size >> 8), (uint8_t)k->mv_size,
                           (uint8_t)(vlen >> 24), (uint8_t)(vlen >> 16), (uint8_t)(vlen >> 8), (uint8_t)vlen};
    buf_append(&s->redo, h, REDO_HDR);
    buf_append(&s->redo, k->mv_data, k->mv_size);
    if (vlen) buf_append(&s->redo, v->mv_data, vlen);
}

int lmdb_db_put(lmdb_store_t *s, MDB_txn *txn, int db, MDB_val *k, MDB_val *v, unsigned flags) {
    int rc = mdb_put(txn, s->dbi[db], k, v, flags);
    if (!rc && !(flags & MDB_RESERVE)) lmdb_redo_log(s, REDO_PUT, db, k, v);
    return rc;
}

int lmdb_db_del(lmdb_store_t *s, MDB_txn *txn, int db, MDB_val *k) {
    int rc = mdb_del(txn, s->dbi[db], k, NULL);
    if (!rc) lmdb_redo_log(s, REDO_DEL, db, k, NULL);
    return rc;
}

int lmdb_cursor_del(lmdb_store_t *s, MDB_cursor *c, int db, const MDB_val *k) {
    lmdb_redo_log(s, REDO_DEL, db, k, NULL);
    return mdb_cursor_del(c, 0);
}

int lmdb_redo_apply(lmdb_store_t *s, MDB_txn *txn, const uint8_t *p, size_t len) {
    while (len) {
        if (len < REDO_HDR) return REDO_MALFORMED;
        int op = p[0], db = p[1];
        size_t klen = (size_t)p[2] << 8 | p[3];
        size_t vlen = (size_t)p[4] << 24 | (size_t)p[5] << 16 | (size_t)p[6] << 8 | p[7];
        if ((op != REDO_PUT && op != REDO_DEL) || db >= DB_META || klen == 0 ||
            len - REDO_HDR < klen || len - REDO_HDR - klen < vlen || (op == REDO_DEL && vlen))
            return REDO_MALFORMED;
        MDB_val k = lmdb_val(p + REDO_HDR, klen), v = lmdb_val(p + REDO_HDR + klen, vlen);
        int rc = op == REDO_PUT ? mdb_put(txn, s->dbi[db], &k, &v, 0) : mdb_del(txn, s->dbi[db], &k, NULL);
        if (rc == MDB_BAD_VALSIZE) return REDO_MALFORMED;
        if (rc && rc != MDB_NOTFOUND) return lmdb_map_err(rc);
        p += REDO_HDR + klen + vlen;
        len -= REDO_HDR + klen + vlen;
    }
    return STORE_OK;
}

int lmdb_replay_space(lmdb_store_t *s, const uint8_t *p, size_t len) {
    if (s->data_fd < 0) return STORE_OK;
    uint64_t pages = 64 + 2 * lmdb_write_pages(s, 0);
    while (len >= REDO_HDR) {
        size_t klen = (size_t)p[2] << 8 | p[3];
        size_t vlen = (size_t)p[4] << 24 | (size_t)p[5] << 16 | (size_t)p[6] << 8 | p[7];
        if (len - REDO_HDR < klen || len - REDO_HDR - klen < vlen) break; /* lmdb_redo_apply refuses it */
        pages += lmdb_write_pages(s, klen + vlen);
        p += REDO_HDR + klen + vlen;
        len -= REDO_HDR + klen + vlen;
    }
    pages += pages / 256;
    return lmdb_reserve(s, lmdb_db_end(s) + pages * s->psize);
}
