import logging

import pytest

from libdet.utils.logger import create_small_table, log_every_n, log_every_n_seconds, log_first_n, setup_logger


def _read(path) -> str:
    for handler in logging.getLogger(path.parent.name).handlers:
        handler.flush()
    return path.read_text()


def test_setup_logger_writes_file_and_rank_suffix(tmp_path, capsys):
    name = tmp_path.name
    logger = setup_logger(str(tmp_path), distributed_rank=0, name=name, color=False)
    assert setup_logger(str(tmp_path), distributed_rank=0, name=name, color=False) is logger
    logger.info("hello from rank 0")
    assert _read(tmp_path / "log.txt").count("hello from rank 0") == 1  # handlers not duplicated
    assert "hello from rank 0" in capsys.readouterr().out

    other = tmp_path / "other"
    worker = setup_logger(str(other / "train.log"), distributed_rank=3, name=other.name, color=False)
    worker.warning("from rank 3")
    for handler in worker.handlers:
        handler.flush()
    assert "from rank 3" in (other / "train.log.rank3").read_text()
    assert "from rank 3" not in capsys.readouterr().out  # only rank 0 logs to the terminal


def _clear_termcolor_cache():
    import termcolor.termcolor

    cached = getattr(termcolor.termcolor, "can_colorize", None)
    if hasattr(cached, "cache_clear"):
        cached.cache_clear()


def test_colored_terminal_output_abbreviates_names(tmp_path, capsys, monkeypatch, request):
    monkeypatch.setenv("FORCE_COLOR", "1")  # stdout is captured, not a terminal
    monkeypatch.delenv("NO_COLOR", raising=False)
    _clear_termcolor_cache()  # termcolor caches its environment check; another test may have made it first
    request.addfinalizer(_clear_termcolor_cache)  # and must not keep FORCE_COLOR's answer for later tests
    logger = setup_logger(str(tmp_path), name="libdet_color_test", color=True, abbrev_name="ct")
    logging.getLogger("libdet_color_test.sub").warning("careful")
    out = capsys.readouterr().out
    assert "WARNING" in out and "careful" in out and "\x1b[" in out
    assert "ct.sub]" in out and "libdet_color_test" not in out
    for handler in logger.handlers:
        handler.flush()
    assert "libdet_color_test.sub WARNING: careful" in (tmp_path / "log.txt").read_text()


def test_log_first_n_and_every_n(caplog):
    with caplog.at_level(logging.INFO):
        for _ in range(5):
            log_first_n(logging.INFO, "first-n message", n=2, name="libdet.test")
        for i in range(6):
            log_every_n(logging.INFO, f"every-n {i}", n=3, name="libdet.test")
        for _ in range(3):
            log_every_n_seconds(logging.INFO, "timed message", n=60, name="libdet.test")
        for i in range(3):
            log_first_n(logging.INFO, f"by message {i % 2}", n=1, name="libdet.test", key="message")
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("first-n message") == 2
    assert [m for m in messages if m.startswith("every-n")] == ["every-n 0", "every-n 3"]
    assert messages.count("timed message") == 1
    assert messages.count("by message 0") == 1 and messages.count("by message 1") == 1
    with pytest.raises(ValueError, match="key must be"):
        log_first_n(logging.INFO, "x", key="line")


def test_create_small_table():
    table = create_small_table({"AP": 41.234, "AP50": 60.5})
    lines = table.splitlines()
    assert "AP" in lines[0] and "AP50" in lines[0]
    assert "41.234" in lines[2] and "60.500" in lines[2]
