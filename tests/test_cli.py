"""The command line itself: a command whose code cannot be imported stays listed and says why."""

from __future__ import annotations

import pytest

from stream.cli import entry as cli_main


def test_a_command_that_cannot_be_imported_says_why(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(cli_main.COMMAND_MODULES, "models", "stream.cli.no_such_module")
    with pytest.raises(SystemExit):
        cli_main.main(["--help"])
    listing = capsys.readouterr().out
    assert "models" in listing and "unavailable: ModuleNotFoundError" in listing
    assert cli_main.main(["models", "list"]) == 2
    assert "skystream models: unavailable here: ModuleNotFoundError" in capsys.readouterr().err


def test_every_command_group_is_available_in_the_full_install(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli_main.main(["--help"])
    listing = capsys.readouterr().out
    assert "unavailable" not in listing
    for name in (*cli_main.COMMAND_MODULES, "train", "score", "worker", "watch", "demo", "broker"):
        assert f"    {name}" in listing, name
