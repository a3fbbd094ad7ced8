"""RFC 5780 NAT behaviour discovery, sans-I/O: which mapping and filtering our NAT applies, and
whether it hairpins, found with Binding requests from one local port against a STUN server that
has two addresses (OTHER-ADDRESS, CHANGE-REQUEST: coturn with two listening IPs).

The caller owns the socket and the clock: it sends `datagrams_to_send()`, feeds `receive()` with
what arrives and `handle_timer()` at `get_timer()`. Each test is one transaction, retransmitted
from 100 ms doubling, given up after `step_seconds`; the whole probe is bounded by the number of
tests (at most 6) times that. Answers are matched by transaction id; anything else is dropped.

Two probes, each on a socket of its own (run side by side, then `merge`d): a NAT that filters by
address would let the filtering tests' answers in if the same port had just sent the mapping
tests to the other address. Mapping (RFC 5780 4.3): test I to the primary address; II to the
other IP, primary port; III to the other address; then hairpinning (4.5), a Binding request to
our own mapped address. Filtering (4.4): test I; II asks the primary to answer from the other IP
and port, III from the other port.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import Final, Literal

from fsproto import stun

Address = stun.Address
FIRST_RTO: Final = 0.1


class Behaviour(enum.Enum):
    """RFC 4787 words for mapping and filtering; NONE: no NAT (the mapped address is ours)."""

    NONE = "no NAT"
    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"


@dataclass
class NatFindings:
    """What the probe learnt; None where a test could not run or got no answer."""

    udp: bool = False  # the server answered over UDP at all
    mapped: Address | None = None  # our public address, as the primary address saw it
    other: Address | None = None  # the server's second address (None: no RFC 5780)
    seen_from: dict[str, Address] = field(default_factory=dict)  # "ip:port" -> mapped
    mapping: Behaviour | None = None
    filtering: Behaviour | None = None
    hairpin: bool | None = None


@dataclass
class _Test:
    name: str
    request: stun.Message
    to: Address
    deadline: float
    next_send: float
    rto: float = FIRST_RTO


def _key(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class NatProbe:
    def __init__(
        self,
        kind: Literal["mapping", "filtering"],
        server: Address,
        local: Address,
        now: float,
        step_seconds: float = 1.5,
    ) -> None:
        self.kind = kind
        self.server = server
        self.local = local
        self.step_seconds = step_seconds
        self.findings = NatFindings()
        self.done = False
        self._outbox: list[tuple[bytes, Address]] = []
        self._test: _Test | None = None
        self._start("mapping1", server, now)

    # --- the caller's side -----------------------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out, self._outbox = self._outbox, []
        return out

    def get_timer(self) -> float | None:
        test = self._test
        return None if test is None else min(test.next_send, test.deadline)

    def handle_timer(self, now: float) -> None:
        test = self._test
        if test is None:
            return
        if now >= test.deadline:
            self._no_answer(test.name, now)
        elif now >= test.next_send:
            self._outbox.append((test.request.encode(), test.to))
            test.rto *= 2
            test.next_send = now + test.rto

    def receive(self, data: bytes, now: float) -> None:
        """One datagram from anywhere: an answer to the current test, or dropped."""
        test = self._test
        if test is None:
            return
        message = stun.answer(data, test.request.tid)
        if message is None or message.method != stun.BINDING:
            return
        if test.name == "hairpin":
            if message.cls == stun.REQUEST:  # our own request came back through the NAT
                self._finish_hairpin(True)
            return
        if message.cls != stun.SUCCESS:
            return
        try:
            mapped = message.address(stun.XOR_MAPPED_ADDRESS) or message.address(
                stun.MAPPED_ADDRESS
            )
            other = message.address(stun.OTHER_ADDRESS)
        except stun.StunError:
            return
        if mapped is None:
            return
        self._answered(test.name, mapped, other, now)

    # --- the tests ------------------------------------------------------------------------------

    def _start(self, name: str, to: Address, now: float, change: int | None = None) -> None:
        request = stun.Message(stun.BINDING, stun.REQUEST)
        if change is not None:
            request.add(stun.CHANGE_REQUEST, struct.pack("!I", change))
        self._test = _Test(name, request, to, now + self.step_seconds, now + FIRST_RTO)
        self._outbox.append((request.encode(), to))

    def _answered(self, name: str, mapped: Address, other: Address | None, now: float) -> None:
        found = self.findings
        assert self._test is not None
        found.seen_from[_key(self._test.to)] = mapped
        if name == "mapping1":
            found.udp, found.mapped = True, mapped
            found.other = other if other is not None and other[0] != self.server[0] else None
            if self.kind == "filtering":
                if found.other is None:
                    self._finish()
                else:
                    self._start("filtering2", self.server, now, stun.CHANGE_IP | stun.CHANGE_PORT)
            elif found.other is None:  # no RFC 5780: only hairpinning can still be tested
                self._start("hairpin", mapped, now)
            else:
                self._start("mapping2", (found.other[0], self.server[1]), now)
        elif name == "mapping2":
            if mapped == found.mapped:
                found.mapping = self._independent()
                self._start("hairpin", mapped, now)
            else:
                assert found.other is not None
                self._start("mapping3", found.other, now)
        elif name == "mapping3":
            assert found.other is not None
            second = found.seen_from.get(_key((found.other[0], self.server[1])))
            found.mapping = (
                Behaviour.ADDRESS_DEPENDENT
                if mapped == second
                else Behaviour.ADDRESS_AND_PORT_DEPENDENT
            )
            self._start("hairpin", found.mapped or mapped, now)
        elif name == "filtering2":
            found.filtering = self._independent()
            self._finish()
        elif name == "filtering3":
            found.filtering = Behaviour.ADDRESS_DEPENDENT
            self._finish()

    def _no_answer(self, name: str, now: float) -> None:
        found = self.findings
        if name == "mapping1":  # UDP gets no answer: nothing else can be learnt over it
            self._finish()
        elif name in ("mapping2", "mapping3"):  # the other address is silent: mapping unknown
            assert found.mapped is not None
            self._start("hairpin", found.mapped, now)
        elif name == "filtering2":
            self._start("filtering3", self.server, now, stun.CHANGE_PORT)
        elif name == "filtering3":
            found.filtering = Behaviour.ADDRESS_AND_PORT_DEPENDENT
            self._finish()
        else:
            self._finish_hairpin(False)

    def _finish_hairpin(self, works: bool) -> None:
        self.findings.hairpin = works
        self._finish()

    def _finish(self) -> None:
        self._test, self.done = None, True

    def _independent(self) -> Behaviour:
        """Endpoint-independent, or no NAT at all when the server sees our own address."""
        if self.findings.mapped == self.local:
            return Behaviour.NONE
        return Behaviour.ENDPOINT_INDEPENDENT


def merge(mapping: NatFindings, filtering: NatFindings) -> NatFindings:
    """One view of the NAT from the mapping probe and the filtering probe."""
    return NatFindings(
        udp=mapping.udp or filtering.udp,
        mapped=mapping.mapped or filtering.mapped,
        other=mapping.other or filtering.other,
        seen_from={**filtering.seen_from, **mapping.seen_from},
        mapping=mapping.mapping,
        filtering=filtering.filtering,
        hairpin=mapping.hairpin,
    )
