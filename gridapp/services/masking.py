"""The one place personal data (当事人 name, phone, ID number) is masked, for every listing and export.

Masked by default; only an export with the `personal_data.unmask` permission and a stated reason shows
the real values, and that export is written to the append-only access log (services/exports.py)."""

PERSONAL_FIELDS = ("party_name", "party_phone", "party_id_number")


def mask_phone(phone: str | None) -> str | None:
    """138****5678: the first three and last four digits stay (what Chinese apps show)."""
    if not phone:
        return phone
    if len(phone) <= 7:
        return "*" * (len(phone) - 2) + phone[-2:] if len(phone) > 2 else "*" * len(phone)
    return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]


def mask_id_number(number: str | None) -> str | None:
    """330521********1234: the region code (6) and the last four stay; birth date and sequence are hidden."""
    if not number:
        return number
    if len(number) <= 10:
        return "*" * len(number)
    return number[:6] + "*" * (len(number) - 10) + number[-4:]


def mask_name(name: str | None) -> str | None:
    """张** : the family name stays."""
    if not name:
        return name
    return name[0] + "*" * max(len(name) - 1, 1)


MASKERS = {"party_name": mask_name, "party_phone": mask_phone, "party_id_number": mask_id_number}


def mask_row(row: dict) -> dict:
    """Mask the personal fields present in a row (a dict of export values), in place, and return it."""
    for field, mask in MASKERS.items():
        if row.get(field):
            row[field] = mask(row[field])
    return row
