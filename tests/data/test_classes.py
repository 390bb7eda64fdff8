import numpy as np
import pytest

from nucstudy.data.classes import (
    CONIC,
    CONSEP,
    PAPER_CLASS_WEIGHTS_BY_NAME,
    ClassScheme,
    class_weights,
    get_scheme,
)


def test_conic_order_is_the_challenges():
    assert CONIC.names == (
        "background",
        "neutrophil",
        "epithelial",
        "lymphocyte",
        "plasma",
        "eosinophil",
        "connective",
    )
    assert CONIC.n_classes == 7
    assert CONIC.foreground_ids == (1, 2, 3, 4, 5, 6)


def test_consep_order():
    assert CONSEP.names == ("background", "other", "inflammatory", "epithelial", "spindle")
    assert CONSEP.id_of("spindle") == 4


def test_colours_are_distinct_per_class():
    for scheme in (CONIC, CONSEP):
        table = scheme.colour_table()
        assert table.shape == (scheme.n_classes, 3) and table.dtype == np.uint8
        assert len({tuple(row) for row in table}) == scheme.n_classes


def test_paper_weights_map_by_name():
    weights = class_weights(CONIC, PAPER_CLASS_WEIGHTS_BY_NAME)
    assert weights == (1.0, 4.0, 2.0, 2.0, 3.0, 4.0, 2.0)


def test_weights_missing_a_class_are_refused():
    with pytest.raises(ValueError, match="inflammatory"):
        class_weights(CONSEP, PAPER_CLASS_WEIGHTS_BY_NAME)


def test_check_ids_names_the_bad_id():
    with pytest.raises(ValueError, match="class id 7 .* 'conic'"):
        CONIC.check_ids(np.array([[0, 7]]), "x")
    CONIC.check_ids(np.array([[0, 6]]), "x")


def test_get_scheme_and_unknown_names():
    assert get_scheme("CoNIC") is CONIC
    assert get_scheme(CONSEP) is CONSEP
    with pytest.raises(ValueError, match="unknown class scheme"):
        get_scheme("pannuke")
    with pytest.raises(ValueError, match="unknown class 'tumour'"):
        CONIC.id_of("tumour")


def test_a_scheme_needs_background_first():
    with pytest.raises(ValueError, match="background"):
        ClassScheme("bad", ("tumour", "background"), ((0, 0, 0), (1, 1, 1)))


def test_paper_weights_for_each_scheme():
    from nucstudy.data.classes import paper_class_weights

    assert paper_class_weights(CONIC) == (1.0, 4.0, 2.0, 2.0, 3.0, 4.0, 2.0)
    # background 1, other (rare, no counterpart) 4, inflammatory mean(2, 3, 4, 4), epithelial 2,
    # spindle = connective 2
    assert paper_class_weights(CONSEP) == (1.0, 4.0, 3.25, 2.0, 2.0)
