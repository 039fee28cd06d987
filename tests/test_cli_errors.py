"""The CLI's two error paths: a user mistake (one sentence, exit 2) and a bug (one "this is a bug" line, exit 1)."""

import pytest
import torch

from mgdm_audio import cli
from mgdm_audio.core.denoiser import batch_sigma
from mgdm_audio.core.errors import InternalError, UserInputError


def _broken_invariant(args) -> int:
    # a real internal check: a sampler handing the denoiser 3 noise levels for 2 chains is a bug, not the user's input
    batch_sigma(torch.ones(3), torch.zeros(2, 4))
    return 0


def test_internal_invariant_is_not_a_user_error():
    with pytest.raises(InternalError, match="sigma") as caught:
        batch_sigma(torch.ones(3), torch.zeros(2, 4))
    assert not isinstance(caught.value, UserInputError)


def test_cli_prints_a_bug_as_one_line_and_exits_1(monkeypatch, capsys):
    monkeypatch.setattr(cli, "_info", _broken_invariant)
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    assert cli.main(["info"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mgdm-audio: this is a bug, please report it: InternalError: sigma must be")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("debug_env, argv", [(None, ["--debug", "info"]), ("1", ["info"])])
def test_cli_shows_the_traceback_when_asked(monkeypatch, debug_env, argv):
    monkeypatch.setattr(cli, "_info", _broken_invariant)
    if debug_env is None:
        monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    else:
        monkeypatch.setenv(cli.DEBUG_ENV, debug_env)
    with pytest.raises(InternalError):
        cli.main(argv)


def test_cli_user_mistake_exits_2(capsys):
    assert cli.main(["separate", "no-such-file.wav", "--n-samples", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mgdm-audio: error: ") and len(err.strip().splitlines()) == 1
