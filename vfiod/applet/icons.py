"""The tray icon's three looks: a theme icon name and an ARGB pixmap drawn here.

The pixmap (a filled disc in the look's colour, with a ring) lets hosts without the
theme icon show something meaningful; no image library is needed.
"""

from __future__ import annotations

from functools import lru_cache

from vfiod.applet.model import Look

#: Freedesktop icon names that every common theme has.
ICON_NAMES: dict[Look, str] = {
    Look.HOST: "computer",
    Look.GUESTS: "video-display",
    Look.ERROR: "dialog-error",
}

#: (red, green, blue) per look: green on the host, blue with guests, red on error.
COLOURS: dict[Look, tuple[int, int, int]] = {
    Look.HOST: (0x2e, 0xa0, 0x43),
    Look.GUESTS: (0x1f, 0x6f, 0xeb),
    Look.ERROR: (0xd7, 0x3a, 0x49),
}

SIZES = (16, 22, 32, 48)


def disc_pixmap(size: int, rgb: tuple[int, int, int]) -> bytes:
    """A *size*x*size* ARGB32 image (network byte order, as StatusNotifierItem wants)
    of a filled disc with a white ring."""
    centre = (size - 1) / 2
    outer, ring = size / 2 - 0.5, size / 2 - max(1.5, size / 10)
    pixels = bytearray()
    for y in range(size):
        for x in range(size):
            r = ((x - centre) ** 2 + (y - centre) ** 2) ** 0.5
            if r > outer:
                pixels += b"\x00\x00\x00\x00"
            elif r > ring:
                pixels += b"\xff\xff\xff\xff"
            else:
                pixels += bytes((0xff, *rgb))
    return bytes(pixels)


@lru_cache(maxsize=None)
def icon_pixmaps(look: Look) -> list[tuple[int, int, bytes]]:
    """The look as IconPixmap's ``a(iiay)``: one image per common size."""
    return [(size, size, disc_pixmap(size, COLOURS[look])) for size in SIZES]
