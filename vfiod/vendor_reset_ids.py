"""The GPUs that need the vendor-reset module to come back from a reset: the AMD reset bug.

AMD Polaris, Vega and Navi 10/12/14 cards report success from their FLR and bus resets
but stay hung after a guest has used them (typically reading all ones: "Unknown PCI
header type 127"); only a device-specific reset brings them back. The out-of-tree
module vendor-reset provides it: once loaded, the kernel accepts ``device_specific``
in their ``reset_method``.

Source: gnif/vendor-reset, src/device-db.h (commit 03e525d), ``vendor_reset_devices[]``:
the Polaris 10/11/12, Vega 10/20 and Navi 10/12/14 entries (vendor 0x1002). Navi 23 and
Arcturus are in that table too but are not the cards this check is about.
"""

from __future__ import annotations

#: PCI vendor id of AMD/ATI graphics.
AMD_ATI = 0x1002
#: The kernel module that provides the device-specific reset (``vendor_reset`` loaded).
MODULE = "vendor_reset"

_FAMILIES: dict[str, tuple[int, ...]] = {
    "Polaris 10": (0x67C0, 0x67C1, 0x67C2, 0x67C4, 0x67C7, 0x67D0, 0x67DF, 0x67C8, 0x67C9,
                   0x67CA, 0x67CC, 0x67CF, 0x6FDF),
    "Polaris 11": (0x67E0, 0x67E3, 0x67E8, 0x67EB, 0x67EF, 0x67FF, 0x67E1, 0x67E7, 0x67E9),
    "Polaris 12": (0x6980, 0x6981, 0x6985, 0x6986, 0x6987, 0x6995, 0x6997, 0x699F),
    "Vega 10": (0x6860, 0x6861, 0x6862, 0x6863, 0x6864, 0x6867, 0x6868, 0x6869, 0x686A,
                0x686B, 0x686C, 0x686D, 0x686E, 0x686F, 0x687F),
    "Vega 20": (0x66A0, 0x66A1, 0x66A2, 0x66A3, 0x66A4, 0x66A7, 0x66AF, 0x164C),
    "Navi 10": (0x7310, 0x7312, 0x7318, 0x7319, 0x731A, 0x731B, 0x731E, 0x731F, 0x15BF,
                0x15DD, 0x15DE, 0x15E7, 0x1636, 0x1638),
    "Navi 14": (0x7340, 0x7341, 0x7347, 0x734F),
    "Navi 12": (0x7360, 0x7362),
}

#: device id -> family, for vendor AMD_ATI (each id is in one family).
DEVICES: dict[int, str] = {id_: name for name, ids in _FAMILIES.items() for id_ in ids}


def family(vendor: int, device: int) -> str | None:
    """``"Navi 10"`` when vendor-reset covers this card (it has the AMD reset bug), else None."""
    return DEVICES.get(device) if vendor == AMD_ATI else None
