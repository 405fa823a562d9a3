#!/usr/bin/env python3
"""Writes the committed seed corpora of the SMPP fuzz targets (receipt,
deliver_sm, smpp_session) in the input formats their targets document.
Run from this directory: python3 gen.py"""
import os, struct

def w(target, name, data):
    os.makedirs(target, exist_ok=True)
    with open(os.path.join(target, name), "wb") as f:
        f.write(data)

RECEIPTS = {
    "classic": "id:0000007B sub:001 dlvrd:001 submit date:2401021530 done date:240102153105 stat:DELIVRD err:000 text:hello",
    "upper": "ID:42 SUB:001 DLVRD:000 SUBMIT DATE:2402291200 DONE DATE:2402291201 STAT:UNDELIV ERR:0A1 TEXT:",
    "reordered": "stat:EXPIRED err:027 id:c0ffee text:none done date:2412312359 submit date:2412302359",
    "long_words": "id:9f8e7d6c-1111 submit date:250101000000 done date:250101000059 stat:DELIVERED err:0",
    "rejected": "id:abc sub:000 dlvrd:000 submit date:2301010000 done date:2301010000 stat:REJECTD err:0B",
    "enroute": "id: 77  stat: ENROUTE  err: 000",
    "deleted": "id:5 stat:DELETED err:000 text:id:bogus stat:DELIVRD",
    "accepted": "id:6 stat:ACCEPTD done date:3012311259",
    "unknown": "id:7 stat:UNKNOWN err:FFFF done date:99",
    "multibyte": "id:ü1 stat:DELIVRD text:Привет",
}

def cstr(s):
    return s.encode() + b"\0"

def tlv(tag, value):
    return struct.pack(">HH", tag, len(value)) + value

def deliver_sm(esm, short=b"", tlvs=b"", dc=0, src="4917012345", dst="1234"):
    return (cstr("") + bytes([1, 1]) + cstr(src) + bytes([0, 0]) + cstr(dst)
            + bytes([esm, 0, 0]) + cstr("") + cstr("") + bytes([0, 0, dc, 0, len(short)])
            + short + tlvs)

BODIES = {}
for n, t in RECEIPTS.items():
    BODIES["receipt_" + n] = deliver_sm(0x04, t.encode())
BODIES["receipt_tlv"] = deliver_sm(0x04, b"", tlv(0x001E, b"7B\0") + tlv(0x0427, b"\x02") + tlv(0x0423, b"\x03\x00\x01"))
BODIES["intermediate"] = deliver_sm(0x20, b"id:12 stat:ENROUTE err:000")
BODIES["mo_plain"] = deliver_sm(0x00, b"hello")
BODIES["mo_ucs2"] = deliver_sm(0x00, "Привет".encode("utf-16-be"), dc=8)
for i in (1, 2, 3):
    BODIES[f"mo_udh8_{i}"] = deliver_sm(0x40, bytes([5, 0x00, 3, 0xAA, 3, i]) + b"part%d" % i)
for i in (1, 2):
    BODIES[f"mo_udh16_{i}"] = deliver_sm(0x40, bytes([6, 0x08, 4, 0x12, 0x34, 2, i]) + b"half%d" % i)
for i in (1, 2):
    BODIES[f"mo_sar_{i}"] = deliver_sm(0x00, b"sar%d" % i, tlv(0x020C, b"\x00\x07") + tlv(0x020E, b"\x02") + tlv(0x020F, bytes([i])))
BODIES["mo_payload"] = deliver_sm(0x00, b"", tlv(0x0424, b"a long message in message_payload " * 8))
BODIES["mo_udh_other_ies"] = deliver_sm(0x40, bytes([10, 0x24, 1, 0x01, 0x25, 1, 0x01, 0x00, 3, 9, 2, 1]) + b"turkish")

def rec(adv, body):
    return bytes([adv]) + struct.pack(">H", len(body)) + body

for n, b in BODIES.items():
    w("deliver_sm", n, b"\x00" + rec(0, b))
w("deliver_sm", "udh8_out_of_order", b"\x01" + rec(0, BODIES["mo_udh8_3"]) + rec(5, BODIES["mo_udh8_1"]) + rec(5, BODIES["mo_udh8_2"]))
w("deliver_sm", "sar_and_udh16", b"\x02" + rec(0, BODIES["mo_sar_2"]) + rec(1, BODIES["mo_udh16_1"]) + rec(90, BODIES["mo_sar_1"]) + rec(1, BODIES["mo_udh16_2"]))
many = b"".join(rec(0, deliver_sm(0x40, bytes([5, 0x00, 3, r, 2, 1]) + b"x" * 200)) for r in range(12))
w("deliver_sm", "never_complete", b"\x00" + many)

# smpp_session: [sel][seq u16][len u16][body]; sel & 15 indexes IDS in the target.
SEL = {"deliver_sm": 0, "enquire_link": 1, "unbind": 2, "submit_sm_resp": 3, "generic_nack": 4,
       "enquire_link_resp": 5, "alert_notification": 6, "data_sm": 7, "submit_sm": 8,
       "bind_transceiver": 9, "unbind_resp": 10, "outbind": 11, "deliver_sm_resp": 12,
       "unknown": 14, "raw": 15}

def pdu(kind, seq, body=b"", status=0):
    return bytes([SEL[kind] | (status << 4)]) + struct.pack(">HH", seq, len(body)) + body

w("smpp_session", "receipts_then_unbind", pdu("deliver_sm", 1, BODIES["receipt_classic"]) + pdu("deliver_sm", 2, BODIES["receipt_tlv"]) + pdu("enquire_link", 3) + pdu("unbind", 4) + pdu("enquire_link", 5))
w("smpp_session", "mo_parts", b"".join(pdu("deliver_sm", 10 + i, BODIES[f"mo_udh8_{i}"]) for i in (2, 1, 3)))
w("smpp_session", "stray_responses", pdu("submit_sm_resp", 7, b"abc\0") + pdu("generic_nack", 8, b"", 3) + pdu("enquire_link_resp", 9) + pdu("unbind_resp", 10) + pdu("deliver_sm_resp", 11, b"\0"))
w("smpp_session", "unexpected_requests", pdu("submit_sm", 1, BODIES["mo_plain"]) + pdu("bind_transceiver", 2, b"sys\0pw\0\0\x34\0\0\0") + pdu("outbind", 3, b"sys\0pw\0") + pdu("unknown", 4, b"zz") + pdu("data_sm", 5, b"\0\1\1" + b"1\0" + b"\0\0" + b"2\0" + b"\0\0\0"))
w("smpp_session", "malformed_deliver_sm", pdu("deliver_sm", 1, b"\xff" * 7) + pdu("deliver_sm", 2, BODIES["receipt_upper"][:-5]) + pdu("alert_notification", 3, b"\1\1" + b"123\0" + b"\1\1" + b"456\0"))
w("smpp_session", "broken_length", pdu("enquire_link", 1) + pdu("raw", 0, struct.pack(">IIII", 8, 0x15, 0, 2)))
w("smpp_session", "truncated_tail", pdu("enquire_link", 1) + pdu("raw", 0, struct.pack(">IIII", 40, 0x15, 0, 2)))
for n, t in RECEIPTS.items():
    w("receipt", n, t.encode())
w("receipt", "date12", b"240229235960")
w("receipt", "date10", b"0001010000")

# rest: [route][credentials][param len][param][body]; route indexes ROUTES in
# the target, credentials & 3: 0 user token, 1 admin key, 2 bad token, 3 none;
# credentials >> 4: 0 the fixture user's id, 1 the link local-sim, else param.
import json
REST = [
    ("check_text_len", 0, 0, b"", {"message": "Привет"}),
    ("check_text_len_gsm", 0, 0, b"", {"message": "Hello {world} €", "esme": "default"}),
    ("send", 1, 0, b"", {"esme": "default", "source": "SMSGW", "destination": "+4915112345678", "message": "Hello", "transaction_id": "t1"}),
    ("send_unknown_target", 1, 0, b"", {"esme": "nope", "source": "SMSGW", "destination": "x", "message": ""}),
    ("webhook", 2, 0, b"", {"url": "https://example.com/hook", "secret": "0123456789abcdef"}),
    ("login", 3, 3 << 4, b"", {"email": "f@example.com", "password": "long enough pw"}),
    ("token", 4, 3 << 4, b"", {"app_id": "app_x", "app_secret": "s"}),
    ("register", 5, 3 << 4, b"", {"email": "g@example.com", "password": "0123456789", "app_name": "g"}),
    ("patch_user", 6, 1, b"", {"quotas": {"rate": 5}}),
    ("set_admin", 7, 1, b"", {"admin": True}),
    ("reset_secret", 8, 1, b"", {}),
    ("stop_link", 9, 1 | (1 << 4), b"", {}),
    ("sms_info", 10, 0x20, b"msg_0123", None),
    ("sms_by_transaction", 11, 0x20, b"t1", None),
]
for name, route, creds, param, body in REST:
    raw = b"" if body is None else json.dumps(body, ensure_ascii=False).encode()
    w("rest", name, bytes([route, creds, len(param)]) + param + raw)

# grpc: [method][flags][payload]; method indexes METHODS in the target,
# flags & 3: 0 user token, 1 admin key, 2 bad token, 3 none; flags & 4 sends
# the payload unframed. Streaming requests: frames of [len: u8][octets].
def varint(n):
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out

def pb(*fields):
    """A protobuf message from (number, value) pairs: str/bytes are
    length-delimited, int a varint."""
    out = b""
    for num, v in fields:
        if isinstance(v, int):
            out += varint(num << 3) + varint(v)
        else:
            v = v.encode() if isinstance(v, str) else v
            out += varint(num << 3 | 2) + varint(len(v)) + v
    return out

SEND = pb((2, "g1"), (4, "default"), (9, "SMSGW"), (10, "+4915112345678"), (11, "Hello"))
GRPC = [
    ("send", 0, 0, SEND),
    ("send_unicode_wait", 0, 0, pb((4, "default"), (9, "SMSGW"), (10, "+4915112345678"), (11, "Привет"), (14, 1))),
    ("send_callback", 0, 0, pb((4, "default"), (10, "+4915112345678"), (11, "x"), (16, "http://169.254.169.254/"), (17, "delivered"))),
    ("stream", 1, 0, bytes([len(SEND)]) + SEND + bytes([len(SEND)]) + SEND),
    ("check_esme", 2, 0, pb((1, "default"))),
    ("check_text_len", 3, 0, pb((1, "Hello {world} €"), (2, "default"))),
    ("sms_info", 4, 0, pb((2, "g1"))),
    ("watch_events", 5, 0, pb((1, 0))),
    ("register", 6, 3, pb((1, "h@example.com"), (2, "0123456789"), (3, "h"))),
    ("login", 7, 3, pb((1, "f@example.com"), (2, "long enough pw"))),
    ("token", 8, 3, pb((1, "app_x"), (2, "s"))),
    ("list_users", 9, 1, b""),
    ("update_user", 11, 1, pb((1, "u"), (3, 5), (4, "default"), (5, 1))),
    ("control_link", 16, 1, pb((1, "local-sim"), (2, 2))),
    ("get_stats", 18, 1, b""),
    ("broken_frame", 0, 4, b"\x00\x00\x00\x10\x00"),
    ("forged_token", 0, 2, SEND),
]
for name, method, flags, payload in GRPC:
    w("grpc", name, bytes([method, flags]) + payload)
