"""The shared list of id test cases (item 5): run against the ledger, the API and the verifier.

Each case is (id, valid). The grammar (docs/event-format.md) is
[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}, matched against the whole string.
"""

ID_CASES: list[tuple[str, bool]] = [
    ("run-1", True),
    ("a", True),
    ("A.b_c:d/e-f", True),
    ("x" * 128, True),
    ("x" * 129, False),  # length limit
    ("", False),
    ("x\n", False),  # re.match with $ accepted this
    ("x\r\n", False),
    ("\nx", False),
    ("x\x00", False),  # NUL
    ("x\x00y", False),
    ("x y", False),
    ("x\t", False),
    ("-x", False),  # must start alphanumeric
    (".x", False),
    ("/x", False),
    ("x\\y", False),  # separators other than / . : _ -
    ("x;y", False),
    ("x,y", False),
    ("x|y", False),
    ("\u0430dmin", False),  # Cyrillic a: a look-alike of "admin"
    ("runⅠ", False),  # Roman numeral one
    ("run１", False),  # fullwidth digit one
    ("run\u0661", False),  # Arabic-Indic digit one (\\d would match it)
    ("r\u200bun", False),  # zero-width space
    ("ｒun", False),  # fullwidth r
    ("run\u212a", False),  # Kelvin sign (folds to k under IGNORECASE)
    ("é", False),
]
