"""Test photos made on the spot: a real JPEG with EXIF (GPS, orientation), padded to any size with
comment segments (distinct bytes, distinct hashes), and the bad ones (not an image, truncated, a bomb)."""
import io
import os
import struct

from PIL import ExifTags, Image

GPS = {1: "N", 2: (30.0, 33.0, 10.5), 3: "E", 4: (120.0, 4.0, 5.25)}  # 德清: what must never leak


def jpeg(width: int = 64, height: int = 48, size: int = 0, orientation: int = 6, seed: bytes | None = None,
         color=(200, 60, 30)) -> bytes:
    """A real JPEG with EXIF GPS and orientation; `size` pads it with comment segments of random bytes."""
    image = Image.new("RGB", (width, height), color)
    image.paste((20, 20, 220), (0, 0, width // 2, height // 4))  # a mark that shows the rotation
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.Make] = "TestPhone"
    exif[ExifTags.IFD.GPSInfo] = GPS
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif, quality=80)
    data = out.getvalue()
    padding = max(0, size - len(data)) if size else 0
    filler = (seed or b"") + os.urandom(padding)
    segments = []
    for start in range(0, len(filler), 65533):
        piece = filler[start:start + 65533]
        segments.append(b"\xff\xfe" + struct.pack(">H", len(piece) + 2) + piece)
    return data[:2] + b"".join(segments) + data[2:]


def png_bomb(side: int = 8000) -> bytes:
    """A tiny PNG whose pixels (side²) exceed the limit: decoded it would take side² bytes or more."""
    out = io.BytesIO()
    Image.new("1", (side, side)).save(out, "PNG")
    return out.getvalue()


def has_gps(data: bytes) -> bool:
    """Whether an image carries EXIF GPS (or any EXIF/XMP APP1 segment at all)."""
    with Image.open(io.BytesIO(data)) as image:
        exif = image.getexif()
        return bool(exif.get_ifd(ExifTags.IFD.GPSInfo)) or bool(exif) or b"Exif\x00\x00" in data or b"GPS" in data
