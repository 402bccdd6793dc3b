"""The test-side template renderer must agree with Go/Sprig semantics we rely on."""
import pytest

from .gotemplate import TemplateError, render


def test_env_range_and_arithmetic():
    text = 'd={{ env "D" }}\n{{- range $c := splitList "," (env "L") }}\n- {{ trim $c }}\n{{- end }}\nn={{ mul 4 (atoi (env "N")) }}'
    assert render(text, {"D": "x.org", "L": "1.1.1.1/32, 10.0.0.0/8", "N": "15"}) == (
        "d=x.org\n- 1.1.1.1/32\n- 10.0.0.0/8\nn=60"
    )


@pytest.mark.parametrize("value,expected", [("staging", "yes"), ("production", "no"), ("", "no"), ("prod", "no")])
def test_if_or_eq(value, expected):
    text = '{{ if or (eq (env "E") "staging") (eq (env "E") "development") }}yes{{ else }}no{{ end }}'
    assert render(text, {"E": value}) == expected


def test_unknown_constructs_fail_loudly():
    with pytest.raises(TemplateError, match="unsupported template function 'upper'"):
        render('{{ upper (env "D") }}', {"D": "x"})
    with pytest.raises(TemplateError, match="missing"):
        render('{{ if eq 1 1 }}x', {})
