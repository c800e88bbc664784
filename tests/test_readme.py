"""The README's quick start runs as printed (every ```python block of README.md)."""
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_blocks_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no python block"
    for code in blocks:
        exec(compile(code, str(README), "exec"), {})
    out = capsys.readouterr().out
    assert "mean NLL" in out and "True" in out  # the fit's summary and EM's converged_
    assert "covariance" in out and "bic" in out  # select_model's table
