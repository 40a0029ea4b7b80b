"""The labels: the main groups (C, S, X, Other) and the Bus classes in them, and the SMASSII taxonomy table."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

# Main groups: Bus & Binzel's C, S and X complexes, and every other class as Other. Q (and unclassified
# "-") belong to none: such spectra are left out of training (SMASSII holds no Q spectrum, so nothing is lost).
MAIN_GROUPS: dict[str, tuple[str, ...]] = {
    "C": ("B", "C", "Cb", "Cg", "Cgh", "Ch"),
    "S": ("S", "Sa", "Sk", "Sl", "Sq", "Sr"),
    "X": ("X", "Xc", "Xe", "Xk"),
    "Other": ("A", "D", "K", "L", "Ld", "O", "R", "T", "V"),
}


GROUP_NAMES: tuple[str, ...] = tuple(MAIN_GROUPS)


BUS_TO_GROUP = {bus: group for group, classes in MAIN_GROUPS.items() for bus in classes}


BUS_CLASS_NAMES: tuple[str, ...] = tuple(sorted(BUS_TO_GROUP))  # the Bus head's classes (25, no Q)


@dataclass(frozen=True)
class TaxonomyEntry:
    """One object of the SMASS taxonomy table: its Tholen and Bus classes."""
    object: str  # "1" or "1996 UK": the same convention as stream.spectra.object_name
    name: str
    tholen: str
    bus: str  # "" when unclassified


_PROVISIONAL = re.compile(r"\d{4} [A-Z]{2}\d*")


def parse_taxonomy(text: str) -> dict[str, TaxonomyEntry]:
    """Bus.Taxonomy.txt → entries by object.

    Rows are ``number name<TAB>tholen<TAB>bus`` with provisional designations (``1996 UK``) indented
    and without a number; some rows carry extra tabs (``523 Ada<TAB><TAB><TAB><TAB>X``), so the Bus
    class is the last field and the Tholen class the second, never fixed positions. (Reading fixed
    tab positions loses 523 Ada (X) and 614 Pia (C): that gives the 1,339 of the published counts.)
    """
    entries: dict[str, TaxonomyEntry] = {}
    for line in text.splitlines():
        if "\t" not in line:
            continue  # header prose
        fields = line.split("\t")
        designation = " ".join(fields[0].split())
        tholen = fields[1].strip() if len(fields) > 2 else ""
        bus = fields[-1].strip()
        bus = "" if bus == "-" else bus
        if line[:1].isspace() or _PROVISIONAL.fullmatch(designation):
            obj, name = designation, designation
        else:
            number, _, name = designation.partition(" ")
            if not number.isdigit():
                raise ValueError(f"unexpected taxonomy row: {line!r}")
            obj = str(int(number))
        if obj in entries:
            raise ValueError(f"object {obj} listed twice in the taxonomy")
        entries[obj] = TaxonomyEntry(obj, name, tholen, bus)
    return entries


def bus_to_group_matrix() -> np.ndarray:
    """(25, 4) 0/1 matrix: Bus-class probabilities @ matrix = main-group probabilities."""
    out = np.zeros((len(BUS_CLASS_NAMES), len(GROUP_NAMES)), np.float32)
    for j, bus in enumerate(BUS_CLASS_NAMES):
        out[j, GROUP_NAMES.index(BUS_TO_GROUP[bus])] = 1.0
    return out
