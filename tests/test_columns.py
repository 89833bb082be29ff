"""The output-naming rule: reserved names and source columns compared without regard to letter case."""

import pytest

from cng_assets.transforms.columns import RESERVED, output_names, renamed, unused


def test_reserved_names_cover_ours_and_every_cell_column():
    assert set(RESERVED) == {"_cng_fid", "bbox", "geometry", *(f"h{r}" for r in range(16))}


@pytest.mark.parametrize("name", ["bbox", "BBox", "BBOX", "_CNG_FID", "Geometry", "h0", "H0", "h10", "H15"])
def test_a_reserved_name_in_any_case_gets_the_prefix(name):
    assert output_names(["keep", name]) == {"keep": "keep", name: f"src_{name}"}


def test_names_that_only_look_reserved_are_kept():
    names = ["h16", "h", "h01x", "bboxes", "geom", "fid", "src_x"]
    assert renamed(output_names(names)) == {}


def test_every_cell_resolution_is_reserved():
    names = [f"h{r}" for r in range(16)]
    assert output_names(names) == {n: f"src_{n}" for n in names}


def test_chained_collisions_never_clash():
    cols = ["BBox", "src_BBox", "SRC_BBOX_2", "bbox"]
    out = output_names(cols)
    # source columns that collide with nothing keep their names, wherever they are; renamed ones go round them
    assert out == {"BBox": "src_BBox_3", "src_BBox": "src_BBox", "SRC_BBOX_2": "SRC_BBOX_2", "bbox": "src_bbox_4"}
    assert output_names(list(reversed(cols))) == {"bbox": "src_bbox_3", "SRC_BBOX_2": "SRC_BBOX_2",
                                                  "src_BBox": "src_BBox", "BBox": "src_BBox_4"}
    for names in (out, output_names(list(reversed(cols)))):
        folded = [v.casefold() for v in names.values()]
        assert len(set(folded)) == len(folded) and not set(folded) & set(RESERVED)


def test_source_columns_equal_but_for_case_are_told_apart():
    assert output_names(["Name", "NAME", "name"]) == {"Name": "Name", "NAME": "src_NAME", "name": "src_name_2"}


def test_other_reserved_sets():
    assert output_names(["h10", "x"], reserved=()) == {"h10": "h10", "x": "x"}
    assert output_names(["X"], reserved=("x",)) == {"X": "src_X"}


def test_unused():
    assert unused("_hilbert", {"a"}) == "_hilbert"
    assert unused("_hilbert", {"_hilbert", "_hilbert_2"}) == "_hilbert_3"
