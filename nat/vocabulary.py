"""The NAT vocabulary, defined once (DESIGN.md section 6; RFC 4787 sections 4.1, 5).

Mapping and filtering behaviours share three words; the classic names are what users
and the real lab call the common combinations. ``NAT_KIND_BEHAVIOUR`` is the one table
the detector, the simulator's NAT boxes and the lab agree on.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Behaviour", "EIM", "ADM", "APDM", "EIF", "ADF", "APDF", "NatKind",
           "NAT_KIND_BEHAVIOUR", "CLASSIC_CONE"]


class Behaviour(StrEnum):
    """RFC 4787 mapping (EIM/ADM/APDM) or filtering (EIF/ADF/APDF) behaviour."""
    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"


EIM = EIF = Behaviour.ENDPOINT_INDEPENDENT
ADM = ADF = Behaviour.ADDRESS_DEPENDENT
APDM = APDF = Behaviour.ADDRESS_AND_PORT_DEPENDENT


class NatKind(StrEnum):
    """Classic names. ``NONE`` is a site without a NAT (the detector reports it as
    ``OPEN``); ``UDP_BLOCKED`` is the detector's answer when no STUN server replies."""
    NONE = "none"
    OPEN = "open"
    FULL_CONE = "full-cone"
    RESTRICTED_CONE = "restricted-cone"
    PORT_RESTRICTED_CONE = "port-restricted-cone"
    SYMMETRIC = "symmetric"
    UDP_BLOCKED = "udp-blocked"


#: a cone NAT's classic name by its filtering (its mapping is EIM)
CLASSIC_CONE = {EIF: NatKind.FULL_CONE, ADF: NatKind.RESTRICTED_CONE,
                APDF: NatKind.PORT_RESTRICTED_CONE}

#: lab / simulator kind -> (mapping, filtering, port preservation), None for no NAT
NAT_KIND_BEHAVIOUR: dict[NatKind, tuple[Behaviour, Behaviour, bool] | None] = {
    NatKind.NONE: None,
    NatKind.FULL_CONE: (EIM, EIF, True),
    NatKind.RESTRICTED_CONE: (EIM, ADF, True),
    NatKind.PORT_RESTRICTED_CONE: (EIM, APDF, True),
    NatKind.SYMMETRIC: (APDM, APDF, False),
}
