"""marshmallow schemas at the HTTP boundary: they validate and serialise shapes, never query."""
