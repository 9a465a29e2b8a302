from benchmarks.report import markdown_table, write_report


def test_markdown_table_formats_floats_to_four_significant_digits():
    assert markdown_table(["model", "ndcg"], [["als", 0.123456], ["pop", 1]]) == (
        "| model | ndcg |\n|---|---|\n| als | 0.1235 |\n| pop | 1 |"
    )


def test_report_has_tables_plots_and_failures(tmp_path):
    results = {
        "serving": {
            "title": "Serving latency",
            "machine": {"cores": 2, "memory_gib": 24.0, "python": "3.11.7"},
            "wall_s": 3.0,
            "tables": [{"title": "p99", "columns": ["rate", "p99_ms"], "rows": [[100, 2.5]]}],
            "plots": [
                {
                    "title": "p99 vs rate",
                    "x_label": "req/s",
                    "y_label": "ms",
                    "x": [100, 300],
                    "lines": {"on": [1, 2]},
                },
                {
                    "title": "HR by model",
                    "kind": "bar",
                    "note": "2.0x batch only",
                    "x": ["pop", "batch"],
                    "lines": {"a": [0.1, 0.2], "b": [0.15, 0.3]},
                },
            ],
        },
        "replay": {"error": "RuntimeError: boom", "wall_s": 1.0},
    }
    report = write_report(results, tmp_path / "results" / "x", tmp_path / "REPORT.md", quick=True)
    text = report.read_text()
    assert "## Serving latency" in text
    assert "Machine: 2 cores, 24.0 GiB, Python 3.11.7. Wall time: 3.0 s." in text
    assert "| 100 | 2.5 |" in text
    assert "![p99 vs rate](plots/serving-0.png)" in text
    assert (tmp_path / "plots" / "serving-0.png").stat().st_size > 1000
    assert "![HR by model](plots/serving-1.png)" in text
    assert (tmp_path / "plots" / "serving-1.png").stat().st_size > 1000
    assert "| Serving latency | 3 | ok |\n| replay | 1 | failed |" in text
    assert "**Failed:** `RuntimeError: boom`" in text


def test_only_keeps_the_other_benchmarks_results(tmp_path, monkeypatch):
    import json

    from benchmarks import run

    monkeypatch.setattr(run, "discover", lambda: ["serving", "replay"])
    (tmp_path / "serving.json").write_text(json.dumps({"title": "Serving", "wall_s": 2.0, "quick": False}))
    assert run.previous_results(tmp_path, skip={"replay"}) == {
        "serving": {"title": "Serving", "wall_s": 2.0, "quick": False}
    }
    assert run.previous_results(tmp_path, skip={"serving"}) == {}


def test_a_section_run_in_another_mode_says_so(tmp_path):
    results = {
        "serving": {"title": "Serving", "wall_s": 2.0, "quick": False},
        "replay": {"title": "Replay", "wall_s": 1.0, "quick": True},
    }
    text = write_report(results, tmp_path, tmp_path / "REPORT.md", quick=True).read_text()
    assert "Wall time: 2.0 s (full mode)." in text
    assert "Wall time: 1.0 s." in text


def test_written_analyses_follow_the_generated_sections_in_file_order(tmp_path):
    (tmp_path / "analyses").mkdir()
    (tmp_path / "analyses" / "b-second.md").write_text("## Second\n\nwhy b\n")
    (tmp_path / "analyses" / "a-first.md").write_text("## First\n\nwhy a\n")
    results = {"serving": {"title": "Serving", "wall_s": 2.0, "quick": True}}
    text = write_report(results, tmp_path, tmp_path / "REPORT.md", quick=True).read_text()
    assert text.endswith("Wall time: 2.0 s.\n\n## First\n\nwhy a\n\n## Second\n\nwhy b\n")
