"""`erased` in an auditor bundle's event record (docs/bundle-format.md): the verifier accepts a
mark only on a commitment of the body that the record does not also open."""

from __future__ import annotations

import pytest

from rlhf_verifier.events import EventCheckError, check_erased

C = {"$commitment": "sha256:" + "ab" * 32}
BODY = {"prompts": C, "responses": C, "batch_id": "b1"}


@pytest.mark.parametrize("erased, openings", [
    ({"prompts": "subject"}, None),
    ({"prompts": "run", "responses": "run"}, None),
    ({"prompts": "subject"}, {"responses": {"salt": "x", "value": 1}}),
])
def test_honest_marks_pass(erased, openings):
    check_erased(BODY, erased, openings, "erased")


@pytest.mark.parametrize("erased, openings, why", [
    ({"batch_id": "run"}, None, "no commitment"),
    ({"missing": "subject"}, None, "no commitment"),
    ({"prompts": "lost"}, None, '"run" or "subject"'),
    ({"prompts": True}, None, '"run" or "subject"'),
    ({"prompts": "subject"}, {"prompts": {"salt": "x", "value": 1}}, "both opened and erased"),
    ({}, None, "non-empty object"),
    (["prompts"], None, "non-empty object"),
])
def test_forged_marks_are_refused(erased, openings, why):
    with pytest.raises(EventCheckError, match=why):
        check_erased(BODY, erased, openings, "erased")
