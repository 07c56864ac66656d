"""Bad study and benchmark input is one line."""


import pytest

from plugin.utils.errors import UserError

from ..helpers import FIXTURES_DIR, REPO
from ..helpers import one_error_line as _one_error_line

FIXTURES = FIXTURES_DIR / "eval"


def test_study_run_with_a_misspelt_key_is_refused(tmp_path):
    import yaml

    from plugin.experiments.study import load_study

    study = yaml.safe_load((REPO / "configs" / "study_smollm2.yaml").read_text())
    study["runs"].append({"name": "typo", "adaptr": "lora"})
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(study))
    with pytest.raises(UserError, match="study run 'typo': unknown key 'adaptr'; did you mean 'adapter'"):
        load_study(path)


def test_bench_unknown_method(capsys):
    from plugin.bench import main as bench_main

    assert "unknown method 'foo'" in _one_error_line(capsys, lambda: bench_main(["--methods", "lora,foo"]))


def test_study_output_dir_is_a_file(tmp_path, capsys):
    import yaml

    from plugin.study import main as study_main

    study = yaml.safe_load((REPO / "configs" / "study_smollm2.yaml").read_text())
    (tmp_path / "afile").write_text("x")
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**study, "output_dir": str(tmp_path / "afile")}))
    assert "is a file" in _one_error_line(capsys, lambda: study_main([str(path)]))
