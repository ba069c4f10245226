/* wal.h - a write-ahead log: numbered records, appended sequentially and
 * made durable with one fdatasync per group of writes.
 *
 * The embedded store answers a write once its record is in this log, which
 * costs one sequential append and one fdatasync, instead of the scattered
 * page writes of a B-tree commit (lmdb_internal.h explains the whole design).
 *
 * On disk: a folder of segment files named by the sequence number of their
 * first record (`%016llx.wal`), each a run of records:
 *
 *   magic u32 | length u32 | seq u64 | crc32 u32 | payload[length]
 *
 * integers big-endian; the CRC (zlib's crc32) covers seq, length and the
 * payload, then, in a segment that was prepared in advance (below), zeros to
 * its end. Invariants:
 *  - within the log, each record's seq is the previous one's plus 1;
 *  - a record is either whole and valid, or it is the torn tail of the newest
 *    segment (a crash during an append);
 *  - a run of zero bytes to the end of a segment is space not yet used (a
 *    zero record header is never written).
 * A record's payload is opaque bytes: zeros, or bytes that look like a
 * record header, are content. Records are found only by walking from the
 * start of a segment, header to header, never by searching, so a record
 * forged inside another's payload is never taken for one.
 *
 * Recovery (wal_replay) keeps the log up to its first torn or bad record and
 * drops everything from there on. Bad means: a short header, a magic that is
 * not ours, a length beyond the file (or WAL_RECORD_MAX), a CRC that does not
 * match, a seq that is not the previous one plus 1, a segment whose first
 * seq does not follow the segment before it, or a record its reader refused
 * (WAL_REPLAY_BAD). The damaged segment is cut where the bad record starts
 * and every later segment leaves the log; what was dropped is logged (bytes,
 * whole records found in it, later segments), and the store starts with the
 * records before it instead of refusing to start.
 *  - A torn tail (nothing whole after the bad record, no later segment: what
 *    a crash during an append leaves, never acknowledged) is just cut off.
 *  - Anything else is damage, and the dropped bytes may hold acknowledged
 *    writes: they are MOVED ASIDE, not deleted, into `corrupt-<UTC time>/`
 *    in the log's folder (later segments renamed into it whole, the damaged
 *    segment's bytes from the cut on copied as `<segment>.from-byte-<N>`),
 *    so that an operator can look at them and recover writes by hand. A
 *    rename needs no disk space, so this works on a full disk too; if the
 *    copy of the damaged tail cannot be made (say, no space), that is
 *    logged and the recovery goes on all the same (starting wins over
 *    keeping evidence). Nothing reads those folders: delete them when done.
 *
 * Prepared segments (wal_open's `prepare`): a background thread writes the
 * next segment's file in advance, zeros to segment_bytes, synced (from the
 * time a segment is first half full). Appends
 * then overwrite allocated, cached blocks, and an fdatasync writes just
 * those pages: no block allocation and no inode (size) write, which under
 * load made a sync of an appended file take about 1.5 times as long (p50 86-107
 * against 59-64 us, mean 120-190 against 79 us, next to a server taking sends).
 *
 * One thread (the store's writer) appends; wal_sync(), wal_forget() and
 * wal_bytes() may also be called from other threads, concurrently with
 * appends. Errors are negative errno values.
 */
#ifndef MESSENGER_WAL_H
#define MESSENGER_WAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct wal wal_t;

/* The largest payload of one record. */
#define WAL_RECORD_MAX (1u << 30)

/* Opens (creating if needed) the log in folder `dir`. Nothing is read yet:
 * call wal_replay() once before the first append. Segments rotate when they
 * pass segment_bytes (0: 64 MiB). With `prepare`, new segments are written
 * in advance (above) from the first append on. */
int wal_open(const char *dir, size_t segment_bytes, bool prepare, wal_t **out);

/* What fn returns for a record that is whole and valid but that it cannot
 * use (say, a payload it cannot parse): the record counts as bad (wal.h's
 * recovery policy), and it and everything after it are dropped. */
#define WAL_REPLAY_BAD 1

/* Calls fn for every whole record with seq > after, oldest first; the
 * payload is valid during the call only. Segments that hold only records
 * <= after are neither read nor checked. fn returns 0 to go on,
 * WAL_REPLAY_BAD (above), or a negative value that stops the replay and is
 * returned (nothing is dropped then). At the first torn or bad record the
 * log is cut (the policy above): the replay still returns 0. Returns 0, fn's
 * negative value, or a negative errno for an I/O error (a read that fails is
 * not damage: the log is left alone). Sets *last to the newest seq left in
 * the log (0 when it is empty). */
int wal_replay(wal_t *w, uint64_t after,
               int (*fn)(void *ctx, uint64_t seq, const void *data, size_t len), void *ctx,
               uint64_t *last);

/* What the last wal_replay() dropped; all zero when it dropped nothing. */
typedef struct wal_dropped {
    uint64_t from_seq;      /* the seq the first dropped record should have had */
    uint64_t bytes;         /* bytes dropped (the damaged segment's tail and later segments) */
    uint64_t records;       /* whole, valid records found in them */
    uint64_t segments;      /* later segments dropped whole */
    bool damage;            /* more than a torn tail (then they were moved aside) */
    char folder[64];        /* the corrupt-* folder in the log's folder ("" if none) */
} wal_dropped_t;
void wal_replay_dropped(const wal_t *w, wal_dropped_t *out);

/* Appends one record (not yet durable). seq must be the newest seq plus 1,
 * or anything when the log is empty; otherwise -EINVAL. On failure nothing of
 * the record stays in the log (a partial write is cut off again); when even
 * that fails the log refuses every later append with -EIO. */
int wal_append(wal_t *w, uint64_t seq, const void *data, size_t len);

/* Makes every record appended before the call durable (fdatasync). Once a
 * sync has failed, every later call fails the same way: the kernel may have
 * dropped what it could not write. */
int wal_sync(wal_t *w);

/* Makes every segment durable, the records some earlier process appended
 * included (it may have died before its sync): call after wal_replay(),
 * before anything that depends on the log is acknowledged. */
int wal_sync_all(wal_t *w);

/* Deletes every segment: the log is empty, and the next append may take any
 * seq. For a database that holds more than the log (then a base copy that
 * holds it all must already be durable). */
int wal_reset(wal_t *w);

/* Starts a new segment at the next append, so that everything before it can
 * be forgotten by segment. */
int wal_rotate(wal_t *w);

/* Deletes the segments whose every record has seq <= upto (never the one
 * being appended to). Returns 0 or a negative errno (a segment that could not
 * be deleted is forgotten all the same: it is older than every record kept). */
int wal_forget(wal_t *w, uint64_t upto);

/* Preparation (wal_open's `prepare`) stops when it fails, e.g. on a full
 * disk (segments are then made as they are needed): this turns it on again,
 * once space has returned. Appending thread only. Returns 1 when it had
 * stopped, else 0. */
int wal_prepare_again(wal_t *w);

/* Bytes of the records in the log (a segment that wal_replay() did not
 * read counts its whole file, prepared space included). */
uint64_t wal_bytes(wal_t *w);

void wal_close(wal_t *w);

#endif
