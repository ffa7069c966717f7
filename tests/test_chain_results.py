"""Task and run records: the one line a finished product gets in a batch job's log."""

from ben_builder.chain.results import TaskResult, result_line


def test_a_products_log_line_counts_overlapped_writes_once():
    seconds = {"verify": 2.0, "label": 3.0, "read_bands": 110.0, "write_overlapped": 9.5}
    r = TaskResult(
        product="P.SAFE", ok=True, summary={"kept": 5, "candidates": 8, "seconds": seconds}
    )
    assert result_line(r) == "done P.SAFE: kept 5 of 8 (115.0 s)"  # writes overlap read_bands
