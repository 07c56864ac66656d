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


@pytest.mark.parametrize("run, message", [
    ({"name": "x", "adapter": "lora", "match_params": "mor_n9"}, "match_params 'mor_n9' names no adapter run of this "
                                                                 "study; one of: lora, mplora_n4, mor_n8"),
    ({"name": "x", "adapter": "mor", "match_params": "mor_n8"}, "match_params sets a LoRA's rank; add adapter: lora"),
])
def test_study_matched_run_names_a_run_of_the_study(tmp_path, run, message):
    import yaml

    from plugin.experiments.study import load_study

    study = yaml.safe_load((REPO / "configs" / "study_smollm2_matched.yaml").read_text())
    study["runs"].append(run)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(study))
    with pytest.raises(UserError, match=f"study run 'x': {message}"):
        load_study(path)
