"""A failed build step's reason: its first real error, in one short line."""

from buildpacks.failures import MAX_REASON, cause, plain, shorten

PIP_OFFLINE = (
    "Collecting leftpad==9.9\n"
    "  WARNING: Retrying (Retry(total=4, connect=None)) after connection broken by"
    " 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection object>: Failed to"
    " establish a new connection: [Errno -3] Temporary failure in name resolution')':"
    " /simple/leftpad/\n"
    "ERROR: Could not find a version that satisfies the requirement leftpad==9.9 (from"
    " versions: none)\n"
    "ERROR: No matching distribution found for leftpad==9.9\n"
)

PIP_BUILD = """\
  Building wheel for broken (setup.py): started
  error: subprocess-exited-with-error
  \u00d7 python setup.py bdist_wheel did not run successfully.
note: This error originates from a subprocess, and is likely not a problem with pip.
"""


def test_pips_first_error_and_the_network_failure_before_it():
    assert cause(PIP_OFFLINE.splitlines()) == (
        "ERROR: Could not find a version that satisfies the requirement leftpad==9.9 (from"
        " versions: none) (Failed to establish a new connection)"
    )
    assert cause(PIP_BUILD.splitlines()) == "error: subprocess-exited-with-error"


def test_a_certificate_failure_names_the_flag():
    lines = ["  WARNING: Retrying ... SSLError(SSLCertVerificationError(1, '[SSL: "
             "CERTIFICATE_VERIFY_FAILED] certificate verify failed'))", "ERROR: No matching"
             " distribution found for six"]  # fmt: skip
    reason = cause(lines)
    assert reason is not None and reason.startswith("ERROR: No matching distribution found for six")
    assert "--build-ca-bundle" in reason


def test_compiler_and_apt_errors():
    assert cause(["# example.com/job", "./perform.go:7:2: undefined: fmt.Printl"]) == (
        "./perform.go:7:2: undefined: fmt.Printl"
    )
    assert cause(["Reading package lists...", "E: Unable to locate package nosuch"]) == (
        "E: Unable to locate package nosuch"
    )
    assert cause(["all good", "exit 3"]) is None


def test_colour_codes_and_length():
    assert plain("\x1b[91museradd warning\x1b[0m\r") == "useradd warning"
    long = shorten("x" * 1000)
    assert len(long) == MAX_REASON and long.endswith("…")
    assert shorten("a\n  b\tc") == "a b c"
