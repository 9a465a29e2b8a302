import pytest

from benchmarks.bench_replay import chosen_datasets, movielens_missing, single_source_rows


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


def test_each_single_source_row_puts_the_paired_difference_next_to_the_ratio():
    one = {
        "models": {
            "batch_speed": {"hr@10": 0.328},
            "speed_neighbours": {"hr@10": 0.273},
            "speed_trending": {"hr@10": 0.0},
        },
        "batch_speed_minus_single_source": {
            "speed_neighbours": {
                "hr@10": {"mean": 0.055, "se": 0.0125},
                "ndcg@10": {"mean": 0.0258, "se": 0.00814},
            },
            "speed_trending": {
                "hr@10": {"mean": 0.328, "se": 0.0148},
                "ndcg@10": {"mean": 0.199, "se": 0.01},
            },
        },
    }
    titles = {"speed_neighbours": "speed only: recent-item neighbours"}
    assert single_source_rows("synthetic", one, titles) == [
        ["synthetic", "speed only: recent-item neighbours", "+0.0550 ± 0.0125", "+0.0258 ± 0.0081", "1.201x"],
        ["synthetic", "speed_trending", "+0.3280 ± 0.0148", "+0.1990 ± 0.0100", "n/a (no hit alone)"],
    ]
    assert single_source_rows("synthetic", {"models": {}}, titles) == []
