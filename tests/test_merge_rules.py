"""One test per merge rule of DESIGN.md, on the pure merge functions (no SQLite).

Each test names the rule it pins.  Rows are folded with ``merge.fold_row``; ``known``
and ``parent_owner_at`` are plain functions, so the rules are checked in isolation.
"""

from __future__ import annotations

from engine_util import Origin, at, load, roster

from riversync.engine import merge
from riversync.engine.merge import fold_row

SCHEMA = load("engine_props_schema.toml")
RULES = merge.Rules(SCHEMA, roster())
CLUBS = SCHEMA.tables["clubs"]
SQUADS = SCHEMA.tables["squads"]


def fold(events, table=CLUBS, pk="c1", known=lambda t, p: True, parent_owner=None):
    return fold_row(table, pk, events, RULES, known, parent_owner or (lambda t, p, k: "north"))


def v(res, ev):
    return res.verdicts[ev.event_id]


def test_rule_create_is_a_whole_row_with_defaults():
    """Proves [M-EVENT-1]: a create is the whole row; columns it omits take their defaults."""
    n = Origin("north")
    res = fold([n.create(at("10:00"), "clubs", "c1", {"name": "A"}, "nora")])
    assert res.values == {"name": "A", "phone": None, "size": None}


def test_rule_update_absent_column_untouched_and_null_is_a_value():
    """Proves [M-EVENT-1]: an update sets only the columns it names, and nil is a value."""
    n = Origin("north")
    res = fold([n.create(at("10:00"), "clubs", "c1", {"name": "A", "phone": "1", "size": 3},
                         "nora"),
                n.update(at("10:01"), "clubs", "c1", {"phone": None}, "nora")])
    assert res.values == {"name": "A", "phone": None, "size": 3}


def test_rule_per_column_last_writer_wins_in_any_order():
    """Proves [M-LWW-1]: each column holds the greatest order key that set it, in any order."""
    n = Origin("north")
    c = n.create(at("10:00"), "clubs", "c1", {"name": "A"}, "nora")
    u1 = n.update(at("10:02"), "clubs", "c1", {"phone": "new"}, "nora")
    u2 = n.update(at("10:01"), "clubs", "c1", {"phone": "old", "size": 7}, "nora")
    assert fold([c, u1, u2]).values == fold([u2, c, u1]).values == {
        "name": "A", "phone": "new", "size": 7}


def test_rule_equal_hlc_breaks_ties_by_origin_and_columns_win_together():
    """Proves [M-ORDER-1]: equal HLCs break on the node, per event, not per column."""
    n, h = Origin("north"), Origin("hub")
    c = n.create(at("09:00"), "clubs", "c1", {"name": "A"}, "nora")
    e1 = n.update(at("10:00"), "clubs", "c1", {"phone": "n", "size": 1}, "nora")
    e2 = h.update(at("10:00"), "clubs", "c1", {"phone": "h", "size": 2}, "admin", admin=True)
    assert fold([c, e1, e2]).values == fold([c, e2, e1]).values == {
        "name": "A", "phone": "n", "size": 1}


def test_rule_update_newer_than_delete_is_conflict_row_deleted():
    """Proves [M-DEL-1] and [M-LIVE-1]: a newer update is queued, the deleted row stays dead."""
    n = Origin("north")
    c = n.create(at("10:00"), "clubs", "c1", {"name": "A"}, "nora")
    d = n.delete(at("10:01"), "clubs", "c1", "nora")
    u = n.update(at("10:02"), "clubs", "c1", {"phone": "x"}, "nora")
    res = fold([u, d, c])
    assert res.values is None
    assert v(res, u) == merge.Verdict(merge.CONFLICT, merge.ROW_DELETED)


def test_rule_only_a_create_recreates_a_key_and_it_resets_the_row():
    """Proves [M-DEL-1], [M-LIVE-1], [M-LWW-1]: a re-create revives the key, and only
    values newer than the latest create count."""
    n = Origin("north")
    c = n.create(at("10:00"), "clubs", "c1", {"name": "A", "phone": "1"}, "nora")
    d = n.delete(at("10:01"), "clubs", "c1", "nora")
    c2 = n.create(at("10:02"), "clubs", "c1", {"name": "B"}, "nora")
    assert fold([c2, d, c]).values == {"name": "B", "phone": None, "size": None}


def test_rule_owner_is_the_acting_office_of_the_first_create():
    """Proves [M-OWN-2] (no transfer: the creator's office owns) and [M-OWN-4]."""
    s, n = Origin("south"), Origin("north")
    c = s.create(at("10:00"), "clubs", "c1", {"name": "A"}, "sam")
    u = n.update(at("10:01"), "clubs", "c1", {"phone": "x"}, "nora")
    res = fold([c, u])
    assert res.owner == "south"
    assert v(res, u) == merge.Verdict(merge.CONFLICT, merge.NOT_OWNER)


def test_rule_two_offices_creating_one_key_smaller_order_key_owns():
    """Proves [M-OWN-3]: the smaller order key owns, the other creation is a conflict."""
    s, n = Origin("south"), Origin("north")
    cs = s.create(at("10:00"), "clubs", "c1", {"name": "S"}, "sam")
    cn = n.create(at("10:00"), "clubs", "c1", {"name": "N"}, "nora")
    res = fold([cn, cs])
    first, second = sorted([cs, cn], key=lambda e: e.order_key)
    assert res.owner == RULES.acting_office(first)
    assert v(res, first).accepted
    assert v(res, second) == merge.Verdict(merge.CONFLICT, merge.NOT_OWNER)


def test_rule_event_acts_for_home_office_of_its_user_not_the_node():
    """Proves [M-OWN-1]: the user's home office acts, not the signing node's office."""
    n, w = Origin("north"), Origin("west")  # west is a second node of office north
    c = n.create(at("10:00"), "clubs", "c1", {"name": "A"}, "nora")
    hybrid = w.update(at("10:01"), "clubs", "c1", {"phone": "x"}, "hybrid")  # home: south
    res = fold([c, hybrid])
    assert v(res, hybrid).status == merge.CONFLICT
    s = Origin("south")
    c2 = s.create(at("10:00"), "clubs", "c1", {"name": "A"}, "sam")
    res2 = fold([c2, hybrid])  # a south row: the hybrid clerk may edit it from a north node
    assert v(res2, hybrid).accepted and res2.values["phone"] == "x"


def test_rule_admin_override_needs_an_admin_in_the_roster():
    """Proves [M-OWN-4]: the admin flag alone is no override; the roster must say admin."""
    n, s = Origin("north"), Origin("south")
    c = n.create(at("10:00"), "clubs", "c1", {"name": "A"}, "nora")
    real = s.update(at("10:01"), "clubs", "c1", {"phone": "admin"}, "admin", admin=True)
    fake = s.update(at("10:02"), "clubs", "c1", {"size": 9}, "sam", admin=True)
    res = fold([c, real, fake])
    assert v(res, real).accepted and v(res, fake).status == merge.CONFLICT
    assert res.values == {"name": "A", "phone": "admin", "size": None}


def test_rule_transfer_changes_the_owner_from_its_order_key_on():
    """Proves [M-OWN-2]: the owner at k is the target of the greatest valid transfer below k."""
    n, s = Origin("north"), Origin("south")
    c = n.create(at("10:00"), "clubs", "c1", {"name": "A"}, "nora")
    t = n.transfer(at("10:01"), "clubs", "c1", "south", "nora")
    before = s.update(at("10:00:30"), "clubs", "c1", {"phone": "early"}, "sam")
    after = s.update(at("10:02"), "clubs", "c1", {"size": 2}, "sam")
    res = fold([after, before, t, c])
    assert res.owner == "south"
    assert v(res, before).status == merge.CONFLICT and v(res, after).accepted


def test_rule_late_transfer_revalidates_events_it_precedes():
    """Proves [M-OWN-5] on the pure fold: a late transfer turns a conflict into a valid edit."""
    n, s = Origin("north"), Origin("south")
    c = n.create(at("10:00"), "clubs", "c1", {"name": "A"}, "nora")
    edit = s.update(at("10:02"), "clubs", "c1", {"phone": "south"}, "sam")
    assert v(fold([c, edit]), edit).status == merge.CONFLICT
    t = n.transfer(at("10:01"), "clubs", "c1", "south", "nora")  # arrives late
    res = fold([c, edit, t])
    assert v(res, edit).accepted and res.values["phone"] == "south"


def test_rule_transfer_by_non_owner_is_a_conflict():
    """Proves [M-OWN-4] for transfers: a non-owner cannot give a row away."""
    n, s = Origin("north"), Origin("south")
    c = n.create(at("10:00"), "clubs", "c1", {"name": "A"}, "nora")
    t = s.transfer(at("10:01"), "clubs", "c1", "south", "sam")
    res = fold([c, t])
    assert res.owner == "north" and v(res, t).status == merge.CONFLICT


def test_rule_resolution_greatest_order_key_wins_ties_by_node():
    """Proves [M-RES-2]: of two resolutions the greater order key decides, alone."""
    n, s, h = Origin("north"), Origin("south"), Origin("hub")
    c = n.create(at("10:00"), "clubs", "c1", {"name": "A", "size": 1}, "nora")
    edit = s.update(at("10:01"), "clubs", "c1", {"size": 5}, "sam")
    cid = merge.conflict_id(edit.event_id)
    accept = h.resolve(at("10:10"), "clubs", "c1", cid, "accept", "admin", {"size": 5},
                       admin=True)
    keep = n.resolve(at("10:10"), "clubs", "c1", cid, "keep", "nora")
    for order in ([c, edit, accept, keep], [keep, accept, edit, c]):
        res = fold(order)
        assert res.closed == {edit.event_id: (keep.event_id, "keep")}
        assert res.values["size"] == 1


def test_rule_merge_resolution_applies_its_values():
    """Proves [M-RES-1] for `merge`: the carried values take effect and the conflict closes."""
    n, s = Origin("north"), Origin("south")
    c = n.create(at("10:00"), "clubs", "c1", {"name": "A", "size": 1}, "nora")
    edit = s.update(at("10:01"), "clubs", "c1", {"size": 5, "phone": "s"}, "sam")
    m = n.resolve(at("10:05"), "clubs", "c1", merge.conflict_id(edit.event_id), "merge",
                  "nora", {"size": 3})
    res = fold([c, edit, m])
    assert res.values == {"name": "A", "phone": None, "size": 3}
    assert res.closed == {edit.event_id: (m.event_id, "merge")}


def test_rule_a_resolve_never_opens_a_conflict():
    """Proves [M-RES-3]: an unauthorised or pointless resolve is rejected, never queued."""
    n, s = Origin("north"), Origin("south")
    c = n.create(at("10:00"), "clubs", "c1", {"name": "A"}, "nora")
    edit = s.update(at("10:01"), "clubs", "c1", {"size": 5}, "sam")
    by_non_owner = s.resolve(at("10:05"), "clubs", "c1", merge.conflict_id(edit.event_id),
                             "accept", "sam", {"size": 5})
    of_non_conflict = n.resolve(at("10:06"), "clubs", "c1", merge.conflict_id(c.event_id),
                                "keep", "nora")
    res = fold([c, edit, by_non_owner, of_non_conflict])
    statuses = {v(res, by_non_owner).status, v(res, of_non_conflict).status}
    assert statuses == {merge.REJECTED}
    assert res.closed == {}


def test_rule_parked_unknown_table_newer_schema_bad_value_missing_reference():
    """Proves [M-PARK-1]: which events park (their cause named), not drop."""
    n = Origin("north")
    c = n.create(at("10:00"), "clubs", "c1", {"name": "A"}, "nora")
    newer = n.update(at("10:01"), "clubs", "c1", {"phone": "x"}, "nora", schema=2)
    bad = n.update(at("10:02"), "clubs", "c1", {"size": "many"}, "nora")
    res = fold([c, newer, bad])
    assert v(res, newer).cause.startswith(merge.NEWER_SCHEMA)
    assert v(res, bad).cause.startswith(merge.BAD_VALUE)
    assert res.values == {"name": "A", "phone": None, "size": None}
    unknown = n.create(at("10:03"), "nowhere", "x", {"a": 1}, "nora")
    assert merge.static_verdict(unknown, SCHEMA).cause.startswith(merge.UNKNOWN_TABLE)
    sq = n.create(at("10:04"), "squads", "s1", {"club_id": "c9"}, "nora")
    res = fold([sq], table=SQUADS, pk="s1", known=lambda t, p: False)
    assert v(res, sq) == merge.Verdict(merge.PARKED, "missing referenced row: clubs 'c9'",
                                       ("clubs", "c9"))


def test_rule_updates_of_an_unknown_row_wait_for_its_create():
    """Proves [M-PARK-1]: an update of a row not yet known is parked, not dropped."""
    n = Origin("north")
    u = n.update(at("10:01"), "clubs", "c1", {"phone": "x"}, "nora")
    res = fold([u])
    assert not res.known
    assert v(res, u) == merge.Verdict(merge.PARKED, merge.ROW_NOT_KNOWN, ("clubs", "c1"))


def test_rule_parent_owned_rows_follow_their_parents_owner_at_the_order_key():
    """Proves [M-OWN-6]: a child row is owned by its parent's owner at the event's order key."""
    n, s = Origin("north"), Origin("south")
    sq = n.create(at("10:00"), "squads", "s1", {"club_id": "c1", "label": "a"}, "nora")
    edit = s.update(at("10:05"), "squads", "s1", {"label": "b"}, "sam")

    def owner(table, pk, k):  # the club moves to south at 10:03
        assert (table, pk) == ("clubs", "c1")
        return "north" if k < (at("10:03"), "", 0) else "south"

    res = fold([sq, edit], table=SQUADS, pk="s1", parent_owner=owner)
    assert v(res, sq).accepted and v(res, edit).accepted and res.values["label"] == "b"
    move = s.update(at("10:06"), "squads", "s1", {"club_id": "c2"}, "sam")
    t = s.transfer(at("10:07"), "squads", "s1", "east", "sam")
    res = fold([sq, edit, move, t], table=SQUADS, pk="s1", parent_owner=owner)
    assert v(res, move) == merge.Verdict(merge.CONFLICT, merge.FIXED_PARENT)
    assert v(res, t) == merge.Verdict(merge.CONFLICT, merge.FOLLOWS_PARENT)


def test_rule_equal_hlc_and_node_break_on_the_epoch():
    """Proves [M-ORDER-1] for the last part of the order key: a restored node's two epochs
    can write at one HLC, and the newer epoch must win the same way on every replica."""
    old, new = Origin("north", epoch=1), Origin("north", epoch=2)
    c = old.create(at("09:00"), "clubs", "c1", {"name": "A"}, "nora")
    e1 = old.update(at("10:00"), "clubs", "c1", {"phone": "old", "size": 1}, "nora")
    e2 = new.update(at("10:00"), "clubs", "c1", {"phone": "new", "size": 2}, "nora")
    assert e1.order_key < e2.order_key
    assert fold([c, e1, e2]).values == fold([e2, e1, c]).values == {
        "name": "A", "phone": "new", "size": 2}


def test_rule_a_row_lives_while_its_greatest_valid_create_or_delete_is_a_create():
    """Proves [M-LIVE-1]: only valid deletes count, so a non-owner's newer delete (a
    conflict) leaves the row live; the owner's delete ends it and a newer create revives it."""
    n, s = Origin("north"), Origin("south")
    c = n.create(at("10:00"), "clubs", "c1", {"name": "A"}, "nora")
    foreign = s.delete(at("10:01"), "clubs", "c1", "sam")
    res = fold([foreign, c])
    assert v(res, foreign) == merge.Verdict(merge.CONFLICT, merge.NOT_OWNER)
    assert res.live and res.values["name"] == "A"
    d = n.delete(at("10:02"), "clubs", "c1", "nora")
    assert not fold([d, foreign, c]).live
    c2 = n.create(at("10:03"), "clubs", "c1", {"name": "B"}, "nora")
    assert fold([c2, d, foreign, c]).values == {"name": "B", "phone": None, "size": None}
    older = n.create(at("09:59"), "clubs", "c1", {"name": "Z"}, "nora")  # below the delete
    assert not fold([older, d, foreign, c]).live


def test_rule_accept_reissues_the_incoming_values_and_keep_keeps_the_row():
    """Proves [M-RES-1] for `accept` and `keep`: each closes the conflict, in any order."""
    n, s = Origin("north"), Origin("south")
    c = n.create(at("10:00"), "clubs", "c1", {"name": "A", "size": 1}, "nora")
    e1 = s.update(at("10:01"), "clubs", "c1", {"size": 5}, "sam")
    e2 = s.update(at("10:02"), "clubs", "c1", {"phone": "s"}, "sam")
    accept = n.resolve(at("10:05"), "clubs", "c1", merge.conflict_id(e1.event_id), "accept",
                       "nora", {"size": 5})
    keep = n.resolve(at("10:06"), "clubs", "c1", merge.conflict_id(e2.event_id), "keep", "nora")
    open_ = fold([c, e1, e2])
    assert open_.closed == {} and open_.values == {"name": "A", "phone": None, "size": 1}
    for order in ([c, e1, e2, accept, keep], [keep, accept, e2, e1, c]):
        res = fold(order)
        assert res.closed == {e1.event_id: (accept.event_id, "accept"),
                              e2.event_id: (keep.event_id, "keep")}
        assert res.values == {"name": "A", "phone": None, "size": 5}
