"""A minimal Mapbox Vector Tile reader for tests: layer names, and each feature's properties.

Only what ST_AsMVT writes: Tile.layers (3) → Layer.name (1), features (2), keys (3), values (4);
Feature.tags (2, packed). No dependency: protobuf varints and length-delimited fields by hand."""
import struct


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes):
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"wire type {wire}")
        yield number, wire, value


def _value(data: bytes):
    for number, _wire, value in _fields(data):
        if number == 1:
            return value.decode()
        if number == 2:
            return struct.unpack("<f", value)[0]
        if number == 3:
            return struct.unpack("<d", value)[0]
        if number in (4, 5):
            return value if value < 2 ** 63 else value - 2 ** 64
        if number == 6:
            return (value >> 1) ^ -(value & 1)
        if number == 7:
            return bool(value)
    return None


def decode(tile: bytes) -> dict[str, list[dict]]:
    """Return {layer name: [feature properties, …]}."""
    layers = {}
    for number, _wire, layer_bytes in _fields(tile):
        if number != 3:
            continue
        name, raw_features, keys, values = None, [], [], []
        for field, _w, value in _fields(layer_bytes):
            if field == 1:
                name = value.decode()
            elif field == 2:
                raw_features.append(value)
            elif field == 3:
                keys.append(value.decode())
            elif field == 4:
                values.append(_value(value))
        features = []
        for raw in raw_features:
            tags = []
            for field, _w, value in _fields(raw):
                if field == 2:
                    pos = 0
                    while pos < len(value):
                        tag, pos = _varint(value, pos)
                        tags.append(tag)
            features.append({keys[k]: values[v] for k, v in zip(tags[::2], tags[1::2])})
        layers[name] = features
    return layers
