import pytest

from benchmarks.bench_replay import chosen_datasets


def test_the_chosen_data_sets_keep_the_benchmarks_order_whatever_order_they_are_named_in():
    assert chosen_datasets("movielens, synthetic") == ("synthetic", "movielens")
    assert chosen_datasets("movielens") == ("movielens",)


@pytest.mark.parametrize("datasets", ["", "synthetic,imdb", " , "])
def test_an_unknown_or_empty_data_set_list_is_refused_with_the_names_it_takes(datasets):
    with pytest.raises(ValueError, match="subset of synthetic, movielens"):
        chosen_datasets(datasets)
