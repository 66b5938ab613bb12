"""Which Perform a Go job defines, found before compiling; `package main` made importable."""

from __future__ import annotations

from pathlib import Path

import pytest

from buildpacks.build import BuildFailed
from buildpacks.golang.scanner import parse, tokens
from buildpacks.golang.signature import (
    GUIDE_SIGNATURE,
    PLUGIN_SIGNATURE,
    Form,
    detect,
    package_files,
)
from buildpacks.golang.tree import RENAMED_MAIN, RENAMED_PACKAGE, rename_main

PLUGIN = """package adder

func Perform(input map[string]interface{}) (interface{}, error) {
	return input["x"], nil
}
"""
GUIDE = """package main

import "fmt"

func Perform(args []interface{}, kwargs map[string]interface{}) (interface{}, error) {
	return fmt.Sprint(args, kwargs), nil
}

func main() {}
"""


def package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def found(tmp_path: Path, files: dict[str, str]):
    return detect(package_files(package(tmp_path, files)), "the job's directory")


def refusal(tmp_path: Path, files: dict[str, str]) -> str:
    with pytest.raises(BuildFailed) as failure:
        found(tmp_path, files)
    message = str(failure.value)
    assert "\n" not in message and len(message) <= 300  # a rejection's reason is at most 300
    assert PLUGIN_SIGNATURE in message and GUIDE_SIGNATURE in message
    return message


def test_the_plugins_form(tmp_path):
    perform = found(tmp_path, {"perform.go": PLUGIN})
    assert (perform.form, perform.file, perform.package) == (Form.PLUGIN, "perform.go", "adder")


def test_the_guides_form_in_package_main(tmp_path):
    perform = found(tmp_path, {"main.go": GUIDE})
    assert (perform.form, perform.package) == (Form.GUIDE, "main")


@pytest.mark.parametrize(
    ("signature", "form"),
    [
        ("func Perform(input map[string]any) (any, error)", Form.PLUGIN),
        ("func Perform(input map[string]any) (out interface{}, err error)", Form.PLUGIN),
        ("func Perform(map[string]interface{}) (interface{}, error)", Form.PLUGIN),
        ("func Perform(args []any, kwargs map[string]any) (any, error)", Form.GUIDE),
        ("func Perform([]interface{}, map[string]interface{}) (interface{}, error)", Form.GUIDE),
        (
            "func Perform(_ []any, kwargs map[ string ]interface { }) (interface{}, error)",
            Form.GUIDE,
        ),
        # a multi-line signature, with comments and a trailing comma
        (
            "func Perform(\n\targs []interface{}, // positional\n"
            "\tkwargs map[string]interface{}, /* keyword */\n) (\n\tinterface{},\n\terror,\n)",
            Form.GUIDE,
        ),
    ],
)
def test_spellings_of_the_accepted_signatures(tmp_path, signature, form):
    body = "{\n\treturn nil, nil\n}\n"
    perform = found(tmp_path, {"job.go": f"package job\n\n{signature} {body}"})
    assert perform.form is form


def test_func_perform_in_comments_and_strings_is_not_code(tmp_path):
    text = """// Package job: func Perform(input map[string]interface{}) (interface{}, error)
package job

/* func Perform(input map[string]interface{}) (interface{}, error) { */
var usage = "func Perform(input map[string]interface{}) (interface{}, error)"
var raw = `
func Perform(input map[string]interface{}) (interface{}, error) {
`
var quote = '"'

func helper() string { return "}" }
"""
    message = refusal(tmp_path, {"job.go": text})
    assert message.startswith("no func Perform in the .go files of the job's directory")


def test_the_real_perform_is_found_beside_a_misleading_comment(tmp_path):
    text = f"// func Perform(x int) (int, error) is how it is NOT written\n{PLUGIN}"
    assert found(tmp_path, {"job.go": text}).form is Form.PLUGIN


@pytest.mark.parametrize(
    "signature",
    [
        "func Perform(input map[string]string) (interface{}, error)",
        "func Perform(input map[string]interface{}) interface{}",
        "func Perform(input map[string]interface{}) (interface{}, string)",
        "func Perform(input map[string]interface{}) error",
        "func Perform(args ...interface{}) (interface{}, error)",
        "func Perform(kwargs map[string]interface{}, args []interface{}) (interface{}, error)",
        "func Perform[T any](input map[string]T) (interface{}, error)",
        "func Perform() (interface{}, error)",
    ],
)
def test_a_wrong_signature_is_refused_naming_the_file(tmp_path, signature):
    message = refusal(tmp_path, {"entry.go": f"package job\n\n{signature} {{\n\tpanic(1)\n}}\n"})
    assert message.startswith(f"entry.go has {signature}; write {PLUGIN_SIGNATURE} or")


def test_a_long_wrong_signature_is_quoted_shortened(tmp_path):
    names = ", ".join(f"argument{i} int" for i in range(40))
    message = refusal(tmp_path, {"entry.go": f"package job\n\nfunc Perform({names}) {{}}\n"})
    assert "…" in message


def test_a_method_named_perform_is_refused(tmp_path):
    text = "package job\n\ntype Job struct{}\n\nfunc (j *Job) Perform(input map[string]any) (any, error) { return nil, nil }\n"  # noqa: E501
    message = refusal(tmp_path, {"job.go": text})
    assert message.startswith("job.go has Perform as a method")


def test_missing_perform_and_no_go_files(tmp_path):
    message = refusal(tmp_path, {"util.go": "package job\n"})
    assert "no func Perform" in message
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BuildFailed, match=r"^no \.go files in the job's directory"):
        detect(package_files(empty), "the job's directory")


def test_tests_and_ignored_files_are_not_the_package(tmp_path):
    files = {
        "perform_test.go": PLUGIN,
        "tool.go": f"//go:build ignore\n\n{PLUGIN}",
        "job.go": "package job\n",
    }
    assert "no func Perform" in refusal(tmp_path, files)


def test_unterminated_literals_end_the_scan_without_failing():
    assert [t.text for t in tokens('package x\nvar s = "open\nfunc Perform(')][-3:] == [
        "var",
        "s",
        "=",
    ]
    assert parse("package x\n/* never closed\nfunc Perform() {}").funcs == ()
    assert parse("package x\nvar r = `raw\nfunc Perform() {}").funcs == ()


def test_package_main_is_renamed_in_the_builds_copy(tmp_path):
    text = """// package main: this comment stays
package main

import "fmt"

type T struct{}

func (T) main() {}

// func main() in a comment stays too
func main() { fmt.Println("func main()") }
"""
    directory = package(
        tmp_path, {"main.go": text, "perform.go": GUIDE.replace("func main() {}", "")}
    )
    files = package_files(directory)
    assert rename_main(files) == 2
    renamed = (directory / "main.go").read_text()
    assert renamed == (
        text.replace("package main\n", f"package {RENAMED_PACKAGE}\n", 1).replace(
            'func main() { fmt.Println("func main()") }',
            f'func {RENAMED_MAIN}() {{ fmt.Println("func main()") }}',
        )
    )
    assert "func (T) main() {}" in renamed
    assert (directory / "perform.go").read_text().startswith(f"package {RENAMED_PACKAGE}\n")
    perform = detect(package_files(directory), "the job's directory")
    assert (perform.form, perform.package) == (Form.GUIDE, RENAMED_PACKAGE)


def test_a_library_package_is_left_as_it_is(tmp_path):
    directory = package(tmp_path, {"perform.go": PLUGIN})
    assert rename_main(package_files(directory)) == 0
    assert (directory / "perform.go").read_text() == PLUGIN


def test_bytes_that_are_not_utf8_survive_the_rename(tmp_path):
    (tmp_path / "main.go").write_bytes(
        b"// caf\xe9\npackage main\n\nfunc main() {}\n" + PLUGIN[14:].encode()
    )
    rename_main(package_files(tmp_path))
    assert (
        (tmp_path / "main.go")
        .read_bytes()
        .startswith(b"// caf\xe9\npackage racetrackjob\n\nfunc racetrackJobMain() {}\n")
    )
