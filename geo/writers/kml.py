"""KML 2.2 written piece by piece: a Document with one Placemark per feature and ExtendedData."""
from xml.sax.saxutils import escape

HEADER = ('<?xml version="1.0" encoding="UTF-8"?>\n<kml xmlns="http://www.opengis.net/kml/2.2">\n'
          "<Document><name>{name}</name>\n")
FOOTER = "</Document>\n</kml>\n"


def header(name: str) -> str:
    return HEADER.format(name=escape(name))


def placemark(name: str, properties: dict, geometry_kml: str) -> str:
    """One Placemark; `geometry_kml` is a KML geometry element (PostGIS ST_AsKML writes it)."""
    data = "".join(f'<Data name="{escape(k, {chr(34): "&quot;"})}"><value>{escape(_text(v))}</value></Data>'
                   for k, v in properties.items())
    return f"<Placemark><name>{escape(name or '')}</name><ExtendedData>{data}</ExtendedData>{geometry_kml}</Placemark>\n"


def _text(value) -> str:
    return "" if value is None else str(value)
