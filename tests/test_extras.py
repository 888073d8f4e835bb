"""A missing extra is named with the command that adds it, before any work; a bare Optuna sweeper is told to maximise."""

from __future__ import annotations

import pytest

from experiments.analysis import compare
from experiments.core import extras
from experiments.core.errors import ConfigError, UserError


def test_a_bare_optuna_sweeper_is_refused_with_the_override_that_fixes_it() -> None:
    with pytest.raises(ConfigError, match="hydra.sweeper.direction=maximize"):
        extras.check_sweep(["-m", "hydra/sweeper=optuna", "task=toy_reverse"])
    extras.check_sweep(["hydra/sweeper=optuna", "hydra.sweeper.direction=maximize"])
    extras.check_sweep(["experiment=tune_transformer", "task=multi30k_de_en"])  # the preset sets it
    assert extras.uses_optuna("tune_gru") and not extras.uses_optuna("multi30k_de_en")


@pytest.mark.parametrize("overrides", [["experiment=tune_gru"], ["hydra/sweeper=optuna",
                                        "hydra.sweeper.direction=maximize"], ["hydra/launcher=slurm"]])
def test_sweeps_without_the_sweep_extra_name_the_install_command(overrides: list[str], monkeypatch) -> None:
    monkeypatch.setattr(extras, "installed", lambda module: False)
    with pytest.raises(UserError, match=r"needs the 'sweep' extra .*make install \(or .*pip install -e \"\.\[sweep\]\"\)"):
        extras.check_sweep(overrides)


def test_s2s_compare_without_compare_mt_says_so_before_decoding(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setattr(extras, "installed", lambda module: module != "compare_mt")
    with pytest.raises(SystemExit) as exit_info:  # the runs do not exist: the extra is checked first
        compare.main([str(tmp_path / "a"), str(tmp_path / "b")])
    assert exit_info.value.code == 2
    assert 's2s-compare needs the \'analysis\' extra (compare_mt not installed): make install' in capsys.readouterr().err
