"""Redis's wire protocol as the result watcher reads it: whole replies, split ones, errors."""

from __future__ import annotations

import pytest

from jobify_celery._resp import RespError, command, parse_replies

SUBSCRIBED = b"*3\r\n$9\r\nsubscribe\r\n$5\r\nchan1\r\n:1\r\n"
MESSAGE = b'*3\r\n$7\r\nmessage\r\n$5\r\nchan1\r\n$14\r\n{"status": "S"}\r\n'


def test_commands_are_arrays_of_bulk_strings() -> None:
    assert command("SUBSCRIBE", b"a", "bc") == b"*3\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n$2\r\nbc\r\n"


def test_several_replies_are_read_at_once() -> None:
    data = SUBSCRIBED + b"+OK\r\n" + MESSAGE.replace(b"$14", b"$15")
    replies, end = parse_replies(data)
    assert end == len(data)
    assert replies == [
        [b"subscribe", b"chan1", 1],
        "OK",
        [b"message", b"chan1", b'{"status": "S"}'],
    ]


@pytest.mark.parametrize("cut", range(1, len(SUBSCRIBED)))
def test_a_reply_cut_anywhere_waits_for_the_rest(cut: int) -> None:
    replies, end = parse_replies(SUBSCRIBED[:cut])
    assert (replies, end) == ([], 0)
    replies, end = parse_replies(SUBSCRIBED, end)
    assert replies == [[b"subscribe", b"chan1", 1]]


def test_reading_resumes_where_it_stopped() -> None:
    data = SUBSCRIBED + SUBSCRIBED[:10]
    replies, end = parse_replies(data)
    assert len(replies) == 1
    assert end == len(SUBSCRIBED)
    more, end = parse_replies(data + SUBSCRIBED[10:], end)
    assert more == [[b"subscribe", b"chan1", 1]]


def test_errors_nulls_and_binary_payloads() -> None:
    payload = b"\x00\r\n\xff"
    data = b"-NOAUTH Authentication required.\r\n$-1\r\n*-1\r\n$4\r\n" + payload + b"\r\n"
    replies, _ = parse_replies(data)
    assert isinstance(replies[0], RespError)
    assert "NOAUTH" in str(replies[0])
    assert replies[1:] == [None, None, payload]


def test_garbage_is_refused() -> None:
    with pytest.raises(ValueError, match="not a RESP reply"):
        parse_replies(b"HTTP/1.1 400 Bad Request\r\n")
