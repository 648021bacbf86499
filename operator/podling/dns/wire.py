"""DNS messages on the wire: one query's bytes in, the reply's bytes out (RFC 1035, RFC 6891).

Invariants:

* :func:`respond` never raises on what arrives: a message that does not parse is answered
  FORMERR (when it is long enough to carry an id), a response is not answered, an opcode
  other than QUERY is NOTIMP, and anything but one question is FORMERR.
* A UDP reply is never larger than the client can take: 512 bytes, or its EDNS0 size up to
  1232 (DNS flag day 2020). A larger one goes out with TC set and no records, so the client
  asks again over TCP, where size is not limited.
* A query carrying EDNS0 gets EDNS0 back (our UDP size: 1232).
"""

from __future__ import annotations

import dataclasses

from dnslib import EDNS0, OPCODE, QTYPE, RCODE, DNSRecord

from podling.dns.zone import Zone

UDP_PLAIN = 512  # bytes a UDP reply may have without EDNS0 (RFC 1035)
UDP_EDNS = 1232  # the most we send over UDP with EDNS0
_TYPES = frozenset({"A", "AAAA", "SRV", "PTR", "CNAME", "SOA", "NS", "TXT", "MX", "ANY"})


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    data: bytes | None  # None: nothing to send
    result: str  # the reply's rcode (NOERROR, NXDOMAIN, REFUSED, FORMERR …)
    qtype: str  # the query's type, "other" for rare or unknown ones (a bounded metric label)


def respond(data: bytes, *, zone: Zone, udp: bool) -> Reply:
    try:
        query = DNSRecord.parse(data)
    except Exception:  # anything may arrive on a DNS port: what does not parse is a format error
        if len(data) < 12:
            return Reply(None, "FORMERR", "other")
        flags = 0x8000 | (data[2] & 0x79) << 8 | RCODE.FORMERR  # QR, the query's opcode and RD, FORMERR
        return Reply(data[:2] + flags.to_bytes(2, "big") + bytes(8), "FORMERR", "other")
    if query.header.qr:
        return Reply(None, "FORMERR", "other")
    qtype = QTYPE.get(query.q.qtype, "other") if query.questions else "other"
    if query.header.opcode != OPCODE.QUERY or len(query.questions) != 1:
        reply = query.reply(ra=0, aa=0)
        reply.header.rcode = RCODE.NOTIMP if query.header.opcode != OPCODE.QUERY else RCODE.FORMERR
    else:
        reply = zone.answer(query)
    limit = UDP_PLAIN
    edns = next((record for record in query.ar if record.rtype == QTYPE.OPT), None)
    if edns is not None:
        reply.add_ar(EDNS0(udp_len=UDP_EDNS))
        limit = min(max(edns.rclass, UDP_PLAIN), UDP_EDNS)
    packed = reply.pack()
    if udp and len(packed) > limit:
        truncated = query.reply(ra=0, aa=reply.header.aa)
        truncated.header.rcode = reply.header.rcode
        truncated.header.tc = 1
        truncated.add_ar(EDNS0(udp_len=UDP_EDNS))
        packed = truncated.pack()
    return Reply(packed, RCODE.get(reply.header.rcode, "other"), qtype if qtype in _TYPES else "other")
