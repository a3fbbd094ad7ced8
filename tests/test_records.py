"""fileshare.sctp.records: OpenSSL's calls directly give what pyOpenSSL's give (records either
side can open, the same exceptions), on a real DTLS association; the pin picks the way."""

from __future__ import annotations

import pytest
from OpenSSL import SSL

from fileshare.sctp import plpmtu, records
from tests.dtls import dtls_pair

WAYS = {
    "direct": (records._seal_direct, records._open_direct),
    "public": (records._seal_public, records._open_public),
}


@pytest.mark.parametrize("sealer", WAYS)
@pytest.mark.parametrize("opener", WAYS)
def test_a_packet_sealed_either_way_opens_either_way(sealer: str, opener: str) -> None:
    client, server = dtls_pair()
    seal, open_record = WAYS[sealer][0], WAYS[opener][1]
    for size in (1, 1432, plpmtu.LARGEST, 2**14):
        packet = bytes(range(256)) * (size // 256) + bytes(size % 256)
        record = seal(client, packet)
        assert len(record) > size  # one record: the packet and DTLS's header and tag
        assert open_record(server, record) == packet
        assert seal(server, packet[::-1]) and open_record(client, seal(server, packet)) == packet


@pytest.mark.parametrize("way", WAYS)
def test_a_forged_record_raises_what_pyopenssl_raises(way: str) -> None:
    client, server = dtls_pair()
    seal, open_record = WAYS[way]
    record = bytearray(seal(client, b"x" * 100))
    record[-1] ^= 1  # the tag no longer matches: DTLS drops the record, nothing is read
    with pytest.raises(SSL.WantReadError):
        open_record(server, bytes(record))
    assert open_record(server, seal(client, b"after")) == b"after"  # the association goes on


@pytest.mark.parametrize("way", WAYS)
def test_the_peers_close_notify_raises_zero_return(way: str) -> None:
    client, server = dtls_pair()
    client.shutdown()
    with pytest.raises(SSL.ZeroReturnError):
        WAYS[way][1](server, client.bio_read(records.RECORD_MAX))


@pytest.mark.parametrize("way", WAYS)
def test_sealing_after_our_close_raises_as_pyopenssl_does(way: str) -> None:
    client, _ = dtls_pair()
    client.shutdown()
    with pytest.raises(SSL.Error):
        WAYS[way][0](client, b"too late")


def test_the_pinned_pyopenssl_takes_the_direct_way_and_another_the_public_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("seal", "open_record"):  # put back as they were, after the test
        monkeypatch.setattr(records, name, getattr(records, name))
    assert records.install()
    assert (records.seal, records.open_record) == WAYS["direct"]
    assert not records.install("26.5.0")
    assert (records.seal, records.open_record) == WAYS["public"]
