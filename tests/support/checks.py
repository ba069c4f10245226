"""Pure helpers: ids, times and the shape of what the API answers. No I/O."""
import datetime
import hashlib
import re
import time
import uuid

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def derive_conversation_id(a, b):
    """SHA-256 over the two lowercase ids sorted and concatenated; first 16 bytes."""
    x, y = sorted([str(a).lower(), str(b).lower()])
    return str(uuid.UUID(bytes=hashlib.sha256((x + y).encode("ascii")).digest()[:16]))


def is_canonical_uuid(s):
    return isinstance(s, str) and bool(UUID_RE.match(s))


def check_uuid(s, version=None):
    assert is_canonical_uuid(s), f"not a lowercase canonical UUID: {s!r}"
    if version is not None:
        u = uuid.UUID(s)
        assert s[14] == str(version), f"UUID {s} has version nibble {s[14]}, expected {version}"
        assert u.variant == uuid.RFC_4122, f"UUID {s} is not an RFC 4122 variant UUID"


def check_time(s):
    assert isinstance(s, str) and TIME_RE.match(s), f"not an ISO-8601 UTC ms time: {s!r}"
    return parse_time(s)


def parse_time(s):
    """Milliseconds since the Unix epoch."""
    dt = datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    return round(dt.timestamp() * 1000)


def now_ms():
    return round(time.time() * 1000)


def timeuuid_key(s):
    u = uuid.UUID(s)
    return (u.time, u.clock_seq, u.node)


def check_error(body, status=None):
    assert isinstance(body, dict), f"error body is not a JSON object: {body!r}"
    assert isinstance(body.get("detail"), str), f"error body has no string detail: {body!r}"


def check_page_shape(page, limit):
    assert isinstance(page, dict), page
    assert set(page) >= {"total", "limit", "data", "next_cursor"}, page
    assert isinstance(page["data"], list), page
    assert page["total"] == len(page["data"]), page
    assert page["limit"] == limit, page
    assert len(page["data"]) <= limit, page


def check_message(m):
    assert set(m) >= {"message_id", "conversation_id", "sender_id", "receiver_id",
                      "content", "created_at"}, m
    check_uuid(m["message_id"], version=1)
    check_uuid(m["conversation_id"])
    check_uuid(m["sender_id"])
    check_uuid(m["receiver_id"])
    assert isinstance(m["content"], str), m
    check_time(m["created_at"])
    assert m["conversation_id"] == derive_conversation_id(m["sender_id"], m["receiver_id"]), m
