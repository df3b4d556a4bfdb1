"""The case page's photos: the one call the page renders them from.

The photo storage is built by the photos issue; until it is merged this returns no photos. Wire it here:
return derived images only (never originals with EXIF), each as {"url": ..., "caption": ..., "kind":
"before" | "after"}, in the order to show."""
from gridapp.models import Incident


def case_photos(incident: Incident) -> list[dict]:
    """Return the photos to show on the case page (none until the photos issue is merged)."""
    return []
