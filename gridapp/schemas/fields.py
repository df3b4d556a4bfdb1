"""Field helpers shared by schemas."""


def mask_phone(phone: str | None) -> str | None:
    """Mask the middle of a phone number (personal data): 13812345678 → 138****5678."""
    if not phone:
        return None
    if len(phone) <= 7:
        return "*" * len(phone)
    return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]
