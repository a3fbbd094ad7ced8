"""A real DTLS association in memory, with aiortc's context: for the record layer's tests."""

from __future__ import annotations

import contextlib

from aiortc.rtcdtlstransport import SRTP_AES128_CM_SHA1_80, RTCCertificate
from OpenSSL import SSL

from fileshare.sctp import records


def dtls_pair() -> tuple[SSL.Connection, SSL.Connection]:
    """Two ends of a real DTLS association (aiortc's context), handshaken in memory."""
    ends = []
    for connect in (True, False):
        context = RTCCertificate.generateCertificate()._create_ssl_context([SRTP_AES128_CM_SHA1_80])
        end = SSL.Connection(context)
        end.set_connect_state() if connect else end.set_accept_state()
        ends.append(end)
    client, server = ends
    for _ in range(6):
        for end, other in ((client, server), (server, client)):
            with contextlib.suppress(SSL.WantReadError):
                end.do_handshake()
            while True:
                try:
                    other.bio_write(end.bio_read(records.RECORD_MAX))
                except SSL.WantReadError:
                    break
    return client, server
