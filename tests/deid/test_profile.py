from __future__ import annotations

from medcloud.deid.profile import PROFILE_NAME, Action, load_table, resolve, resolve_code


def test_table_is_the_shipped_edition_with_every_row() -> None:
    table = load_table()
    assert PROFILE_NAME == "PS3.15 2026c Table E.1-1"
    assert len(table.exact) + len(table.masked) == 655
    assert table.exact[0x00100010] == "Z"  # Patient's Name
    assert table.exact[0x00100020] == "Z/D"  # Patient ID
    assert table.exact[0x00080018] == "U"  # SOP Instance UID
    assert table.exact[0x00081140] == "X/Z/U*"  # Referenced Image Sequence


def test_repeating_groups_match_every_curve_and_overlay_group() -> None:
    table = load_table()
    for group in (0x5000, 0x5002, 0x501E):
        assert table.code_for((group << 16) | 0x3000) == "X"
    assert table.code_for(0x60024000) == "X"  # overlay comments, second overlay
    assert table.code_for(0x60000010) is None  # overlay rows are not listed


def test_combined_codes_resolve_to_one_action() -> None:
    assert resolve_code("X/Z") is Action.EMPTY
    assert resolve_code("X/D") is Action.DUMMY
    assert resolve_code("Z/D") is Action.EMPTY
    assert resolve_code("X/Z/D") is Action.EMPTY
    assert resolve_code("X/Z/U*") is Action.RECURSE_UID
    assert resolve_code("U") is Action.UID


def test_options_change_the_resolved_actions() -> None:
    basic = resolve()
    assert basic.actions[0x00081030] is Action.CLEAN  # Study Description under Clean Descriptors
    assert resolve(clean_descriptors=False).actions[0x00081030] is Action.REMOVE
    assert basic.actions[0x00101010] is Action.REMOVE  # Patient's Age
    assert resolve(retain_patient_characteristics=True).actions[0x00101010] is Action.KEEP
    assert resolve(retain_device_identity=True).actions[0x00181000] is Action.KEEP
    assert resolve(retain_uids=True).actions[0x00080018] is Action.KEEP
    assert resolve(retain_dates=True).actions[0x00080020] is Action.CLEAN
    assert 0x00080020 in basic.temporal
