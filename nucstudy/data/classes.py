"""Class schemes: ids, names and display colours of nucleus types.

A :class:`ClassScheme` lists its classes by id; id 0 is always background. Everything in the
library that needs to know about classes takes a scheme, so nothing hard-codes the number of
classes. Two schemes are built in:

- :data:`CONIC`: the CoNIC 2022 challenge's order, 0 background, 1 neutrophil, 2 epithelial,
  3 lymphocyte, 4 plasma, 5 eosinophil, 6 connective.
- :data:`CONSEP`: HoVer-Net's merged CoNSeP classes, 0 background, 1 other, 2 inflammatory,
  3 epithelial, 4 spindle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassScheme:
    """An ordered set of nucleus classes.

    Attributes:
        name: short identifier of the scheme (``"conic"``, ``"consep"``).
        names: class names indexed by class id; ``names[0]`` is ``"background"``.
        colours: display colours as (R, G, B) tuples of 0-255 ints, indexed by class id.
    """

    name: str
    names: tuple[str, ...]
    colours: tuple[tuple[int, int, int], ...]

    def __post_init__(self) -> None:
        if not self.names or self.names[0] != "background":
            raise ValueError(f"scheme {self.name!r}: class 0 must be 'background'")
        if len(self.colours) != len(self.names):
            raise ValueError(f"scheme {self.name!r}: one colour per class is needed")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"scheme {self.name!r}: class names must be unique")

    @property
    def n_classes(self) -> int:
        """Number of classes including background (the width of a TP head's output)."""
        return len(self.names)

    @property
    def foreground_names(self) -> tuple[str, ...]:
        """Names of the nucleus classes, ids 1..K in order (the columns of a counts table)."""
        return self.names[1:]

    @property
    def foreground_ids(self) -> tuple[int, ...]:
        """Ids 1..K of the nucleus classes."""
        return tuple(range(1, len(self.names)))

    def id_of(self, name: str) -> int:
        """Class id of ``name``; raises ValueError naming the scheme's classes if unknown."""
        try:
            return self.names.index(name)
        except ValueError:
            raise ValueError(
                f"unknown class {name!r} in scheme {self.name!r}; known: {', '.join(self.names)}"
            ) from None

    def colour_table(self) -> np.ndarray:
        """Colours as a (n_classes, 3) uint8 array, row = class id."""
        return np.asarray(self.colours, dtype=np.uint8)

    def check_ids(self, class_map: np.ndarray, where: str = "class map") -> None:
        """Raise ValueError if ``class_map`` holds an id outside 0..n_classes-1.

        Args:
            class_map: integer array of any shape.
            where: what to name in the error message (a file name, an argument).
        """
        if class_map.size == 0:
            return
        low, high = int(class_map.min()), int(class_map.max())
        if low < 0 or high >= self.n_classes:
            bad = low if low < 0 else high
            raise ValueError(
                f"{where}: class id {bad} is out of range for scheme {self.name!r} "
                f"(ids 0..{self.n_classes - 1})"
            )


CONIC = ClassScheme(
    name="conic",
    names=(
        "background",
        "neutrophil",
        "epithelial",
        "lymphocyte",
        "plasma",
        "eosinophil",
        "connective",
    ),
    colours=(
        (0, 0, 0),
        (255, 140, 0),
        (220, 30, 30),
        (40, 200, 40),
        (30, 170, 255),
        (170, 60, 255),
        (255, 230, 0),
    ),
)

CONSEP = ClassScheme(
    name="consep",
    names=("background", "other", "inflammatory", "epithelial", "spindle"),
    colours=(
        (0, 0, 0),
        (0, 200, 200),
        (40, 200, 40),
        (220, 30, 30),
        (255, 230, 0),
    ),
)

SCHEMES: dict[str, ClassScheme] = {CONIC.name: CONIC, CONSEP.name: CONSEP}

#: The paper's TP class weights, by class name (it lists epithelial 2, lymphocyte 2, plasma 3,
#: eosinophil 4, neutrophil 4, connective 2, background 1). Map them onto a scheme with
#: :func:`class_weights`, never by position.
PAPER_CLASS_WEIGHTS_BY_NAME: dict[str, float] = {
    "epithelial": 2.0,
    "lymphocyte": 2.0,
    "plasma": 3.0,
    "eosinophil": 4.0,
    "neutrophil": 4.0,
    "connective": 2.0,
    "background": 1.0,
}


def get_scheme(scheme: str | ClassScheme) -> ClassScheme:
    """Return a scheme given itself or its name (``"conic"``, ``"consep"``)."""
    if isinstance(scheme, ClassScheme):
        return scheme
    try:
        return SCHEMES[str(scheme).lower()]
    except KeyError:
        raise ValueError(f"unknown class scheme {scheme!r}; known: {', '.join(SCHEMES)}") from None


def class_weights(scheme: ClassScheme, by_name: dict[str, float]) -> tuple[float, ...]:
    """Order per-class weights given by name into the scheme's id order.

    Args:
        scheme: the target scheme.
        by_name: a weight for every class name of the scheme (background included).

    Returns:
        A tuple of ``scheme.n_classes`` floats, index = class id.
    """
    missing = [name for name in scheme.names if name not in by_name]
    if missing:
        raise ValueError(f"no weight for class(es) {', '.join(missing)} of scheme {scheme.name!r}")
    return tuple(float(by_name[name]) for name in scheme.names)


#: How the CoNSeP classes relate to CoNIC's (CoNSeP-256 README): inflammatory cells are
#: lymphocytes, plasma cells, neutrophils and eosinophils; spindle cells are connective;
#: "other" has no CoNIC counterpart.
CONSEP_FROM_CONIC: dict[str, tuple[str, ...]] = {
    "background": ("background",),
    "other": (),
    "inflammatory": ("lymphocyte", "plasma", "neutrophil", "eosinophil"),
    "epithelial": ("epithelial",),
    "spindle": ("connective",),
}


def paper_class_weights(scheme: ClassScheme) -> tuple[float, ...]:
    """The paper's class weights for ``scheme``, in its id order.

    For CoNIC they are the paper's, mapped by name. For CoNSeP each merged class takes the
    mean weight of the CoNIC classes it merges (inflammatory: (2 + 3 + 4 + 4) / 4 = 3.25), and
    "other", a rare class with no counterpart, the largest weight (4), as the paper gives its
    rarest classes. This mapping is the study's choice, not the paper's.
    """
    by_name = PAPER_CLASS_WEIGHTS_BY_NAME
    if scheme.name == CONIC.name:
        return class_weights(scheme, by_name)
    if scheme.name == CONSEP.name:
        rarest = max(by_name.values())
        merged = {
            name: (sum(by_name[m] for m in members) / len(members) if members else rarest)
            for name, members in CONSEP_FROM_CONIC.items()
        }
        return class_weights(scheme, merged)
    return class_weights(scheme, by_name)
