import pytest

from benchmarks.bench_replay import chosen_datasets, movielens_missing


def test_the_chosen_data_sets_keep_the_benchmarks_order_whatever_order_they_are_named_in():
    assert chosen_datasets("movielens, synthetic") == ("synthetic", "movielens")
    assert chosen_datasets("movielens") == ("movielens",)


@pytest.mark.parametrize("datasets", ["", "synthetic,imdb", " , "])
def test_an_unknown_or_empty_data_set_list_is_refused_with_the_names_it_takes(datasets):
    with pytest.raises(ValueError, match="subset of synthetic, movielens"):
        chosen_datasets(datasets)


def test_a_full_run_asked_for_movielens_says_where_it_looked_when_the_data_is_missing(tmp_path):
    assert movielens_missing(("movielens",), False, None, tmp_path / "ml") == (
        f"ml-latest-small not found at {tmp_path / 'ml'}: set LAMBDAREC_MOVIELENS_DIR"
    )
    assert (
        movielens_missing(("synthetic", "movielens"), True, None, tmp_path / "ml") is None
    )  # quick skips it
    assert movielens_missing(("synthetic",), False, None, tmp_path / "ml") is None
    assert movielens_missing(("movielens",), False, tmp_path, tmp_path) is None
